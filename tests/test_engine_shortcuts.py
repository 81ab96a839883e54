"""The decision path's shortcuts give the decisions of the long way.

`RuleSet.evaluate` evaluates the policy's lanes with the reference closures
(`fengkong.engine.predicates`) instead of a durable_rules shard of their own, and the
soft step asks `RuleSet.verdict` (decision and lane only) of the hard rules instead of a
whole second `RuleSet.decide`. Here both are held to the way before them on varied
features: the lanes through durable_rules as conditions of their own (the rule set's
``conditions``, rules then lanes, in one `DurableRuleset`), then `RuleSet.decide` on what
fired; the soft step's hard decision through `RuleSet.decide` on the hard rules.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fengkong.engine import load_ruleset
from fengkong.engine.durable_backend import DurableRuleset, unique_name
from fengkong.engine.decision import FiredRule
from fengkong.engine.policy import CHANNEL_FEATURE, GRADE_FEATURE
from fengkong.engine.ruleset import LANE_PREFIX, RuleSet

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

#: lanes beyond the pack's `trusted`: a negation, arithmetic (a derived field in durable),
#: a missing test, and a lane whose features no rule reads
EXTRA_LANES = """
  regular:
    when: >
      user.account_age_days > 365 and user.amount_n * 2 >= event.amount
      and not ip.is_tor and card.type != "credit"
    decision: allow
    unless_tags: [blacklist, limits]
  quiet:
    when: device.distinct_users_24h is missing or merchant.age_days - card.age_days > 30
    decision: challenge
