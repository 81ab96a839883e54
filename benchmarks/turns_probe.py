"""Instrumentation bench_batch_turns.py loads into the service's worker (through a
``sitecustomize`` of its own on the worker's PYTHONPATH): benchmark code, never imported
by fengkong.

It wraps `fengkong.models.batch.TickBatcher.submit`. Every ``BENCH_TURNS_WINDOW`` seconds
it notes the worker process's CPU time and how many payments reached the models since
the last note, then switches the batches it schedules from then on to the other of the
two waits in ``BENCH_TURNS`` ("0,2": a batch scored at the end of its turn, then two
turns later, then at the end again...). The windows go to ``BENCH_TURNS_LOG`` as JSON
lines ``[turns, cpu_s, payments]``: two codes side by side in one process, under one load
and one host, a window apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from fengkong.models import batch

_TURNS = [int(t) for t in os.environ["BENCH_TURNS"].split(",")]
_WINDOW = float(os.environ.get("BENCH_TURNS_WINDOW", "0.5"))
_LOG = os.environ["BENCH_TURNS_LOG"]
_state: dict[str, Any] = {"mode": 0, "payments": 0, "noted": 0, "cpu": 0.0, "started": False}
_submit = batch.TickBatcher.submit


def _note(loop: asyncio.AbstractEventLoop) -> None:
    cpu = time.process_time()
    line = [_TURNS[_state["mode"]], round(cpu - _state["cpu"], 6), _state["payments"] - _state["noted"]]
    _state["cpu"], _state["noted"] = cpu, _state["payments"]
    _state["mode"] = (_state["mode"] + 1) % len(_TURNS)
    with open(_LOG, "a") as out:
        out.write(json.dumps(line) + "\n")
    loop.call_later(_WINDOW, _note, loop)


def submit(self: batch.TickBatcher, item: Any) -> "asyncio.Future[Any]":
    if not _state["started"]:
        _state["started"] = True
        _state["cpu"] = time.process_time()
        loop = asyncio.get_running_loop()
        loop.call_later(_WINDOW, _note, loop)
    self.turns = _TURNS[_state["mode"]]
    _state["payments"] += 1
    return _submit(self, item)


batch.TickBatcher.submit = submit  # type: ignore[method-assign]
