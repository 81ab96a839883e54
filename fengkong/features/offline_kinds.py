"""The offline twin's per-entity feature kinds: windowed counts and sums, distinct
counts, first and last seen, running moments and hour-of-day habits.

Each reduces to "sum (or count distinct) over the same entity's earlier
occurrences inside a window", which sorted composite keys and `numpy.searchsorted`
answer for all rows at once, in O(n log n). Each kind reads the shared `History`
and returns its output columns by name (see `definitions.py` for the windows,
the same as `lua/update_read.lua`'s).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.features.assemble import log_amount
from fengkong.features.offline_history import History, argsort_unique, codes


def searchsorted_sorted(keys: np.ndarray, queries: np.ndarray, side: str = "left") -> np.ndarray:
    """np.searchsorted, with the queries sorted first: sorted queries walk the keys
    in order (cache-friendly), unsorted ones jump around a large array."""
    if len(queries) < 4096:
        return np.searchsorted(keys, queries, side=side)  # type: ignore[call-overload]
    order = np.argsort(queries)  # equal queries get equal answers: ties may land in any order
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(keys, queries[order], side=side)  # type: ignore[call-overload]
    return out


class Prior:
    """Sums over an entity's earlier occurrences, optionally from a bucket on.

    Occurrences are rows (by position in event-time order) that carry values;
    queries ask, for a position, the sum of the values of the same entity's
    occurrences strictly before it (and, with a lower bucket, at or after it).
    Occurrences are ordered by their distinct (entity, position) keys; queries
    come ordered by (entity, position) (see `by_entity`).
    """

    def __init__(self, ent: np.ndarray, pos: np.ndarray) -> None:
        self.m = np.int64(int(pos.max()) + 2 if len(pos) else 2)
        key = ent * self.m + pos
        self.order = argsort_unique(key)
        self.ent = ent[self.order]
        self.key_pos = key[self.order]

    def upto(self, q_ent: np.ndarray, q_pos: np.ndarray) -> np.ndarray:
        """Index (in entity order) just past the query's earlier occurrences.

        A query after the last occurrence (position m - 1 or later) is capped at m - 1:
        every occurrence is before it, and its key must not reach into the next
        entity's keys (which would count that entity's occurrences too)."""
        return np.searchsorted(self.key_pos, q_ent * self.m + np.minimum(q_pos, self.m - 1), side="left")

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
        """Sum of ``values`` (per occurrence, in position order) over occurrences lo..hi-1.

        Integers: differences of one running sum (exact). Floats: running sums that
        restart at each entity, so an entity's sums never carry the rounding of every
        entity before it (one running sum over a long history loses the small
        differences, and the result would depend on which other entities share it)."""
        v = values[self.order]
        if v.dtype.kind != "f":
            cum = np.concatenate(([0], np.cumsum(v)))
            return cum[hi] - cum[lo]
        within = pd.Series(v).groupby(self.ent, sort=False).cumsum().to_numpy()
        new = np.ones(len(v), dtype=bool)
        new[1:] = self.ent[1:] != self.ent[:-1]
        first = np.flatnonzero(new)[np.cumsum(new) - 1]  # each occurrence's entity's first index
        out = np.zeros(len(lo))
        has = hi > lo
        last, start = hi[has] - 1, lo[has]
        out[has] = within[last] - np.where(start > first[last], within[np.maximum(start - 1, 0)], 0.0)
        return out


class Occurrences:
    """(entity, member) occurrences ordered by pair then position: sorted once, then
    cut into coverage runs for each window.

    An occurrence at position p (time t) is counted by every later query q whose
    window starts at or before t: q in (p, e] with e = ``last_covered[p]``, the
    last position whose window start <= t. Overlapping coverages of the same member
    merge into runs; the distinct count at q is the number of the entity's runs
    covering q.
    """

    def __init__(self, ent: np.ndarray, member: np.ndarray, pos: np.ndarray) -> None:
        pair = codes(ent, member)
        order = argsort_unique(pair * np.int64(int(pos.max()) + 1 if len(pos) else 1) + pos)
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


def covering(
    run_ent: np.ndarray, run_start: np.ndarray, run_end: np.ndarray, q: np.ndarray, m: int | np.int64
) -> np.ndarray:
    """How many runs of the query's entity cover its position (start < q <= end).

    Each run adds +1 from position start+1 and -1 from end+1 of its own entity, so
    the count is the number of the entity's run starts at or before the query less
    its run ends; keyed by (entity, position), other entities never leak in. ``q``: the
    queries' keys, entity * m + position (`History.query_keys`).
    """
    starts = run_ent * m
    ends = starts + run_end
    starts += run_start
    starts += 1
    ends += 1
    starts.sort()
    ends.sort()
    return np.searchsorted(starts, q, side="right") - np.searchsorted(ends, q, side="right")


def window_start_s(ts_s: np.ndarray, w: d.Window) -> np.ndarray:
    """Start (epoch seconds) of the window that ends in the bucket holding each time."""
    start = ts_s // w.resolution
    start -= w.buckets - 1
    start *= w.resolution
    return start


def rolling(h: History, rollings: list[d.Rolling]) -> dict[str, np.ndarray]:
    """Counts and sums over windows of one entity: one sort and one upper bound, then a
    lower bound per window."""
    raw: dict[str, np.ndarray] = {}
    pos, ts_s, amount = h.pos, h.ts_s, h.amount
    column = rollings[0].entity.column
    ent = h.code(column)
    events = {t for r in rollings for c in r.counters for t in c.events}
    occ = np.flatnonzero(h.typ_in(events) & (ent >= 0))
    prior = Prior(ent[occ], pos[occ])
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
            lo = prior.from_time(q_base, window_start_s(q_ts, r.window))
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


def distinct(h: History, x: d.Distinct) -> dict[str, np.ndarray]:
    """Distinct members per window."""
    raw: dict[str, np.ndarray] = {}
    pos = h.pos
    ent = h.code(x.entity.column)
    member = h.code(x.of)
    occ = np.flatnonzero(h.typ_in(x.events) & (ent >= 0) & (member >= 0))
    q_key = h.query_keys(x.entity.column)
    pairs = Occurrences(ent[occ], member[occ], pos[occ])
    for w, name in zip(x.windows, x.outputs()):
        run_ent, run_start, run_end, _ = pairs.runs(h.last_covered(w))
        count = covering(run_ent, run_start, run_end, q_key, h.key_span)
        raw[name] = h.put(h.slots(x.entity.column), count)
    return raw


def seen(h: History, s: d.SeenBefore) -> dict[str, np.ndarray]:
    """Whether the member was seen before, and how many were."""
    raw: dict[str, np.ndarray] = {}
    pos = h.pos
    ent = h.code(s.entity.column)
    pair_all = h.code(s.entity.column, s.of)
    occ = np.flatnonzero(h.typ_in(s.events) & (ent >= 0) & (pair_all >= 0))
    run_ent, run_start, run_end, run_pair = Occurrences(ent[occ], pair_all[occ], pos[occ]).runs(
        h.last_covered(s.horizon)
    )
    new_name, seen_name = s.outputs()
    q_key = h.query_keys(s.entity.column)
    count = covering(run_ent, run_start, run_end, q_key, h.key_span)
    raw[seen_name] = h.put(h.slots(s.entity.column), count)
    q_pair = h.query_keys(s.entity.column, s.of)
    is_new = covering(run_pair, run_start, run_end, q_pair, h.key_span) == 0
    raw[new_name] = h.put(h.slots(s.entity.column, s.of), is_new, object)
    return raw


def first_seen(h: History, f: d.FirstSeen) -> dict[str, np.ndarray]:
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


def moments(h: History, m: d.Moments) -> dict[str, np.ndarray]:
    """Running moments of the amount: shifted sums, stable enough (held to Welford within 1e-6)."""
    raw: dict[str, np.ndarray] = {}
    pos, amount = h.pos, h.amount
    ent = h.code(m.entity.column)
    occ = np.flatnonzero(h.typ_in(m.events) & (ent >= 0) & h.rows["has_amount"].to_numpy())
    prior = Prior(ent[occ], pos[occ])
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


def hour_habit(h: History, hh: d.HourHabit) -> dict[str, np.ndarray]:
    raw: dict[str, np.ndarray] = {}
    pos = h.pos
    ent = h.code(hh.entity.column)
    ent_hour = h.code(hh.entity.column, "hour")
    writes = np.flatnonzero(h.typ_in(hh.events) & (ent >= 0))
    by_hour, by_entity = (hh.entity.column, "hour"), (hh.entity.column,)
    for key, e, cols in (("hour_count", ent_hour, by_hour), ("hour_total", ent, by_entity)):
        qq = h.queries(*cols)
        prior = Prior(e[writes], pos[writes])
        lo, hi = prior.index(e[qq], pos[qq])
        raw[f"{hh.entity.name}.{key}"] = h.put(h.slots(*cols), hi - lo)
    return raw


def recent_amounts(h: History, ra: d.RecentAmounts, chunk: int = 65_536) -> dict[str, np.ndarray]:
    """The robust amount score over the entity's last ``ra.size`` payment amounts: the
    column-wise form of `assemble.robust_amount`, the same arithmetic in the same order
    (logs from `assemble.log_amount` per distinct amount), so the values are equal, not
    close. Queries go in chunks: a (queries x size) matrix per chunk."""
    pos = h.pos
    ent = h.code(ra.entity.column)
    occ = np.flatnonzero(h.typ_in(ra.events) & (ent >= 0) & h.rows["has_amount"].to_numpy())
    prior = Prior(ent[occ], pos[occ])
    amounts = h.amount[occ][prior.order]  # in (entity, position) order, as the indexes count
    qq = h.queries(ra.entity.column)
    lo, hi = prior.index(ent[qq], pos[qq])
    n = np.minimum(hi - lo, ra.size)
    distinct, inverse = np.unique(np.concatenate((amounts, h.amount[qq])), return_inverse=True)
    logs_all = np.array([log_amount(int(a)) for a in distinct], dtype=np.float64)[inverse]
    logs, q_logs = logs_all[:len(amounts)], logs_all[len(amounts):]
    has_amount = h.rows["has_amount"].to_numpy()[qq]
    median = np.full(len(qq), np.nan)
    z = np.full(len(qq), np.nan)
    back = np.arange(1, ra.size + 1)
    for at in range(0, len(qq), chunk):
        part = slice(at, at + chunk)
        c, top = n[part], hi[part]
        valid = back[None, :] <= c[:, None]  # the c most recent of each row
        idx = np.where(valid, top[:, None] - back[None, :], 0)
        some = c > 0
        rows = np.flatnonzero(some)
        mid_lo, mid_hi = (c[some] - 1) // 2, c[some] // 2
        raw = np.where(valid, amounts[idx] if len(amounts) else 0, np.iinfo(np.int64).max)
        raw.sort(axis=1)
        med = np.full(len(c), np.nan)
        med[some] = (raw[rows, mid_lo] + raw[rows, mid_hi]) / 2 / d.MINOR_PER_MAJOR
        median[part] = med
        enough = (c >= d.ROBUST_MIN_COUNT) & has_amount[part]
        rows = np.flatnonzero(enough)
        if not len(rows):
            continue
        mid_lo, mid_hi = (c[enough] - 1) // 2, c[enough] // 2
        lg = np.where(valid[enough], logs[idx[enough]], np.inf)
        lg.sort(axis=1)
        centre = (lg[np.arange(len(rows)), mid_lo] + lg[np.arange(len(rows)), mid_hi]) / 2
        dev = np.abs(lg - centre[:, None])  # inf for the padding, still last
        dev.sort(axis=1)
        mad = (dev[np.arange(len(rows)), mid_lo] + dev[np.arange(len(rows)), mid_hi]) / 2
        scale = np.maximum(d.MAD_TO_SIGMA * mad, d.ROBUST_LOG_SCALE_FLOOR)
        zz = np.full(len(c), np.nan)
        zz[rows] = (q_logs[part][enough] - centre) / scale
        z[part] = zz
    n_name, median_name, z_name = ra.outputs()
    slots = h.slots(ra.entity.column)
    return {n_name: h.put(slots, n), median_name: h.put(slots, median), z_name: h.put(slots, z)}


def first_used(h: History, mf: d.MemberFirstSeen) -> dict[str, np.ndarray]:
    """When the entity first used each member in its current run of use (see
    `d.MemberFirstSeen`): the runs of `Occurrences` over the horizon are exactly the
    stretches in which the store reads the member as used, and a run starts when the
    store writes its first use. Raw values as the store's: the run's first time in
    microseconds, 0 when the member is not in use, missing when the event lacks it."""
    raw: dict[str, np.ndarray] = {}
    pos, ts = h.pos, h.ts
    ent = h.code(mf.entity.column)
    covered = h.last_covered(mf.horizon)
    for (column, _), name in zip(mf.members, mf.raw_names()):
        pair = h.code(mf.entity.column, column)
        occ = np.flatnonzero(h.typ_in(mf.events) & (ent >= 0) & (pair >= 0))
        run_pair, run_start, run_end, _ = Occurrences(pair[occ], np.zeros(len(occ), np.int64), pos[occ]).runs(
            covered)
        keys = run_pair * h.key_span + run_start
        by_key = np.argsort(keys)
        keys, run_pair, run_start, run_end = keys[by_key], run_pair[by_key], run_start[by_key], run_end[by_key]
        qq = h.queries(mf.entity.column, column)
        q_key = h.query_keys(mf.entity.column, column)
        i = np.searchsorted(keys, q_key, side="left") - 1  # the last run starting before the query
        j = np.maximum(i, 0)
        inside = (i >= 0) & (run_pair[j] == pair[qq]) & (run_end[j] >= qq) if len(keys) else np.zeros(len(qq), bool)
        began = np.where(inside, ts[run_start[j]] if len(keys) else 0, 0)
        raw[name] = h.put(h.slots(mf.entity.column, column), began)
    return raw
