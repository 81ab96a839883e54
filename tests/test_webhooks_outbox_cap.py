"""The webhook outbox at its cap: the oldest events not yet fanned out are dropped, and
never silently: counted in Redis and in the worker's /metrics, and logged. A publish
alone never trims below twice the cap (the backstop), so a burst is held for the loop."""

from __future__ import annotations

import asyncio
import logging

from fengkong.api.metrics import Metrics
from fengkong.webhooks import Deliverer, DeliveryConfig
from fengkong.webhooks.store import WebhookKeys, outbox_command


def test_the_outbox_is_held_to_its_cap_and_every_drop_is_counted_and_logged(redis_client, redis_server, prefix,
                                                                            caplog) -> None:
    keys = WebhookKeys(prefix)
    with redis_client.pipeline(transaction=False) as pipe:  # a burst no loop has read yet
        for n in range(150):
            pipe.execute_command(*outbox_command("decision.review", {"n": n}, prefix=prefix, maxlen=100))
        ids = pipe.execute()
    assert redis_client.xlen(keys.outbox) == 150  # the publish kept all of them (backstop at 200)
    metrics = Metrics()
    deliverer = Deliverer(redis_server.url, DeliveryConfig(prefix=prefix, outbox_maxlen=100),
                          on_dropped=metrics.webhook_dropped.inc)

    async def trim_twice() -> tuple[int, int]:
        try:
            return await deliverer.trim_outbox(), await deliverer.trim_outbox()
        finally:
            await deliverer.stop()

    with caplog.at_level(logging.ERROR, logger="fengkong.webhooks.delivery"):
        assert asyncio.run(trim_twice()) == (50, 0)
    remaining = [entry_id for entry_id, _ in redis_client.xrange(keys.outbox)]
    assert remaining == ids[50:]  # the 50 oldest went, the newest 100 stay
    assert int(redis_client.get(keys.outbox_dropped)) == 50
    assert "fengkong_webhook_outbox_dropped_total 50.0" in metrics.render().decode()
    assert "over its cap of 100 events: the 50 oldest" in caplog.text
