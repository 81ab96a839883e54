"""`fengkong tune`: the policy's thresholds and the rules' tunable constants, fit to a friction budget.

The business states how much friction legitimate customers may meet (``max_friction``:
the share of legitimate payments that get challenge, review or deny); tune searches for
the candidate that stops the most fraud within it. Features are computed once (the
offline twin, as `rules backtest`); every candidate is decided by the vectorised
evaluator's own functions (`decide_arrays`, and `settle_arrays` when a fused risk is
given), so a candidate's figures here are the ones `rules backtest` gives it.

What is searched, each over a fixed grid (so the answer is reproducible):

* the score thresholds of every table of policy.yaml (default, each grade, each channel),
  kept challenge <= review <= deny;
* the soft table's fused-risk cut-offs, when a fused risk is given;
* every constant a rule marks ``tunable: [lo, hi]``, within its range.

Coordinate descent: one parameter at a time, every grid value tried, the best kept,
in an order shuffled by ``seed`` each pass, until a pass changes nothing or
``max_passes``. A candidate over the budget is judged by its legitimate friction alone
(lower is better) until one is within it; within it, by the fraud it meets (per payment,
or the mean over fraud patterns with ``objective="patterns"``), ties going to the lower
friction. Tune only on training days and read the later days' figures (`TuneResult.test`):
a threshold fit to the days it is judged on overstates.

``pattern_floor`` (a share, e.g. 0.05) keeps the search from trading a whole fraud pattern
away for friction: a candidate under which any pattern (with at least
``MIN_PATTERN_PAYMENTS`` labelled payments) meets friction on a share of its payments more
than ``pattern_floor`` below the starting rules' is never taken, over budget or within it.
When the budget cannot be met that way the search stops at the lowest friction that keeps
every pattern, and the log says the budget was not met.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fengkong.engine.candidate import Change, PolicyKey, policy_value, with_constants, with_policy
from fengkong.engine.policy import Policy
from fengkong.engine.rule import Rule
from fengkong.engine.soft import settle_arrays
from fengkong.engine.tree import to_nnf
from fengkong.engine.tunable import Tunable
from fengkong.engine.vectorized import FeatureTable, decide_arrays
from fengkong.training.friction import FRICTION

ACTIONS = ("challenge", "review", "deny")
SCORE_GRID = tuple(float(v) for v in range(5, 205, 5))
RISK_GRID = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
             0.95, 0.99)
OBJECTIVES = ("payments", "patterns")
#: A pattern with fewer labelled payments on the tuning days than this has no floor (too few to measure).
MIN_PATTERN_PAYMENTS = 5


@dataclass(frozen=True)
class Param:
    """One searched number: a policy threshold (``policy`` set) or a rule's constant."""

    policy: PolicyKey | None
    rule_id: str | None
    tunable: Tunable | None
    grid: tuple[float, ...]

    @property
    def label(self) -> str:
        if self.policy is not None:
            table, name, action = self.policy
            return f"policy {table}{'.' + name if name else ''}.{action}"
        assert self.tunable is not None
        return f"{self.rule_id}: {self.tunable.key}"


def tunable_grid(t: Tunable, steps: int = 11) -> tuple[float, ...]:
    """Values tried for a tunable: every whole number of an integer range (up to 25 of them),
    else ``steps`` evenly spaced values; the current value always included."""
    if float(t.lo).is_integer() and float(t.hi).is_integer() and float(t.value).is_integer() \
            and t.hi - t.lo <= 24:
        vals = [float(v) for v in range(int(t.lo), int(t.hi) + 1)]
    else:
        vals = [float(f"{v:.3g}") for v in np.linspace(t.lo, t.hi, steps)]
    return tuple(sorted({*vals, float(t.value)}))


def search_space(rules: Sequence[Rule], policy: Policy, *, with_risk: bool, thresholds: bool = True) -> list[Param]:
    """Every parameter tune searches for this rule set and policy (see the module docstring)."""
    out: list[Param] = []
    if thresholds:
        tables: list[tuple[str, str | None, dict[str, float]]] = [("default", None, policy.default)]
        tables += [("grade", g, t) for g, t in sorted(policy.by_grade.items())]
        tables += [("channel", c, t) for c, t in sorted(policy.by_channel.items())]
        for table, name, limits in tables:
            for action in ACTIONS:
                if action in limits:
                    out.append(Param((table, name, action), None, None, tuple(sorted({*SCORE_GRID,
                                                                                      float(limits[action])}))))
        if with_risk and policy.soft:
            for action in ACTIONS:
                if action in policy.soft:
                    out.append(Param(("soft", None, action), None, None,
                                     tuple(sorted({*RISK_GRID, float(policy.soft[action])}))))
    for r in rules:
        for t in r.tunables:
            out.append(Param(None, r.id, t, tunable_grid(t)))
    return out


