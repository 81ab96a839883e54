"""The accepted span of an event's ``occurred_at``: configured once per process, and
checked on every event by one subtraction (the event model, `fengkong.events`, asks it).

Its own module because the event contract's module is long enough already; it depends
on nothing of the package."""

from __future__ import annotations

import functools
import os
from datetime import datetime, timedelta, timezone

OCCURRED_AT_MIN_ENV = "FENGKONG_OCCURRED_AT_MIN"
OCCURRED_AT_MAX_ENV = "FENGKONG_OCCURRED_AT_MAX"
DEFAULT_OCCURRED_AT_RANGE = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


@functools.lru_cache(maxsize=1)
def occurred_at_range() -> tuple[datetime, datetime]:
    """The accepted span of ``occurred_at``: [min, max), from ``FENGKONG_OCCURRED_AT_MIN`` /
    ``FENGKONG_OCCURRED_AT_MAX`` (ISO 8601; a date or a time without offset is UTC) or years
    2000 to 2100. Wide enough for replays of old histories, narrow enough that a year-1
    or year-9999 typo is refused instead of landing in (or overflowing) every window."""
    bounds = []
    for env, default in zip((OCCURRED_AT_MIN_ENV, OCCURRED_AT_MAX_ENV), DEFAULT_OCCURRED_AT_RANGE):
        text = os.environ.get(env, "").strip()
        value = datetime.fromisoformat(text) if text else default
        bounds.append(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    if bounds[0] >= bounds[1]:
        raise ValueError(f"{OCCURRED_AT_MIN_ENV} must be before {OCCURRED_AT_MAX_ENV}")
    return bounds[0], bounds[1]


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: `occurred_at_range`'s bounds (the very tuple it returned) and the same as time since `EPOCH`
_span: tuple[tuple[datetime, datetime] | None, tuple[timedelta, timedelta]] = (None, (timedelta(0), timedelta(0)))


def range_since_epoch() -> tuple[timedelta, timedelta]:
    """`occurred_at_range` as time since the epoch: a parsed time is checked against it by
    one exact subtraction (`timedelta`), where comparing it with the two bounds asked each
    time for both sides' UTC offsets."""
    global _span
    bounds = occurred_at_range()
    if _span[0] is not bounds:
        _span = (bounds, (bounds[0] - EPOCH, bounds[1] - EPOCH))
    return _span[1]
