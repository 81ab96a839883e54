"""The same rules, evaluated column-wise over a whole feature table.

durable_rules decides one event at a time (docs/benchmarks.md has its rate); a
backtest over months of history needs the same answers for every row at once. This
module evaluates the SAME typed trees (`Rule.expr`, the lanes' `Lane.expr`) with
numpy over a DataFrame that has one column per dotted feature name (the offline
twin's output), then applies the SAME policy: thresholds come from
`Policy.thresholds_for`, ranks from `Policy.rank`, and the steps are those of
`RuleSet.decide`, written over arrays.

Missing values, exactly as `predicates.clean` sees them: a cell is missing when it
is None/NaN/inf, when the column is absent, or when its value has the wrong type
for the feature's declared type (a bool in a number column, a number in a string
column...). After `to_nnf`, every comparison reading a missing value is false, and
an arithmetic result is missing when an operand is missing, a divisor is zero or
the result is not a finite number;
only ``is missing`` is true on a missing value.

tests/cases/**.yaml run through both this evaluator and durable_rules, and
tests/test_vectorized.py holds the two equal on every event of a simulated history.

    vec = VectorizedRules.from_ruleset(ruleset)      # or VectorizedRules(rules, policy, dtypes)
    out = vec.evaluate(features_df)                   # VectorDecisions
    out.decision, out.score, out.lane, out.fired      # arrays, one row per input row
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fengkong.engine.predicates import FLOAT_MAX
from fengkong.engine.policy import CHANNEL_FEATURE, GRADE_FEATURE, Policy
from fengkong.engine.soft import settle_arrays
from fengkong.engine.rule import Rule
from fengkong.engine.tree import (
    And,
    Compare,
    Const,
    Expr,
    Feature,
    InList,
    InLiteral,
    IsMissing,
    Or,
    Value,
    to_nnf,
)

_NUMBER, _STRING, _BOOL, _ANY = "number", "string", "bool", None


@dataclass
class _Col:
    """One feature column as the rules see it: values and a 'present' mask.

    number: float64 values; string: object values plus factorized codes; bool: int8 (0/1)."""

    kind: str | None
    values: np.ndarray
    present: np.ndarray
    codes: np.ndarray | None = None
    uniques: dict[Any, int] | None = None


def _is_num(v: Any) -> bool:
    """A finite number a double holds (an int past a double's range is missing, as in `predicates.clean`)."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, int) and not -FLOAT_MAX <= v <= FLOAT_MAX:
        return False
    return math.isfinite(v)


class _Table:
    """Typed, cached views of a feature DataFrame's columns."""

    def __init__(self, frame: pd.DataFrame, dtypes: Mapping[str, str]) -> None:
        self.frame = frame
        self.n = len(frame)
        self.dtypes = dtypes
        self._cache: dict[str, _Col] = {}

    def col(self, name: str) -> _Col:
        got = self._cache.get(name)
        if got is None:
            got = self._cache[name] = self._build(name)
        return got

    def _build(self, name: str) -> _Col:
        n = self.n
        kind = self.dtypes.get(name)
        if name not in self.frame.columns:
            return _Col(kind, np.zeros(n), np.zeros(n, dtype=bool))
        s = self.frame[name]
        dt = s.dtype
        if kind == _NUMBER:
            if dt.kind in "iuf":
                v = s.to_numpy(dtype=np.float64, na_value=np.nan)
                return _Col(kind, v, np.isfinite(v))
            if dt.kind == "b" or not (dt == object):
                return _Col(kind, np.zeros(n), np.zeros(n, dtype=bool))  # bools/strings: wrong type
            raw = s.to_numpy(dtype=object)
            if pd.api.types.infer_dtype(raw, skipna=True) in ("integer", "floating", "mixed-integer-float",
                                                               "empty"):
                try:
                    v = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                    return _Col(kind, v, np.isfinite(v))
                except OverflowError:  # an int past a double's range: cell by cell below
                    pass
            present = np.fromiter((_is_num(x) for x in raw), dtype=bool, count=n)
            v = np.zeros(n)
            if present.any():
                v[present] = raw[present].astype(np.float64)
            return _Col(kind, v, present)
        if kind == _BOOL:
            if dt.kind == "b":
                return _Col(kind, s.to_numpy(dtype=np.int8), np.ones(n, dtype=bool))
            if dt == object or str(dt) == "boolean":
                raw = s.to_numpy(dtype=object, na_value=None)
                if pd.api.types.infer_dtype(raw, skipna=True) in ("boolean", "empty"):
                    present = pd.notna(raw)
                else:
                    present = np.fromiter((isinstance(x, (bool, np.bool_)) for x in raw), dtype=bool, count=n)
                v = np.zeros(n, dtype=np.int8)
                v[present] = raw[present].astype(bool)
                return _Col(kind, v, present)
            return _Col(kind, np.zeros(n, dtype=np.int8), np.zeros(n, dtype=bool))
        if kind == _STRING:
            if dt.kind in "iufbmM":
                return _Col(kind, np.full(n, None, dtype=object), np.zeros(n, dtype=bool))
            raw = s.to_numpy(dtype=object, na_value=None)
            if dt == object and pd.api.types.infer_dtype(raw, skipna=True) not in ("string", "empty"):
                present = np.fromiter((isinstance(x, str) for x in raw), dtype=bool, count=n)
            elif dt == object:
                present = pd.notna(raw)
            else:  # pandas string dtypes hold only strings and NA
                present = s.notna().to_numpy()
            vals = np.asarray(np.where(present, raw, None), dtype=object)
            codes, uniq = pd.factorize(pd.Series(vals, dtype=object), use_na_sentinel=True)
            return _Col(kind, vals, present, codes.astype(np.int64), {u: i for i, u in enumerate(uniq)})
        # a feature of undeclared type: present unless None/NaN
        raw = s.to_numpy(dtype=object, na_value=None)
        present = np.fromiter((x is not None and not (isinstance(x, float) and x != x) for x in raw),
                              dtype=bool, count=n)
        return _Col(kind, raw, present)


@dataclass
class _Val:
    """An evaluated value: a scalar (constant) or an array, and where it is present."""

    kind: str | None
    values: Any
    present: Any  # bool array, or True for a constant
    col: _Col | None = None  # the column, when the value is a plain feature (for fast string tests)


def _is_scalar(x: Any) -> bool:
    """`np.isscalar` as a plain bool (its TypeGuard would narrow a value to numpy's scalar types)."""
    return bool(np.isscalar(x))


_OPS = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}


