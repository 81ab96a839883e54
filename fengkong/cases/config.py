"""The analysts' case configuration, ``rules/cases/cases.yaml``: which decisions open a
case, the grouping window, and the queues with their SLAs.

It lives beside the rule files because analysts own it, but in its own folder: the rule
loader reads every ``*.yaml`` at the top of ``rules/`` as a rule file. A file with an
error is refused whole, naming the key (`CasesConfigError`); a missing file means the
defaults (every ``review``, and every failed challenge of a ``challenge`` decision, opens a
case in one ``general`` queue).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fengkong.cases.models import ENTITY_KINDS
from fengkong.engine.decision import FiredRule

CONFIG_PATH = Path("cases") / "cases.yaml"
DECISIONS = ("allow", "challenge", "review", "deny")


class CasesConfigError(ValueError):
    """``cases.yaml`` is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Queue:
    """A queue: the rules (by id or tag) whose cases it holds, and its SLA."""

    name: str
    sla_hours: float
    rules: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def takes(self, reasons: list[dict[str, Any]]) -> bool:
        """Whether one of these fired rules belongs to the queue, by id or by tag."""
        return any(r.get("id") in self.rules or self.tags.intersection(r.get("tags") or ()) for r in reasons)


@dataclass(frozen=True)
class CasesConfig:
    """What opens a case, how decisions group, and the queues."""

    decisions: frozenset[str] = frozenset({"review"})
    #: a failed ``challenge_result`` of a payment answered ``challenge`` opens (or joins) a case
    challenge_failed: bool = True
    rules: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    window_minutes: float = 60.0
    group_by: tuple[str, ...] = ENTITY_KINDS
    queues: tuple[Queue, ...] = ()
    default_queue: Queue = field(default_factory=lambda: Queue("general", 24.0))

    def opens_case(self, decision: str, reasons: Iterable[Any]) -> bool:
        """Whether a decision with this outcome and these fired rules opens (or joins) a case: one
        of them is among the configured rules or has one of the tags. A fired rule is a dict
        (``FiredRule.to_dict``: a record read back, a degraded decision's) or the engine's
        `FiredRule` (the decision path's record), read as it is rather than made a dict first."""
        if decision in self.decisions:
            return True
        rules, tags = self.rules, self.tags
        if not (rules or tags):
            return False
        for r in reasons:  # (a loop, not `any` of a generator: the decision path asks per decision)
            # the engine's own class first: `Mapping`'s isinstance of a class it does not know costs more
            if type(r) is not FiredRule and (type(r) is dict or isinstance(r, Mapping)):
                if r.get("id") in rules or not tags.isdisjoint(r.get("tags") or ()):
                    return True
            elif r.id in rules or not tags.isdisjoint(r.tags or ()):
                return True
        return False

    def queue_for(self, reasons: list[dict[str, Any]]) -> Queue:
        """The queue of the highest-scoring rule that belongs to one (the first such queue in
        the file), else the default queue: the rule that weighed most says what the case is."""
        if self.queues:
            for reason in sorted(reasons, key=_weight, reverse=True):  # stable: the first of equals first
                rule, tags = reason.get("id"), reason.get("tags") or ()
                for queue in self.queues:  # `Queue.takes` of this one reason, without its lists
                    if rule in queue.rules or not queue.tags.isdisjoint(tags):
                        return queue
        return self.default_queue

    def sla_hours(self, queue: str) -> float:
        """The queue's SLA; a queue no longer configured (its cases remain) gets the default's."""
        return next((q.sla_hours for q in self.all_queues() if q.name == queue), self.default_queue.sla_hours)

    def all_queues(self) -> tuple[Queue, ...]:
        """The configured queues and the default queue, each once."""
        names = {q.name for q in self.queues}
        return self.queues + (() if self.default_queue.name in names else (self.default_queue,))


def _weight(reason: dict[str, Any]) -> float:
    return float(reason.get("score") or 0)


