"""The offline twin's merchant kinds: volume and count today and this hour, their 7- and
28-day baselines (medians of the same period), and the top card's share today.

These key on the merchant's business day and hour rather than a sliding window,
so they share an hourly grid instead of the per-entity searches of `offline_kinds`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.features.offline_history import History, argsort_unique
from fengkong.features.offline_kinds import Prior, searchsorted_sorted

# (merchant, day, hour) keys: a multiple of 24, so key // 24 is (merchant, day)
_HOUR_KEY_SPAN = np.int64(24 * 100_000_000)
_BASELINE_DAYS = 28  # the longest baseline looks this many days back


def period_volume(h: History) -> dict[str, np.ndarray]:
    """A merchant's volume and count today and this hour."""
    raw: dict[str, np.ndarray] = {}
    rows, pos, amount = h.rows, h.pos, h.amount
    merchant = h.code("merchant_id")
    occ = np.flatnonzero(h.typ_in(d.PERIOD_VOLUME.events) & (merchant >= 0))
    qq = h.queries("merchant_id")
    day = rows["biz_day"].to_numpy(dtype=np.int64)
    hour = rows["biz_hour"].to_numpy(dtype=np.int64)
    # today and this hour are the merchant's occurrences from the day's (hour's) first bucket on
    prior = Prior(merchant[occ], pos[occ])
    hi = prior.upto(merchant[qq], pos[qq])
    ones = np.ones(len(occ), dtype=np.int64)
    for period, bucket in (("today", day), ("hour", day * 24 + hour)):
        lo = np.minimum(prior.from_bucket(bucket[occ], merchant[qq], bucket[qq]), hi)
        for name, values in ((f"merchant.volume_{period}", amount[occ]), (f"merchant.count_{period}", ones)):
            raw[name] = h.put(h.slots("merchant_id"), prior.sums(values, lo, hi))
    return raw


def baselines(h: History) -> dict[str, np.ndarray]:
    """The merchant's 7- and 28-day medians of the same period's volume (see `d.PeriodVolume`)."""
    raw: dict[str, np.ndarray] = {}
    merchant = h.code("merchant_id")
    occ = np.flatnonzero(h.typ_in(d.PERIOD_VOLUME.events) & (merchant >= 0))
    qq = h.queries("merchant_id")
    day = h.rows["biz_day"].to_numpy(dtype=np.int64)
    hour = h.rows["biz_hour"].to_numpy(dtype=np.int64)
    grid = _HourlyGrid(merchant[occ], day[occ], hour[occ], h.amount[occ])
    # each distinct (merchant, day, hour) asked about: queries come by merchant then
    # time, so their keys already ascend
    big = _HOUR_KEY_SPAN
    q_key = merchant[qq] * big + day[qq] * 24 + hour[qq]
    new_key = np.ones(len(q_key), dtype=bool)
    new_key[1:] = q_key[1:] != q_key[:-1]
    uq, q_at = q_key[new_key], np.cumsum(new_key) - 1
    um, ud, uh = uq // big, (uq % big) // 24, uq % 24
    days_known = ud - grid.first_day(len(h.distinct("merchant_id")))[um]  # negative: no payment yet
    e7, e28 = days_known >= 7, days_known >= 28  # every 28-day key is a 7-day key
    cells7 = grid.cells_back(um[e7], ud[e7], uh[e7], range(1, 8))
    older = grid.cells_back(um[e28], ud[e28], uh[e28], range(8, _BASELINE_DAYS + 1))
    cells28 = np.concatenate((cells7[:, e28[e7]], older))
    for span, eligible, cells in ((7, e7, cells7), (28, e28, cells28)):
        back = np.empty(cells.shape)  # one buffer per span, reused by each table
        for kind, table in grid.tables.items():
            np.take(table, cells, out=back)
            per_key = np.full(len(uq), np.nan)
            per_key[eligible] = _median(back)
            raw[f"merchant.baseline_{kind}_{span}d"] = h.put(h.slots("merchant_id"), per_key[q_at])
    return {name: raw[name] for name in _BASELINE_NAMES}


