"""Load a rules directory into one versioned, compiled `RuleSet`.

Loading is all-or-nothing: every file is read, every rule parsed and type-checked,
ids checked for duplicates, the policy validated; any problem anywhere raises
`RuleSetError` with the full list. Only a clean set is compiled to durable_rules
(under a new, never-reused ruleset name) and warmed with one evaluation.

Layout of ``rules_dir``: ``*.yaml`` rule files (each ``rules: [...]``), their cases
in ``*_test.yaml``, ``policy.yaml``, and ``lists/lists.yaml`` (the list declarations,
owned by the lists service). The version is the SHA-256 of the rule files, the
policy and the list declarations (not the test files) plus the load time.

Limits (`limits.py`) come first: a set whose files together pass `Limits.set_bytes`
is refused before any is read, a file past `Limits.file_bytes` is not read, rules
past `Limits.rules` are not built. durable_rules refusing a compiled rule (its error
113 for a rule too wide) is a problem naming that rule. Whatever else goes wrong
inside is a problem too: `load_ruleset` raises `RuleSetError` and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from fengkong.engine import soft
from fengkong.engine.decision import Decision, FiredRule
from fengkong.engine.durable_backend import DurableRefused, DurableRuleset, unique_name
from fengkong.engine.errors import Problem, RuleSetError
from fengkong.engine.limits import DEFAULT_LIMITS, Limits
from fengkong.engine.policy import CHANNEL_FEATURE, GRADE_FEATURE, Policy, Thresholds, build_policy
from fengkong.engine.predicates import compile_predicate
from fengkong.engine.rule import Rule, build_rule
from fengkong.engine.schema import LISTS_FILE, Schema, read_lists
from fengkong.engine.soft import Fuse
from fengkong.engine.tree import Expr
from fengkong.engine.yamlio import YamlSyntax, line_of, load_yaml

POLICY_FILE = "policy.yaml"
TEST_SUFFIX = "_test.yaml"
LANE_PREFIX = "__lane__"
#: how many outcomes a rule set remembers (`RuleSet._outcome`)
_OUTCOMES = 4096
_new = object.__new__

log = logging.getLogger(__name__)


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


def set_files(rules_dir: Path) -> list[Path]:
    """Every file of a rule set: rule files, policy, list declarations and case files."""
    paths = rule_files(rules_dir) + test_files(rules_dir) + [rules_dir / POLICY_FILE, rules_dir / LISTS_FILE]
    return [p for p in paths if p.is_file()]


def set_bytes(rules_dir: Path) -> int:
    """The bytes of `set_files` together (read from the file system, not the files)."""
    total = 0
    for p in set_files(rules_dir):
        try:
            total += p.stat().st_size
        except OSError:
            continue
    return total


def files_hash(rules_dir: Path) -> str:
    """SHA-256 of every file's name and content, case files included: what a refusal is
    remembered by (`LiveRules`), since failing cases refuse a set as much as its rules."""
    h = hashlib.sha256()
    for p in set_files(rules_dir):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        h.update(str(p.relative_to(rules_dir)).encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def size_problem(rules_dir: Path, limits: Limits = DEFAULT_LIMITS) -> Problem | None:
    """The refusal of a set over `Limits.set_bytes`, found without reading a file."""
    total = set_bytes(rules_dir)
    if total <= limits.set_bytes:
        return None
    return Problem(str(rules_dir), None, None,
                   f"the rule set's files hold {total:,} bytes; a rule set may hold at most {limits.set_bytes:,}")


def _rel(path: Path, rules_dir: Path) -> str:
    try:
        return str(path.relative_to(rules_dir.parent))
    except ValueError:
        return str(path)


def parse_rules(rules_dir: Path, limits: Limits = DEFAULT_LIMITS
                ) -> tuple[list[Rule], Policy | None, Schema, list[Problem]]:
    """Read and check everything without compiling; return what loaded and every problem.

    A set over the size limit raises `RuleSetError` at once (nothing is read)."""
    if rules_dir.is_dir():
        too_big = size_problem(rules_dir, limits)
        if too_big is not None:
            raise RuleSetError([too_big])
    problems: list[Problem] = []
    lists, list_problems = read_lists(rules_dir)
    lists_name = _rel(rules_dir / LISTS_FILE, rules_dir)
    problems += [Problem(lists_name, line, None, reason) for line, reason in list_problems]
    schema = Schema.from_catalog(lists)
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    if not rules_dir.is_dir():
        raise RuleSetError([Problem(str(rules_dir), None, None, "rules directory not found")])
    count = 0
    for path in rule_files(rules_dir):
        name = _rel(path, rules_dir)
        try:
            data = load_yaml(path, limits.file_bytes)
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
        if count + len(data["rules"]) > limits.rules:
            problems.append(Problem(name, line_of(data, "rules"), None,
                                    f"the rule set holds more than {limits.rules:,} rules "
                                    f"({count + len(data['rules']):,} counted up to this file)"))
            break
        count += len(data["rules"])
        for node in data["rules"]:
            rule, rule_problems = _build(node, name, schema)
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
            policy, policy_problems = build_policy(load_yaml(policy_path, limits.file_bytes), pname, schema)
            problems += policy_problems
        except YamlSyntax as exc:
            policy = None
            problems.append(Problem(pname, exc.line, None, exc.reason))
    return rules, policy, schema, problems


def _build(node: Any, file: str, schema: Schema) -> tuple[Rule | None, list[Problem]]:
    """`build_rule`, with anything unexpected it raises as a problem of that rule."""
    try:
        return build_rule(node, file, schema)
    except Exception as exc:
        log.exception("rule in %s could not be checked", file)
        rid = node.get("id") if isinstance(node, dict) else None
        return None, [Problem(file, line_of(node), str(rid) if rid is not None else None,
                              f"the rule could not be checked ({type(exc).__name__}: {exc})")]


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
        self._soft_ids = frozenset(r.id for r in self.rules if r.soft)
        # What `decide` needs of each rule that fires, but its values: built once (the names
        # interned, as the feature store's keys are: a lookup then finds its key by identity);
        # the fields as the `FiredRule` dict `_decide` copies them from
        self._explain = {r.id: (dict(id=r.id, description=r.description, action=r.then, score=r.score, mode=r.mode,
                                     tags=r.tags), tuple(map(sys.intern, r.reads)), r.enforced) for r in self.rules}
        reads: set[str] = set(policy.features_read)
        for r in self.rules:
            reads.update(r.reads)
        self.features_read: frozenset[str] = frozenset(reads)
        #: every condition of the set: (key, tree) for each rule, then each lane (key prefixed)
        self.conditions: tuple[tuple[str, Expr], ...] = (
            *((r.id, r.expr) for r in self.rules), *((LANE_PREFIX + lane.name, lane.expr) for lane in policy.lanes))
        # durable_rules evaluates the rules. A lane is policy, not a rule: its condition runs
        # as the reference closure (`predicates`, which the tests hold equal to durable), so it
        # never costs a shard of its own (one more fact per decision); durable still reports
        # the features it reads missing, as it did when it evaluated it.
        self._durable = DurableRuleset(unique_name(f"fengkong_{content_hash[:12]}"),
                                       [(r.id, r.expr) for r in self.rules], schema.dtypes,
                                       also_missing=[lane.expr for lane in policy.lanes])
        #: (the lane's key among the fired ids, its condition as a closure)
        self._lanes = tuple((LANE_PREFIX + lane.name, compile_predicate(lane.expr, schema.dtypes))
                            for lane in policy.lanes)
        #: each enforced rule as it fires with no values: what `verdict` reads (action, score, tags)
        self._bare = {r.id: FiredRule(r.id, r.description, r.then, r.score, r.mode, r.tags, {})
                      for r in self.rules if r.enforced}
        #: (fired ids, id of the thresholds table) -> `_outcome`'s answer
        self._outcomes: dict[tuple[tuple[str, ...], int], tuple[str, float, str, str | None]] = {}
        #: the missing features as reported -> sorted (`_sorted`)
        self._missing_sorted: dict[tuple[str, ...], tuple[str, ...]] = {}
        #: (fired ids, id of the thresholds table) -> the hard rules' `verdict` (`_hard_verdict`)
        self._verdicts: dict[tuple[tuple[str, ...], int], tuple[str, str | None]] = {}
        self.evaluate({})  # warm the new ruleset before it takes traffic

    def evaluate(self, features: Mapping[str, Any], fuse: Fuse | None = None) -> Decision:
        """Decide one event from its features (dotted names; absent or None = missing).

        ``fuse``: the fused risk of the decision the rules give (`pipeline.decide_on` passes
        the model runtime's); with it and a policy ``soft`` table, the soft step runs
        (`fengkong.engine.soft`: soft rules are evidence, the fused risk decides)."""
        fired, missing = self._durable.fire_keys(features)
        for key, holds in self._lanes:  # (a loop, not a comprehension: this runs per decision)
            if holds(features):
                fired.append(key)
        get = features.get
        table = self.policy.table_for(get(GRADE_FEATURE), get(CHANNEL_FEATURE))  # once for both steps
        decision = self._decide(fired, missing, features, table)
        if fuse is None or self.policy.soft is None:
            return decision
        risk = fuse(decision)
        if risk is None:
            return decision
        if risk != risk:  # NaN: no soft step, the risk noted (`soft.applies`, the table known to be there)
            return decision.with_outcome(decision=decision.decision, lane=decision.lane, risk=risk,
                                         soft_action=decision.soft_action, hard_action=decision.hard_action)
        hard, lane = self._hard_verdict(fired, features, table)
        return soft.settle(decision, hard, lane, self.policy, risk)

    def _hard_verdict(self, fired: list[str], features: Mapping[str, Any],
                      table: Thresholds) -> tuple[str, str | None]:
        """`verdict` of the hard rules among ``fired`` (the soft ids left out): a pure function
        of the ids and the thresholds table (``features``' own), so remembered per pair as
        `_outcome` is (the soft step asks it per payment with models; this spares filtering the
        ids and listing the rules before `_outcome` finds its answer)."""
        key = (tuple(fired), id(table))  # a table lives as long as the policy, which this set holds
        known = self._verdicts.get(key)
        if known is None:
            soft_ids = self._soft_ids
            known = self.verdict([rid for rid in fired if rid not in soft_ids], features)
            if len(self._verdicts) < _OUTCOMES:
                self._verdicts[key] = known
        return known

    def decide(self, fired_ids: list[str], missing: list[str], features: Mapping[str, Any]) -> Decision:
        """Apply the policy to the ids that fired (shared by every evaluator)."""
        get = features.get
        return self._decide(fired_ids, missing, features, self.policy.table_for(get(GRADE_FEATURE),
                                                                                  get(CHANNEL_FEATURE)))

    def _decide(self, fired_ids: list[str], missing: list[str], features: Mapping[str, Any],
                table: Thresholds) -> Decision:
        """`decide` with the features' thresholds table already found (`evaluate` finds it
        once for this and the soft step). Each `FiredRule` is made as ``FiredRule.__init__``
        makes it, its dict filled from the rule's own (`_explain`) and its values: no call
        of ``__init__`` with seven arguments per rule that fires (tests/test_engine_shortcuts.py)."""
        get = features.get
        reasons: list[FiredRule] = []
        shadow: list[FiredRule] = []
        lanes_hit: list[str] = []
        for rid in fired_ids:
            if rid.startswith(LANE_PREFIX):
                lanes_hit.append(rid.removeprefix(LANE_PREFIX))
                continue
            fields, reads, enforced = self._explain[rid]
            fired = _new(FiredRule)
            fired.__dict__.update(fields, values={name: get(name) for name in reads})
            (reasons if enforced else shadow).append(fired)
        decision, total, score_action, lane_used = self._outcome(fired_ids, reasons, lanes_hit, table)
        return Decision(decision, total, reasons, shadow, self._sorted(missing), self.version, lane_used,
                        score_action, dict(table.limits))

    def _sorted(self, missing: list[str]) -> list[str]:
        """``sorted(missing)``, remembered per list (in the writers' order, `_OUTCOMES` of them at
        most): the features a decision lacks are most often those the last one lacked, and a
        look-up of the tuple is cheaper than sorting it again. A new list each call."""
        key = tuple(missing)
        known = self._missing_sorted.get(key)
        if known is None:
            known = tuple(sorted(key))
            if len(self._missing_sorted) < _OUTCOMES:
                self._missing_sorted[key] = known
        return list(known)

    def verdict(self, fired_ids: list[str], features: Mapping[str, Any]) -> tuple[str, str | None]:
        """The decision and lane `decide` would give for these ids, without the explanation
        (no rule's values are read): what the soft step needs of the hard rules alone."""
        bare = self._bare
        lanes_hit = [rid.removeprefix(LANE_PREFIX) for rid in fired_ids if rid.startswith(LANE_PREFIX)]
        reasons = [bare[rid] for rid in fired_ids if rid in bare]
        table = self.policy.table_for(features.get(GRADE_FEATURE), features.get(CHANNEL_FEATURE))
        decision, _, _, lane_used = self._outcome(fired_ids, reasons, lanes_hit, table)
        return decision, lane_used

    def _outcome(self, fired_ids: list[str], reasons: list[FiredRule], lanes_hit: list[str],
                 table: Thresholds) -> tuple[str, float, str, str | None]:
        """The policy (module docs/rules.md points 2-5) over the enforced rules that fired
        (``reasons``, those of ``fired_ids``) with a grade's and channel's thresholds: the
        decision, the total score, the thresholds' action, the lane used.

        A pure function of the ids (in order: the total is summed in it) and the table, so
        remembered per rule set (`_OUTCOMES` of them at most): most decisions meet a few
        combinations again."""
        key = (tuple(fired_ids), id(table))  # a table lives as long as the policy, which this set holds
        known = self._outcomes.get(key)
        if known is not None:
            return known
        known = self._policy_outcome(reasons, lanes_hit, table)
        if len(self._outcomes) < _OUTCOMES:
            self._outcomes[key] = known
        return known

    def _policy_outcome(self, reasons: list[FiredRule], lanes_hit: list[str],
                        table: Thresholds) -> tuple[str, float, str, str | None]:
        policy = self.policy
        total = sum([r.score for r in reasons])
        score_action = table.action_for(total)
        decision = policy.most_severe([r.action for r in reasons] + [score_action]) if reasons else score_action
        lane_used = None
        if lanes_hit:
            tags = {t for r in reasons for t in r.tags}
            for lane in policy.lanes:
                if lane.name in lanes_hit and not tags.intersection(lane.unless_tags):
                    decision, lane_used = lane.decision, lane.name
                    break
        return decision, total, score_action, lane_used

    def close(self) -> None:
        """Release the durable_rules ruleset (only once no decision will use this set)."""
        self._durable.close()

    def __repr__(self) -> str:
        return f"RuleSet(version={self.version!r}, rules={len(self.rules)})"


def compile_ruleset(rules: list[Rule], policy: Policy, schema: Schema, *, content_hash: str,
                    rules_dir: Path | None = None) -> RuleSet:
    """A `RuleSet` of checked rules, or `RuleSetError`: each rule durable_rules refuses
    is a problem naming its file, line and id (a lane names the policy file)."""
    try:
        return RuleSet(rules, policy, schema, content_hash=content_hash, rules_dir=rules_dir)
    except DurableRefused as exc:
        by_id = {r.id: r for r in rules}
        where = _rel(rules_dir / POLICY_FILE, rules_dir) if rules_dir is not None else POLICY_FILE
        problems = []
        for key, reason in exc.refusals:
            rule = by_id.get(key)
            if rule is not None:
                problems.append(Problem(rule.file, rule.line or None, rule.id, reason))
            else:
                problems.append(Problem(where, None, None, f"lanes.{key.removeprefix(LANE_PREFIX)}: {reason}"))
        raise RuleSetError(problems) from None
    except Exception as exc:
        log.exception("rule set could not be compiled")
        reason = f"durable_rules could not compile the set ({type(exc).__name__}: {exc})"
        raise RuleSetError([Problem(str(rules_dir or "rules"), None, None, reason)]) from None


def load_ruleset(rules_dir: Path | str, limits: Limits = DEFAULT_LIMITS) -> RuleSet:
    """Load, check and compile a rules directory; raise RuleSetError listing every
    problem, and never another exception (an unexpected one is a problem too)."""
    rules_dir = Path(rules_dir)
    try:
        rules, policy, schema, problems = parse_rules(rules_dir, limits)
        if problems or policy is None:
            raise RuleSetError(problems)
        return compile_ruleset(rules, policy, schema, content_hash=content_hash(rules_dir), rules_dir=rules_dir)
    except RuleSetError:
        raise
    except Exception as exc:
        log.exception("rule set %s could not be loaded", rules_dir)
        raise RuleSetError([Problem(str(rules_dir), None, None,
                                    f"the rule set could not be loaded ({type(exc).__name__}: {exc})")]) from None
