"""Features that need more past than the store holds: ages, "first seen", "new device".

A store started on an export (or a service on an empty Redis) calls every entity of
the first day new: its age is the time since the history began, not since the card
or customer appeared, so a model learns "recent means legitimate". With a history
start, each of these features is missing (not small) on events less than its window
after that start: the window over which the store would have remembered the entity
(`FirstSeen.ttl`, `SeenBefore.horizon`, `MemberFirstSeen.horizon`). Once the history
is older than the window the store's answer is the one a mature store gives.

The online store (`assemble.derive`) and the offline twin (`offline_frame.assemble_frame`)
both call this module, before the merchant's onboarding date (a profile fact, not
history) overwrites ``merchant.age_days``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fengkong.features import definitions as d

_US = 1_000_000


def _windows() -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for fs in d.FIRST_SEEN:
        out += [(name, fs.ttl.seconds * _US) for name in fs.outputs()]
    for s in d.SEEN:
        out += [(name, s.horizon.seconds * _US) for name in s.outputs()]
    for mf in d.MEMBER_FIRST_SEEN:
        out += [(name, mf.horizon.seconds * _US) for name in mf.outputs()]
    ages = dict(out)
    out += [("card.days_since_first_seen", ages["card.age_days"]),
            ("user.account_age_days", ages["user.age_days"]),
            ("user.country_mismatch_usual", ages["user.is_new_country"])]
    return tuple(out)


#: (feature, window in microseconds): missing on events less than the window after the history start
YOUNG_FEATURES: tuple[tuple[str, int], ...] = _windows()


def censor(f: dict[str, Any], ts_us: int, start_us: int | None) -> None:
    """Blank, in one event's features ``f``, those whose window the history (begun at
    ``start_us``; None: no known start, nothing blanked) has not yet covered at ``ts_us``."""
    if start_us is None:
        return
    age = ts_us - start_us
    for name, window in YOUNG_FEATURES:
        if age < window:
            f[name] = None


def censor_columns(f: dict[str, Any], ts_us: np.ndarray, start_us: int | None) -> None:
    """`censor` column by column (the offline twin): float columns get NaN, others None."""
    if start_us is None:
        return
    age = np.asarray(ts_us, dtype=np.int64) - start_us
    for name, window in YOUNG_FEATURES:
        young = age < window
        if not young.any():
            continue
        values = np.asarray(f[name])
        if values.dtype.kind == "f":
            f[name] = np.where(young, np.nan, values)
        else:
            out = np.asarray(values, dtype=object).copy()
            out[young] = None
            f[name] = pd.Series(out, dtype=object, copy=False)


def start_us_of(occurred_at: pd.Series) -> int | None:
    """The history start a store should assume: the earliest ``occurred_at`` (ISO 8601 text
    or timestamps) in microseconds since the epoch; None for an empty history."""
    if len(occurred_at) == 0:
        return None
    t = pd.to_datetime(occurred_at.astype(str), utc=True, format="ISO8601").min()
    return int(t.value // 1000)


#: `history_start_for`'s words: the first event of the history, or no known start
HISTORY_START_WORDS = ("first", "none")


def history_start_for(value: str | None, occurred_at: pd.Series, *, mapped: bool) -> int | None:
    """The history start of a replay or a training run, in microseconds (None: no start).

    ``value``: ``first`` (the history's first event: nothing before it is known, as in a
    bank's export), ``none`` (the history holds each entity's whole past, as a simulated
    one whose population starts with it), or an ISO 8601 time (a date is its midnight at
    UTC+08:00). None picks ``first`` for a history read through a mapping (``mapped``: an
    export), else ``none``. ValueError naming ``--history-start`` for anything else."""
    word = (value or ("first" if mapped else "none")).strip()
    if word == "first":
        return start_us_of(occurred_at)
    if word == "none":
        return None
    try:
        t = pd.Timestamp(word)
    except ValueError:
        raise ValueError(f"--history-start: {value!r} is not first, none or an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.tz_localize(f"UTC{'+' if d.DEFAULT_BUSINESS_UTC_OFFSET_MIN >= 0 else '-'}"
                          f"{abs(d.DEFAULT_BUSINESS_UTC_OFFSET_MIN) // 60:02d}:00")
    return int(t.value // 1000)


__all__ = ["HISTORY_START_WORDS", "YOUNG_FEATURES", "censor", "censor_columns", "history_start_for", "start_us_of"]
