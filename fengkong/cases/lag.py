"""How far filing is behind the decisions, and the bound that calls in a catch-up consumer.

The intake stream holds only what is still to file (the consumer deletes each item once
its case is committed), so its length is the backlog and its first entry is the oldest
unfiled review; a stream entry's id starts with the Redis clock's milliseconds when it was
queued, so that entry's age is the filing lag, read on Redis' own clock (``TIME``).

`fengkong serve` files at idle priority (`fengkong.cli.case_process`): with the cores
saturated by decisions, nothing is filed and the backlog grows. `LagGate` is what bounds
it: a second consumer, at normal (nice 10) priority, files only while the gate is open:
from when the oldest item is older than ``max_lag_s`` or the backlog is longer than
``max_backlog``, until both are back under half of that (so it does not flap).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backlog:
    """The unfiled items: how many, and how long the oldest has waited (None: none)."""

    length: int
    oldest_age_s: float | None


def _entry_ms(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


def read_backlog(client: redis.Redis, stream: str) -> Backlog:
    """The stream's backlog now (``XINFO STREAM`` and ``TIME``: two round trips)."""
    try:
        info: Any = client.xinfo_stream(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():  # nothing was ever queued
            return Backlog(0, None)
        raise
    first = info.get("first-entry")
    if not first:
        return Backlog(int(info["length"]), None)
    seconds, micros = client.time()
    age_ms = seconds * 1000 + micros // 1000 - _entry_ms(first[0])
    return Backlog(int(info["length"]), max(age_ms, 0) / 1000)


class LagGate:
    """Whether the catch-up consumer should file now (see the module doc); reads the
    backlog at most every ``every_s`` and keeps the answer in between."""

    def __init__(self, client: redis.Redis, stream: str, *, max_lag_s: float, max_backlog: int,
                 every_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if max_lag_s <= 0:
            raise ValueError("max_lag_s: expected a positive number of seconds")
        if max_backlog <= 0:
            raise ValueError("max_backlog: expected a positive number of items")
        self.client = client
        self.stream = stream
        self.max_lag_s = max_lag_s
        self.max_backlog = max_backlog
        self.every_s = every_s
        self.clock = clock
        self.is_open = False
        #: how many times the gate opened (each time filing fell behind the bound)
        self.openings = 0
        self._checked: float | None = None

    def over(self, backlog: Backlog) -> bool:
        """The backlog is past the bound: the gate opens."""
        return backlog.length > self.max_backlog or (backlog.oldest_age_s or 0) > self.max_lag_s

    def caught_up(self, backlog: Backlog) -> bool:
        """The backlog is back under half the bound on both counts: the gate closes."""
        return backlog.length <= self.max_backlog / 2 and (backlog.oldest_age_s or 0) <= self.max_lag_s / 2

    def __call__(self) -> bool:
        now = self.clock()
        if self._checked is not None and now - self._checked < self.every_s:
            return self.is_open
        self._checked = now
        backlog = read_backlog(self.client, self.stream)
        if not self.is_open and self.over(backlog):
            self.is_open = True
            self.openings += 1
            log.warning("case filing is behind its bound (%d unfiled, the oldest %.1f s old; bound %d items or "
                        "%.0f s): the catch-up consumer files until half of it", backlog.length,
                        backlog.oldest_age_s or 0, self.max_backlog, self.max_lag_s)
        elif self.is_open and self.caught_up(backlog):
            self.is_open = False
            log.info("case filing caught up (%d unfiled); the catch-up consumer waits", backlog.length)
        return self.is_open
