"""The offline twin: for every event of a history, the features the online store
would have returned when that event arrived.

Models are trained and rule changes backtested on these, so they must hold no
future: every value is computed from the events before the row in event-time
order, with the same windows as `lua/update_read.lua` (see `definitions.py`). A
test streams a generated history through the real Redis store and holds every
feature equal to this.

The work is vectorised: each feature reduces to "sum (or count distinct) over the
same entity's earlier occurrences inside a window", which sorted composite keys
and `numpy.searchsorted` answer for all rows at once, in O(n log n).

It runs as many small tasks (`_TASKS`) on two threads, sharing the entity codes
and query orders of `_History`, each computed once by the first task that needs
it; every task writes its features straight into output order (see
`offline_frame.Layout`), so no column is gathered a second time.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import ListSpec, StaticLists
from fengkong.features.offline_frame import Layout, assemble_frame, event_columns, merchant_table
from fengkong.features.rows import frame_rows

_DECISION_TYPES = ("payment", "signup", "login", "card_bind")
_NUM, _DEN = d.NEAR_LIMIT_FRACTION
# (merchant, day, hour) keys: a multiple of 24, so key // 24 is (merchant, day)
_HOUR_KEY_SPAN = np.int64(24 * 100_000_000)
_BASELINE_DAYS = 28  # the longest baseline looks this many days back


def _by_entity(q: np.ndarray, ent: np.ndarray) -> np.ndarray:
    """The query positions whose entity is present, ordered by (entity, position).

    Every later lookup keys on (entity, position) or (entity, bucket), so queries
    in this order are already sorted for `np.searchsorted`, which then walks the
    keys in order instead of jumping around a large array.
    """
    qq = q[ent[q] >= 0]
    return qq[_argsort_unique(ent[qq] * np.int64(len(ent) + 1) + qq)]


def _argsort_unique(keys: np.ndarray) -> np.ndarray:
    """argsort of keys that are all distinct, so no sort needs to be stable.

    Every (entity, position) key is distinct, and numpy's default sort on int64 is
    several times faster than its stable one, which only matters for ties.
    """
    return np.argsort(keys)


def _searchsorted(keys: np.ndarray, queries: np.ndarray, side: str = "left") -> np.ndarray:
    """np.searchsorted, with the queries sorted first: sorted queries walk the keys
    in order (cache-friendly), unsorted ones jump around a large array."""
    if len(queries) < 4096:
        return np.searchsorted(keys, queries, side=side)  # type: ignore[call-overload]
    order = np.argsort(queries)  # equal queries get equal answers: ties may land in any order
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(keys, queries[order], side=side)  # type: ignore[call-overload]
    return out


def _factorize(col: Any) -> tuple[np.ndarray, Any]:
    """(int64 code per row, distinct values); -1 where missing. Integers code as themselves
    less their minimum (never missing, no distinct values kept)."""
    if col.dtype.kind in "iu":
        c = np.asarray(col, dtype=np.int64)
        return (c - c.min() if len(c) else c), None
    if isinstance(col.dtype, pd.CategoricalDtype):  # already coded (frame_rows' IP columns)
        return col.cat.codes.to_numpy().astype(np.int64), col.cat.categories
    c, values = pd.factorize(col, use_na_sentinel=True)
    return c.astype(np.int64), values


def _codes(*cols: Any) -> np.ndarray:
    """One int64 code per distinct tuple of the columns; -1 where any is missing."""
    return _combine([_factorize(col)[0] for col in cols])


def _combine(parts: list[np.ndarray]) -> np.ndarray:
    """One code per distinct tuple of per-column codes; -1 where any is -1."""
    missing = np.zeros(len(parts[0]), dtype=bool)
    for p in parts:
        missing |= p < 0
    code = parts[0].copy()
    for p in parts[1:]:
        code = code * (int(p.max()) + 2 if len(p) else 1) + p
    if len(parts) > 1:
        code = pd.factorize(code)[0].astype(np.int64)
    code[missing] = -1
    return code


class _Prior:
    """Sums over an entity's earlier occurrences, optionally from a bucket on.

    Occurrences are rows (by position in event-time order) that carry values;
    queries ask, for a position, the sum of the values of the same entity's
    occurrences strictly before it (and, with a lower bucket, at or after it).
    Occurrences are ordered by their distinct (entity, position) keys; queries
    come ordered by (entity, position) (see `_by_entity`).
    """

    def __init__(self, ent: np.ndarray, pos: np.ndarray) -> None:
        self.m = np.int64(int(pos.max()) + 2 if len(pos) else 2)
        key = ent * self.m + pos
        self.order = _argsort_unique(key)
        self.ent = ent[self.order]
        self.key_pos = key[self.order]

    def upto(self, q_ent: np.ndarray, q_pos: np.ndarray) -> np.ndarray:
        """Index (in entity order) just past the query's earlier occurrences."""
        return np.searchsorted(self.key_pos, q_ent * self.m + q_pos, side="left")

    def start(self, q_ent: np.ndarray) -> np.ndarray:
        """Index of the entity's first occurrence."""
        return np.searchsorted(self.key_pos, q_ent * self.m, side="left")

    def from_bucket(self, bucket: np.ndarray, q_ent: np.ndarray, q_lo: np.ndarray) -> np.ndarray:
        """Index of the entity's first occurrence at or after bucket ``q_lo`` (``bucket`` per occurrence)."""
        b = bucket[self.order]
        bmin = int(b.min()) if len(b) else 0
        span = np.int64(int(b.max()) - bmin + 2 if len(b) else 2)
        keys = self.ent * span + (b - bmin)
        return np.searchsorted(keys, q_ent * span + np.clip(q_lo - bmin, 0, int(span) - 1), side="left")

    def timed(self, seconds: np.ndarray) -> None:
        """Key the occurrences by (entity, second) too (``seconds`` in occurrence order)."""
        self._t0 = int(seconds.min()) if len(seconds) else 0
        self._t_span = np.int64(int(seconds.max()) - self._t0 + 2 if len(seconds) else 2)
        self._key_time = self.ent * self._t_span + (seconds - self._t0)

    def time_base(self, q_ent: np.ndarray) -> np.ndarray:
        """The queries' part of their (entity, second) keys, for `from_time`."""
        return q_ent * self._t_span - self._t0

    def from_time(self, q_base: np.ndarray, q_from: np.ndarray) -> np.ndarray:
        """Index of the entity's first occurrence at or after second ``q_from`` (after `timed`;
        ``q_base`` from `time_base`; ``q_from`` is overwritten).

        One (entity, second) key serves every window: a window of whole-second
        buckets starts at a whole second, so "bucket >= the first bucket" is
        "time >= the first bucket's start" and seconds are exact enough.
        """
        np.clip(q_from, self._t0, self._t0 + int(self._t_span) - 1, out=q_from)
        q_from += q_base
        return np.searchsorted(self._key_time, q_from, side="left")

    def index(self, q_ent: np.ndarray, q_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.start(q_ent), self.upto(q_ent, q_pos)

    def sums(self, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        cum = np.concatenate(([0], np.cumsum(values[self.order])))
        return cum[hi] - cum[lo]


class _Occurrences:
    """(entity, member) occurrences ordered by pair then position: sorted once, then
    cut into coverage runs for each window.

    An occurrence at position p (time t) is counted by every later query q whose
    window starts at or before t: q in (p, e] with e = ``last_covered[p]``, the
    last position whose window start <= t. Overlapping coverages of the same member
    merge into runs; the distinct count at q is the number of the entity's runs
    covering q.
    """

    def __init__(self, ent: np.ndarray, member: np.ndarray, pos: np.ndarray) -> None:
        pair = _codes(ent, member)
        order = _argsort_unique(pair * np.int64(int(pos.max()) + 1 if len(pos) else 1) + pos)
        self.pair, self.pos, self.ent, self.member = pair[order], pos[order], ent[order], member[order]
        self.same_pair = self.pair[1:] == self.pair[:-1]

    def runs(self, last_covered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(entity, start position, end position, member) of each run."""
        e = last_covered[self.pos]
        new_run = np.ones(len(self.pos), dtype=bool)
        if len(self.pos) > 1:
            new_run[1:] = ~self.same_pair | (self.pos[1:] > e[:-1])
        first_idx = np.flatnonzero(new_run)
        last_idx = np.concatenate((first_idx[1:] - 1, [len(self.pos) - 1])) if len(first_idx) else first_idx
        return self.ent[first_idx], self.pos[first_idx], e[last_idx], self.member[first_idx]


def _covering(
    run_ent: np.ndarray, run_start: np.ndarray, run_end: np.ndarray, q: np.ndarray, m: int
) -> np.ndarray:
    """How many runs of the query's entity cover its position (start < q <= end).

    Each run adds +1 from position start+1 and -1 from end+1 of its own entity, so
    the count is the number of the entity's run starts at or before the query less
    its run ends; keyed by (entity, position), other entities never leak in. ``q``: the
    queries' keys, entity * m + position (`_History.query_keys`).
    """
    starts = run_ent * m
    ends = starts + run_end
    starts += run_start
    starts += 1
    ends += 1
    starts.sort()
    ends.sort()
    return np.searchsorted(starts, q, side="right") - np.searchsorted(ends, q, side="right")


def _window_start_s(ts_s: np.ndarray, w: d.Window) -> np.ndarray:
    """Start (epoch seconds) of the window that ends in the bucket holding each time."""
    start = ts_s // w.resolution
    start -= w.buckets - 1
    start *= w.resolution
    return start


def _window_start(ts_us: np.ndarray, w: d.Window) -> np.ndarray:
    res = w.resolution * 1_000_000
    return (ts_us // res - w.buckets + 1) * res


def offline_features(
    events: pd.DataFrame,
    *,
    ipintel: IpIntel,
    lists: dict[str, ListSpec] | None = None,
    list_entries: Mapping[str, Iterable[str]] | None = None,
    profiles: pd.DataFrame | None = None,
    grade_limits: Mapping[str, int] | None = None,
    default_limit: int | None = None,
    business_utc_offset_min: int = d.DEFAULT_BUSINESS_UTC_OFFSET_MIN,
) -> pd.DataFrame:
    """Features of every row of a flat-event DataFrame, as the online store gives them.

    ``profiles`` (merchant_id, grade, single_limit, daily_cap, onboarded_at, anomaly) and
    ``list_entries`` are taken as static for the whole history. Rows may come in
    any order; a repeated event_id gets the features of its first delivery and
    counts once. The result holds the decision events (payment, signup, login,
    card_bind) in the input's order and with its index; outcome rows (refund,
    chargeback, ...) count but get no row, as they get no decision online.
    The ~130 columns are kept as computed, not consolidated (that would copy the
    whole frame): join new columns with ``pd.concat(axis=1)`` rather than inserting
    them one by one, or ``.copy()`` the frame first.
    """
    grade_limits = dict(grade_limits or d.DEFAULT_GRADE_LIMITS)
    if default_limit is None:
        default_limit = grade_limits.get(d.DEFAULT_GRADE, 500_000)
    h, original_index = _history(frame_rows(events, ipintel, business_utc_offset_min))
    order = h.order
    merchants = merchant_table(h.distinct("merchant_id"), profiles, grade_limits, default_limit)
    limit = merchants["limit"].to_numpy()[h.code("merchant_id")]
    h.rows["near_limit"] = h.type_mask(("payment",)) & (h.amount * _DEN >= limit * _NUM) & (h.amount <= limit)
    lists = lists or {}
    event_task = partial(event_columns, lay=h.out, merchants=merchants, lists=lists,
                         entries=StaticLists(lists, list_entries))
    raw, event = _run_tasks(h, event_task)
    h.forget()  # the assembly below can reuse the memory of the shared codes and orders
    for values in raw.values():
        h.out.fill_repeats(values)
    features = assemble_frame(h, raw, event, h.out, lists)
    features.index = original_index[order[h.out.sel]]
    return features


def _history(rows: pd.DataFrame) -> tuple[_History, pd.Index]:
    """The rows in event-time order (as given when already so: no copy), and their index."""
    order = np.argsort(rows["ts_us"].to_numpy(), kind="stable")
    in_order = bool(np.array_equal(order, np.arange(len(order))))
    ordered = rows if in_order else rows.iloc[order]
    return _History(ordered.reset_index(drop=True), order), rows.index


class _History:
    """The event rows in event-time order, and what every feature kind shares:
    entity codes, decision rows ordered by entity, type masks, window coverage,
    and the output layout the kinds write into (``out``, see `Layout`).

    The shared values are computed on first use by whichever task asks first, once
    (a lock per value), so that their cost is spread over both threads too.
    """

    def __init__(self, rows: pd.DataFrame, order: np.ndarray) -> None:
        self.rows = rows
        self.order = order  # input position of each row
        self.n = len(rows)
        self.pos = np.arange(self.n, dtype=np.int64)
        self.key_span = np.int64(self.n + 2)  # (entity, position) key: entity * key_span + position
        self.ts = rows["ts_us"].to_numpy(dtype=np.int64)
        self.ts_s = self.ts // 1_000_000
        self.amount = rows["amount"].to_numpy(dtype=np.int64)
        self.dup = rows["event_id"].duplicated(keep="first").to_numpy()
        self.live = ~self.dup
        self.type_code, names = pd.factorize(rows["type"])
        self._type_index = {name: i for i, name in enumerate(names)}
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._guard = threading.Lock()
        self.q = np.flatnonzero(self.typ_in(_DECISION_TYPES))
        self.out = Layout(order, self.type_mask(_DECISION_TYPES), self.dup, rows["event_id"])

    def _memo(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            with self._guard:
                lock = self._locks.setdefault(key, threading.Lock())
            with lock:
                if key not in self._cache:
                    self._cache[key] = compute()
        return self._cache[key]

    def forget(self) -> None:
        """Drop the shared codes and orders (once every task is done)."""
        self._cache.clear()

    def type_table(self, events: Iterable[str]) -> np.ndarray:
        """Whether each type code is one of these events."""
        wanted = np.zeros(len(self._type_index) + 1, dtype=bool)
        for t in events:
            if t in self._type_index:
                wanted[self._type_index[t]] = True
        return wanted

    def type_mask(self, events: Iterable[str], at: np.ndarray | None = None) -> np.ndarray:
        return self.type_table(events)[self.type_code if at is None else self.type_code[at]]

    def typ_in(self, events: Iterable[str]) -> np.ndarray:
        """Rows of these types that count (a repeated event_id counts once)."""
        key = frozenset(events)
        return self._memo(("types", key), lambda: self.type_mask(key) & self.live)

    def code(self, *cols: str) -> np.ndarray:
        if len(cols) == 1:
            return self._factorized(cols[0])[0]
        return self._memo(("code", *cols), lambda: _combine([self.code(c) for c in cols]))

    def distinct(self, col: str) -> Any:
        """The distinct values of a column, in the order of its codes (first appearance)."""
        return self._factorized(col)[1]

    def _factorized(self, col: str) -> tuple[np.ndarray, Any]:
        return self._memo(("code", col), lambda: _factorize(self.rows[col]))

    def queries(self, *cols: str) -> np.ndarray:
        """Decision rows whose entity (these columns) is present, ordered by (entity, position)."""
        return self._memo(("queries", *cols), lambda: _by_entity(self.q, self.code(*cols)))

    def slots(self, *cols: str) -> np.ndarray:
        """The output rows of `queries`."""
        return self._memo(("slots", *cols), lambda: self.out.slot[self.queries(*cols)])

    def query_codes(self, *cols: str) -> np.ndarray:
        """The entity code of each of `queries`."""
        return self._memo(("query codes", *cols), lambda: self.code(*cols)[self.queries(*cols)])

    def query_keys(self, *cols: str) -> np.ndarray:
        """(entity, position) keys of `queries`: entity * `key_span` + position, ascending."""
        def keys() -> np.ndarray:
            return self.query_codes(*cols) * self.key_span + self.queries(*cols)

        return self._memo(("query keys", *cols), keys)

    def last_covered(self, w: d.Window) -> np.ndarray:
        """For each position p, the last position whose window (w) starts at or before ts[p]."""
        return self._memo(
            ("covered", w), lambda: np.searchsorted(_window_start(self.ts, w), self.ts, side="right") - 1
        )

    def empty(self, dtype: Any = np.float64) -> np.ndarray:
        """An output column with every row missing."""
        if dtype is object:
            return np.full(self.out.n_out, None, dtype=object)
        column = self.out.columns.take()
        column.fill(np.nan)
        return column

    def put(self, slots: np.ndarray, values: Any, dtype: Any = np.float64) -> np.ndarray:
        """An output column holding ``values`` at the output rows ``slots``, missing elsewhere."""
        out = np.zeros(self.out.n_out, dtype=bool) if dtype is bool else self.empty(dtype)
        out[slots] = values
        return out


def _rolling(h: _History, rollings: list[d.Rolling]) -> dict[str, np.ndarray]:
    """Counts and sums over windows of one entity: one sort and one upper bound, then a
    lower bound per window."""
    raw: dict[str, np.ndarray] = {}
    pos, ts_s, amount = h.pos, h.ts_s, h.amount
    column = rollings[0].entity.column
    ent = h.code(column)
    events = {t for r in rollings for c in r.counters for t in c.events}
    occ = np.flatnonzero(h.typ_in(events) & (ent >= 0))
    prior = _Prior(ent[occ], pos[occ])
    occ = occ[prior.order]  # from here on in (entity, position) order, as the sums run
    prior.timed(ts_s[occ])
    qq, q_ent, slots = h.queries(column), h.query_codes(column), h.slots(column)
    hi = prior.upto(q_ent, qq)
    q_ts, q_base = ts_s[qq], prior.time_base(q_ent)
    types, amounts = h.type_code[occ], amount[occ]
    # one running-sum buffer and two gather buffers serve every counter
    cum = np.zeros(len(occ) + 1, dtype=np.int64)
    upto, before = np.empty(len(qq), dtype=np.int64), np.empty(len(qq), dtype=np.int64)
    lows: dict[d.Window, np.ndarray] = {}
    for r in rollings:
        if r.window not in lows:
            lo = prior.from_time(q_base, _window_start_s(q_ts, r.window))
            lows[r.window] = np.minimum(lo, hi, out=lo)
        lo = lows[r.window]
        for c, name in zip(r.counters, r.outputs()):
            applies = h.type_table(c.events)[types]
            if c.where is not None:
                applies &= h.rows[c.where].to_numpy()[occ].astype(bool)
            values = np.where(applies, amounts, 0) if c.value == "amount" else applies
            np.cumsum(values, out=cum[1:])
            np.take(cum, hi, out=upto)
            np.take(cum, lo, out=before)
            raw[name] = h.put(slots, np.subtract(upto, before, out=upto))
    return raw


def _distinct(h: _History, x: d.Distinct) -> dict[str, np.ndarray]:
    """Distinct members per window."""
    raw: dict[str, np.ndarray] = {}
    pos = h.pos
    ent = h.code(x.entity.column)
    member = h.code(x.of)
    occ = np.flatnonzero(h.typ_in(x.events) & (ent >= 0) & (member >= 0))
    q_key = h.query_keys(x.entity.column)
    pairs = _Occurrences(ent[occ], member[occ], pos[occ])
    for w, name in zip(x.windows, x.outputs()):
        run_ent, run_start, run_end, _ = pairs.runs(h.last_covered(w))
        count = _covering(run_ent, run_start, run_end, q_key, h.key_span)
        raw[name] = h.put(h.slots(x.entity.column), count)
    return raw


def _seen(h: _History, s: d.SeenBefore) -> dict[str, np.ndarray]:
    """Whether the member was seen before, and how many were."""
    raw: dict[str, np.ndarray] = {}
    pos = h.pos
    ent = h.code(s.entity.column)
    pair_all = h.code(s.entity.column, s.of)
    occ = np.flatnonzero(h.typ_in(s.events) & (ent >= 0) & (pair_all >= 0))
    run_ent, run_start, run_end, run_pair = _Occurrences(ent[occ], pair_all[occ], pos[occ]).runs(
        h.last_covered(s.horizon)
    )
    new_name, seen_name = s.outputs()
    q_key = h.query_keys(s.entity.column)
    count = _covering(run_ent, run_start, run_end, q_key, h.key_span)
    raw[seen_name] = h.put(h.slots(s.entity.column), count)
    q_pair = h.query_keys(s.entity.column, s.of)
    is_new = _covering(run_pair, run_start, run_end, q_pair, h.key_span) == 0
    raw[new_name] = h.put(h.slots(s.entity.column, s.of), is_new, object)
    return raw


def _first_seen(h: _History, f: d.FirstSeen) -> dict[str, np.ndarray]:
    raw: dict[str, np.ndarray] = {}
    pos, ts = h.pos, h.ts
    ent = h.code(f.entity.column)
    occ = np.flatnonzero(h.typ_in(f.events) & (ent >= 0))
    first_pos = pd.Series(pos[occ]).groupby(ent[occ]).min()
    qq = h.queries(f.entity.column)
    fp = first_pos.reindex(ent[qq]).to_numpy()
    known = ~np.isnan(fp) & (fp < pos[qq])
    slots = h.slots(f.entity.column)
    raw[f"{f.entity.name}.first_seen_us"] = h.put(slots[known], ts[fp[known].astype(np.int64)])
    raw[f"{f.entity.name}.__has"] = h.put(slots, True, bool)
    return raw


def _moments(h: _History, m: d.Moments) -> dict[str, np.ndarray]:
    """Running moments of the amount: shifted sums, stable enough (held to Welford within 1e-6)."""
    raw: dict[str, np.ndarray] = {}
    pos, amount = h.pos, h.amount
    ent = h.code(m.entity.column)
    occ = np.flatnonzero(h.typ_in(m.events) & (ent >= 0) & h.rows["has_amount"].to_numpy())
    prior = _Prior(ent[occ], pos[occ])
    qq = h.queries(m.entity.column)
    lo, hi = prior.index(ent[qq], pos[qq])
    x = amount[occ].astype(np.float64)
    shift = pd.Series(x).groupby(ent[occ]).transform("first").to_numpy()
    cnt = prior.sums(np.ones(len(occ)), lo, hi)
    s1 = prior.sums(x - shift, lo, hi)
    s2 = prior.sums((x - shift) ** 2, lo, hi)
    k = pd.Series(shift).groupby(ent[occ]).first().reindex(ent[qq]).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, k + s1 / cnt, 0.0)
        m2 = np.where(cnt > 0, s2 - s1 * s1 / np.where(cnt > 0, cnt, 1), 0.0)
    ns = m.entity.name
    slots = h.slots(m.entity.column)
    raw[f"{ns}.moments_n"] = h.put(slots, cnt)
    raw[f"{ns}.moments_mean"] = h.put(slots, mean)
    raw[f"{ns}.moments_m2"] = h.put(slots, np.maximum(m2, 0.0))
    return raw


def _hour_habit(h: _History, hh: d.HourHabit) -> dict[str, np.ndarray]:
    raw: dict[str, np.ndarray] = {}
    pos = h.pos
    ent = h.code(hh.entity.column)
    ent_hour = h.code(hh.entity.column, "hour")
    writes = np.flatnonzero(h.typ_in(hh.events) & (ent >= 0))
    by_hour, by_entity = (hh.entity.column, "hour"), (hh.entity.column,)
    for key, e, cols in (("hour_count", ent_hour, by_hour), ("hour_total", ent, by_entity)):
        qq = h.queries(*cols)
        prior = _Prior(e[writes], pos[writes])
        lo, hi = prior.index(e[qq], pos[qq])
        raw[f"{hh.entity.name}.{key}"] = h.put(h.slots(*cols), hi - lo)
    return raw


def _period_volume(h: _History) -> dict[str, np.ndarray]:
    """A merchant's volume and count today and this hour."""
    raw: dict[str, np.ndarray] = {}
    rows, pos, amount = h.rows, h.pos, h.amount
    merchant = h.code("merchant_id")
    occ = np.flatnonzero(h.typ_in(d.PERIOD_VOLUME.events) & (merchant >= 0))
    qq = h.queries("merchant_id")
    day = rows["biz_day"].to_numpy(dtype=np.int64)
    hour = rows["biz_hour"].to_numpy(dtype=np.int64)
    # today and this hour are the merchant's occurrences from the day's (hour's) first bucket on
    prior = _Prior(merchant[occ], pos[occ])
    hi = prior.upto(merchant[qq], pos[qq])
    ones = np.ones(len(occ), dtype=np.int64)
    for period, bucket in (("today", day), ("hour", day * 24 + hour)):
        lo = np.minimum(prior.from_bucket(bucket[occ], merchant[qq], bucket[qq]), hi)
        for name, values in ((f"merchant.volume_{period}", amount[occ]), (f"merchant.count_{period}", ones)):
            raw[name] = h.put(h.slots("merchant_id"), prior.sums(values, lo, hi))
    return raw


def _baselines(h: _History) -> dict[str, np.ndarray]:
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
        volume = np.bincount(at, weights=amount, minlength=cells)
        volume = np.asarray(volume, dtype=np.float64).reshape(-1, 24)
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


def _top_share(h: _History) -> dict[str, np.ndarray]:
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
    by_key = _argsort_unique(keys)
    frame, keys = frame.iloc[by_key], keys[by_key]
    qq = h.queries("merchant_id", "biz_day")
    i = _searchsorted(keys, m_day[qq] * np.int64(n + 2) + pos[qq], side="left") - 1
    ok = (i >= 0) & (frame["g"].to_numpy()[np.maximum(i, 0)] == m_day[qq])
    top = np.where(ok, frame["running_max"].to_numpy()[np.maximum(i, 0)], 0)
    return {"merchant.top_card_volume_today": h.put(h.slots("merchant_id", "biz_day"), top)}


def _tasks() -> list[Callable[[_History], dict[str, np.ndarray]]]:
    """Every feature computation, in output column order; each reads only the shared `_History`."""
    by_entity: dict[str, list[d.Rolling]] = {}
    for r in d.ROLLING:
        by_entity.setdefault(r.entity.column, []).append(r)
    return [
        *(partial(_rolling, rollings=rollings) for rollings in by_entity.values()),
        *(partial(_distinct, x=x) for x in d.DISTINCT),
        *(partial(_seen, s=s) for s in d.SEEN),
        *(partial(_first_seen, f=f) for f in d.FIRST_SEEN),
        *(partial(_moments, m=m) for m in d.MOMENTS),
        *(partial(_hour_habit, hh=hh) for hh in d.HOUR_HABITS),
        _period_volume,
        _baselines,
        _top_share,
    ]


_TASKS = _tasks()


def _run_tasks(h: _History, first: Callable[[_History], Any]) -> tuple[dict[str, np.ndarray], Any]:
    """Run ``first`` and every feature task on two threads, the longest first; the features
    come back in column order, with ``first``'s result.

    The tasks share nothing but `_History`'s values, and numpy releases the GIL in the
    sorts, searches and gathers that dominate them, so two threads use both cores;
    many small tasks keep both busy to the end.
    """
    longest_first = sorted(range(len(_TASKS)), key=lambda i: _TASKS[i] is not _baselines)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(_TASKS[i], h) for i in longest_first[:1]}
        first_result = pool.submit(first, h)
        futures.update({i: pool.submit(_TASKS[i], h) for i in longest_first[1:]})
        parts = [futures[i].result() for i in range(len(_TASKS))]
        result = first_result.result()
    raw: dict[str, np.ndarray] = {}
    for part in parts:
        raw.update(part)
    return raw, result
