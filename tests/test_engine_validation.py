"""The YAML validators (rules, policy, replay mappings): every problem, with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.engine import Problem, RuleSetError, load_ruleset
from fengkong.replay.mapping import Mapping, MappingError

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
LISTS = (RULES_DIR / "lists" / "lists.yaml").read_text()

GOOD_RULE = """  - id: ok
    description: fine
    when: event.amount >= 10
    then: review
    score: 30
"""

BAD_RULES = """rules:
  - id: typo
    description: a misspelt field
    when: event.amount >= 1
    then: review
    scroe: 10
  - id: wrong_type
    description: a score in quotes
    when: event.amount >= 2
    then: review
    score: "10"
  - id: bad_action
    description: an action that does not exist
    when: event.amount >= 3
    then: block
    score: 10
  - id: no_when
    description: the condition is missing
    then: deny
    score: 10
  - id: twice
    description: a key written twice
    when: event.amount >= 4
    then: deny
    score: 10
    score: 20
  - id: bad_tags
    description: tags of the wrong type
    when: event.amount >= 5
    then: deny
    score: 10
    tags: [ok, 7]
    mode: live
"""


def write(d: Path, rules: str, policy: str = "") -> Path:
    (d / "lists").mkdir(exist_ok=True)
    (d / "lists" / "lists.yaml").write_text(LISTS)
    (d / "main.yaml").write_text(rules)
    (d / "policy.yaml").write_text(policy)
    return d


def problems_of(d: Path) -> list[Problem]:
    with pytest.raises(RuleSetError) as err:
        load_ruleset(d)
    return err.value.problems


def one(problems: list[Problem], rule_id: str | None, needle: str) -> Problem:
    found = [p for p in problems if p.rule_id == rule_id and needle in p.reason]
    assert len(found) == 1, (needle, [str(p) for p in problems])
    return found[0]


def test_typical_rule_mistakes_name_file_line_rule_and_field(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, BAD_RULES + GOOD_RULE))
    assert {p.file for p in problems} == {f"{tmp_path.name}/main.yaml"}
    typo = one(problems, "typo", "unknown field 'scroe'")
    assert typo.line == 6 and "did you mean 'score'" in typo.reason
    assert one(problems, "typo", "missing required field 'score'").line == 2  # the rule's own line
    assert one(problems, "wrong_type", "score: must be a number, not '10'").line == 11
    action = one(problems, "bad_action", "then: unknown action 'block'")
    assert action.line == 15 and "expected one of allow, challenge, review, deny" in action.reason
    assert one(problems, "no_when", "missing required field 'when'").line == 17
    assert one(problems, "twice", "field 'score' is written twice").line == 26
    assert one(problems, "bad_tags", "tags[1]: must be text, not 7").line == 32
    assert one(problems, "bad_tags", "mode: unknown mode 'live'").line == 33
    assert not [p for p in problems if p.rule_id == "ok"]
    assert len(problems) == 8  # every problem of the file in one run, nothing else
    out = CliRunner().invoke(app, ["rules", "check", "--rules-dir", str(tmp_path)])
    assert out.exit_code == 1 and "8 problem(s)" in out.output
    assert "main.yaml:15 bad_action: then: unknown action 'block'" in out.output


def test_a_valid_rule_keeps_its_values(tmp_path: Path) -> None:
    rs = load_ruleset(write(tmp_path, "rules:\n" + GOOD_RULE.replace("fine", "  fine  ") +
                            "    tags: [cash_out, 套现]\n    mode: shadow\n"))
    (rule,) = rs.rules
    assert (rule.id, rule.description, rule.then, rule.mode, rule.tags) == ("ok", "fine", "review", "shadow",
                                                                            ("cash_out", "套现"))
    assert rule.score == 30 and type(rule.score) is int  # an integer score stays one in every decision
    assert (rule.file, rule.line) == (f"{tmp_path.name}/main.yaml", 2)


def test_a_rule_that_is_not_a_mapping_or_a_file_without_rules_is_named(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "rules:\n  - just text\n" + GOOD_RULE))
    assert any("a rule must be a mapping" in p.reason for p in problems) and len(problems) == 1
    problems = problems_of(write(tmp_path, "rule:\n" + GOOD_RULE))
    assert any("top-level `rules:` list" in p.reason for p in problems)


BAD_POLICY = """severity: [allow, review, deny]
thresholds:
  default:
    challenge: 40
    review: -1
    block: 100
  grade:
    NEW: {challenge: high}
  chanel: {}
