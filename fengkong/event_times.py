"""The accepted span of an event's ``occurred_at``: configured once per process, and
checked on every event by one subtraction (the event model, `fengkong.events`, asks it).

Its own module because the event contract's module is long enough already; it depends
on nothing of the package."""

from __future__ import annotations

import functools
import os
from datetime import datetime, timedelta, timezone

from pydantic_core import TzInfo

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


#: `occurred_at_range`'s bounds (the very tuple) and `years_inside` of them
_years: tuple[tuple[datetime, datetime] | None, tuple[int, int]] = (None, (0, -1))


def years_inside() -> tuple[int, int]:
    """The first and the last year whose every time, at any UTC offset, is inside
    `occurred_at_range` (offsets are under a day: the bounds' years plus and minus 2): a time
    of such a year with a fixed offset is in range without a subtraction."""
    global _years
    bounds = occurred_at_range()
    if _years[0] is not bounds:
        _years = (bounds, (bounds[0].year + 2, bounds[1].year - 2))
    return _years[1]


#: tzinfo types whose ``utcoffset`` is a fixed offset, never None (the parser's and the standard library's)
FIXED_OFFSETS = frozenset({TzInfo, timezone})
#: the datetime `iso_text` formatted last (held, so its identity cannot be reused) and its text
_last_iso: tuple[datetime | None, str] = (None, "")


def iso_text(at: datetime) -> str:
    """``at.isoformat()``, remembered for the last datetime object asked about: the
    decision path may format its event's ``occurred_at`` more than once (a review's case
    item, for one), and the C formatter is not cheap. Identity, not equality,
    decides (two equal times at different offsets have different texts)."""
    global _last_iso
    last = _last_iso
    if last[0] is at:
        return last[1]
    text = at.isoformat()
    _last_iso = (at, text)
    return text
