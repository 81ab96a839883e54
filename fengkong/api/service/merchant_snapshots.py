"""Each merchant's snapshot: the ``merchant.*`` features of its latest decision, which GET
/v1/merchants/{id} and the console's merchant page show (`fengkong.api.service.admin`).

Why not a SET with every decision: the snapshot (some sixty features, about 2 kB of JSON)
was picked out of the features, encoded and sent with each decision, for readers that are
people looking at a page. A worker now notes the latest decision of each merchant (the
feature values, not the JSON) and writes the merchants noted in the last `interval_s`
together when it ends: a merchant decided many times a second costs one SET per
interval. A decision notes its features as they are (the mapping the rules read, never
changed after): the ``merchant.*`` ones are picked out only for the snapshot that is
written, not for each decision a newer one replaces. The interval's snapshots are encoded and sent `SLICE` merchants at a time, one
slice per turn of the event loop, so that a worker with thousands of merchants never
holds its decisions behind one long write. What a reader sees: on the worker that decided, the latest decision (`take`
hands the read its pending snapshot, written in the same round trip before the GET); from
another worker, a snapshot up to `interval_s` older than the merchant's latest decision
(its ``features_as_of`` and ``features_event_id`` say which decision it is; with several
workers the latest written had always won, whichever decided last). A worker that stops
loses the snapshots of its last interval; the merchant keeps its snapshot before them.
``interval_s`` 0 writes the snapshot with the decision's own write, as before.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from datetime import datetime
from typing import Any

from fengkong.api.encoding import dumps
from fengkong.api.service.resp import set_ex
from fengkong.features import keys
from fengkong.features.pipelined import ConnectionFailed, Pipelined, ReplyError

log = logging.getLogger(__name__)

#: merchants noted before the interval's write is started at once (bounds the memory held: a
#: noted decision's features mapping each, a few kB)
MAX_PENDING = 4096
#: merchants encoded and sent per turn of the event loop (a slice takes a fraction of a
#: millisecond; the decisions that arrived meanwhile run between two slices)
SLICE = 32

#: (event_id, occurred_at, decision_id, the decision's features: `merchant_values` picks the snapshot's);
#: occurred_at is the event's time, or already its ``isoformat`` text (the decision path's, as received)
Noted = tuple[str, datetime | str, str, dict[str, Any]]


class MerchantSnapshots:
    """The merchant snapshots a worker has still to write (see the module docstring)."""

    def __init__(self, conn: Pipelined, prefix: str, ttl_s: int, interval_s: float) -> None:
        self.conn = conn
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self._pending: dict[str, Noted] = {}
        #: the ended intervals' snapshots not yet sent, oldest first (`_write_slice`)
        self._writing: dict[str, Noted] = {}
        self._slice_scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    def note(self, merchant_id: str, *, event_id: str, occurred_at: datetime | str, decision_id: str,
             features: dict[str, Any]) -> tuple[Any, ...] | bytes | None:
        """Note a decision of the merchant (`features`: the decision's, kept as they are
        until its snapshot is written; the caller never changes them; `occurred_at`: the
        event's time, or its ``isoformat`` text when the caller has it, which the snapshot
        then holds as it is instead of formatting the time again). Returns the SET to
        send with the decision's write when snapshots are not held (``interval_s`` 0), else
        None: the interval's write sends it."""
        noted = (event_id, occurred_at, decision_id, features)
        if self.interval_s <= 0:
            return self.command(merchant_id, noted)
        pending = self._pending
        pending[merchant_id] = noted
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self.flush)
        elif len(pending) >= MAX_PENDING:
            self.flush()
        return None

    def take(self, merchant_id: str) -> tuple[Any, ...] | bytes | None:
        """The SET of the merchant's pending snapshot, no longer pending (the caller sends
        it), or None when none is pending."""
        older = self._writing.pop(merchant_id, None)  # never sent after the newer one
        noted = self._pending.pop(merchant_id, older)
        return None if noted is None else self.command(merchant_id, noted)

    def command(self, merchant_id: str, noted: Noted) -> tuple[Any, ...] | bytes:
        """The SET that stores a noted snapshot (the JSON GET /v1/merchants reads), as RESP
        bytes (`resp.set_ex`; its arguments when the TTL is not an integer)."""
        event_id, occurred_at, decision_id, features = noted
        snap = {"event_id": event_id,
                "occurred_at": occurred_at if isinstance(occurred_at, str) else occurred_at.isoformat(),
                "decision_id": decision_id,
                "features": dict(zip(*merchant_values(features)))}
        key, ttl = keys.merchant_snapshot_key(self.prefix, merchant_id), self.ttl_s
        return set_ex(key, dumps(snap), ttl) if type(ttl) is int else ("SET", key, dumps(snap), "EX", ttl)

    def flush(self) -> None:
        """End the interval: its snapshots join those still to send, which go out a
        `SLICE` at a time from the next turn of the event loop (`_write_slice`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for merchant_id, noted in pending.items():
            self._writing.pop(merchant_id, None)  # the older one is not sent: the newer replaces it
            self._writing[merchant_id] = noted
        if self._writing and not self._slice_scheduled:
            self._slice_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_slice)

    def _write_slice(self) -> None:
        """Send up to `SLICE` of the snapshots still to send in one write, without waiting
        for Redis (a refusal or a lost connection is logged: the merchant's next decision
        writes it again), and come back on the next turn while any are left."""
        self._slice_scheduled = False
        writing = self._writing
        merchants = [merchant_id for merchant_id, _ in zip(writing, range(SLICE))]
        if not merchants:
            return
        commands = [self.command(merchant_id, writing.pop(merchant_id)) for merchant_id in merchants]
        if writing:
            self._slice_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_slice)
        try:
            self.conn.send_nowait(commands).add_done_callback(_written)
        except (ConnectionFailed, OSError) as exc:
            log.warning("%d merchant snapshots not written: %s", len(commands), type(exc).__name__)

    def close(self) -> None:
        """Drop the snapshots not yet sent and the interval's timer (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._writing.clear()