def _const_kind(c: Any) -> str:
    if isinstance(c, bool):
        return _BOOL
    if isinstance(c, (int, float)):
        return _NUMBER
    return _STRING


class _Evaluator:
    def __init__(self, table: _Table) -> None:
        self.t = table
        self.n = table.n
        self._atoms: dict[Any, np.ndarray] = {}

    def value(self, v: Value) -> _Val:
        if isinstance(v, Const):
            return _Val(_const_kind(v.value), v.value, True)
        if isinstance(v, Feature):
            c = self.t.col(v.name)
            return _Val(c.kind, c.values, c.present, c)
        a, b = self.value(v.left), self.value(v.right)
        present = np.logical_and(a.present, b.present)
        av = np.asarray(a.values, dtype=np.float64) if not _is_scalar(a.values) else float(a.values)
        bv = np.asarray(b.values, dtype=np.float64) if not _is_scalar(b.values) else float(b.values)
        with np.errstate(all="ignore"):
            if v.op == "+":
                out = av + bv
            elif v.op == "-":
                out = av - bv
            elif v.op == "*":
                out = av * bv
            else:
                nonzero = bv != 0
                present = np.logical_and(present, nonzero)
                out = av / np.where(nonzero, bv, 1.0)
        present = np.logical_and(present, np.isfinite(out))  # an overflow is missing, as in predicates.py
        return _Val(_NUMBER, out, np.broadcast_to(present, (self.n,)))

    def mask(self, e: Expr) -> np.ndarray:
        if isinstance(e, And):
            out = self.mask(e.items[0]).copy()
            for i in e.items[1:]:
                out &= self.mask(i)
            return out
        if isinstance(e, Or):
            out = self.mask(e.items[0]).copy()
            for i in e.items[1:]:
                out |= self.mask(i)
            return out
        got = self._atoms.get(e)  # atoms repeat across rules (and lanes): compute each once
        if got is None:
            got = self._atoms[e] = np.broadcast_to(self._atom(e), (self.n,))
        return got

    def _atom(self, e: Expr) -> np.ndarray:
        if isinstance(e, Compare):
            return self._compare(e)
        if isinstance(e, InLiteral):
            a = self.value(e.item)
            if a.col is not None and a.col.codes is not None and a.col.uniques is not None:  # a string feature
                idx = [a.col.uniques[x] for x in e.values if isinstance(x, str) and x in a.col.uniques]
                hit = np.isin(a.col.codes, idx) if idx else np.zeros(self.n, dtype=bool)
            elif a.kind == _NUMBER:
                nums = [float(x) for x in e.values if _const_kind(x) == _NUMBER]
                hit = np.isin(np.broadcast_to(a.values, (self.n,)), nums)
            else:
                vals = np.broadcast_to(np.asarray(a.values, dtype=object), (self.n,))
                wanted = set(e.values)
                hit = np.fromiter((x in wanted for x in vals), dtype=bool, count=self.n)
            if e.negated:
                hit = ~hit
            return hit & a.present
        if isinstance(e, InList):
            c = self.t.col(e.flag)
            want = 0 if e.negated else 1
            if c.kind == _BOOL:
                return c.present & (c.values == want)
            return np.zeros(self.n, dtype=bool)
        if isinstance(e, IsMissing):
            c = self.t.col(e.feature.name)
            return c.present.copy() if e.negated else ~c.present
        raise TypeError(f"not an NNF node: {e!r}")

    def _compare(self, e: Compare) -> np.ndarray:
        a, b = self.value(e.left), self.value(e.right)
        present = np.logical_and(a.present, b.present)
        kind = a.kind if a.kind is not None else b.kind
        if kind == _STRING and a.col is not None and a.col.codes is not None and a.col.uniques is not None \
                and isinstance(e.right, Const) and e.op in ("==", "!="):
            code = a.col.uniques.get(e.right.value) if isinstance(e.right.value, str) else None
            eq = a.col.codes == code if code is not None else np.zeros(self.n, dtype=bool)
            return (eq if e.op == "==" else ~eq) & present
        if kind == _NUMBER:
            av = a.values if np.isscalar(a.values) else np.asarray(a.values, dtype=np.float64)
            bv = b.values if np.isscalar(b.values) else np.asarray(b.values, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                out = _OPS[e.op](av, bv)
        elif kind == _BOOL:
            out = _OPS[e.op](np.asarray(a.values, dtype=np.int8) if not _is_scalar(a.values) else int(a.values),
                             np.asarray(b.values, dtype=np.int8) if not _is_scalar(b.values) else int(b.values))
        else:
            av = np.broadcast_to(np.asarray(a.values, dtype=object), (self.n,))
            bv = np.broadcast_to(np.asarray(b.values, dtype=object), (self.n,))
            out = np.zeros(self.n, dtype=bool)
            idx = np.flatnonzero(present)
            if e.op in ("==", "!="):
                eq = np.fromiter((av[i] == bv[i] for i in idx), dtype=bool, count=len(idx))
                out[idx] = eq if e.op == "==" else ~eq
            else:  # the type checker allows < > only on numbers; keep Python's answer anyway
                cmp = {"<": lambda x, y: x < y, "<=": lambda x, y: x <= y,
                       ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}[e.op]
                out[idx] = np.fromiter((cmp(av[i], bv[i]) for i in idx), dtype=bool, count=len(idx))
            return out
        return np.broadcast_to(out, (self.n,)) & present


class FeatureTable:
    """A feature DataFrame with its typed columns and evaluated tests cached."""

    def __init__(self, frame: pd.DataFrame, dtypes: Mapping[str, str]) -> None:
        self.frame = frame
        self.dtypes = dict(dtypes)
        self.table = _Table(frame, self.dtypes)
        self.evaluator = _Evaluator(self.table)

    def __len__(self) -> int:
        return self.table.n


@dataclass
class VectorDecisions:
    """The decisions for every row of a feature table (row i = input row i)."""

    rule_ids: tuple[str, ...]
    enforced: np.ndarray  # (R,) bool: rule j is enforced (else shadow)
    fired: np.ndarray  # (n, R) bool
    decision: np.ndarray  # (n,) object: allow / challenge / review / deny
    score: np.ndarray  # (n,) float64: sum of enforced scores that fired
    score_action: np.ndarray  # (n,) object
    lane: np.ndarray  # (n,) object: lane name or None
    severity: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.decision)

    def fired_ids(self, i: int) -> list[str]:
        """Like `Decision.fired_ids`: enforced rules that fired, then shadow ones, in rule order."""
        row = self.fired[i]
        enf = [rid for rid, f, e in zip(self.rule_ids, row, self.enforced) if f and e]
        sha = [rid for rid, f, e in zip(self.rule_ids, row, self.enforced) if f and not e]
        return enf + sha

    def joined_fired(self, sep: str = ";", *, enforced: bool | None = None) -> np.ndarray:
        """Fired ids of each row joined by ``sep`` (enforced only, shadow only, or all)."""
        cols = [j for j in range(len(self.rule_ids))
                if enforced is None or bool(self.enforced[j]) == enforced]
        if enforced is None:
            cols = [j for j in cols if self.enforced[j]] + [j for j in cols if not self.enforced[j]]
        out = np.full(len(self), "", dtype=object)
        rows_any = self.fired[:, cols].any(axis=1) if cols else np.zeros(len(self), dtype=bool)
        for i in np.flatnonzero(rows_any):
            out[i] = sep.join(self.rule_ids[j] for j in cols if self.fired[i, j])
        return out

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "decision": self.decision, "score": self.score, "score_action": self.score_action,
            "lane": self.lane, "rules": self.joined_fired(enforced=True),
            "shadow_rules": self.joined_fired(enforced=False),
        })


