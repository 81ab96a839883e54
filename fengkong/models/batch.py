"""Scoring the payments of one event-loop turn together: one ONNX Runtime call for all.

Why: the service has many decisions in flight, and the store's replies to several of
them arrive in one read, so several decisions reach the models in the same turn of
the event loop. Scoring each alone walks both tree ensembles once per payment, and in
the worker, between two payments, the rest of the decision path has pushed the trees
and ONNX Runtime's code out of the caches: a call then costs several times what it
costs in a loop. One call on the turn's rows loads them once for all (docs/benchmarks.md).

`TickBatcher.submit` copies a payment's row into the batch and returns a future; the
first row of a batch schedules the call with ``loop.call_soon``, which runs after every
callback already ready in this turn, so the decisions resumed by the same reply join
the batch. Each row's answer is exactly what `JointModel.score_one` gives it alone:
ONNX Runtime's tree ensembles, on one thread, sum each row's trees in the same order
whatever the batch; `alike` checks it on the artifact's check rows before any batching, and
tests/test_models_batch.py holds it on every kind of txn_risk graph.

Each thread has its own batch (an event loop runs on one thread), so a caller with
threads and loops of its own never mixes rows of two loops in one call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np

from fengkong.models.joint import JointModel

#: Rows in one call at most; a fuller turn is scored in several calls.
CAPACITY = 64
T = TypeVar("T")


class _Batch(Generic[T]):
    """One thread's rows waiting for the call of ``loop``, and their futures."""

    __slots__ = ("loop", "rows", "waiting", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, width: int) -> None:
        self.loop = loop
        self.rows = np.zeros((CAPACITY, width), dtype=np.float64)
        self.waiting: list[asyncio.Future[T]] = []
        self.scheduled = False


class TickBatcher(Generic[T]):
    """Batches `JointModel` scoring per event-loop turn (module docstring). A row's answer is
    ``answer(txn_risk's score, the habit model's score)``, the two as `JointModel.score_one`
    gives them: ``answer`` (the runtime's calibration and output features) runs in the call's
    loop too, row after row, while what it reads is in the caches."""

    def __init__(self, joint: JointModel, answer: Callable[[float, float], T]) -> None:
        self.joint = joint
        self.answer = answer
        self._local = threading.local()

    def submit(self, cells: Sequence[Any] | np.ndarray) -> asyncio.Future[T]:
        """The future answer of one union row (`Vectorizer.cells` or an array), scored at the
        end of this turn with the rows submitted meanwhile. Must be called from a running event
        loop. A row numpy cannot convert raises here, for this payment alone."""
        loop = asyncio.get_running_loop()
        batch: _Batch[T] | None = getattr(self._local, "batch", None)
        if batch is None or batch.loop is not loop:  # a loop that ended before its call leaves nothing behind
            batch = self._local.batch = _Batch(loop, self.joint.width)
        n = len(batch.waiting)
        if n == CAPACITY:
            self._score(batch)
            n = 0
        batch.rows[n] = cells
        future: asyncio.Future[T] = loop.create_future()
        batch.waiting.append(future)
        if not batch.scheduled:
            batch.scheduled = True
            loop.call_soon(self._flush, batch)
        return future

    def _flush(self, batch: _Batch[T]) -> None:
        batch.scheduled = False
        self._score(batch)

    def _score(self, batch: _Batch[T]) -> None:
        """One call on the waiting rows; each future gets its row's answer, or the error."""
        waiting = batch.waiting
        if not waiting:
            return
        batch.waiting = []
        answer = self.answer
        try:
            if len(waiting) == 1:  # the session's bound buffers: no input or output to allocate
                answers = [answer(*self.joint.score_one(batch.rows[0]))]
            else:
                risk, habit = self.joint.score_many(batch.rows[:len(waiting)])
                answers = list(map(answer, risk.tolist(), habit.tolist()))
        except Exception as exc:  # ONNX Runtime's errors derive from Exception itself
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, out in zip(waiting, answers):
            if not future.done():  # a cancelled decision
                future.set_result(out)


def alike(joint: JointModel, rows: np.ndarray) -> bool:
    """Whether ``joint`` answers each of ``rows`` in batches of up to `CAPACITY` exactly (bit for
    bit, NaN as NaN) as alone: what `TickBatcher` relies on, checked on an artifact's check rows
    before it batches (a graph of other operators could sum a batch in another order)."""
    one = np.array([joint.score_one(row) for row in rows], dtype=np.float64).reshape(-1, 2)
    for start in range(0, len(rows), CAPACITY):
        risk, habit = joint.score_many(rows[start:start + CAPACITY])
        if not np.array_equal(np.column_stack([risk, habit]), one[start:start + CAPACITY], equal_nan=True):
            return False
    return True


__all__ = ["CAPACITY", "TickBatcher", "alike"]
