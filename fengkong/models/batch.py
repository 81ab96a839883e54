"""Scoring the payments of a few event-loop turns together: one ONNX Runtime call for all.

Why: the service has many decisions in flight, and the store's replies to several of
them arrive in one read, so several decisions reach the models in the same turn of
the event loop. Scoring each alone walks both tree ensembles once per payment, and in
the worker, between two payments, the rest of the decision path has pushed the trees
and ONNX Runtime's code out of the caches: a call then costs several times what it
costs in a loop. One call on the turn's rows loads them once for all (docs/benchmarks.md).

`TickBatcher.submit` writes a payment's row into the batch (the runtime's writer:
`Vectorizer.pack_into` from the features) and returns a future; the first row of a batch
schedules the call ``turns`` loop turns later (`WAIT_TURNS`, two), by ``loop.call_soon``
from one turn to the next. Every decision resumed meanwhile joins the batch: those of the
same reply, and those of the replies the loop reads in the next two turns. Under load each
reply read resumes a few decisions, so waiting two turns scores about twice as many rows
in one call, and the decisions then go on to the rules and the records together; the
worker's CPU per decision falls by more than the call's share (docs/benchmarks.md, "s16").
A waiting batch never makes the loop sleep: while a callback is ready the loop polls
without a timeout, so a lone payment waits two empty polls, microseconds. The call is
IO-bound on the batch's own buffer (`joint.BoundRows`): no feed to convert, no outputs to
allocate. Each row's answer is exactly what `JointModel.score_one` gives it alone:
ONNX Runtime's tree ensembles, on one thread, sum each row's trees in the same order
whatever the batch; `alike` checks it on the artifact's check rows before any batching, and
tests/test_models_batch.py holds it on every kind of txn_risk graph.

Each thread has its own batch (an event loop runs on one thread), so a caller with
threads and loops of its own never mixes rows of two loops in one call.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Generic, TypeVar

import numpy as np

from fengkong.models.joint import BoundRows, JointModel

#: Rows in one call at most; a fuller batch is scored in several calls.
CAPACITY = 64
#: Loop turns a batch waits for more rows after its first, by default.
WAIT_TURNS = 2
S = TypeVar("S")
T = TypeVar("T")


def assign(cells: Any, rows: np.ndarray, i: int) -> None:
    """The default writer: ``rows[i] = cells`` (a union row as cells or an array; numpy converts it)."""
    rows[i] = cells


class _Batch(Generic[S, T]):
    """One thread's rows waiting for the call of ``loop``, what was submitted for each, and
    their futures."""

    __slots__ = ("loop", "rows", "score", "items", "waiting", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, joint: JointModel) -> None:
        self.loop = loop
        self.rows = np.zeros((CAPACITY, joint.width), dtype=np.float64)
        self.score: BoundRows = joint.rows_scorer(self.rows)
        self.items: list[S] = []
        self.waiting: list[asyncio.Future[T]] = []
        self.scheduled = False


class TickBatcher(Generic[S, T]):
    """Batches `JointModel` scoring over a few event-loop turns (module docstring). ``submit(item)``
    writes the item's union row with ``write(item, rows, i)`` (default `assign`: the item is the row); its
    answer is ``answer(txn_risk's score, the habit model's score, item)``, the two scores as
    `JointModel.score_one` gives them: ``answer`` (the runtime's calibration and output features)
    runs in the call's loop too, row after row, while what it reads is in the caches."""

    def __init__(self, joint: JointModel, answer: Callable[[float, float, S], T],
                 write: Callable[[S, np.ndarray, int], None] = assign, turns: int = WAIT_TURNS) -> None:
        if turns < 0:
            raise ValueError(f"turns: {turns}, not a number of loop turns")
        self.joint = joint
        self.answer = answer
        self.write = write
        self.turns = turns
        self._local = threading.local()

    def submit(self, item: S) -> asyncio.Future[T]:
        """The future answer of one item, scored ``turns`` loop turns after the batch's first
        item, with the items submitted meanwhile. Must be called from a running event loop. An
        item whose row cannot be written raises here, for this payment alone."""
        loop = asyncio.get_running_loop()
        batch: _Batch[S, T] | None
        try:
            batch = self._local.batch
        except AttributeError:  # this thread's first
            batch = None
        if batch is None or batch.loop is not loop:  # a loop that ended before its call leaves nothing behind
            batch = self._local.batch = _Batch(loop, self.joint)
        n = len(batch.waiting)
        if n == CAPACITY:
            self._score(batch)
            n = 0
        self.write(item, batch.rows, n)
        future: asyncio.Future[T] = loop.create_future()
        batch.waiting.append(future)
        batch.items.append(item)
        if not batch.scheduled:
            batch.scheduled = True
            loop.call_soon(self._flush, batch, self.turns)
        return future

    def _flush(self, batch: _Batch[S, T], turns: int) -> None:
        """Score the batch, or wait one more turn while ``turns`` are left."""
        if turns:
            batch.loop.call_soon(self._flush, batch, turns - 1)
            return
        batch.scheduled = False
        self._score(batch)

    def _score(self, batch: _Batch[S, T]) -> None:
        """One call on the waiting rows; each future gets its row's answer, or the error."""
        waiting, items = batch.waiting, batch.items
        if not waiting:
            return
        batch.waiting, batch.items = [], []
        try:
            risk, habit = batch.score(len(waiting))
            answers = list(map(self.answer, risk, habit, items))
        except Exception as exc:  # ONNX Runtime's errors derive from Exception itself
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, out in zip(waiting, answers):
            if not future.done():  # a cancelled decision
                future.set_result(out)


def alike(joint: JointModel, rows: np.ndarray) -> bool:
    """Whether ``joint`` answers each of ``rows`` in batches of up to `CAPACITY` (bound as
    `TickBatcher` binds them) exactly (bit for bit, NaN as NaN) as alone: what `TickBatcher`
    relies on, checked on an artifact's check rows before it batches (a graph of other operators
    could sum a batch in another order)."""
    one = np.array([joint.score_one(row) for row in rows], dtype=np.float64).reshape(-1, 2)
    buffer = np.zeros((CAPACITY, joint.width), dtype=np.float64)
    score = joint.rows_scorer(buffer)
    for start in range(0, len(rows), CAPACITY):
        chunk = rows[start:start + CAPACITY]
        buffer[:len(chunk)] = chunk
        risk, habit = score(len(chunk))
        if not np.array_equal(np.column_stack([risk, habit]), one[start:start + CAPACITY], equal_nan=True):
            return False
    for i in range(min(len(rows), CAPACITY)):  # and a turn of one payment: a call of one row
        buffer[0] = rows[i]
        if not np.array_equal(np.column_stack(score(1)), one[i:i + 1], equal_nan=True):
            return False
    return True


__all__ = ["CAPACITY", "WAIT_TURNS", "TickBatcher", "alike", "assign"]