def figures(decision: np.ndarray, y: np.ndarray, scenario: np.ndarray | None = None,
            grade: np.ndarray | None = None, promo: np.ndarray | None = None) -> dict[str, Any]:
    """Friction on legitimate payments and on fraud, overall, per fraud pattern and per grade."""
    fr = np.isin(np.asarray(decision, dtype=object), FRICTION)
    y = np.asarray(y, dtype=bool)
    out: dict[str, Any] = {"payments": int(len(y)), "fraud": int(y.sum()),
                           "legit_friction": float(fr[~y].mean()) if (~y).any() else float("nan"),
                           "fraud_caught": float(fr[y].mean()) if y.any() else float("nan")}
    if promo is not None:
        lp = np.asarray(promo, dtype=bool) & ~y
        out["promo_legit_friction"] = float(fr[lp].mean()) if lp.any() else float("nan")
    if scenario is not None:
        scen = np.asarray(scenario, dtype=object)
        out["per_pattern"] = {str(s): float(fr[y & (scen == s)].mean()) for s in sorted({str(v) for v in scen[y]})}
    if grade is not None:
        g = np.asarray(pd.Series(grade, dtype=object).fillna("(none)").astype(str))
        per = {}
        for name in sorted(set(g)):
            m = g == name
            per[name] = {"payments": int(m.sum()),
                         "legit_friction": float(fr[m & ~y].mean()) if (m & ~y).any() else float("nan"),
                         "fraud_caught": float(fr[m & y].mean()) if (m & y).any() else float("nan")}
        out["per_grade"] = per
    return out


class Scorer:
    """Decides one set of rows for any candidate (the fire matrix is kept and only the
    column of a rule whose constant moved is evaluated again)."""

    def __init__(self, rules: Sequence[Rule], policy: Policy, frame: pd.DataFrame, dtypes: Mapping[str, str],
                 risk: np.ndarray | None = None) -> None:
        self.rules = tuple(rules)
        self.policy = policy
        self.ft = FeatureTable(frame.reset_index(drop=True), dtypes)
        ev = self.ft.evaluator
        self.fired = np.zeros((len(self.ft), len(self.rules)), dtype=bool, order="F")
        for j, r in enumerate(self.rules):
            self.fired[:, j] = ev.mask(to_nnf(r.expr))
        self.lanes = {lane.name: np.asarray(ev.mask(to_nnf(lane.expr))) for lane in policy.lanes}
        self.risk = None if risk is None else np.asarray(risk, dtype=np.float64)
        self._col = {r.id: j for j, r in enumerate(self.rules)}
        self._exprs = {r.id: r.expr for r in self.rules}

    def decide(self, rules: Sequence[Rule], policy: Policy) -> np.ndarray:
        """The decision of every row under ``rules`` (the same ids, constants maybe moved) and ``policy``."""
        for r in rules:
            if r.expr != self._exprs[r.id]:
                self.fired[:, self._col[r.id]] = self.ft.evaluator.mask(to_nnf(r.expr))
                self._exprs[r.id] = r.expr
        table = self.ft.table
        full = decide_arrays(rules, policy, self.fired, self.lanes, table)
        if self.risk is not None:
            full = settle_arrays(rules, policy, self.fired, self.lanes, table, full, self.risk, decide_arrays)
        return np.asarray(full.decision, dtype=object)


@dataclass
class State:
    """A point of the search: the values of every parameter that differ from the original."""

    policy: dict[PolicyKey, float] = field(default_factory=dict)
    consts: dict[tuple[str, str], float] = field(default_factory=dict)

    def copy(self) -> "State":
        return State(dict(self.policy), dict(self.consts))

    def set(self, p: Param, v: float) -> "State":
        s = self.copy()
        if p.policy is not None:
            s.policy[p.policy] = v
        else:
            assert p.rule_id is not None and p.tunable is not None
            s.consts[(p.rule_id, p.tunable.key)] = v
        return s

    def get(self, p: Param, rules: Sequence[Rule], policy: Policy) -> float:
        if p.policy is not None:
            v = self.policy.get(p.policy, policy_value(policy, p.policy))
            assert v is not None
            return v
        assert p.rule_id is not None and p.tunable is not None
        return self.consts.get((p.rule_id, p.tunable.key), p.tunable.value)

    def build(self, rules: Sequence[Rule], policy: Policy) -> tuple[tuple[Rule, ...], Policy]:
        return with_constants(tuple(rules), self.consts), with_policy(policy, self.policy)

    def changes(self, rules: Sequence[Rule], policy: Policy) -> list[Change]:
        out = [Change(None, k, float(policy_value(policy, k) or 0.0), v) for k, v in sorted(
            self.policy.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2]))]
        by_id = {r.id: r for r in rules}
        for (rid, key), v in sorted(self.consts.items()):
            t = next(t for t in by_id[rid].tunables if t.key == key)
            out.append(Change(rid, t, t.value, v))
        return [c for c in out if c.new != c.old]


