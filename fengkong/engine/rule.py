"""One analyst rule: its fields, and the model that turns a YAML mapping into it.

Rule fields (docs/rules.md): ``id``, ``description``, ``when``, ``then``
(allow/challenge/review/deny), ``score`` (0-100), ``tags`` (list, default empty),
``mode`` (enforce/shadow, default enforce), ``soft`` (true: evidence, default false: hard),
``tunable`` (the constants `fengkong tune` may move, each with its range: `tunable.py`).
A soft rule's action and score reach the decision only through the calibrated fused
risk when the policy has a ``soft`` table and a fused risk exists
(`fengkong.engine.soft`); a hard rule (blacklist, Tor, limits) decides as written.
`RuleSpec` (pydantic) checks them all in
one pass; unknown fields are refused so a typo like ``scroe`` is caught instead of
ignored. The ``when`` expression is then parsed and type-checked against the schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, ValidationError, field_validator

from fengkong.engine.errors import ExpressionError, Problem
from fengkong.engine.language import parse
from fengkong.engine.schema import Schema
from fengkong.engine.tree import Expr, features
from fengkong.engine.tunable import Tunable, resolve
from fengkong.engine.typecheck import typecheck
from fengkong.engine.validation import duplicate_keys, field_errors
from fengkong.engine.yamlio import line_of

ACTIONS: tuple[str, ...] = ("allow", "challenge", "review", "deny")
MODES: tuple[str, ...] = ("enforce", "shadow")
RULE_FIELDS = ("id", "description", "when", "then", "score", "tags", "mode", "soft", "tunable")
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
#: what the choices of a field are called in an error message
NOUNS = {"then": "action", "decision": "action", "mode": "mode", "severity": "action", "[key]": "action"}

Action = Literal["allow", "challenge", "review", "deny"]


def yaml_number(value: Any) -> Any:
    """A YAML number as it is (an int stays an int); text and true/false are refused
    rather than converted, since ``score: "10"`` is more likely a mistake than a wish."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, not {value!r}")
    return value


Number = Annotated[int | float, BeforeValidator(yaml_number)]


class RuleSpec(BaseModel):
    """A rule as written in a rule file, every field checked (the expression apart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    description: str
    when: str
    then: Action
    score: Number
    tags: list[str] = []
    mode: Literal["enforce", "shadow"] = "enforce"
    soft: StrictBool = False
    tunable: dict[str, tuple[Number, Number]] = {}

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '_', '.', '-' (at most 100)")
        return value

    @field_validator("description")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be non-empty text")
        return value.strip()

    @field_validator("score")
    @classmethod
    def _in_range(cls, value: float) -> float:
        if not 0 <= value <= 100:
            raise ValueError(f"{value} is out of range (0 to 100)")
        return value


@dataclass(frozen=True)
class Rule:
    """A checked rule with its parsed condition, ready to compile and to explain."""

    id: str
    description: str
    when: str
    expr: Expr
    then: str
    score: float
    tags: tuple[str, ...] = ()
    mode: str = "enforce"
    file: str = ""
    line: int = 0
    reads: tuple[str, ...] = field(default=())
    soft: bool = False
    tunables: tuple[Tunable, ...] = ()

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"


def parse_expression(text: Any, schema: Schema) -> tuple[Expr | None, list[ExpressionError]]:
    """Parse and type-check one expression; all problems, or the tree."""
    if not isinstance(text, str):
        return None, [ExpressionError("`when` must be a string expression")]
    try:
        expr = parse(text)
    except ExpressionError as exc:
        return None, [exc]
    errors: list[ExpressionError] = list(typecheck(expr, schema))
    return (None if errors else expr), errors


def build_rule(node: Any, file: str, schema: Schema) -> tuple[Rule | None, list[Problem]]:
    """A Rule from one YAML mapping, or every problem that stops it (file, line, id, field)."""
    line = line_of(node) or None
    if not isinstance(node, dict):
        return None, [Problem(file, line, None, "a rule must be a mapping with id, description, when, then, score")]
    rid = node.get("id")
    rid_s = str(rid) if rid is not None else None
    problems = [Problem(file, e.line, rid_s, str(e)) for e in duplicate_keys(node)]
    spec: RuleSpec | None = None
    try:
        spec = RuleSpec.model_validate(node)
    except ValidationError as exc:
        problems += [Problem(file, e.line, rid_s, str(e)) for e in field_errors(exc, RuleSpec, node, NOUNS)]
    expr = None
    when = node.get("when")
    if isinstance(when, str):
        expr, errors = parse_expression(when, schema)
        wline = line_of(node, "when") or line
        problems += [Problem(file, wline, rid_s, f"when: {e.reason}") for e in errors]
    tunables: list[Tunable] = []
    if spec is not None and expr is not None:
        for key, (lo, hi) in spec.tunable.items():
            try:
                tunables.append(resolve(key, lo, hi, expr))
            except ValueError as exc:
                problems.append(Problem(file, line_of(node.get("tunable"), key) or line, rid_s, str(exc)))
    if problems or spec is None or expr is None:
        return None, problems
    return Rule(
        id=spec.id, description=spec.description, when=spec.when.strip(), expr=expr, then=spec.then,
        score=spec.score, tags=tuple(spec.tags), mode=spec.mode, file=file, line=line or 0,
        reads=tuple(features(expr)), soft=spec.soft, tunables=tuple(tunables),
    ), []
