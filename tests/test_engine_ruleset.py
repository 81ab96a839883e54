"""Loading, checking, policy, explanations, versioning and atomic hot reload."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.engine import LiveRules, RuleSetError, load_ruleset

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
LISTS = (RULES_DIR / "lists" / "lists.yaml").read_text()

POLICY = """
thresholds:
  default: {challenge: 40, review: 70, deny: 100}
  grade:
    NEW: {challenge: 20, review: 50, deny: 90}
  channel:
    online_banking: {review: 35}
lanes:
  trusted:
    when: event.user_id in lists.trusted_users
    unless_tags: [blacklist]
"""

RULES = """
rules:
  - id: big
    description: 大额 / big payment
    when: event.amount >= 1000
    then: challenge
    score: 30
    tags: [amount]
  - id: night
    description: night payment
    when: event.is_night and event.amount > 2 * user.amount_mean
    then: allow
    score: 25
  - id: spike
    description: volume spike
    when: merchant.volume_ratio_today >= 3
    then: review
    score: 10
  - id: trial
    description: a shadow trial
    when: event.amount >= 1
    then: deny
    score: 100
    mode: shadow
  - id: blocked
    description: blocked card
    when: card.fingerprint in lists.blocked_cards
    then: deny
    score: 100
    tags: [blacklist]
"""

CASES = """
cases:
  - name: big payment
    features: {event.amount: 5000}
    expect: {decision: challenge, fires: [big, trial]}
"""


def write(d: Path, rules: str = RULES, policy: str = POLICY, cases: str | None = CASES) -> Path:
    (d / "lists").mkdir(exist_ok=True)
    (d / "lists" / "lists.yaml").write_text(LISTS)
    (d / "main.yaml").write_text(rules)
    (d / "policy.yaml").write_text(policy)
    if cases is not None:
        (d / "main_test.yaml").write_text(cases)
    return d


def test_decision_explains_enforced_and_shadow_rules(tmp_path: Path) -> None:
    rs = load_ruleset(write(tmp_path))
    d = rs.evaluate({"event.amount": 5000, "event.is_night": True, "user.amount_mean": 100.0})
    assert d.decision == "challenge" and d.score == 55
    assert [r.id for r in d.reasons] == ["big", "night"]
    assert d.reasons[1].values == {"event.is_night": True, "event.amount": 5000, "user.amount_mean": 100.0}
    assert d.reasons[0].to_dict()["description"] == "大额 / big payment"
    assert [r.id for r in d.shadow] == ["trial"] and d.shadow[0].mode == "shadow"
    assert "merchant.volume_ratio_today" in d.missing_features
    assert d.ruleset_version == rs.version
    assert d.to_dict()["reasons"][0]["action"] == "challenge"


def test_nothing_fired_means_allow(tmp_path: Path) -> None:
    d = load_ruleset(write(tmp_path)).evaluate({})
    assert (d.decision, d.score, d.reasons, d.lane) == ("allow", 0, [], None)


def test_shadow_rules_never_change_the_decision(tmp_path: Path) -> None:
    d = load_ruleset(write(tmp_path)).evaluate({"event.amount": 5})
    assert d.decision == "allow" and [r.id for r in d.shadow] == ["trial"] and d.score == 0


def test_most_severe_action_wins_and_thresholds_differ_by_grade_and_channel(tmp_path: Path) -> None:
    rs = load_ruleset(write(tmp_path))
    base = {"event.amount": 5000, "merchant.volume_ratio_today": 4}  # challenge 30 + review 10 = 40
    assert rs.evaluate(base).decision == "review"  # the review rule's action beats the score
    assert rs.evaluate({"event.amount": 5000}).decision == "challenge"  # score 30 < 40 default
    new = rs.evaluate({**base, "merchant.grade": "NEW"})  # NEW: review at 50, deny at 90
    assert new.thresholds["review"] == 50 and new.decision == "review"
    night = {"event.amount": 5000, "event.is_night": True, "user.amount_mean": 1.0, "merchant.grade": "NEW"}
    assert rs.evaluate(night).decision == "review"  # 55 >= NEW review threshold 50
    assert rs.evaluate({**night, "merchant.grade": "A"}).decision == "challenge"  # A uses default: 55 < 70
    ob = rs.evaluate({"event.amount": 5000, "merchant.volume_ratio_today": 4, "event.channel": "online_banking",
                      "merchant.grade": "A"})
    assert ob.thresholds["review"] == 35 and ob.score_action == "review"


def test_policy_order_and_a_zero_threshold_decide_even_when_nothing_fired(tmp_path: Path) -> None:
    policy = """
severity: [allow, review, challenge, deny]
thresholds:
  default: {review: 0, deny: 100}