def _at(where: str, key: str) -> str:
    """``file: section.key`` (``where`` is ``file: section``), or ``file: key`` at the top."""
    return f"{where}{key}" if where.endswith(": ") else f"{where}.{key}"


def _strings(data: dict[str, Any], key: str, where: str) -> frozenset[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CasesConfigError(f"{_at(where, key)}: expected a list of non-empty strings")
    return frozenset(value)


def _positive(data: dict[str, Any], key: str, where: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise CasesConfigError(f"{_at(where, key)}: expected a positive number")
    return float(value)


def _queue(data: Any, where: str) -> Queue:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        raise CasesConfigError(f"{where}.name: every queue needs a name")
    unknown = set(data) - {"name", "sla_hours", "rules", "tags"}
    if unknown:
        raise CasesConfigError(f"{_at(where, sorted(unknown)[0])}: unknown key")
    if len(data["name"]) > 64:
        raise CasesConfigError(f"{where}.name: at most 64 characters")
    return Queue(data["name"], _positive(data, "sla_hours", where, 24.0), _strings(data, "rules", where),
                 _strings(data, "tags", where))


def parse(data: Any, source: str = "cases.yaml") -> CasesConfig:
    """A `CasesConfig` from the file's mapping; `CasesConfigError` naming the key otherwise."""
    if data is None:
        return CasesConfig()
    if not isinstance(data, dict):
        raise CasesConfigError(f"{source}: expected a mapping")
    unknown = set(data) - {"open_on", "window_minutes", "group_by", "queues", "default_queue"}
    if unknown:
        raise CasesConfigError(f"{source}: {sorted(unknown)[0]}: unknown key")
    open_on = data.get("open_on") or {}
    if not isinstance(open_on, dict):
        raise CasesConfigError(f"{source}: open_on: expected a mapping")
    decisions = _strings(open_on, "decisions", f"{source}: open_on") if "decisions" in open_on else frozenset(
        {"review"})
    bad = sorted(decisions - set(DECISIONS))
    if bad:
        raise CasesConfigError(f"{source}: open_on.decisions: {bad[0]!r} is not one of {', '.join(DECISIONS)}")
    unknown = set(open_on) - {"decisions", "challenge_failed", "rules", "tags"}
    if unknown:
        raise CasesConfigError(f"{source}: open_on.{sorted(unknown)[0]}: unknown key")
    challenge_failed = open_on.get("challenge_failed", True)
    if not isinstance(challenge_failed, bool):
        raise CasesConfigError(f"{source}: open_on.challenge_failed: expected true or false")
    group_by = data.get("group_by", list(ENTITY_KINDS))
    if (not isinstance(group_by, list) or not group_by
            or any(g not in ENTITY_KINDS for g in group_by)):
        raise CasesConfigError(f"{source}: group_by: expected a list of {', '.join(ENTITY_KINDS)}")
    queues = data.get("queues") or []
    if not isinstance(queues, list):
        raise CasesConfigError(f"{source}: queues: expected a list")
    parsed = tuple(_queue(q, f"{source}: queues[{i}]") for i, q in enumerate(queues))
    names = [q.name for q in parsed]
    if len(set(names)) != len(names):
        raise CasesConfigError(f"{source}: queues: names must be unique")
    default = _queue(data["default_queue"], f"{source}: default_queue") if "default_queue" in data else Queue(
        "general", 24.0)
    return CasesConfig(decisions=decisions, challenge_failed=challenge_failed, rules=_strings(open_on, "rules", f"{source}: open_on"),
                       tags=_strings(open_on, "tags", f"{source}: open_on"),
                       window_minutes=_positive(data, "window_minutes", f"{source}: ", 60.0),
                       group_by=tuple(group_by), queues=parsed, default_queue=default)


def load(rules_dir: Path) -> CasesConfig:
    """``rules_dir/cases/cases.yaml``, or the defaults when there is none."""
    path = Path(rules_dir) / CONFIG_PATH
    if not path.exists():
        return CasesConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CasesConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(data, str(path))
