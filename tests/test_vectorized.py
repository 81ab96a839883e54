"""The vectorised evaluator gives durable_rules' decisions, row for row.

1. Conformance cases (OPA style): every ``tests/cases/**/*.yaml`` holds a note, the
   rules (and optionally a policy), inputs and the expected result. Each input runs
   through durable_rules (`RuleSet.evaluate`) and through `VectorizedRules`; both must
   give the expected decision, fired ids, lane and score.
2. A simulated history through the offline twin: both evaluators agree on every
   event, with the default rule pack and with a generated 50-rule set.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.engine.policy import Policy, build_policy
from fengkong.engine.rule import build_rule
from fengkong.engine.ruleset import RuleSet, load_ruleset
from fengkong.engine.schema import Schema, read_lists
from fengkong.engine.vectorized import VectorizedRules, python_records
from fengkong.engine.yamlio import load_yaml, plain

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "tests" / "cases").rglob("*.yaml"))


def _schema() -> Schema:
    lists, _ = read_lists(ROOT / "rules")
    return Schema.from_catalog(lists)


def load_case_file(path: Path) -> tuple[RuleSet, list[dict]]:
    data = load_yaml(path)
    assert isinstance(data.get("note"), str) and data["note"].strip(), f"{path}: every case file needs a note"
    schema = _schema()
    rules = []
    for node in data["rules"]:
        rule, problems = build_rule(node, path.name, schema)
        assert rule is not None, problems
        rules.append(rule)
    policy: Policy | None = Policy()
    if "policy" in data:
        policy, problems = build_policy(data["policy"], path.name, schema)
        assert policy is not None, problems
    ruleset = RuleSet(rules, policy, schema, content_hash=f"case{abs(hash(path.name)):012d}")
    return ruleset, [plain(c) for c in data["cases"]]


def _check(expect: dict, decision: str, fired: list[str], lane, score: float, where: str) -> None:
    if "decision" in expect:
        assert decision == expect["decision"], where
    if "fires" in expect:
        assert sorted(fired) == sorted(expect["fires"]), where
    if "lane" in expect:
        assert lane == expect["lane"], where
    if "score" in expect:
        assert score == expect["score"], where


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(ROOT / "tests" / "cases")) for p in CASES])
def test_conformance_case(path: Path) -> None:
    ruleset, cases = load_case_file(path)
    try:
        vec = VectorizedRules.from_ruleset(ruleset)
        inputs = [dict(c.get("input") or {}) for c in cases]
        out = vec.evaluate_records(inputs)
        for i, (case, features) in enumerate(zip(cases, inputs)):
            expect = case["expect"]
            d = ruleset.evaluate(features)
            _check(expect, d.decision, d.fired_ids, d.lane, d.score, f"{path.name} case {i} durable: {d.to_dict()}")
            _check(expect, out.decision[i], out.fired_ids(i), out.lane[i], out.score[i],
                   f"{path.name} case {i} vectorised")
            # and the two agree on everything, not only what the case pins down
            assert (d.decision, d.fired_ids, d.lane, d.score_action) == (
                out.decision[i], out.fired_ids(i), out.lane[i], out.score_action[i])
            assert math.isclose(d.score, out.score[i])
    finally:
        ruleset.close()


def test_there_are_cases_for_each_area() -> None:
    areas = {p.parent.name for p in CASES}
    assert {"missing", "policy", "language"} <= areas and len(CASES) >= 9


def _agree(ruleset: RuleSet, frame: pd.DataFrame) -> int:
    """Evaluate every row with durable and vectorised; return the number of rows, assert equality."""
    vec = VectorizedRules.from_ruleset(ruleset).evaluate(frame)
    records = python_records(frame[[c for c in frame.columns if c in ruleset.schema.dtypes]])
    bad = []
    for i, rec in enumerate(records):
        d = ruleset.evaluate(rec)
        got = (vec.decision[i], vec.fired_ids(i), vec.lane[i], vec.score_action[i])
        want = (d.decision, d.fired_ids, d.lane, d.score_action)
        if got != want or d.score != vec.score[i]:
            bad.append((i, want, got, d.score, vec.score[i]))
    assert not bad, (len(bad), bad[:5])
    return len(records)


@pytest.fixture(scope="module")
def sim_features(ipintel, list_specs):
    import json

    from fengkong.features.offline import offline_features
    from fengkong.simulation import SimConfig, run

    sim = run(SimConfig.for_events(20_000, seed=7, days=30))
    entries = {k: v for k, v in sim.blacklist.items() if k in list_specs}
    entries["trusted_users"] = list(sim.events["user_id"].dropna().unique()[:40])
    json.dumps(entries)
    return offline_features(sim.events, ipintel=ipintel, lists=list_specs, list_entries=entries,
                            profiles=sim.merchants.assign(grade=np.where(np.arange(len(sim.merchants)) % 3 == 0,
                                                                         "C", None)))


def test_default_pack_agrees_with_durable_on_a_simulated_history(sim_features) -> None:
    ruleset = load_ruleset(ROOT / "rules")
    try:
        n = _agree(ruleset, sim_features)
    finally:
        ruleset.close()
    assert n > 15_000
    vec = VectorizedRules.from_ruleset(load_ruleset(ROOT / "rules")).evaluate(sim_features)
    # the history exercises the policy: every action, rules firing, the trusted lane
    assert set(vec.decision) >= {"allow", "challenge", "review", "deny"}
    assert (vec.lane == "trusted").any()
    assert vec.fired.any(axis=0).sum() >= 10


def test_generated_rules_agree_with_durable_on_a_simulated_history(sim_features, tmp_path) -> None:
    from fengkong.replay.rulegen import write_candidate

    write_candidate(tmp_path / "cand", ROOT / "rules", n_rules=50, seed=3, frame=sim_features)
    ruleset = load_ruleset(tmp_path / "cand")
    try:
        assert len(ruleset.rules) >= 50
        _agree(ruleset, sim_features.iloc[::2])
    finally:
        ruleset.close()


def test_soft_step_agrees_with_durable_and_changes_decisions(sim_features) -> None:
    """The policy's soft step (`fengkong.engine.soft`) over arrays gives the live path's decisions, row
    for row, with a fused risk per row (some rows without one: NaN / None). The risks are drawn at
    random, so every soft-table band and the hard/soft mixes occur."""
    ruleset = load_ruleset(ROOT / "rules")
    assert ruleset.policy.soft, "the default policy has a soft table"
    frame = sim_features.iloc[:6000]
    rng = np.random.default_rng(5)
    risk = rng.uniform(0, 1, len(frame)) ** 3
    risk[rng.uniform(size=len(frame)) < 0.1] = np.nan
    try:
        vec = VectorizedRules.from_ruleset(ruleset)
        full = vec.evaluate(frame)
        settled = vec.evaluate(frame, risk=risk)
        records = python_records(frame[[c for c in frame.columns if c in ruleset.schema.dtypes]])
        bad = []
        for i, rec in enumerate(records):
            r = None if np.isnan(risk[i]) else float(risk[i])
            d = ruleset.evaluate(rec, lambda _first, r=r: r)
            if (d.decision, d.lane, d.fired_ids) != (settled.decision[i], settled.lane[i], settled.fired_ids(i)):
                bad.append((i, r, d.decision, settled.decision[i], d.fired_ids))
        assert not bad, (len(bad), bad[:5])
    finally:
        ruleset.close()
    soft_ids = [j for j, rule in enumerate(vec.rules) if rule.soft]
    hard_ids = [j for j, rule in enumerate(vec.rules) if not rule.soft and rule.enforced]
    only_soft = full.fired[:, soft_ids].any(axis=1) & ~full.fired[:, hard_ids].any(axis=1)
    has = ~np.isnan(risk)
    # a low fused risk lets payments stopped by soft rules alone through ...
    low = only_soft & has & (risk < ruleset.policy.soft["challenge"]) & (full.decision != "allow")
    assert low.any() and (settled.decision[low] == "allow").all()
    # ... a high one stops payments no rule caught ...
    no_lane = np.array([lane is None for lane in settled.lane], dtype=bool)  # a trusted lane still decides
    high = has & (risk >= ruleset.policy.soft["review"]) & ~full.fired.any(axis=1) & no_lane
    assert high.any() and np.isin(settled.decision[high], ["review", "deny"]).all()
    # ... and without a fused risk nothing changes
    assert (settled.decision[~has] == full.decision[~has]).all()