class VectorizedRules:
    """A rule set and its policy, evaluated over a whole feature table at once."""

    def __init__(self, rules: Sequence[Rule], policy: Policy, dtypes: Mapping[str, str]) -> None:
        self.rules = tuple(rules)
        self.policy = policy
        self.dtypes = dict(dtypes)
        self.rule_ids = tuple(r.id for r in self.rules)
        self._nnf = [to_nnf(r.expr) for r in self.rules]
        self._lanes = [(lane, to_nnf(lane.expr)) for lane in policy.lanes]

    @classmethod
    def from_ruleset(cls, ruleset: Any) -> "VectorizedRules":
        """From a loaded `RuleSet` (its parsed rules, policy and schema types)."""
        return cls(ruleset.rules, ruleset.policy, ruleset.schema.dtypes)

    def table(self, frame: pd.DataFrame) -> "FeatureTable":
        """A typed view of ``frame`` that several rule sets with the same schema can share
        (columns are converted, and each distinct test computed, once)."""
        return FeatureTable(frame, self.dtypes)

    def fire_matrix(self, frame: "pd.DataFrame | FeatureTable") -> tuple[np.ndarray, dict[str, np.ndarray], _Table]:
        ft = frame if isinstance(frame, FeatureTable) and frame.dtypes == self.dtypes else None
        if ft is None:
            ft = FeatureTable(frame.frame if isinstance(frame, FeatureTable) else frame, self.dtypes)
        table, ev = ft.table, ft.evaluator
        n = table.n
        fired = np.zeros((n, len(self.rules)), dtype=bool, order="F")
        for j, expr in enumerate(self._nnf):
            fired[:, j] = ev.mask(expr)
        lanes = {lane.name: np.asarray(ev.mask(expr)) for lane, expr in self._lanes}
        return fired, lanes, table

    def evaluate(self, frame: "pd.DataFrame | FeatureTable", risk: np.ndarray | None = None) -> VectorDecisions:
        """Decide every row of ``frame`` (columns = dotted feature names; NaN/None = missing);
        ``risk``: each row's fused risk (NaN: none), for the policy's soft step (`soft.settle_arrays`)."""
        fired, lanes, table = self.fire_matrix(frame)
        full = decide_arrays(self.rules, self.policy, fired, lanes, table)
        if risk is None:
            return full
        return settle_arrays(self.rules, self.policy, fired, lanes, table, full, risk, decide_arrays)

    def evaluate_records(self, records: Iterable[Mapping[str, Any]]) -> VectorDecisions:
        """Convenience for a few feature mappings (tests, cases): one row each."""
        recs = list(records)
        cols: dict[str, list[Any]] = {}
        for k in {k for r in recs for k in r}:
            cols[k] = [r.get(k) for r in recs]
        frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in cols.items()}, index=range(len(recs)))
        return self.evaluate(frame)


