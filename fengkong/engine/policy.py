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
6. Soft rules (``soft``: fused-risk thresholds, e.g. ``{challenge: 0.2, review: 0.5,
   deny: 0.9}``): when the policy has the table and the decision has a fused risk,
   rules marked ``soft: true`` are evidence only: the decision is the more severe of
   what the hard rules alone give (1-5) and the action the table gives the fused risk
   (`fengkong.engine.soft`). Without a fused risk (no model) soft rules decide as hard.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from fengkong.engine.errors import Problem
from fengkong.engine.rule import ACTIONS, NOUNS, Action, yaml_number, parse_expression
from fengkong.engine.schema import Schema
from fengkong.engine.tree import Expr, features
from fengkong.engine.validation import duplicate_keys, field_errors
from fengkong.engine.yamlio import line_of

GRADE_FEATURE = sys.intern("merchant.grade")  # interned, as the feature store's keys are
CHANNEL_FEATURE = sys.intern("event.channel")


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
    #: fused-risk thresholds of the soft step (action -> 0-1), None: no soft step (point 6)
    soft: dict[str, float] | None = None
    #: action -> its place in ``severity`` (what `rank` returns), built once
    _rank: dict[str, int] = field(init=False, repr=False, compare=False, default_factory=dict)
    #: (grade, channel) -> `Thresholds`, for every grade and channel with a table (None: any
    #: other); built once, since every decision needs one (`table_for`)
    _tables: dict[tuple[str | None, str | None], Thresholds] = field(init=False, repr=False, compare=False,
                                                                     default_factory=dict)
    #: ``soft`` as a `Thresholds` (most severe first), for `soft_action`; None without a soft
    #: table (or with an action ``severity`` does not rank: `soft_action` then fails as it did)
    _soft_table: Thresholds | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for i, action in enumerate(self.severity):
            self._rank.setdefault(action, i)
        for grade in (None, *self.by_grade):
            for channel in (None, *self.by_channel):
                limits = self._thresholds(grade, channel)
                by_severity = sorted(limits.items(), key=lambda item: self._rank[item[0]], reverse=True)
                self._tables[grade, channel] = Thresholds(limits, tuple(by_severity), self.severity[0])
        if self.soft is not None and all(action in self._rank for action in self.soft):
            steps = sorted(self.soft.items(), key=lambda item: self._rank[item[0]], reverse=True)
            object.__setattr__(self, "_soft_table", Thresholds(dict(self.soft), tuple(steps), self.severity[0]))

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

    def more_severe(self, first: str, second: str) -> str:
        """``most_severe([first, second])`` (``first`` on a tie), with one comparison of ranks."""
        rank = self._rank
        return second if rank[second] > rank[first] else first

    def table_for(self, grade: Any, channel: Any) -> Thresholds:
        """The thresholds for a merchant grade and a channel (the features' values, any type)."""
        if not (isinstance(grade, str) and grade in self.by_grade):
            grade = None
        if not (isinstance(channel, str) and channel in self.by_channel):
            channel = None
        return self._tables[grade, channel]

    def thresholds_for(self, grade: Any, channel: Any) -> dict[str, float]:
        return dict(self.table_for(grade, channel).limits)

    def soft_action(self, risk: float) -> str:
        """The most severe action whose fused-risk threshold ``risk`` reaches (point 6): the
        first one reached, most severe first (`Thresholds.action_for`), as the decision path
        asks it per payment with models; tests/test_engine_shortcuts.py holds it to the list."""
        table = self._soft_table
        if table is not None:
            return table.action_for(risk)
        return self.most_severe([a for a, limit in (self.soft or {}).items() if risk >= limit])

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


Threshold = Annotated[int | float, BeforeValidator(yaml_number), Field(ge=0)]
#: an action's score threshold; allow has none (it is what a total below them all gets)
Table = dict[Literal["challenge", "review", "deny"], Threshold]
RiskThreshold = Annotated[int | float, BeforeValidator(yaml_number), Field(gt=0, le=1)]
#: an action's fused-risk threshold (a calibrated probability, above 0 and at most 1)
RiskTable = dict[Literal["challenge", "review", "deny"], RiskThreshold]


class ThresholdsSpec(BaseModel):
    """``thresholds``: the default table, and tables by merchant grade and by channel."""

    model_config = ConfigDict(extra="forbid")

    default: Table | None = None
    grade: dict[str, Table] | None = None
    channel: dict[str, Table] | None = None


class LaneSpec(BaseModel):
    """One allow-list lane: when it holds, ``decision``, unless a fired rule has a tag."""

    model_config = ConfigDict(extra="forbid")

    when: str
    decision: Action = "allow"
    unless_tags: list[str] = []


class PolicySpec(BaseModel):
    """``policy.yaml`` as written, every field checked (the lanes' expressions apart)."""

    model_config = ConfigDict(extra="forbid")

    severity: list[Action] | None = None
    thresholds: ThresholdsSpec | None = None
    lanes: dict[str, LaneSpec] | None = None
    soft: RiskTable | None = None

    @field_validator("soft")
    @classmethod
    def _increasing(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        order = [a for a in ACTIONS if value and a in value]
        for lo, hi in zip(order, order[1:]):
            if value and value[lo] > value[hi]:
                raise ValueError(f"{lo} ({value[lo]}) must not be above {hi} ({value[hi]}): a higher risk is never "
                                 "a milder action")
        return value

    @field_validator("severity")
    @classmethod
    def _order(cls, value: list[str] | None) -> list[str] | None:
        if value and sorted(value) != sorted(ACTIONS):
            raise ValueError(f"must list each of {', '.join(ACTIONS)} once, least severe first")
        if value and value[0] != "allow":
            raise ValueError("must start with allow (nothing fired means allow)")
        return value


def build_policy(node: Any, file: str, schema: Schema) -> tuple[Policy | None, list[Problem]]:
    """A Policy from ``policy.yaml``'s mapping, or every problem that stops it (file, line, field)."""
    if node is None:
        node = {}
    if not isinstance(node, dict):
        return None, [Problem(file, None, None, "policy must be a mapping")]
    problems = [Problem(file, e.line, None, str(e)) for e in duplicate_keys(node)]
    spec: PolicySpec | None = None
    try:
        spec = PolicySpec.model_validate(node)
    except ValidationError as exc:
        problems += [Problem(file, e.line, None, str(e)) for e in field_errors(exc, PolicySpec, node, NOUNS)]
    lanes: list[Lane] = []
    lanes_node = node.get("lanes")
    for name, lane in (lanes_node.items() if isinstance(lanes_node, dict) else ()):
        when = lane.get("when") if isinstance(lane, dict) else None
        if not isinstance(when, str):
            continue  # reported by the model
        expr, errors = parse_expression(when, schema)
        problems += [Problem(file, line_of(lane, "when"), None, f"lanes.{name}.when: {e.reason}") for e in errors]
        if spec is not None and spec.lanes and expr is not None:
            checked = spec.lanes[str(name)]
            lanes.append(Lane(str(name), when.strip(), expr, checked.decision, tuple(checked.unless_tags)))
    if problems or spec is None:
        return None, problems
    th = spec.thresholds or ThresholdsSpec()
    return Policy(tuple(spec.severity or ACTIONS), _table(th.default),
                  {str(g): _table(t) for g, t in (th.grade or {}).items()},
                  {str(c): _table(t) for c, t in (th.channel or {}).items()}, tuple(lanes),
                  _table(spec.soft) if spec.soft else None), []


def _table(table: Table | None) -> dict[str, float]:
    return {str(action): limit for action, limit in (table or {}).items()}