_BASELINE_NAMES = [
    f"merchant.baseline_{kind}_{span}d"
    for span in (7, 28)
    for kind in ("today", "hour", "count_today")
]


class _HourlyGrid:
    """A merchant's payments by day and hour of day: for each (merchant, day) with payments,
    each hour's volume and the day's running volume and count up to that hour.

    One row of 24 hours per (merchant, day) in key order, then a row of zeros that
    days without payments read.
    """

    def __init__(
        self, merchant: np.ndarray, day: np.ndarray, hour: np.ndarray, amount: np.ndarray
    ) -> None:
        # d0: before every day looked back to
        self.d0 = int(day.min()) - _BASELINE_DAYS - 1 if len(day) else 0
        self.span = np.int64(int(day.max()) - self.d0 + 1 if len(day) else 1)
        self.keys, row = np.unique(merchant * self.span + (day - self.d0), return_inverse=True)
        cells = (len(self.keys) + 1) * 24
        at = row.ravel() * 24 + hour
        # float sums of integer amounts are exact; asarray: bincount of nothing gives int64
        sums = np.bincount(at, weights=amount, minlength=cells)
        volume = np.asarray(sums, dtype=np.float64).reshape(-1, 24)
        count = np.bincount(at, minlength=cells).reshape(-1, 24)
        self.tables = {
            "today": np.cumsum(volume, axis=1).ravel(),
            "hour": volume.ravel(),
            "count_today": np.cumsum(count, axis=1).ravel().astype(np.float64),
        }

    def first_day(self, n_merchants: int) -> np.ndarray:
        """Each merchant's first day with a payment (a day before any other where it has none)."""
        first = np.full(n_merchants, np.iinfo(np.int64).max // 2, dtype=np.int64)
        merchant = self.keys // self.span
        new = np.ones(len(merchant), dtype=bool)
        new[1:] = merchant[1:] != merchant[:-1]
        starts = np.flatnonzero(new)
        first[merchant[starts]] = self.keys[starts] % self.span + self.d0
        return first

    def cells_back(self, m: np.ndarray, dd: np.ndarray, hh: np.ndarray, ks: range) -> np.ndarray:
        """For (merchant, day, hour) keys in key order, the cell of the same hour k days back
        in every table, one row per k of ``ks`` (the zero row where the merchant had no
        payment that day)."""
        cells = np.empty((len(ks), len(m)), dtype=np.int64)
        base = m * self.span + (dd - self.d0)
        last = max(len(self.keys) - 1, 0)
        for row, k in enumerate(ks):
            target = base - k  # still in key order: a sorted search
            j = np.searchsorted(self.keys, target)
            found = self.keys[np.minimum(j, last)] == target if len(self.keys) else j < 0
            np.multiply(np.where(found, j, len(self.keys)), 24, out=cells[row])
            cells[row] += hh
        return cells


def _median(values: np.ndarray) -> np.ndarray:
    """np.median over axis 0 (the mean of the middle two of an even count), by one sort.

    Sorts ``values`` in place: each column keeps its values, so a later median
    over a superset of them is unchanged.
    """
    values.sort(axis=0)
    n = len(values)
    return (values[(n - 1) // 2] + values[n // 2]) / 2


def top_share(h: History) -> dict[str, np.ndarray]:
    """The largest volume today from one card: running per-card totals, then their running
    maximum per (merchant, day)."""
    pos, amount, n = h.pos, h.amount, h.n
    m_day = h.code("merchant_id", "biz_day")
    m_day_card = h.code("merchant_id", "biz_day", "card_fp")
    occ = np.flatnonzero(h.typ_in(d.TOP_SHARE.events) & (m_day >= 0) & (m_day_card >= 0))
    frame = pd.DataFrame({"g": m_day[occ], "gc": m_day_card[occ], "p": pos[occ], "v": amount[occ]})
    frame["card_total"] = frame.groupby("gc")["v"].cumsum()
    frame["running_max"] = frame.groupby("g")["card_total"].cummax()
    keys = frame["g"].to_numpy() * np.int64(n + 2) + frame["p"].to_numpy()
    by_key = argsort_unique(keys)
    frame, keys = frame.iloc[by_key], keys[by_key]
    qq = h.queries("merchant_id", "biz_day")
    i = searchsorted_sorted(keys, m_day[qq] * np.int64(n + 2) + pos[qq], side="left") - 1
    if not len(frame):  # no payment with a card: no card's volume today
        return {"merchant.top_card_volume_today": h.put(h.slots("merchant_id", "biz_day"), np.zeros(len(qq)))}
    ok = (i >= 0) & (frame["g"].to_numpy()[np.maximum(i, 0)] == m_day[qq])
    top = np.where(ok, frame["running_max"].to_numpy()[np.maximum(i, 0)], 0)
    return {"merchant.top_card_volume_today": h.put(h.slots("merchant_id", "biz_day"), top)}


def today_makeup(h: History) -> dict[str, np.ndarray]:
    """Today's make-up of the merchant's payments (`d.TodayMakeup`): each payment's kinds as
    `fengkong.features.makeup.makeup_flags` decides them (the card's and the account's first
    event, and the card's first payment at this merchant, before or at it), then running
    sums per merchant and business day, as `period_volume` sums today's count."""
    mk = d.TODAY_MAKEUP
    rows, pos, ts = h.rows, h.pos, h.ts
    merchant = h.code("merchant_id")
    occ = np.flatnonzero(h.typ_in(mk.events) & (merchant >= 0))
    day = rows["biz_day"].to_numpy(dtype=np.int64)
    within = np.int64(mk.new_within_s * 1_000_000)
    card_first = next(f for f in d.FIRST_SEEN if f.entity == d.CARD)
    user_first = next(f for f in d.FIRST_SEEN if f.entity == d.USER)
    flags = []
    for name, column, events in (("card", d.CARD.column, card_first.events),
                                 ("user", d.USER.column, user_first.events)):
        if h.known_new is not None:
            flags.append(h.known_new[name][occ].astype(np.int64))
            continue
        first = _first_position(h, column, events)[occ]
        present = first >= 0  # the payment has the entity (its own row counts as a first event)
        new = present & ((first >= pos[occ]) | (ts[occ] - ts[np.maximum(first, 0)] < within))
        flags.append(new.astype(np.int64))
    pair_first = _first_position(h, d.MERCHANT_CARD.column, mk.events)[occ]
    returning = (pair_first >= 0) & (pair_first < pos[occ]) & (day[np.maximum(pair_first, 0)] < day[occ])
    flags.append(returning.astype(np.int64))
    qq = h.queries("merchant_id")
    prior = Prior(merchant[occ], pos[occ])
    hi = prior.upto(merchant[qq], pos[qq])
    lo = np.minimum(prior.from_bucket(day[occ], merchant[qq], day[qq]), hi)
    return {name: h.put(h.slots("merchant_id"), prior.sums(values, lo, hi))
            for name, values in zip(mk.counts(), flags)}


def _first_position(h: History, column: str, events: tuple[str, ...]) -> np.ndarray:
    """Per row, the position of the first counted event of these types with the row's value
    of ``column`` (-1 where the row lacks it or no such event has it)."""
    ent = h.code(column)
    occ = np.flatnonzero(h.typ_in(events) & (ent >= 0))
    first = np.full(max(int(ent.max()) + 1 if len(ent) else 0, 1), -1, dtype=np.int64)  # never empty: indexed below
    seen, at = np.unique(ent[occ], return_index=True)  # positions ascend: each entity's first
    first[seen] = h.pos[occ][at]
    return np.where(ent >= 0, first[np.maximum(ent, 0)], -1)
