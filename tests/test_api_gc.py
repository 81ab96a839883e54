"""A serving process's garbage collector: after start-up (whose objects it freezes) its
young generation is collected at `YOUNG_GC_THRESHOLD` allocations, not Python's 700,
and the older generations keep their thresholds (docs/benchmarks.md, s8-edge)."""

from __future__ import annotations

import asyncio
import gc

from api_fixtures import settings

from fengkong.api.app import YOUNG_GC_THRESHOLD, create_app


def test_start_up_raises_the_young_generation_threshold_only(redis_server):
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's defaults, whatever an earlier test left
    try:
        app = create_app(settings(redis_server.url, "tgc"))

        async def start() -> tuple[int, ...]:
            async with app.router.lifespan_context(app):
                return gc.get_threshold()

        assert asyncio.run(start()) == (YOUNG_GC_THRESHOLD, 10, 10)
        assert YOUNG_GC_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
