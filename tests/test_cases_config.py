"""The analysts' rules/cases/cases.yaml: the shipped file loads, errors name the key, and
a case's queue is the one of its highest-scoring rule that belongs to a queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from fengkong.cases.config import CasesConfig, CasesConfigError, load, parse
from fengkong.engine.decision import FiredRule
from fengkong.engine.ruleset import rule_files

RULES = Path(__file__).resolve().parents[1] / "rules"


def test_the_shipped_file_loads_and_is_not_read_as_a_rule_file():
    config = load(RULES)
    assert config.decisions == {"review"} and config.window_minutes == 60
    assert "blacklist" in {q.name for q in config.queues}
    assert all(p.parent == RULES for p in rule_files(RULES))  # rules/cases/ is not a rule file


def test_queue_of_the_highest_scoring_rule_in_a_queue():
    config = load(RULES)
    reasons = [{"id": "ip.country_mismatch_card_only", "score": 10, "tags": ["location"]},
               {"id": "ip.tor_exit", "score": 50, "tags": ["proxy_ip"]}]
    assert config.queue_for(reasons).name == "proxy_ip"
    assert config.queue_for([{"id": "x", "score": 5, "tags": ["nothing"]}]).name == config.default_queue.name
    assert config.opens_case("review", []) and not config.opens_case("allow", [])
    assert config.opens_case("deny", [{"id": "blacklist.card", "tags": ["blacklist", "card"]}])


def test_opens_case_reads_fired_rules_as_objects_and_as_dicts_alike():
    config = CasesConfig(decisions=frozenset({"review"}), rules=frozenset({"by.id"}), tags=frozenset({"blacklist"}))
    fired = [FiredRule("by.id", "d", "allow", 5, "enforce", ("other",), {}),
             FiredRule("by.tag", "d", "deny", 90, "enforce", ("card", "blacklist"), {"x": 1}),
             FiredRule("neither", "d", "deny", 90, "enforce", ("card",), {}),
             FiredRule("no.tags", "d", "deny", 90, "enforce", (), {})]
    expected = [True, True, False, False]
    for rule, opens in zip(fired, expected):
        as_dict = rule.to_dict()
        for decision in ("allow", "deny"):
            assert config.opens_case(decision, [rule]) is opens
            assert config.opens_case(decision, [as_dict]) is opens
            assert config.opens_case(decision, [fired[2], rule]) is opens  # any of them, not only the first
        assert config.opens_case("review", [rule]) and config.opens_case("review", [])
    assert config.opens_case("deny", [dict(fired[2].to_dict(), tags=None), fired[1].to_dict()])
    assert not config.opens_case("deny", [dict(fired[2].to_dict(), tags=None)])
    assert not CasesConfig().opens_case("deny", fired)  # no rules or tags configured: the outcome alone


@pytest.mark.parametrize("data, where", [
    ({"open_on": {"decisions": ["maybe"]}}, "open_on.decisions"),
    ({"window_minutes": 0}, "window_minutes"),
    ({"group_by": ["device"]}, "group_by"),
    ({"queues": [{"name": "a", "sla_hours": -1}]}, "queues[0].sla_hours"),
    ({"queues": [{"name": "a", "colour": "red"}]}, "queues[0].colour"),
    ({"queues": [{"name": "a"}, {"name": "a"}]}, "queues: names must be unique"),
    ({"windows": 3}, "windows: unknown key"),
])
def test_errors_name_the_key(data, where):
    with pytest.raises(CasesConfigError, match=rf"cases.yaml: {where.replace('[', '.').replace(']', '.')}"):
        parse(data)