lanes:
  trusted:
    when: card.fingerprint in lists.trusted_cardz
    decision: pass
  other:
    decision: allow
extra: 1
"""


def test_typical_policy_mistakes_name_line_and_field(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "rules:\n" + GOOD_RULE, BAD_POLICY))
    assert {p.file for p in problems} == {f"{tmp_path.name}/policy.yaml"}
    assert one(problems, None, "severity: must list each of allow, challenge, review, deny").line == 1
    assert one(problems, None, "thresholds.default.review: must be >= 0").line == 5
    assert one(problems, None, "thresholds.default.block: unknown action 'block'").line == 6
    assert one(problems, None, "thresholds.grade.NEW.challenge: must be a number, not 'high'").line == 8
    chanel = one(problems, None, "thresholds: unknown field 'chanel'")
    assert chanel.line == 9 and "did you mean 'channel'" in chanel.reason
    assert one(problems, None, "lanes.trusted.when: unknown list 'lists.trusted_cardz'").line == 12
    assert one(problems, None, "lanes.trusted.decision: unknown action 'pass'").line == 13
    assert one(problems, None, "lanes.other: missing required field 'when'").line == 14
    assert one(problems, None, "unknown field 'extra'").line == 16
    assert len(problems) == 9


def test_an_empty_policy_is_the_default_one(tmp_path: Path) -> None:
    rs = load_ruleset(write(tmp_path, "rules:\n" + GOOD_RULE, "# nothing yet\n"))
    assert rs.policy.severity == ("allow", "challenge", "review", "deny") and rs.policy.lanes == ()
    assert rs.evaluate({"event.amount": 50}).decision == "review"


BAD_MAPPING = """columns:
  event_id: txn_id
  amout: amt
  occurred_at: {column: txn_time, timezone: Mars}
  card_type: {column: kind, colour: red}
constants:
  chanel: pos
label:
  column: fraud
  delay: a week
"""


def test_a_mapping_file_lists_every_problem_with_its_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(BAD_MAPPING)
    with pytest.raises(MappingError) as err:
        Mapping.load(path)
    lines = str(err.value).splitlines()
    assert lines == [
        f"{path}:5: columns.card_type: unknown field 'colour' (did you mean 'column'?); "
        "fields: column, type, format, timezone, map, round, rounding",
        f"{path}:10: label.delay: 'a week' is not a duration (e.g. 7d, 36h, 90m, 3600)",
        f"{path}:3: columns.amout: 'amout' is not an event field (did you mean 'amount'?) (fields: "
        + lines[2].split("(fields: ")[1],
        f"{path}:4: columns.occurred_at: timezone 'Mars' must be an offset like +08:00 or UTC",
        f"{path}:7: constants.chanel: not an event field (did you mean 'channel'?)",
        f"{path}:1: event field 'type' is required: map it under columns (or give it under constants)",
    ]
    assert (err.value.field, err.value.column) == ("columns.card_type", "kind")


def test_a_mapping_given_as_a_dict_names_the_field_without_a_line() -> None:
    with pytest.raises(MappingError) as err:
        Mapping.from_dict({"columns": {"event_id": "id", "type": "kind", "occurred_at": {"column": "t"},
                                       "amount": {"column": "amt", "type": "datetime"}}, "label": {"delay": "7d"}})
    assert str(err.value).splitlines() == [
        "<mapping>: label: missing required field 'column'",
        "<mapping>: columns.amount: type must be minor or decimal, not 'datetime'",
    ]
    mapping = Mapping.from_dict({"columns": {"event_id": "id", "type": "kind", "amount": {"column": "amt",
                                                                                          "type": "decimal"}},
                                 "constants": {"occurred_at": "2026-01-01T00:00:00+08:00"},
                                 "label": {"column": "f", "delay": "36h", "true_values": ["Y", 1]}})
    assert mapping.columns["amount"].type == "decimal" and mapping.columns["type"].type == "string"
    assert mapping.label is not None and mapping.label.delay_s == 36 * 3600
    assert mapping.label.true_values == ("y", "1")
