"""Load a rules directory into one versioned, compiled `RuleSet`.

Loading is all-or-nothing: every file is read, every rule parsed and type-checked,
ids checked for duplicates, the policy validated; any problem anywhere raises
`RuleSetError` with the full list. Only a clean set is compiled to durable_rules
(under a new, never-reused ruleset name) and warmed with one evaluation.

Layout of ``rules_dir``: ``*.yaml`` rule files (each ``rules: [...]``), their cases
in ``*_test.yaml``, ``policy.yaml``, and ``lists/lists.yaml`` (the list declarations,
owned by the lists service). The version is the SHA-256 of the rule files, the
policy and the list declarations (not the test files) plus the load time.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from fengkong.engine.decision import Decision, FiredRule
from fengkong.engine.durable_backend import DurableRuleset, unique_name
from fengkong.engine.errors import Problem, RuleSetError
from fengkong.engine.policy import CHANNEL_FEATURE, GRADE_FEATURE, Policy, build_policy
from fengkong.engine.rule import Rule, build_rule
from fengkong.engine.schema import LISTS_FILE, Schema, read_lists
from fengkong.engine.tree import Expr
from fengkong.engine.yamlio import YamlSyntax, line_of, load_yaml

POLICY_FILE = "policy.yaml"
TEST_SUFFIX = "_test.yaml"
LANE_PREFIX = "__lane__"


def rule_files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.glob("*.yaml") if not p.name.endswith(TEST_SUFFIX) and p.name != POLICY_FILE)


def test_files(rules_dir: Path) -> list[Path]:
    return sorted(rules_dir.glob(f"*{TEST_SUFFIX}"))


def content_hash(rules_dir: Path) -> str:
    h = hashlib.sha256()
    paths = rule_files(rules_dir) + [rules_dir / POLICY_FILE, rules_dir / LISTS_FILE]
    for p in paths:
        if p.exists():
            h.update(str(p.relative_to(rules_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _rel(path: Path, rules_dir: Path) -> str:
    try:
        return str(path.relative_to(rules_dir.parent))
    except ValueError:
        return str(path)


def parse_rules(rules_dir: Path) -> tuple[list[Rule], Policy | None, Schema, list[Problem]]:
    """Read and check everything without compiling; return what loaded and every problem."""
    problems: list[Problem] = []
    lists, list_problems = read_lists(rules_dir)
    lists_name = _rel(rules_dir / LISTS_FILE, rules_dir)
    problems += [Problem(lists_name, line, None, reason) for line, reason in list_problems]
    schema = Schema.from_catalog(lists)
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    if not rules_dir.is_dir():
        raise RuleSetError([Problem(str(rules_dir), None, None, "rules directory not found")])
    for path in rule_files(rules_dir):
        name = _rel(path, rules_dir)
        try:
            data = load_yaml(path)
        except YamlSyntax as exc:
            problems.append(Problem(name, exc.line, None, exc.reason))
            continue
        if data is None:
            continue
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            problems.append(Problem(name, line_of(data), None, "a rule file must have a top-level `rules:` list"))
            continue
        for key in data:
            if key != "rules":
                problems.append(Problem(name, line_of(data, key), None, f"unknown top-level field {key!r}"))
        for node in data["rules"]:
            rule, rule_problems = build_rule(node, name, schema)
            problems += rule_problems
            if rule is None:
                continue
            if rule.id in seen:
                first = seen[rule.id]
                problems.append(Problem(name, rule.line, rule.id,
                                        f"duplicate rule id (first defined in {first.file}:{first.line})"))
                continue
            seen[rule.id] = rule
            rules.append(rule)
    policy: Policy | None = Policy()
    policy_path = rules_dir / POLICY_FILE
    if policy_path.exists():
        pname = _rel(policy_path, rules_dir)
        try:
            policy, policy_problems = build_policy(load_yaml(policy_path), pname, schema)
            problems += policy_problems
        except YamlSyntax as exc:
            policy = None
            problems.append(Problem(pname, exc.line, None, exc.reason))
    return rules, policy, schema, problems


class RuleSet:
    """A loaded, compiled rule set. Immutable once built; `evaluate` is thread-safe."""

    def __init__(self, rules: list[Rule], policy: Policy, schema: Schema, *, content_hash: str,
                 rules_dir: Path | None = None, loaded_at: datetime | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.policy = policy
        self.schema = schema
        self.rules_dir = rules_dir
        self.content_hash = content_hash
        self.loaded_at = loaded_at or datetime.now(timezone.utc)
        self.version = f"{content_hash[:12]}@{self.loaded_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
        self.by_id = {r.id: r for r in self.rules}
        # What `decide` needs of each rule that fires, but its values: built once (the names
        # interned, as the feature store's keys are: a lookup then finds its key by identity)
        self._explain = {r.id: ((r.id, r.description, r.then, r.score, r.mode, r.tags),
                                tuple(map(sys.intern, r.reads)), r.enforced) for r in self.rules}
        reads: set[str] = set(policy.features_read)
        for r in self.rules:
            reads.update(r.reads)
        self.features_read: frozenset[str] = frozenset(reads)
        #: what durable_rules evaluates: (key, tree) for each rule, then each lane (key prefixed)
        self.conditions: tuple[tuple[str, Expr], ...] = (
            *((r.id, r.expr) for r in self.rules), *((LANE_PREFIX + lane.name, lane.expr) for lane in policy.lanes))
        self._durable = DurableRuleset(unique_name(f"fengkong_{content_hash[:12]}"), self.conditions, schema.dtypes)
        self.evaluate({})  # warm the new ruleset before it takes traffic

    def evaluate(self, features: Mapping[str, Any]) -> Decision:
        """Decide one event from its features (dotted names; absent or None = missing)."""
        fired, missing = self._durable.fire_keys(features)
        return self.decide(fired, missing, features)

    def decide(self, fired_ids: list[str], missing: list[str], features: Mapping[str, Any]) -> Decision:
        """Apply the policy to the ids that fired (shared by every evaluator)."""
        policy = self.policy
        get = features.get
        reasons: list[FiredRule] = []
        shadow: list[FiredRule] = []
        lanes_hit: list[str] = []
        for rid in fired_ids:
            if rid.startswith(LANE_PREFIX):
                lanes_hit.append(rid.removeprefix(LANE_PREFIX))
                continue
            fields, reads, enforced = self._explain[rid]
            (reasons if enforced else shadow).append(FiredRule(*fields, {name: get(name) for name in reads}))
        total = sum([r.score for r in reasons])
        table = policy.table_for(get(GRADE_FEATURE), get(CHANNEL_FEATURE))
        score_action = table.action_for(total)
        decision = policy.most_severe([r.action for r in reasons] + [score_action]) if reasons else score_action
        lane_used = None
        if lanes_hit:
            tags = {t for r in reasons for t in r.tags}
            for lane in policy.lanes:
                if lane.name in lanes_hit and not tags.intersection(lane.unless_tags):
                    decision, lane_used = lane.decision, lane.name
                    break
        return Decision(decision, total, reasons, shadow, sorted(missing), self.version, lane_used,
                        score_action, dict(table.limits))

    def close(self) -> None:
        """Release the durable_rules ruleset (only once no decision will use this set)."""
        self._durable.close()

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={len(self.rules)})"


def load_ruleset(rules_dir: Path | str) -> RuleSet:
    """Load, check and compile a rules directory; raise RuleSetError listing every problem."""
    rules_dir = Path(rules_dir)
    rules, policy, schema, problems = parse_rules(rules_dir)
    if problems or policy is None:
        raise RuleSetError(problems)
    return RuleSet(rules, policy, schema, content_hash=content_hash(rules_dir), rules_dir=rules_dir)
