"""The background consumer that turns queued decisions into cases, in each service worker.

Every worker runs one (`Consumer.start`: a daemon thread, since each step blocks, on a
Redis read that waits for items and then on SQL) in the consumer group ``cases`` of the
intake stream, so each queued item is filed once, whichever worker reads it. An item is
acknowledged (``XACK``) and deleted (``XDEL``: the stream is never trimmed by length, so
it must not keep what is filed) only after its case is committed: a worker that dies between
the two leaves the item pending, and another worker (or this one after a restart) takes
it over with ``XAUTOCLAIM`` once it has been idle for ``claim_idle_ms`` (items a database
fault left pending, the same consumer reads again at once). Filing is
idempotent by decision id, so an item filed twice (committed, then the worker died
before the ack) changes nothing the second time. The group is created reading the stream
from its start, so items queued before any worker ran are filed too.

A batch read at once is filed in one transaction with a few statements for all its items
(`fengkong.cases.filing`); after a batch that was not full the consumer lingers
``linger_s`` so that, under load, items are filed many at a time (a batch costs far
less per item than one item alone), and after a full one it reads twice as many next
time, up to ``max_batch``, so that a backlog is worked off in fewer, larger transactions.
A consumer given a ``gate`` (the catch-up consumer, `fengkong.cases.lag`) files only
while the gate is open. The cases a batch opened are told to the desk's
publisher (``case.opened``, the webhooks) in one call after the commit. A database fault
(unreachable, locked past the busy timeout) leaves the items pending and the consumer
waits ``retry_s`` before trying again; an item that cannot be filed for any other reason
(it is malformed) is logged, acknowledged and counted in ``dropped`` (the batch is then
filed item by item), so it cannot stop the queue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any, Callable

import redis
from sqlalchemy.exc import InterfaceError, OperationalError

from fengkong.cases import hooks
from fengkong.cases.filing import file_items
from fengkong.cases.models import CaseRow
from fengkong.cases.service import Desk, summary

log = logging.getLogger(__name__)

GROUP = "cases"
#: Faults that mean the database is away (not that the item is bad): the item waits.
DB_AWAY = (OperationalError, InterfaceError)


class Consumer:
    """Reads the intake stream in the ``cases`` group and files each item (see the module doc)."""

    def __init__(self, client: redis.Redis, desk: Desk, *, stream: str, name: str | None = None,
                 block_ms: int = 250, batch: int = 100, max_batch: int = 800, claim_idle_ms: int = 30_000,
                 retry_s: float = 1.0, linger_s: float = 1.0, tick: Callable[[], None] | None = None,
                 gate: Callable[[], bool] | None = None) -> None:
        self.client = client
        self.desk = desk
        self.stream = stream
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.block_ms = block_ms
        self.batch = batch
        self.max_batch = max(batch, max_batch)
        #: the next read's size: `batch`, doubled after each full read up to `max_batch`
        self.count = batch
        self.claim_idle_ms = claim_idle_ms
        self.retry_s = retry_s
        self.linger_s = linger_s
        self.tick = tick
        #: None: file whatever is queued; else file only while it answers True (the
        #: catch-up consumer's `fengkong.cases.lag.LagGate`)
        self.gate = gate
        self.filed = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group_ready = False
        self._own_pending = True
        self._full = False

    def ensure_group(self) -> bool:
        """Create the consumer group (reading from the stream's start) unless it exists;
        False while nothing was ever queued (the stream is created by its first item, so a
        service that opened no case leaves no key behind)."""
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0")
        except redis.ResponseError as exc:
            if "requires the key to exist" in str(exc):
                return False
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True
        return True

    def step(self, block_ms: int | None = None) -> int:
        """Take over idle pending items, read new ones (waiting up to ``block_ms``), file
        them; returns how many were acknowledged."""
        block = self.block_ms if block_ms is None else block_ms
        if not self._group_ready and not self.ensure_group():
            self._stop.wait(block / 1000)
            return 0
        count = self.count
        reply: Any = self.client.xautoclaim(self.stream, GROUP, self.name, self.claim_idle_ms, start_id="0-0",
                                            count=count)
        entries = [e for e in reply[1] if e and e[1] is not None]
        if not entries and self._own_pending:  # this consumer's items left pending by a fault
            got: Any = self.client.xreadgroup(GROUP, self.name, {self.stream: "0"}, count=count)
            entries = [e for _, stream_entries in got or () for e in stream_entries if e[1]]
            self._own_pending = bool(entries)
        if not entries:
            got = self.client.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=count, block=block or None)
            entries = [e for _, stream_entries in got or () for e in stream_entries]
        # a full read means a backlog: read more at once (fewer statements and commits per item)
        self._full = len(entries) >= count
        self.count = min(count * 2, self.max_batch) if self._full else self.batch
        done = self._file_batch(entries)
        if done:  # acknowledged and deleted: the stream holds only what is still to file
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, *done)
                pipe.xdel(self.stream, *done)
                pipe.execute()
        return len(done)

    def _parse(self, fields: dict[Any, Any]) -> dict[str, Any] | None:
        try:
            item = json.loads(fields.get(b"item") or fields.get("item") or b"")
        except (ValueError, TypeError):
            item = None
        if not isinstance(item, dict):
            log.error("case intake: an item that is not a JSON object was dropped")
            self.dropped += 1
            return None
        return item

    def _file_batch(self, entries: list[Any]) -> list[Any]:
        """File a batch in one transaction, a few statements for all its items
        (`fengkong.cases.filing`); the ids to acknowledge. The database away: none (they
        stay pending). An item that cannot be filed: the batch is filed item by item, so
        that only it is dropped."""
        items = [self._parse(fields) for _, fields in entries]
        try:
            with self.desk.sessions() as session, session.begin():
                filing = file_items(session.connection(), [item for item in items if item], self.desk.config)
        except DB_AWAY as exc:
            self._away(exc)
            return []
        except Exception:
            return self._file_each(entries, items)
        self.filed += sum(1 for item in items if item)
        self._tell(filing.opened)
        return [entry_id for entry_id, _ in entries]

    def _file_each(self, entries: list[Any], items: list[dict[str, Any] | None]) -> list[Any]:
        done = []
        for (entry_id, _), item in zip(entries, items):
            if item is None or self._file(item):
                done.append(entry_id)
            else:
                break  # the database is away: leave this and the rest pending
        return done

    def _file(self, item: dict[str, Any]) -> bool:
        """File one item; False only when the database is away (the item stays pending)."""
        try:
            with self.desk.sessions() as session, session.begin():
                filing = file_items(session.connection(), [item], self.desk.config)
        except DB_AWAY as exc:
            self._away(exc)
            return False
        except Exception:
            log.exception("case intake: item of decision %s dropped", item.get("decision_id"))
            self.dropped += 1
            return True
        self.filed += 1
        self._tell(filing.opened)
        return True

    def _away(self, exc: Exception) -> None:
        log.warning("case intake: database unavailable (%s); retrying", type(exc).__name__)
        self._own_pending = True
        self._stop.wait(self.retry_s)

    def _tell(self, opened: list[CaseRow]) -> None:
        """``case.opened`` for the cases a batch opened, in one call (after the commit)."""
        if opened and self.desk.publish is not None:
            hooks.tell(self.desk.publish, [("case.opened", summary(case, self.desk.config)) for case in opened])

    def run(self) -> None:
        """Step until stopped; Redis faults are logged and retried after ``retry_s``."""
        while not self._stop.is_set():
            try:
                if self.gate is not None and not self.gate():  # under the bound: the idle consumer files
                    self._stop.wait(self.block_ms / 1000)
                elif 0 < self.step() and not self._full:  # not full: let the next items gather
                    self._stop.wait(self.linger_s)
                if self.tick is not None:
                    self.tick()
            except (redis.RedisError, OSError) as exc:
                log.warning("case intake: Redis unavailable (%s); retrying", type(exc).__name__)
                self._group_ready = False
                self._stop.wait(self.retry_s)
            except Exception:  # keep consuming whatever happens
                log.exception("case intake step failed")
                self._stop.wait(self.retry_s)

    def start(self) -> "Consumer":
        """Run in a daemon thread (see the module doc for why a thread)."""
        self._thread = threading.Thread(target=self.run, name="fengkong-cases-consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the current step (its Redis wait ends within ``block_ms``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