def _ordered(state: State, p: Param, v: float, rules: Sequence[Rule], policy: Policy) -> bool:
    """Whether ``v`` keeps the table of a policy threshold in order (challenge <= review <= deny)."""
    if p.policy is None:
        return True
    table, name, action = p.policy
    i = ACTIONS.index(action)
    for j, other in enumerate(ACTIONS):
        if j == i:
            continue
        cur = state.policy.get((table, name, other), policy_value(policy, (table, name, other)))
        if cur is None:
            continue
        if (j < i and cur > v) or (j > i and cur < v):
            return False
    return True


@dataclass
class TuneResult:
    """What tune found: the changes, and the figures before and after, on the tuning rows and the later ones."""

    changes: list[Change]
    rules: tuple[Rule, ...]
    policy: Policy
    budget: float
    train_before: dict[str, Any]
    train_after: dict[str, Any]
    test_before: dict[str, Any] | None = None
    test_after: dict[str, Any] | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    evaluations: int = 0
    stopped_by_time: bool = False


@dataclass
class Rows:
    """One set of payments to decide and judge: features, labels, and what the figures split by."""

    frame: pd.DataFrame
    is_fraud: np.ndarray
    scenario: np.ndarray | None = None
    risk: np.ndarray | None = None
    promo: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> "Rows":
        pick = (lambda a: None if a is None else np.asarray(a)[mask])
        return Rows(self.frame[mask], np.asarray(self.is_fraud, dtype=bool)[mask], pick(self.scenario),
                    pick(self.risk), pick(self.promo))


def _objective(dec: np.ndarray, y: np.ndarray, scen: np.ndarray | None, objective: str
               ) -> tuple[float, float, dict[str, float]]:
    """Legitimate friction, fraud caught (per ``objective``) and the friction of each pattern."""
    fr = np.isin(dec, FRICTION)
    legit = float(fr[~y].mean()) if (~y).any() else 0.0
    pats: dict[str, float] = {}
    if scen is not None and y.any():
        pats = {s: float(fr[y & (scen == s)].mean()) for s in sorted({str(v) for v in scen[y]})}
    if objective == "patterns" and pats:
        caught = float(np.mean(list(pats.values())))
    else:
        caught = float(fr[y].mean()) if y.any() else 0.0
    return legit, caught, pats


def floored_patterns(y: np.ndarray, scen: np.ndarray | None, minimum: int = MIN_PATTERN_PAYMENTS) -> list[str]:
    """The fraud patterns with enough labelled payments for ``pattern_floor`` to guard them."""
    if scen is None:
        return []
    names, counts = np.unique(np.asarray(scen[y], dtype=str), return_counts=True)
    return [str(n) for n, c in zip(names, counts) if c >= minimum and n != ""]


