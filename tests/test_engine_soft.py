"""Soft rules and the policy's soft table: how they are written, refused and applied live.

The agreement of the live path with the vectorised evaluator on a simulated history is in
tests/test_vectorized.py (`test_soft_step_agrees_with_durable_and_changes_decisions`); the
default pack's examples of the soft step are cases with ``risk:`` in rules/*_test.yaml.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fengkong.engine import load_ruleset
from fengkong.engine.decision import Decision
from fengkong.engine.errors import RuleSetError
from fengkong.engine.testing import load_cases, run_cases

POLICY = "severity: [allow, challenge, review, deny]\nthresholds:\n  default: {challenge: 40, review: 70, deny: 100}\n"
RULES = """rules:
  - id: spike
    description: volume jumped
    when: merchant.volume_ratio_today_floored >= 10
    then: deny
    score: 60
    soft: true
  - id: blocked
    description: blocked card
    when: card.fingerprint in lists.blocked_cards
    then: deny
    score: 100
  - id: tor
    description: Tor exit
    when: ip.is_tor
    then: review
    score: 50
"""


def _write(tmp_path: Path, policy_extra: str = "soft: {challenge: 0.2, review: 0.5, deny: 0.9}\n",
           rules: str = RULES) -> Path:
    d = tmp_path / "rules"
    (d / "lists").mkdir(parents=True)
    src = Path(__file__).resolve().parent.parent / "rules" / "lists" / "lists.yaml"
    (d / "lists" / "lists.yaml").write_text(src.read_text())
    (d / "policy.yaml").write_text(POLICY + policy_extra)
    (d / "r.yaml").write_text(rules)
    return d


def test_soft_rule_alone_takes_the_fused_risks_action(tmp_path: Path) -> None:
    rs = load_ruleset(_write(tmp_path))
    try:
        spike = {"merchant.volume_ratio_today_floored": 12.0}
        # rules-only (no fused risk): the soft rule decides like a hard one
        assert rs.evaluate(spike).decision == "deny"
        low = rs.evaluate(spike, lambda d: 0.05)
        assert (low.decision, low.hard_action, low.soft_action, low.risk) == ("allow", "allow", "allow", 0.05)
        assert [r.id for r in low.reasons] == ["spike"] and low.score == 60  # still explained
        assert rs.evaluate(spike, lambda d: 0.3).decision == "challenge"
        assert rs.evaluate(spike, lambda d: 0.95).decision == "deny"
        # the fuse callback reads the first decision: every enforced rule, soft or not
        seen = []
        rs.evaluate(spike, lambda d: seen.append(d.score) or 0.1)
        assert seen == [60]
        # nothing fired, high risk: friction from the risk alone
        assert rs.evaluate({}, lambda d: 0.6).decision == "review"
        assert rs.evaluate({}, lambda d: 0.1).decision == "allow"
        # a fuse that has no risk (non-payment, no txn_risk): as rules-only
        assert rs.evaluate(spike, lambda d: None).decision == "deny"
    finally:
        rs.close()


def test_hard_rules_decide_as_before_whatever_the_risk(tmp_path: Path) -> None:
    rs = load_ruleset(_write(tmp_path))
    try:
        blocked = {"card.fingerprint": "fp1", "lists.blocked_cards": True, "merchant.volume_ratio_today_floored": 12.0}
        assert rs.evaluate(blocked, lambda d: 0.0).decision == "deny"
        tor = {"ip.is_tor": True, "merchant.volume_ratio_today_floored": 12.0}
        d = rs.evaluate(tor, lambda d: 0.01)
        # the soft spike's deny does not count; Tor's review does; a high risk can raise it
        assert (d.decision, d.hard_action) == ("review", "review")
        assert rs.evaluate(tor, lambda d: 0.95).decision == "deny"
    finally:
        rs.close()


def test_soft_step_answers_with_outcome_of_the_decision_the_fuse_read(tmp_path: Path) -> None:
    # `soft.settle` answers `with_outcome` of the first decision: the decision the fuse read
    # is left as it was (frozen), and the answer is its copy with the soft step's outcome
    rs = load_ruleset(_write(tmp_path))
    try:
        tor = {"ip.is_tor": True, "merchant.volume_ratio_today_floored": 12.0}
        for risk in (0.01, 0.3, 0.95):
            seen: list[tuple[Decision, Decision]] = []

            def fuse(first: Decision, risk: float = risk) -> float:
                seen.append((first, replace(first)))  # the object, and a copy of it as it stood
                return risk

            got = rs.evaluate(tor, fuse)
            (first, as_seen), = seen
            assert got is not first and first == as_seen
            assert (as_seen.decision, as_seen.risk, as_seen.hard_action) == ("deny", None, None)
            soft_action = rs.policy.soft_action(risk)
            assert got == as_seen.with_outcome(decision=rs.policy.more_severe("review", soft_action), lane=None,
                                               risk=risk, soft_action=soft_action, hard_action="review")
            assert got.decision == ("deny" if risk == 0.95 else "review")
    finally:
        rs.close()


def test_without_a_soft_table_the_risk_changes_nothing(tmp_path: Path) -> None:
    rs = load_ruleset(_write(tmp_path, policy_extra=""))
    try:
        d = rs.evaluate({"merchant.volume_ratio_today_floored": 12.0}, lambda d: 0.01)
        assert d.decision == "deny" and d.soft_action is None
    finally:
        rs.close()


@pytest.mark.parametrize("extra, words", [
    ("soft: {challenge: 0.6, review: 0.5}\n", "challenge (0.6) must not be above review (0.5)"),
    ("soft: {review: 1.5}\n", "soft.review"),
    ("soft: {challenge: 0}\n", "soft.challenge"),
    ("soft: {block: 0.5}\n", "soft"),
])
def test_a_bad_soft_table_is_refused_with_the_file_and_field(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(RuleSetError) as exc:
        load_ruleset(_write(tmp_path, policy_extra=extra))
    text = "\n".join(str(p) for p in exc.value.problems)
    assert "policy.yaml:" in text and words in text, text


def test_soft_must_be_true_or_false(tmp_path: Path) -> None:
    with pytest.raises(RuleSetError) as exc:
        load_ruleset(_write(tmp_path, rules=RULES.replace("soft: true", 'soft: "yes"')))
    text = "\n".join(str(p) for p in exc.value.problems)
    assert "r.yaml:" in text and "spike" in text and "soft" in text, text


def test_case_files_can_give_the_fused_risk(tmp_path: Path) -> None:
    d = _write(tmp_path)
    (d / "r_test.yaml").write_text("""cases:
  - name: spike with a low risk is allowed
    features: {merchant.volume_ratio_today_floored: 12.0}
    risk: 0.05
    expect: {decision: allow, fires: [spike]}
  - name: the same case rules-only is denied
    features: {merchant.volume_ratio_today_floored: 12.0}
    expect: {decision: deny}
  - name: wrong on purpose
    features: {merchant.volume_ratio_today_floored: 12.0}
    risk: 0.05
    expect: {decision: deny}
""")
    cases, problems = load_cases(d)
    assert not problems
    rs = load_ruleset(d)
    try:
        results = run_cases(rs, cases)
    finally:
        rs.close()
    assert [r.passed for r in results] == [True, True, False]
    assert "soft step: risk 0.05 -> allow" in results[2].failures[0]
    (d / "r_test.yaml").write_text("cases:\n  - name: bad\n    features: {}\n    risk: 2\n    expect: {decision: allow}\n")
    _, problems = load_cases(d)
    assert problems and "risk: must be a number from 0 to 1" in problems[0].reason