def decide_arrays(rules: Sequence[Rule], policy: Policy, fired: np.ndarray, lanes: Mapping[str, np.ndarray],
                  table: _Table) -> VectorDecisions:
    """`RuleSet.decide` over arrays: the policy applied to every row's fires at once."""
    n = fired.shape[0]
    severity = policy.severity
    rank_of = {a: policy.rank(a) for a in severity}
    enforced = np.array([r.enforced for r in rules], dtype=bool)
    # 1-2. enforced scores add up (in rule order, as Python's sum does); the most severe action
    total = np.zeros(n)
    rule_rank = np.zeros(n, dtype=np.int8)
    for j, r in enumerate(rules):
        if not r.enforced:
            continue
        col = fired[:, j]
        if r.score:
            total = total + np.where(col, float(r.score), 0.0)
        rk = rank_of[r.then]
        if rk:
            rule_rank = np.maximum(rule_rank, np.where(col, rk, 0).astype(np.int8))
    # 3. thresholds by (grade, channel): the policy's own function, once per pair present
    grade = table.col(GRADE_FEATURE) if GRADE_FEATURE in table.dtypes else None
    channel = table.col(CHANNEL_FEATURE) if CHANNEL_FEATURE in table.dtypes else None
    g_codes, g_vals = _str_codes(grade, n)
    c_codes, c_vals = _str_codes(channel, n)
    pair = (g_codes + 1) * (len(c_vals) + 1) + (c_codes + 1)
    pairs, inverse = np.unique(pair, return_inverse=True)
    score_rank = np.zeros(n, dtype=np.int8)
    limits: dict[str, np.ndarray] = {a: np.full(len(pairs), np.inf) for a in severity}
    for p_i, p in enumerate(pairs):
        gi, ci = divmod(int(p), len(c_vals) + 1)
        g = g_vals[gi - 1] if gi else None
        c = c_vals[ci - 1] if ci else None
        for action, limit in policy.thresholds_for(g, c).items():
            limits[action][p_i] = limit
    for action in severity:
        lim = limits[action][inverse]
        rk = rank_of[action]
        score_rank = np.maximum(score_rank, np.where(total >= lim, rk, 0).astype(np.int8))
    rank = np.maximum(rule_rank, score_rank)
    # 5. lanes, in the policy's order; an enforced fire with an unless_tag keeps the lane shut
    lane_out = np.full(n, None, dtype=object)
    taken = np.zeros(n, dtype=bool)
    for lane in policy.lanes:
        hit = lanes.get(lane.name)
        if hit is None:
            continue
        blocked = np.zeros(n, dtype=bool)
        for j, r in enumerate(rules):
            if r.enforced and set(r.tags).intersection(lane.unless_tags):
                blocked |= fired[:, j]
        use = hit & ~blocked & ~taken
        rank = np.where(use, rank_of[lane.decision], rank).astype(np.int8)
        lane_out[use] = lane.name
        taken |= use
    names = np.array(severity, dtype=object)
    return VectorDecisions(
        rule_ids=tuple(r.id for r in rules), enforced=enforced, fired=fired, decision=names[rank],
        score=total, score_action=names[score_rank], lane=lane_out, severity=tuple(severity),
    )


def _str_codes(col: _Col | None, n: int) -> tuple[np.ndarray, list[Any]]:
    """Codes (-1 = not a string) and the distinct strings of a string feature column."""
    if col is None or col.codes is None:
        return np.full(n, -1, dtype=np.int64), []
    uniq = [None] * len(col.uniques or {})
    for u, i in (col.uniques or {}).items():
        uniq[i] = u
    return np.where(col.present, col.codes, -1), uniq


def python_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a feature table as plain-Python mappings (what the online store hands the
    rules): numpy scalars become Python ones, NaN and NA become None."""
    cols = {}
    for name in frame.columns:
        s = frame[name]
        if s.dtype.kind == "f":
            arr = s.to_numpy(dtype=object)
            arr[np.isnan(s.to_numpy(dtype=np.float64))] = None
        else:
            arr = s.to_numpy(dtype=object, na_value=None)
        cols[name] = arr
    out = []
    names = list(cols)
    for i in range(len(frame)):
        rec = {}
        for name in names:
            v = cols[name][i]
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and v != v:
                v = None
            rec[name] = v
        out.append(rec)
    return out