"""
    rs = load_ruleset(write(tmp_path, policy=policy, cases=None))
    d = rs.evaluate({})
    assert (d.decision, d.score_action, d.score, d.reasons) == ("review", "review", 0, [])
    assert rs.policy.most_severe(["challenge", "review", "allow"]) == "challenge"  # this file's order
    assert rs.policy.most_severe([]) == "allow"
    big = rs.evaluate({"event.amount": 5000})  # the big rule's challenge now outranks review
    assert big.decision == "challenge" and big.score_action == "review"


def test_trusted_lane_allows_but_a_blacklist_hit_still_denies(tmp_path: Path) -> None:
    rs = load_ruleset(write(tmp_path))
    d = rs.evaluate({"event.amount": 5000, "merchant.volume_ratio_today": 9, "lists.trusted_users": True})
    assert d.decision == "allow" and d.lane == "trusted" and {r.id for r in d.reasons} == {"big", "spike"}
    d = rs.evaluate({"lists.trusted_users": True, "lists.blocked_cards": True})
    assert d.decision == "deny" and d.lane is None


def test_check_reports_every_problem_with_file_line_rule_and_reason(tmp_path: Path) -> None:
    bad = """rules:
  - id: r1
    description: typo
    when: merchant.volume_ratio_todya >= 3
    then: review
    score: 10
  - id: r2
    description: mismatch
    when: card.type == 3
    then: block
    score: 150
  - id: r1
    description: dup
    when: event.ip in lists.blocked_cards
    then: deny
    score: 5
