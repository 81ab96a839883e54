"""Analysts' example cases, kept beside the rules (OPA style).

``rules/cash_out_test.yaml`` next to ``rules/cash_out.yaml``::

    cases:
      - name: round credit payments at night on a new merchant
        features: {card.type: credit, merchant.round_share_24h: 0.8, ...}
        event: {channel: pos}            # optional shorthand for event.* features
        risk: 0.03                       # optional: the fused risk (0-1) the policy's soft step reads
        expect:
          decision: review               # optional
          fires: [cashout.round_credit]  # these rules must fire (enforced or shadow)
          not_fires: [cashout.spike]     # and these must not
          lane: trusted                  # optional; null means "no lane"
          score: 40                      # optional, exact total

Each case is evaluated against the whole rule set (all files and the policy), the
way a live decision is. Without ``risk`` the case is decided as rules-only (no model:
soft rules count as hard); with it, as with a model whose fused risk is that number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fengkong.engine.decision import Decision
from fengkong.engine.errors import Problem
from fengkong.engine.rule import ACTIONS
from fengkong.engine.ruleset import RuleSet, test_files
from fengkong.engine.yamlio import YamlSyntax, line_of, load_yaml, plain

CASE_FIELDS = ("name", "features", "event", "risk", "expect")
EXPECT_FIELDS = ("decision", "fires", "not_fires", "lane", "score")


@dataclass(frozen=True)
class Case:
    file: str
    line: int
    name: str
    features: dict[str, Any]
    expect: dict[str, Any]
    risk: float | None = None


@dataclass
class CaseResult:
    case: Case
    failures: list[str] = field(default_factory=list)
    decision: Decision | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(rules_dir: Path) -> tuple[list[Case], list[Problem]]:
    cases: list[Case] = []
    problems: list[Problem] = []
    for path in test_files(rules_dir):
        name = str(path.relative_to(rules_dir.parent)) if path.is_relative_to(rules_dir.parent) else str(path)
        try:
            data = load_yaml(path)
        except YamlSyntax as exc:
            problems.append(Problem(name, exc.line, None, exc.reason))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            problems.append(Problem(name, line_of(data), None, "a test file must have a top-level `cases:` list"))
            continue
        for node in data["cases"]:
            line = line_of(node) or 0
            if not isinstance(node, dict) or not isinstance(node.get("name"), str):
                problems.append(Problem(name, line, None, "a case needs a `name`"))
                continue
            bad = [k for k in node if k not in CASE_FIELDS]
            expect = node.get("expect")
            if bad:
                problems.append(Problem(name, line, None, f"case {node['name']!r}: unknown fields {bad}"))
                continue
            if not isinstance(expect, dict) or not expect:
                problems.append(Problem(name, line, None, f"case {node['name']!r}: needs an `expect` mapping"))
                continue
            bad = [k for k in expect if k not in EXPECT_FIELDS]
            if bad:
                problems.append(Problem(name, line, None, f"case {node['name']!r}: unknown expect fields {bad}"))
                continue
            listed = [k for k in ("fires", "not_fires") if not isinstance(expect.get(k) or [], list)
                      or not all(isinstance(rid, str) for rid in expect.get(k) or [])]
            if listed:
                problems.append(Problem(name, line, None,
                                        f"case {node['name']!r}: {listed[0]} must be a list of rule ids"))
                continue
            if "decision" in expect and expect["decision"] not in ACTIONS:
                problems.append(Problem(name, line, None,
                                        f"case {node['name']!r}: unknown decision {expect['decision']!r}"))
                continue
            given, event = plain(node.get("features") or {}), plain(node.get("event") or {})
            if not isinstance(given, dict) or not isinstance(event, dict):
                problems.append(Problem(name, line, None, f"case {node['name']!r}: `features` and `event` must be "
                                                          "mappings of names to values"))
                continue
            risk = node.get("risk")
            if risk is not None and (isinstance(risk, bool) or not isinstance(risk, (int, float))
                                     or not 0 <= risk <= 1):
                problems.append(Problem(name, line_of(node, "risk") or line, None,
                                        f"case {node['name']!r}: risk: must be a number from 0 to 1, not {risk!r}"))
                continue
            features = {str(k): v for k, v in given.items()}
            for key, value in event.items():
                features[f"event.{key}"] = value
            cases.append(Case(name, line, node["name"], features, plain(expect),
                              None if risk is None else float(risk)))
    return cases, problems


def run_case(ruleset: RuleSet, case: Case, evaluate: Callable[[dict[str, Any]], Decision] | None = None) -> CaseResult:
    result = CaseResult(case)
    failures = result.failures
    unknown = [k for k in case.features if k not in ruleset.schema.dtypes]
    if unknown:
        failures.append(f"unknown feature names in the case: {', '.join(sorted(unknown))}")
    ids = set(ruleset.by_id)
    for key in ("fires", "not_fires"):
        for rid in case.expect.get(key) or []:
            if rid not in ids:
                failures.append(f"{key} names rule {rid!r}, which is not in the rule set")
    if evaluate is not None:
        d = evaluate(case.features)
    elif case.risk is not None:
        risk = case.risk
        d = ruleset.evaluate(case.features, lambda _first: risk)
    else:
        d = ruleset.evaluate(case.features)
    result.decision = d
    fired = set(d.fired_ids)
    expect = case.expect
    if "decision" in expect and d.decision != expect["decision"]:
        soft_note = f", soft step: risk {d.risk:g} -> {d.soft_action}, hard rules -> {d.hard_action}" \
            if d.soft_action is not None and d.risk is not None else ""
        failures.append(f"decision: expected {expect['decision']}, got {d.decision} "
                        f"(score {d.score:g}, fired {sorted(fired) or 'nothing'}, lane {d.lane}{soft_note})")
    for rid in expect.get("fires") or []:
        if rid not in fired and rid in ids:
            needed = ", ".join(f"{k}={case.features.get(k)!r}" for k in ruleset.by_id[rid].reads)
            failures.append(f"expected {rid} to fire; it did not (it reads {needed})")
    for rid in expect.get("not_fires") or []:
        if rid in fired:
            failures.append(f"expected {rid} not to fire; it fired")
    if "lane" in expect and d.lane != expect["lane"]:
        failures.append(f"lane: expected {expect['lane']}, got {d.lane}")
    if "score" in expect and d.score != expect["score"]:
        failures.append(f"score: expected {expect['score']}, got {d.score:g}")
    return result


def run_cases(ruleset: RuleSet, cases: list[Case]) -> list[CaseResult]:
    return [run_case(ruleset, c) for c in cases]
