"""The decision policy: from the rules that fired to one decision.

`rules/policy.yaml` (its header and docs/rules.md describe the format):

1. Only enforced rules count; shadow rules are reported beside the decision.
2. The most severe action among the enforced rules that fired wins, in the order
   ``severity`` lists (default allow < challenge < review < deny).
3. Their scores add up; the thresholds map the total to an action (the most severe
   action whose threshold the total reaches). Thresholds come from
   ``thresholds.default``, replaced by ``thresholds.grade[<merchant.grade>]`` when the
   merchant's grade has a table, then tightened by ``thresholds.channel[<event.channel>]``:
   for each action the lowest applicable threshold is used.
4. The decision is the more severe of (2) and (3). Nothing fired: allow.
5. Allow-list lanes (``lanes``): when a lane's ``when`` holds, the decision is the
   lane's ``decision`` (normally allow), unless an enforced rule that fired carries
   one of the lane's ``unless_tags`` (e.g. a blacklist hit still decides).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from fengkong.engine.errors import Problem
from fengkong.engine.rule import ACTIONS, parse_expression
from fengkong.engine.schema import Schema
from fengkong.engine.tree import Expr, features
from fengkong.engine.yamlio import line_of

GRADE_FEATURE = sys.intern("merchant.grade")  # interned, as the feature store's keys are
CHANNEL_FEATURE = sys.intern("event.channel")
POLICY_FIELDS = ("severity", "thresholds", "lanes")


@dataclass(frozen=True)
class Lane:
    name: str
    when: str
    expr: Expr
    decision: str = "allow"
    unless_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Thresholds:
    """The score thresholds for one merchant grade and channel (`Policy.table_for`)."""

    limits: dict[str, float]  # action -> threshold, as `Policy.thresholds_for` gives them
    by_severity: tuple[tuple[str, float], ...]  # the same, most severe action first
    floor: str  # the least severe action: what a total below every threshold gets

    def action_for(self, total: float) -> str:
        """The most severe action whose threshold ``total`` reaches (`Policy.score_action`)."""
        for action, limit in self.by_severity:
            if total >= limit:
                return action
        return self.floor


@dataclass(frozen=True)
class Policy:
    severity: tuple[str, ...] = ACTIONS
    default: dict[str, float] = field(default_factory=dict)
    by_grade: dict[str, dict[str, float]] = field(default_factory=dict)
    by_channel: dict[str, dict[str, float]] = field(default_factory=dict)
    lanes: tuple[Lane, ...] = ()
    #: action -> its place in ``severity`` (what `rank` returns), built once
    _rank: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)
    #: (grade, channel) -> `Thresholds`, for every grade and channel with a table (None: any
    #: other); built once, since every decision needs one (`table_for`)
    _tables: dict[tuple[str | None, str | None], Thresholds] = field(init=False, repr=False, compare=False,
                                                                     default_factory=dict)

    def __post_init__(self) -> None:
        for i, action in enumerate(self.severity):
            self._rank.setdefault(action, i)
        for grade in (None, *self.by_grade):
            for channel in (None, *self.by_channel):
                limits = self._thresholds(grade, channel)
                by_severity = sorted(limits.items(), key=lambda item: self._rank[item[0]], reverse=True)
                self._tables[grade, channel] = Thresholds(limits, tuple(by_severity), self.severity[0])

    @property
    def features_read(self) -> set[str]:
        out = {GRADE_FEATURE, CHANNEL_FEATURE} if (self.by_grade or self.by_channel) else set()
        for lane in self.lanes:
            out.update(features(lane.expr))
        return out

    def rank(self, action: str) -> int:
        return self.severity.index(action)

    def most_severe(self, actions: list[str]) -> str:
        # the dict, not `rank` (a tuple search behind a method call): this runs twice per decision
        return max(actions, key=self._rank.__getitem__) if actions else self.severity[0]

    def table_for(self, grade: Any, channel: Any) -> Thresholds:
        """The thresholds for a merchant grade and a channel (the features' values, any type)."""
        if not (isinstance(grade, str) and grade in self.by_grade):
            grade = None
        if not (isinstance(channel, str) and channel in self.by_channel):
            channel = None
        return self._tables[grade, channel]

    def thresholds_for(self, grade: Any, channel: Any) -> dict[str, float]:
        return dict(self.table_for(grade, channel).limits)

    def score_action(self, total: float, thresholds: Mapping[str, float]) -> str:
        reached = [a for a, limit in thresholds.items() if total >= limit]
        return self.most_severe(reached)

    def _thresholds(self, grade: str | None, channel: str | None) -> dict[str, float]:
        """The rule of the module docstring, point 3 (``None``: no table of its own)."""
        table = dict(self.by_grade[grade]) if grade is not None else dict(self.default)
        extra = self.by_channel[channel] if channel is not None else None
        if extra:
            for action, limit in extra.items():
                table[action] = min(limit, table.get(action, limit))
        return table


def build_policy(node: Any, file: str, schema: Schema) -> tuple[Policy | None, list[Problem]]:
    problems: list[Problem] = []

    def bad(where: Any, key: str | None, reason: str) -> None:
        problems.append(Problem(file, line_of(where, key), None, reason))

    if node is None:
        node = {}
    if not isinstance(node, dict):
        return None, [Problem(file, None, None, "policy must be a mapping")]
    for key in node:
        if key not in POLICY_FIELDS:
            bad(node, key, f"unknown policy field {key!r} (fields: {', '.join(POLICY_FIELDS)})")
    severity = tuple(node.get("severity") or ACTIONS)
    if sorted(severity) != sorted(ACTIONS):
        bad(node, "severity", f"severity must list each of {', '.join(ACTIONS)} once, least severe first")
        severity = ACTIONS
    if severity[0] != "allow":
        bad(node, "severity", "severity must start with allow (nothing fired means allow)")

    def table(where: Any, key: str, value: Any, label: str) -> dict[str, float]:
        if not isinstance(value, dict):
            bad(where, key, f"{label} must map actions to score thresholds")
            return {}
        out: dict[str, float] = {}
        for action, limit in value.items():
            if action not in ACTIONS or action == "allow":
                bad(value, action, f"{label}: unknown action {action!r}; expected challenge, review or deny")
            elif isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
                bad(value, action, f"{label}: threshold for {action} must be a number >= 0")
            else:
                out[action] = limit
        return out

    th = node.get("thresholds") or {}
    default: dict[str, float] = {}
    by_grade: dict[str, dict[str, float]] = {}
    by_channel: dict[str, dict[str, float]] = {}
    if not isinstance(th, dict):
        bad(node, "thresholds", "thresholds must be a mapping with default, grade, channel")
    else:
        for key in th:
            if key not in ("default", "grade", "channel"):
                bad(th, key, f"unknown thresholds field {key!r} (default, grade, channel)")
        if "default" in th:
            default = table(th, "default", th["default"], "thresholds.default")
        for group, target in (("grade", by_grade), ("channel", by_channel)):
            sub = th.get(group) or {}
            if not isinstance(sub, dict):
                bad(th, group, f"thresholds.{group} must be a mapping")
                continue
            for name, value in sub.items():
                target[str(name)] = table(sub, name, value, f"thresholds.{group}.{name}")
    lanes: list[Lane] = []
    lanes_node = node.get("lanes") or {}
    if not isinstance(lanes_node, dict):
        bad(node, "lanes", "lanes must map a lane name to {when, decision, unless_tags}")
        lanes_node = {}
    for name, spec in lanes_node.items():
        if not isinstance(spec, dict) or "when" not in spec:
            bad(lanes_node, name, f"lane {name!r} needs a `when` expression")
            continue
        expr, errors = parse_expression(spec["when"], schema)
        for e in errors:
            bad(spec, "when", f"lane {name}: when: {e.reason}")
        decision = spec.get("decision", "allow")
        if decision not in ACTIONS:
            bad(spec, "decision", f"lane {name}: unknown action {decision!r}")
        unless = spec.get("unless_tags", [])
        if not isinstance(unless, list):
            bad(spec, "unless_tags", f"lane {name}: unless_tags must be a list")
            unless = []
        if expr is not None:
            lanes.append(Lane(str(name), str(spec["when"]).strip(), expr, decision, tuple(map(str, unless))))
    if problems:
        return None, problems
    return Policy(severity, default, by_grade, by_channel, tuple(lanes)), []
