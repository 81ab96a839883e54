"""The default rule pack in rules/: loads, its own cases pass, and every rule is covered."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.engine import load_ruleset
from fengkong.engine.testing import load_cases, run_cases

RULES = Path(__file__).resolve().parents[1] / "rules"


def test_default_pack_loads_and_every_case_passes() -> None:
    ruleset = load_ruleset(RULES)
    cases, problems = load_cases(RULES)
    assert problems == []
    failed = [(r.case.name, r.failures) for r in run_cases(ruleset, cases) if not r.passed]
    assert failed == []


def test_every_rule_has_a_case_that_fires_it_and_a_close_case_that_does_not() -> None:
    ruleset = load_ruleset(RULES)
    cases, _ = load_cases(RULES)
    fires = {rid for c in cases for rid in c.expect.get("fires", [])}
    misses = {rid for c in cases for rid in c.expect.get("not_fires", [])}
    assert set(ruleset.by_id) - fires == set()
    assert set(ruleset.by_id) - misses == set()


def test_pack_covers_every_domain_pattern() -> None:
    tags = {t for r in load_ruleset(RULES).rules for t in r.tags}
    for tag in ("merchant_grade", "volume_spike", "cash_out", "card_theft", "card_testing", "proxy_ip",
                "location", "blacklist", "promotion_abuse", "online_banking"):
        assert tag in tags, tag


def test_case_runner_reports_a_wrong_expectation(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "lists.yaml").write_text((RULES / "lists" / "lists.yaml").read_text())
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - {id: big, description: big, when: event.amount > 100, then: review, score: 10}\n")
    (tmp_path / "r_test.yaml").write_text(
        "cases:\n"
        "  - {name: right, features: {event.amount: 500}, expect: {decision: review, fires: [big]}}\n"
        "  - {name: wrong, features: {event.amount: 5}, expect: {decision: review, fires: [big]}}\n")
    results = run_cases(load_ruleset(tmp_path), load_cases(tmp_path)[0])
    assert [r.passed for r in results] == [True, False]
    assert any("expected big to fire" in f for f in results[1].failures)
    out = CliRunner().invoke(app, ["rules", "test", "--rules-dir", str(tmp_path)])
    assert out.exit_code == 1 and "FAIL" in out.output and "1 passed, 1 failed" in out.output


def test_cli_check_and_test_pass_on_the_default_pack() -> None:
    runner = CliRunner()
    check = runner.invoke(app, ["rules", "check", "--rules-dir", str(RULES)])
    assert check.exit_code == 0, check.output
    test = runner.invoke(app, ["rules", "test", "--rules-dir", str(RULES)])
    assert test.exit_code == 0, test.output
    assert " 0 failed" in test.output