"""
    write(tmp_path, rules=bad, cases=None)
    (tmp_path / "broken.yaml").write_text("rules:\n  - id: x\n    when: [unclosed\n")
    with pytest.raises(RuleSetError) as err:
        load_ruleset(tmp_path)
    problems = err.value.problems
    text = "\n".join(str(p) for p in problems)
    assert "did you mean merchant.volume_ratio_today" in text
    assert any(p.rule_id == "r1" and p.line == 4 and p.file.endswith("main.yaml") for p in problems)
    assert any(p.rule_id == "r2" and "type mismatch" in p.reason for p in problems)
    assert any(p.rule_id == "r2" and "unknown action 'block'" in p.reason for p in problems)
    assert any(p.rule_id == "r2" and "out of range" in p.reason for p in problems)
    assert any(p.rule_id == "r1" and "is a card list" in p.reason for p in problems)
    assert any(p.file.endswith("broken.yaml") and "YAML syntax" in p.reason and p.line for p in problems)
    out = CliRunner().invoke(app, ["rules", "check", "--rules-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert "broken.yaml" in out.output and "r2" in out.output and "6 problem(s)" in out.output


def test_duplicate_ids_are_reported(tmp_path: Path) -> None:
    write(tmp_path, cases=None)
    (tmp_path / "other.yaml").write_text(
        "rules:\n  - {id: big, description: again, when: event.amount > 1, then: allow, score: 0}\n")
    with pytest.raises(RuleSetError) as err:
        load_ruleset(tmp_path)
    assert any("duplicate rule id" in p.reason and p.rule_id == "big" for p in err.value.problems)


def test_version_is_content_hash_plus_load_time(tmp_path: Path) -> None:
    write(tmp_path)
    a, b = load_ruleset(tmp_path), load_ruleset(tmp_path)
    assert a.content_hash == b.content_hash and a.version != b.version
    assert a.version.startswith(a.content_hash[:12] + "@")
    (tmp_path / "main.yaml").write_text(RULES.replace("score: 30", "score: 31"))
    assert load_ruleset(tmp_path).content_hash != a.content_hash


def test_reload_swaps_only_a_set_that_compiles_and_passes_its_cases(tmp_path: Path) -> None:
    write(tmp_path)
    live = LiveRules(tmp_path)
    v1 = live.version
    assert live.evaluate({"event.amount": 5000}).decision == "challenge"

    (tmp_path / "main.yaml").write_text(RULES.replace("event.amount >= 1000", "event.amount >= 'x'"))
    bad = live.reload()
    assert not bad.ok and bad.problems and live.version == v1  # live set untouched
    assert live.evaluate({"event.amount": 5000}).ruleset_version == v1

    (tmp_path / "main.yaml").write_text(RULES.replace("then: challenge", "then: review"))  # breaks the case
    failing = live.reload()
    assert not failing.ok and failing.failed_cases and live.version == v1

    (tmp_path / "main.yaml").write_text(RULES.replace("score: 30", "score: 35"))
    good = live.reload()
    assert good.ok and good.changed and live.version == good.version != v1
    assert live.evaluate({"event.amount": 5000}).score == 35


def test_decisions_during_reloads_see_one_whole_set(tmp_path: Path) -> None:
    write(tmp_path, cases=None)
    live = LiveRules(tmp_path)
    stop = threading.Event()
    seen: list[tuple[str, float]] = []
    errors: list[BaseException] = []

    def decide() -> None:
        try:
            while not stop.is_set():
                d = live.evaluate({"event.amount": 5000})
                seen.append((d.ruleset_version, d.score))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=decide)
    t.start()
    scores = {}
    for i in range(8):
        score = 30 + i
        (tmp_path / "main.yaml").write_text(RULES.replace("score: 30", f"score: {score}"))
        r = live.reload()
        assert r.ok
        scores[r.version] = score
    stop.set()
    t.join()
    assert errors == []
    v0 = [v for v, _ in seen if v not in scores]
    for version, score in seen:
        if version in scores:
            assert score == scores[version]  # never an old version with a new score
    assert all(s == 30 for v, s in seen if v in v0)


def test_watch_reloads_on_file_change(tmp_path: Path) -> None:
    write(tmp_path, cases=None)
    live = LiveRules(tmp_path)
    v1 = live.version
    live.watch(interval_s=0.05)
    try:
        (tmp_path / "main.yaml").write_text(RULES.replace("score: 30", "score: 33"))
        for _ in range(200):
            if live.version != v1:
                break
            threading.Event().wait(0.05)
        assert live.version != v1 and live.evaluate({"event.amount": 5000}).score == 33
    finally:
        live.stop_watching()


def _thresholds_by_the_rule(policy, grade, channel) -> dict:
    """Point 3 of the policy, written out again: grade table (or default), tightened by channel."""
    table = dict(policy.by_grade.get(grade, policy.default)) if isinstance(grade, str) else dict(policy.default)
    for action, limit in (policy.by_channel.get(channel, {}) if isinstance(channel, str) else {}).items():
        table[action] = min(limit, table.get(action, limit))
    return table


def test_threshold_tables_built_once_equal_the_policy_rule(tmp_path: Path) -> None:
    from fengkong.engine.policy import Policy

    policy_text = POLICY.replace("online_banking: {review: 35}", "online_banking: {review: 35, deny: 60}\n"
                                 "    wallet: {deny: 95, challenge: 45}")
    policies = [load_ruleset(write(tmp_path, policy=policy_text, cases=None)).policy,
                load_ruleset(RULES_DIR).policy, Policy()]
    for policy in policies:
        for grade in (None, "NEW", "A", "B", "C", "D", "Z", 3, ["A"], ("NEW",)):
            for channel in (None, "online_banking", "wallet", "pos", 7, ["wallet"]):
                want = _thresholds_by_the_rule(policy, grade, channel)
                table = policy.table_for(grade, channel)
                assert table.limits == want and list(table.limits) == list(want), (grade, channel)
                got = policy.thresholds_for(grade, channel)
                assert got == want and got is not table.limits  # a copy: a decision's own
                for total in (0, 0.5, 19, 20, 29.9, 30, 34, 35, 44, 45, 50, 59, 60, 69, 70, 89, 90, 94, 95, 99,
                              100, 119, 120, 500):
                    assert table.action_for(total) == policy.score_action(total, want), (grade, channel, total)


def test_decision_and_fired_rule_init_is_the_dataclass_s() -> None:
    # their own __init__ writes every field (decision.py): a field added to the class
    # but not to its __init__ fails here
    import dataclasses
    import inspect

    from fengkong.engine.decision import Decision, FiredRule

    for cls in (Decision, FiredRule):
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        fields = dataclasses.fields(cls)
        assert [p.name for p in params] == [f.name for f in fields]
        for p, f in zip(params, fields):
            if f.default is not dataclasses.MISSING:
                assert p.default == f.default, f.name
            elif f.default_factory is not dataclasses.MISSING:
                assert p.default is None, f.name  # None stands for a fresh default
            else:
                assert p.default is inspect.Parameter.empty, f.name
    fired = FiredRule("r", "d", "deny", 10, "enforce", ("t",), {"x": 1})
    d = Decision("deny", 10, [fired], [], ["y"], "v1", None, "deny", {"deny": 5})
    assert vars(d) == {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    assert d == Decision(decision="deny", score=10, reasons=[fired], shadow=[], missing_features=["y"],
                         ruleset_version="v1", lane=None, score_action="deny", thresholds={"deny": 5})
    assert repr(fired) == "FiredRule(id='r', description='d', action='deny', score=10, mode='enforce', " \
                          "tags=('t',), values={'x': 1})"
    assert dataclasses.replace(d, score=3).score == 3 and dataclasses.replace(d, score=3).reasons == [fired]
    a, b = Decision("allow", 0, [], [], [], "v"), Decision("allow", 0, [], [], [], "v")
    assert a.thresholds == {} and a.thresholds is not b.thresholds and a.lane is None and a.score_action == "allow"
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.score = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fired.values = {}  # type: ignore[misc]


def test_decide_on_never_changes_the_store_features(tmp_path: Path) -> None:
    from types import MappingProxyType

    from fengkong.pipeline import RISK_FEATURE, decide_on

    rs = load_ruleset(write(tmp_path))
    store = {"event.amount": 5000, "merchant.volume_ratio_today": 4}
    decision, features = decide_on(store, rules=rs)
    assert decision.decision == "review" and features == store and features is not store

    class Models:
        def score(self, f):
            return {"model.txn_risk": 0.5}

        def fuse(self, f, d):
            return 0.25

    decision, features = decide_on(MappingProxyType(store), rules=rs, models=Models())
    assert store == {"event.amount": 5000, "merchant.volume_ratio_today": 4}
    assert type(features) is dict and features == {**store, "model.txn_risk": 0.5, RISK_FEATURE: 0.25}