#: (count of features, last feature's name) -> their merchant.* names, and a getter of their values
_MERCHANT_GETTERS: dict[tuple[int, str], tuple[tuple[str, ...], Any]] = {}


def merchant_values(features: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The merchant.* features' names, in the features' order, and their values (a snapshot's
    ``features``). The store gives the same keys in the same order for every event of a kind,
    so the names are found once per shape of the features (their count and last name: cheaper
    to tell than hashing every name) and read with one ``itemgetter``; a name the cached
    getter misses finds them again."""
    shape = (len(features), next(reversed(features), ""))
    cached = _MERCHANT_GETTERS.get(shape)
    if cached is not None:
        try:
            return cached[0], cached[1](features)
        except KeyError:
            pass
    names = tuple(n for n in features if n.startswith("merchant."))
    if len(_MERCHANT_GETTERS) >= 64:
        _MERCHANT_GETTERS.clear()
    getter = _getter(names)
    _MERCHANT_GETTERS[shape] = (names, getter)
    return names, getter(features)


def _getter(names: tuple[str, ...]) -> Any:
    """A getter of `names`' values as a tuple (also for zero or one name, unlike a bare ``itemgetter``)."""
    if len(names) == 1:
        one = names[0]
        return lambda mapping: (mapping[one],)
    return operator.itemgetter(*names) if names else (lambda mapping: ())


def _written(batch: "asyncio.Future[list[Any]]") -> None:
    if batch.cancelled():
        return
    exc = batch.exception()
    refused = [r for r in batch.result() if isinstance(r, ReplyError)] if exc is None else []
    if exc is not None or refused:
        log.warning("merchant snapshots not written: %s", type(exc).__name__ if exc is not None else refused[0])