"""


@pytest.fixture(scope="module")
def rule_sets(tmp_path_factory: pytest.TempPathFactory) -> list[RuleSet]:
    d = tmp_path_factory.mktemp("lanes") / "rules"
    shutil.copytree(RULES_DIR, d)
    (d / "policy.yaml").write_text((d / "policy.yaml").read_text() + EXTRA_LANES)
    sets = [load_ruleset(RULES_DIR), load_ruleset(d)]
    assert [lane.name for lane in sets[1].policy.lanes] == ["trusted", "regular", "quiet"]
    yield sets
    for rs in sets:
        rs.close()


def _value(rng: random.Random, dtype: str | None) -> Any:
    """A feature value as a store, a model or a careless caller might give it."""
    odd = rng.random() < 0.05
    if dtype == "number":
        if odd:
            return rng.choice([None, math.nan, math.inf, "12", True, np.float64(3.5), np.int64(7), 2**60, -2**70])
        if rng.random() < 0.9:  # most features of a payment are unremarkable
            return rng.choice([0, rng.uniform(0, 1)])
        return rng.choice([1, 3, 30, 400, 366, 1000, 50_000, rng.uniform(-5, 2000)])
    if dtype == "bool":
        if odd:
            return rng.choice([None, 1, 0, "true", np.bool_(True)])
        return rng.random() < 0.04
    if dtype == "string":
        if odd:
            return rng.choice([None, 5, 'say "hi"'])
        return rng.choice(["credit", "debit", "A", "B", "NEW", "D", "online_banking", "wallet", "payment", "signup"])
    return rng.choice([None, "x", 1])


def _varied(rs: RuleSet, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    names = sorted(rs.features_read)
    out = []
    for _ in range(n):
        f = {name: _value(rng, rs.schema.dtypes.get(name)) for name in names if rng.random() < 0.9}
        if rng.random() < 0.5:  # the trusted lists: often listed, so the lanes hit and meet blacklist tags
            f.update({name: rng.random() < 0.3 for name in names if name.startswith("lists.")})
        out.append(f)
    return out


def test_lanes_in_python_decide_as_lanes_through_durable(rule_sets: list[RuleSet]) -> None:
    for rs in rule_sets:
        reference = DurableRuleset(unique_name("lanes_ref"), rs.conditions, rs.schema.dtypes)
        try:
            lanes_hit = used = 0
            for f in _varied(rs, 3000, seed=len(rs.policy.lanes)):
                fired, missing = reference.fire_keys(f)
                expected = rs.decide(fired, missing, f)
                got = rs.evaluate(f)
                assert got == expected, f
                lanes_hit += any(k.startswith("__lane__") for k in fired)
                used += got.lane is not None
            # the set exercises lanes that hold, and lanes a tag overrules
            assert lanes_hit > 300 and 0 < used < lanes_hit
        finally:
            reference.close()


def test_lane_features_are_reported_missing_as_before(rule_sets: list[RuleSet]) -> None:
    rs = rule_sets[1]
    # read by a lane only (no rule of the pack reads them): reported all the same
    only_lanes = {"lists.trusted_cards", "lists.trusted_users", "lists.trusted_merchants", "user.account_age_days"}
    assert only_lanes <= set(rs.evaluate({}).missing_features)
    reference = DurableRuleset(unique_name("lanes_ref"), rs.conditions, rs.schema.dtypes)
    try:
        assert sorted(rs.evaluate({}).missing_features) == sorted(reference.fire_keys({})[1])
    finally:
        reference.close()


def test_lanes_are_not_durable_conditions(rule_sets: list[RuleSet]) -> None:
    # a lane's condition used to be a durable_rules condition (with the default pack's
    # rules, a shard of its own: one more fact per decision); now durable fires rules only
    rs = rule_sets[1]
    lanes_held = 0
    for f in _varied(rs, 1500, seed=11):
        if any(holds(f) for _, holds in rs._lanes):
            lanes_held += 1
            fired, _ = rs._durable.fire_keys(f)
            assert not [key for key in fired if key.startswith(LANE_PREFIX)]
    assert lanes_held


def test_soft_step_verdict_is_the_hard_rules_whole_decision(rule_sets: list[RuleSet]) -> None:
    lowered = raised = 0
    for rs in rule_sets:
        soft_ids = {r.id for r in rs.rules if r.soft}
        assert soft_ids
        for risk in (0.05, 0.3, 0.6, 0.95):
            for f in _varied(rs, 400, seed=int(risk * 100)):
                got = rs.evaluate(f, lambda first: risk)
                # the long way: the whole policy over every rule, then again over the hard ones
                fired, missing = rs._durable.fire_keys(f)
                fired += [key for key, holds in rs._lanes if holds(f)]
                whole = rs.decide(fired, missing, f)
                hard_ids = [i for i in fired if i not in soft_ids]
                hard = rs.decide(hard_ids, missing, f)
                assert rs.verdict(hard_ids, f) == (hard.decision, hard.lane)
                soft_action = rs.policy.soft_action(risk)
                final = hard.decision if hard.lane is not None else rs.policy.most_severe([hard.decision, soft_action])
                assert got == replace(whole, decision=final, lane=hard.lane, risk=risk, soft_action=soft_action,
                                      hard_action=hard.decision), f
                lowered += rs.policy.rank(final) < rs.policy.rank(whole.decision)
                raised += rs.policy.rank(final) > rs.policy.rank(whole.decision)
    assert lowered > 0 and raised > 0, (lowered, raised)  # the soft step changed decisions both ways


def test_remembered_outcomes_are_the_policy_over_the_rules(rule_sets: list[RuleSet],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # `RuleSet._outcome` remembers the policy's answer per (fired ids, thresholds table): each
    # answer, remembered or not, is the policy worked out afresh, table by table (grades and
    # channels with tables of their own), and the memory stops growing at its bound
    import fengkong.engine.ruleset as ruleset_module

    monkeypatch.setattr(ruleset_module, "_OUTCOMES", 40)
    for rs in rule_sets:
        rs._outcomes.clear()
        tables = set()
        for f in _varied(rs, 600, seed=21):
            fired, missing = rs._durable.fire_keys(f)
            fired += [key for key, holds in rs._lanes if holds(f)]
            got = rs.decide(fired, missing, f)
            reasons = [rs._bare[rid] for rid in fired if rid in rs._bare]
            lanes_hit = [rid.removeprefix(LANE_PREFIX) for rid in fired if rid.startswith(LANE_PREFIX)]
            table = rs.policy.table_for(f.get("merchant.grade"), f.get("event.channel"))
            tables.add(id(table))
            decision, total, score_action, lane = rs._policy_outcome(reasons, lanes_hit, table)
            assert (got.decision, got.score, got.score_action, got.lane) == (decision, total, score_action, lane), f
            assert got.thresholds == table.limits
        assert len(rs._outcomes) == 40 and len(tables) > 1
        rs._outcomes.clear()


def test_with_outcome_is_dataclasses_replace() -> None:
    from fengkong.engine.decision import Decision, FiredRule

    # every field away from its default, so a field `with_outcome` forgets shows here
    reason = FiredRule("r", "d", "review", 30, "enforce", ("t",), {"x": 1})
    d = Decision("review", 30.5, [reason], [reason], ["m"], "v1", "lane", "challenge", {"review": 70.0}, 0.3,
                 "challenge", "review")
    # with_outcome names every field: one added to Decision must be added there too
    assert [f.name for f in fields(Decision)] == [
        "decision", "score", "reasons", "shadow", "missing_features", "ruleset_version", "lane", "score_action",
        "thresholds", "risk", "soft_action", "hard_action"]
    changes = {"decision": "deny", "lane": None, "risk": 0.95, "soft_action": "deny", "hard_action": "allow"}
    assert d.with_outcome(**changes) == replace(d, **changes)
    assert d.with_outcome(**changes).__dict__ == replace(d, **changes).__dict__


@pytest.mark.parametrize("severity", [("allow", "challenge", "review", "deny"), ("allow", "review", "challenge", "deny")])
@pytest.mark.parametrize("soft", [{"challenge": 0.2, "review": 0.5, "deny": 0.9}, {"review": 0.4},
                                  {"deny": 0.3, "challenge": 0.3}, {"challenge": 0.5, "review": 0.5, "deny": 1}])
def test_soft_action_and_more_severe_are_the_lists_answers(severity: tuple[str, ...], soft: dict[str, float]) -> None:
    # `Policy.soft_action` reads its table most severe first and `more_severe` compares two
    # ranks: the most severe of the reached actions, as `most_severe` over the list gives it,
    # at every threshold, between them, at 0 and 1, and for NaN (no action reached)
    from fengkong.engine.policy import Policy

    policy = Policy(severity=severity, soft=soft)
    risks = [0.0, 1.0, math.nan, *soft.values(), *(v - 1e-12 for v in soft.values()), *np.linspace(0, 1, 41)]
    for risk in risks:
        reached = [a for a, limit in soft.items() if risk >= limit]
        assert policy.soft_action(risk) == policy.most_severe(reached), (risk, soft)
    for first in severity:
        for second in severity:
            assert policy.more_severe(first, second) == policy.most_severe([first, second])
    assert Policy(severity=severity).soft_action(0.99) == severity[0]  # no soft table: nothing reached


def test_remembered_hard_verdicts_are_the_verdict_afresh(rule_sets: list[RuleSet],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the soft step remembers the hard rules' verdict per (fired ids, thresholds table): each
    # answer, remembered or not, is `verdict` of the hard ids worked out afresh, and the memory
    # stops growing at its bound
    import fengkong.engine.ruleset as ruleset_module

    monkeypatch.setattr(ruleset_module, "_OUTCOMES", 30)
    for rs in rule_sets:
        rs._verdicts.clear()
        soft_ids = {r.id for r in rs.rules if r.soft}
        for f in _varied(rs, 500, seed=33) * 2:
            fired, _ = rs._durable.fire_keys(f)
            fired += [key for key, holds in rs._lanes if holds(f)]
            rs._outcomes.clear()  # `verdict` below works the policy out again
            table = rs.policy.table_for(f.get(GRADE_FEATURE), f.get(CHANNEL_FEATURE))
            assert rs._hard_verdict(fired, f, table) == rs.verdict([i for i in fired if i not in soft_ids], f), f
        assert len(rs._verdicts) == 30
        rs._verdicts.clear()


def test_fired_rules_are_made_as_their_init_makes_them(rule_sets: list[RuleSet]) -> None:
    # `RuleSet._decide` fills each FiredRule's dict from the rule's own rather than calling
    # ``__init__``: the same fields, equal, frozen, and the values those the rule reads
    seen = 0
    for rs in rule_sets:
        for f in _varied(rs, 300, seed=7):
            d = rs.evaluate(f)
            for fired in d.reasons + d.shadow:
                r = rs.by_id[fired.id]
                want = FiredRule(r.id, r.description, r.then, r.score, r.mode, r.tags, {n: f.get(n) for n in r.reads})
                assert fired == want and fired.__dict__ == want.__dict__
                assert list(fired.__dict__) == [fl.name for fl in fields(FiredRule)]  # the fields' order
                with pytest.raises(AttributeError):
                    fired.score = 0.0  # type: ignore[misc]
                seen += 1
    assert seen > 100


def test_missing_features_are_sorted_fresh_lists_remembered_boundedly(rule_sets: list[RuleSet], monkeypatch) -> None:
    # `RuleSet._sorted` remembers the sorted list per reported one: each decision still gets
    # sorted(missing), as a list of its own (a caller changing one changes no other decision)
    from fengkong.engine import ruleset as ruleset_module

    monkeypatch.setattr(ruleset_module, "_OUTCOMES", 20)
    for rs in rule_sets:
        rs._missing_sorted.clear()
        kinds = set()
        for f in _varied(rs, 300, seed=5) * 2:
            _, missing = rs._durable.fire_keys(f)
            got = rs.evaluate(f).missing_features
            assert got == sorted(missing), f
            kinds.add(tuple(missing))
            got.append("changed by a caller")
            assert rs.evaluate(f).missing_features == sorted(missing)
        assert len(kinds) > 20 and len(rs._missing_sorted) == 20
