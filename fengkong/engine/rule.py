"""One analyst rule: its fields, and the checks that turn a YAML mapping into it.

Rule fields (docs/rules.md): ``id``, ``description``, ``when``, ``then``
(allow/challenge/review/deny), ``score`` (0-100), ``tags`` (list, default empty),
``mode`` (enforce/shadow, default enforce). Unknown fields are refused so a typo
like ``scroe`` is caught instead of ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fengkong.engine.errors import ExpressionError, Problem
from fengkong.engine.language import parse
from fengkong.engine.schema import Schema
from fengkong.engine.tree import Expr, features
from fengkong.engine.typecheck import typecheck
from fengkong.engine.yamlio import line_of

ACTIONS: tuple[str, ...] = ("allow", "challenge", "review", "deny")
MODES: tuple[str, ...] = ("enforce", "shadow")
RULE_FIELDS = ("id", "description", "when", "then", "score", "tags", "mode")
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


@dataclass(frozen=True)
class Rule:
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
    """A Rule from one YAML mapping, or the problems that stop it."""
    line = line_of(node) or None
    if not isinstance(node, dict):
        return None, [Problem(file, line, None, "a rule must be a mapping with id, description, when, then, score")]
    rid = node.get("id")
    rid_s = str(rid) if rid is not None else None
    problems: list[Problem] = []

    def bad(key: str | None, reason: str) -> None:
        problems.append(Problem(file, line_of(node, key) if key else line, rid_s, reason))

    for key, kline in getattr(node, "duplicate_keys", []):
        problems.append(Problem(file, kline, rid_s, f"field {key!r} is written twice"))
    for key in node:
        if key not in RULE_FIELDS:
            bad(key, f"unknown field {key!r} (fields: {', '.join(RULE_FIELDS)})")
    for key in ("id", "description", "when", "then", "score"):
        if key not in node:
            bad(None, f"missing required field {key!r}")
    if rid is not None and (not isinstance(rid, str) or not _ID.match(rid)):
        bad("id", f"id {rid!r} must be letters, digits, '_', '.', '-' (at most 100)")
    desc = node.get("description")
    if "description" in node and (not isinstance(desc, str) or not desc.strip()):
        bad("description", "description must be non-empty text")
    then = node.get("then")
    if "then" in node and then not in ACTIONS:
        bad("then", f"unknown action {then!r}; expected one of {', '.join(ACTIONS)}")
    score = node.get("score")
    if "score" in node:
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            bad("score", f"score {score!r} must be a number from 0 to 100")
        elif not 0 <= score <= 100:
            bad("score", f"score {score} is out of range (0 to 100)")
    tags = node.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        bad("tags", "tags must be a list of words, e.g. [cash_out, 套现]")
        tags = []
    mode = node.get("mode", "enforce")
    if mode not in MODES:
        bad("mode", f"unknown mode {mode!r}; expected enforce or shadow")
    expr = None
    if "when" in node:
        expr, errors = parse_expression(node["when"], schema)
        wline = line_of(node, "when") or line
        for e in errors:
            problems.append(Problem(file, wline, rid_s, f"when: {e.reason}"))
    if problems or expr is None:
        return None, problems
    return Rule(
        id=rid_s or "", description=desc.strip(), when=str(node["when"]).strip(), expr=expr, then=then,
        score=score, tags=tuple(tags), mode=mode, file=file, line=line or 0, reads=tuple(features(expr)),
    ), []
