"""The offline twin's shared state: the history in event-time order and its output layout.

Every feature kind (`offline_kinds`, `offline_merchant`) reads one `History`: the
event rows sorted by time, their entity codes, decision rows ordered by entity,
type masks and window coverage, each computed once by the first kind that asks.
`Layout` says which rows the twin returns and where each reads its features, so
every kind writes its values straight into output order (`offline_frame`
assembles them). Kept apart so that the kinds and the frame both import it and
neither imports the other.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from fengkong.features import definitions as d

#: Event types that get a decision (and so an output row).
DECISION_TYPES = ("payment", "signup", "login", "card_bind")


def by_entity(q: np.ndarray, ent: np.ndarray) -> np.ndarray:
    """The query positions whose entity is present, ordered by (entity, position).

    Every later lookup keys on (entity, position) or (entity, bucket), so queries
    in this order are already sorted for `np.searchsorted`, which then walks the
    keys in order instead of jumping around a large array.
    """
    qq = q[ent[q] >= 0]
    return qq[argsort_unique(ent[qq] * np.int64(len(ent) + 1) + qq)]


def argsort_unique(keys: np.ndarray) -> np.ndarray:
    """argsort of keys that are all distinct, so no sort needs to be stable.

    Every (entity, position) key is distinct, and numpy's default sort on int64 is
    faster than its stable one, which only matters for ties.
    """
    return np.argsort(keys)


def factorize(col: Any) -> tuple[np.ndarray, Any]:
    """(int64 code per row, distinct values); -1 where missing. Integers code as themselves
    less their minimum (never missing, no distinct values kept)."""
    if col.dtype.kind in "iu":
        c = np.asarray(col, dtype=np.int64)
        return (c - c.min() if len(c) else c), None
    if isinstance(col.dtype, pd.CategoricalDtype):  # already coded (frame_rows' IP columns)
        return col.cat.codes.to_numpy().astype(np.int64), col.cat.categories
    c, values = pd.factorize(col, use_na_sentinel=True)
    return c.astype(np.int64), values


def codes(*cols: Any) -> np.ndarray:
    """One int64 code per distinct tuple of the columns; -1 where any is missing."""
    return combine([factorize(col)[0] for col in cols])


def combine(parts: list[np.ndarray]) -> np.ndarray:
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


def window_start(ts_us: np.ndarray, w: d.Window) -> np.ndarray:
    res = w.resolution * 1_000_000
    return (ts_us // res - w.buckets + 1) * res


def history(rows: pd.DataFrame) -> tuple[History, pd.Index]:
    """The rows in event-time order (as given when already so: no copy), and their index."""
    order = np.argsort(rows["ts_us"].to_numpy(), kind="stable")
    in_order = bool(np.array_equal(order, np.arange(len(order))))
    ordered = rows if in_order else rows.iloc[order]
    return History(ordered.reset_index(drop=True), order), rows.index


class History:
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
        self.q = np.flatnonzero(self.typ_in(DECISION_TYPES))
        #: per row, whether its card / its account was new (``"card"``, ``"user"``), when a
        #: pass over the whole history found it (`offline_dask`'s merchant pass: its part
        #: lacks the cards' and accounts' events elsewhere); None: found here
        self.known_new: dict[str, np.ndarray] | None = None
        self.out = Layout(order, self.type_mask(DECISION_TYPES), self.dup, rows["event_id"])

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
        return self._memo(("code", *cols), lambda: combine([self.code(c) for c in cols]))

    def distinct(self, col: str) -> Any:
        """The distinct values of a column, in the order of its codes (first appearance)."""
        return self._factorized(col)[1]

    def _factorized(self, col: str) -> tuple[np.ndarray, Any]:
        return self._memo(("code", col), lambda: factorize(self.rows[col]))

    def queries(self, *cols: str) -> np.ndarray:
        """Decision rows whose entity (these columns) is present, ordered by (entity, position)."""
        return self._memo(("queries", *cols), lambda: by_entity(self.q, self.code(*cols)))

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
            ("covered", w), lambda: np.searchsorted(window_start(self.ts, w), self.ts, side="right") - 1
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


class _Columns:
    """Float output columns, handed out as rows of blocks of a few columns.

    A million-row column is ~8 MB of fresh memory, faulted in page by page; a
    block of several columns is mostly mapped with huge pages (numpy advises them
    for large allocations), so filling ~70 columns costs far fewer page faults.
    Blocks stay small enough (~30 MB at a million rows) for the allocator to reuse
    freed memory rather than map new. Rows are contiguous: each column is an
    ordinary 1-D array.
    """

    def __init__(self, length: int, per_block: int = 4) -> None:
        self.length = length
        self.per_block = per_block
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self) -> np.ndarray:
        with self._lock:
            if not self._free:
                self._free = list(np.empty((self.per_block, self.length)))
            return self._free.pop()


class Layout:
    """The output rows and where each reads its features.

    Output rows are the decision events in the input's order (``sel``, as positions
    in event-time order). A repeated event_id reads the features of its first
    delivery (``src``); every other output row is its own query, at ``slot[p]`` for
    its position p. Kinds write queries only; `fill_repeats` then copies each
    repeat's values from its first delivery (left missing if that is no query).
    """

    def __init__(
        self, order: np.ndarray, decision: np.ndarray, dup: np.ndarray, event_id: pd.Series
    ) -> None:
        n = len(order)
        pos = np.arange(n, dtype=np.int64)
        at = np.empty(n, dtype=np.int64)
        at[order] = pos  # event-time position of each input row
        self.sel = at[np.flatnonzero(decision[at])]
        self.src = self.sel.copy()
        self.repeats = np.flatnonzero(dup[self.sel])
        if len(self.repeats):
            live = ~dup
            first_at = pd.Series(pos[live], index=event_id[live].to_numpy())
            ids = event_id.to_numpy()[self.sel[self.repeats]]
            self.src[self.repeats] = first_at.reindex(ids).to_numpy()
        self.n_out = len(self.sel)
        self.slot = np.full(n, -1, dtype=np.int64)
        own = np.flatnonzero(~dup[self.sel])
        self.slot[self.sel[own]] = own
        self.repeat_from = self.slot[self.src[self.repeats]]
        self.columns = _Columns(self.n_out)

    def fill_repeats(self, values: np.ndarray) -> None:
        """Give each repeated delivery the values of its first (a query, or left missing)."""
        if len(self.repeats):
            known = self.repeat_from >= 0
            values[self.repeats[known]] = values[self.repeat_from[known]]