def descend(scorer: Scorer, rows: Rows, rules: Sequence[Rule], policy: Policy, params: list[Param], budget: float,
            *, start: State | None = None, seed: int = 0, max_passes: int = 4, objective: str = "payments",
            pattern_floor: float | None = None, floor_from: Mapping[str, float] | None = None,
            deadline: float | None = None, progress: Callable[[str], None] | None = None
            ) -> tuple[State, int, bool, list[str]]:
    """Coordinate descent from ``start`` (module docstring); the best state, the number of
    candidates decided, whether ``deadline`` (a `time.monotonic` value) stopped it, and a log.

    ``floor_from``: each pattern's friction the floor is measured from (default: ``start``'s)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
    if pattern_floor is not None and not 0 <= pattern_floor < 1:
        raise ValueError(f"pattern_floor: {pattern_floor} is not a share between 0 and 1 (e.g. 0.05)")
    y = np.asarray(rows.is_fraud, dtype=bool)
    scen = None if rows.scenario is None else np.asarray(rows.scenario, dtype=object)
    rng = np.random.default_rng(seed)
    state = (start or State()).copy()
    guarded = floored_patterns(y, scen) if pattern_floor is not None else []
    floor: dict[str, float] = {}

    def key(s: State) -> tuple[bool, bool, float, float]:
        r, p = s.build(rules, policy)
        legit, caught, pats = _objective(scorer.decide(r, p), y, scen, objective)
        kept = all(pats.get(g, 0.0) >= floor[g] - 1e-12 for g in floor)
        ok = legit <= budget + 1e-12
        return kept, ok, (caught if ok else -legit), -legit

    if guarded:
        r0, p0 = state.build(rules, policy)
        at_start = _objective(scorer.decide(r0, p0), y, scen, objective)[2]
        base = dict(floor_from) if floor_from is not None else at_start
        floor = {g: base.get(g, at_start[g]) - float(pattern_floor or 0.0) for g in guarded}
    best = key(state)
    evaluations, timed_out, log = 1, False, []
    for n in range(max_passes):
        moved = 0
        for i in rng.permutation(len(params)):
            p = params[int(i)]
            here = state.get(p, rules, policy)
            for v in p.grid:
                if v == here or not _ordered(state, p, v, rules, policy):
                    continue
                cand = state.set(p, v)
                k = key(cand)
                evaluations += 1
                if k > best:
                    best, state, here = k, cand, v
                    moved += 1
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                break
        line = (f"pass {n + 1}: legit friction {-best[3]:.4%}, fraud caught "
                f"{best[2] if best[1] else float('nan'):.4f} ({objective}), {moved} moves, "
                f"{evaluations} candidates{' (time limit)' if timed_out else ''}"
                f"{'' if best[1] else ' (budget not met' + (' within the pattern floor)' if floor else ')')}")
        log.append(line)
        if progress is not None:
            progress(line)
        if not moved or timed_out:
            break
    return state, evaluations, timed_out, log


def tune(rules: Sequence[Rule], policy: Policy, dtypes: Mapping[str, str], train: Rows, *, budget: float,
         test: Rows | None = None, seed: int = 0, max_passes: int = 4, objective: str = "payments",
         thresholds: bool = True, curve: Sequence[float] = (0.25, 0.5, 2.0), max_seconds: float | None = None,
         pattern_floor: float | None = None, progress: Callable[[str], None] | None = None) -> TuneResult:
    """Search (module docstring) on ``train`` within ``budget``; figures on ``train`` and ``test``.

    ``curve``: multiples of the budget also tuned (each starting from the answer at the
    budget), the points of the trade-off curve of the report."""
    if not 0 < budget < 1:
        raise ValueError(f"max_friction: {budget} is not a share between 0 and 1 (e.g. 0.01 for 1%)")
    with_risk = train.risk is not None
    params = search_space(rules, policy, with_risk=with_risk, thresholds=thresholds)
    scorer = Scorer(rules, policy, train.frame, dtypes, train.risk)
    test_scorer = Scorer(rules, policy, test.frame, dtypes, test.risk) if test is not None and len(test.frame) else None
    deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def figs(scr: Scorer | None, rows: Rows | None, s: State) -> dict[str, Any] | None:
        if scr is None or rows is None:
            return None
        r, p = s.build(rules, policy)
        return figures(scr.decide(r, p), rows.is_fraud, rows.scenario, _grades(rows.frame), rows.promo)

    if progress is not None:
        progress(f"tuning {len(params)} parameters on {len(train.frame):,} payments "
                 f"({int(np.sum(train.is_fraud)):,} fraud), budget {budget:.2%}")
    state, evals, timed_out, log = descend(scorer, train, rules, policy, params, budget, seed=seed,
                                           max_passes=max_passes, objective=objective, deadline=deadline,
                                           pattern_floor=pattern_floor, progress=progress)
    before, after = State(), state
    result = TuneResult(state.changes(rules, policy), *state.build(rules, policy), budget,
                        figs(scorer, train, before) or {}, figs(scorer, train, after) or {},
                        figs(test_scorer, test, before), figs(test_scorer, test, after), log=log,
                        evaluations=evals, stopped_by_time=timed_out)
    points = [(1.0, state)]
    for m in sorted(curve):
        if deadline is not None and time.monotonic() > deadline:
            break
        s, n, _, _ = descend(scorer, train, rules, policy, params, budget * m, start=state, seed=seed,
                             max_passes=2, objective=objective, deadline=deadline, pattern_floor=pattern_floor,
                             floor_from=result.train_before.get("per_pattern"))
        result.evaluations += n
        points.append((m, s))
    for m, s in sorted(points, key=lambda x: x[0]):
        result.curve.append({"budget": budget * m, "train": figs(scorer, train, s), "test": figs(test_scorer, test, s)})
    return result


def _grades(frame: pd.DataFrame) -> np.ndarray | None:
    return frame["merchant.grade"].to_numpy(dtype=object) if "merchant.grade" in frame.columns else None


__all__ = ["MIN_PATTERN_PAYMENTS", "OBJECTIVES", "Param", "Rows", "Scorer", "State", "TuneResult", "descend", "figures", "floored_patterns", "search_space",
           "tune", "tunable_grid"]
