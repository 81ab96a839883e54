"""What a decision says and how it explains itself.

`Decision` and `FiredRule` are frozen dataclasses with an ``__init__`` of their own
(``init=False``): the generated one of a frozen dataclass sets each field with
``object.__setattr__``, slower on a path that builds one per decision (see
docs/benchmarks.md); theirs writes the fields into the instance's dict at once.
Equality, repr, `dataclasses.replace` and the frozen guard are the dataclass's.
tests/test_engine_ruleset.py holds each ``__init__`` to the fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_new = object.__new__


@dataclass(frozen=True, init=False)
class FiredRule:
    """One rule that fired, with the feature values it read (None = missing)."""

    id: str
    description: str
    action: str
    score: float
    mode: str
    tags: tuple[str, ...]
    values: dict[str, Any]

    def __init__(self, id: str, description: str, action: str, score: float, mode: str, tags: tuple[str, ...],
                 values: dict[str, Any]) -> None:
        self.__dict__.update(id=id, description=description, action=action, score=score, mode=mode, tags=tags,
                             values=values)

    def to_dict(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: asdict deep-copies every value, and this
        # runs for each fired rule of each decision
        return {"id": self.id, "description": self.description, "action": self.action, "score": self.score,
                "mode": self.mode, "tags": list(self.tags), "values": dict(self.values)}


@dataclass(frozen=True, init=False)
class Decision:
    """The final answer for one event.

    ``reasons`` are the enforced rules that fired; ``shadow`` the shadow rules that
    fired (reported, never counted); ``score`` the sum of enforced scores;
    ``missing_features`` the features some rule needed but the mapping lacked;
    ``lane`` names the allow-list lane that decided (e.g. "trusted"), else None;
    ``score_action`` is what the thresholds alone said. When the policy's soft step
    ran (`fengkong.engine.soft`): ``risk`` is the fused risk it read, ``soft_action``
    what the soft table gave it and ``hard_action`` what the hard rules alone gave;
    all three are None otherwise.
    """

    decision: str
    score: float
    reasons: list[FiredRule]
    shadow: list[FiredRule]
    missing_features: list[str]
    ruleset_version: str
    lane: str | None = None
    score_action: str = "allow"
    thresholds: dict[str, float] = field(default_factory=dict)
    risk: float | None = None
    soft_action: str | None = None
    hard_action: str | None = None

    def __init__(self, decision: str, score: float, reasons: list[FiredRule], shadow: list[FiredRule],
                 missing_features: list[str], ruleset_version: str, lane: str | None = None,
                 score_action: str = "allow", thresholds: dict[str, float] | None = None,
                 risk: float | None = None, soft_action: str | None = None, hard_action: str | None = None) -> None:
        self.__dict__.update(decision=decision, score=score, reasons=reasons, shadow=shadow,
                             missing_features=missing_features, ruleset_version=ruleset_version, lane=lane,
                             score_action=score_action, thresholds={} if thresholds is None else thresholds,
                             risk=risk, soft_action=soft_action, hard_action=hard_action)

    def with_outcome(self, *, decision: str, lane: str | None, risk: float | None, soft_action: str | None,
                     hard_action: str | None) -> "Decision":
        """This decision with another outcome and the soft step's fields (`fengkong.engine.soft`),
        its explanation unchanged: `dataclasses.replace` of those fields, without replace's
        per-call look at the fields (the decision path asks for it per payment with models;
        tests/test_engine_shortcuts.py holds the two equal). Its fields are this one's dict, copied,
        with the five set: cheaper than passing all twelve to ``__init__``."""
        new = _new(Decision)
        fields = new.__dict__
        fields.update(self.__dict__)
        fields["decision"] = decision
        fields["lane"] = lane
        fields["risk"] = risk
        fields["soft_action"] = soft_action
        fields["hard_action"] = hard_action
        return new

    @property
    def fired_ids(self) -> list[str]:
        """Ids of every fired rule, enforced and shadow."""
        return [r.id for r in self.reasons] + [r.id for r in self.shadow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "score": self.score,
            "reasons": [r.to_dict() for r in self.reasons],
            "shadow": [r.to_dict() for r in self.shadow],
            "missing_features": list(self.missing_features),
            "ruleset_version": self.ruleset_version,
            "lane": self.lane,
            "score_action": self.score_action,
            "thresholds": dict(self.thresholds),
            **({"soft_action": self.soft_action, "hard_action": self.hard_action}
               if self.soft_action is not None else {}),
        }
