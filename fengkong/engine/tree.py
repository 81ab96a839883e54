"""The typed tree a `when` expression parses into.

Both evaluators (durable_rules in `durable_backend/`, numpy/pandas in
`vectorized.py`) and the plain-Python reference (`predicates.py`) consume this tree;
none of them ever sees the analyst's text. Nodes are frozen so a parsed rule can be
shared by every evaluator and every thread.

Semantics that every evaluator implements (docs/rules.md, "Missing features"):
a comparison that reads a missing feature (absent, ``None``, or an arithmetic
result that cannot be computed such as a division by zero) is false, and so is its
negation. `to_nnf` pushes every ``not`` down to the comparisons (inverting them), so
after it a rule is a monotone and/or tree of comparisons and "missing is false" is
applied in one place per comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Scalar = Union[int, float, str, bool]


@dataclass(frozen=True)
class Feature:
    """A dotted feature name from the catalog, e.g. ``merchant.volume_ratio_today``."""

    name: str


@dataclass(frozen=True)
class Const:
    value: Scalar


@dataclass(frozen=True)
class Arith:
    """``left op right`` with op one of ``+ - * /`` over numbers."""

    op: str
    left: "Value"
    right: "Value"


Value = Union[Feature, Const, Arith]

#: Comparison operators and their negations.
NEGATE_OP = {"<": ">=", ">=": "<", "<=": ">", ">": "<=", "==": "!=", "!=": "=="}
#: The same comparison with its sides swapped (``3 < x`` is ``x > 3``).
FLIP_OP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class Compare:
    op: str
    left: Value
    right: Value


@dataclass(frozen=True)
class InLiteral:
    """``item in ["C", "D"]`` (``negated``: ``not in``)."""

    item: Value
    values: tuple[Scalar, ...]
    negated: bool = False


@dataclass(frozen=True)
class InList:
    """``card.fingerprint in lists.blocked_cards``: true when the feature store found
    the event's attribute of the list's kind in that list (``lists.<name>`` is true)."""

    item: Feature
    list_name: str
    negated: bool = False

    @property
    def flag(self) -> str:
        return f"lists.{self.list_name}"


@dataclass(frozen=True)
class IsMissing:
    """``x is missing`` / ``x is not missing``: the one test that is true on a missing value."""

    feature: Feature
    negated: bool = False


@dataclass(frozen=True)
class And:
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class Not:
    item: "Expr"


Atom = Union[Compare, InLiteral, InList, IsMissing]
Expr = Union[Compare, InLiteral, InList, IsMissing, And, Or, Not]


def value_features(v: Value) -> list[str]:
    if isinstance(v, Feature):
        return [v.name]
    if isinstance(v, Arith):
        return value_features(v.left) + value_features(v.right)
    return []


def atom_reads(a: Atom) -> list[str]:
    """Features whose absence makes the atom false (``IsMissing`` reads its feature too)."""
    if isinstance(a, Compare):
        return value_features(a.left) + value_features(a.right)
    if isinstance(a, InLiteral):
        return value_features(a.item)
    if isinstance(a, InList):
        return [a.flag]
    return [a.feature.name]


def features(e: Expr) -> list[str]:
    """Every feature an expression reads, in first-seen order (for explanations).

    A list membership reads ``lists.<name>`` and also names the looked-up attribute
    (``card.fingerprint``) so the explanation shows which card was found."""
    out: list[str] = []

    def walk(x: Expr) -> None:
        if isinstance(x, (And, Or)):
            for i in x.items:
                walk(i)
        elif isinstance(x, Not):
            walk(x.item)
        else:
            names = atom_reads(x)
            if isinstance(x, InList):
                names = [x.item.name, x.flag]
            for n in names:
                if n not in out:
                    out.append(n)

    walk(e)
    return out


def walk_atoms(e: Expr) -> list[Atom]:
    """The atoms (comparisons, memberships, missing tests) of an expression, in order."""
    if isinstance(e, (And, Or)):
        return [a for i in e.items for a in walk_atoms(i)]
    if isinstance(e, Not):
        return walk_atoms(e.item)
    return [e]


def negate_atom(a: Atom) -> Atom:
    if isinstance(a, Compare):
        op = NEGATE_OP[a.op]
        # A boolean test stays an equality: ``not x`` is ``x == false``.
        if a.op in ("==", "!=") and isinstance(a.right, Const) and isinstance(a.right.value, bool):
            return Compare("==", a.left, Const((not a.right.value) if a.op == "==" else a.right.value))
        return Compare(op, a.left, a.right)
    if isinstance(a, InLiteral):
        return InLiteral(a.item, a.values, not a.negated)
    if isinstance(a, InList):
        return InList(a.item, a.list_name, not a.negated)
    return IsMissing(a.feature, not a.negated)


def to_nnf(e: Expr, negate: bool = False) -> Expr:
    """Negation normal form: no `Not` left; nested and/or of the same kind flattened."""
    if isinstance(e, Not):
        return to_nnf(e.item, not negate)
    if isinstance(e, (And, Or)):
        kind = type(e)
        if negate:
            kind = Or if kind is And else And
        items: list[Expr] = []
        for i in e.items:
            sub = to_nnf(i, negate)
            if type(sub) is kind:
                items.extend(sub.items)  # type: ignore[union-attr]
            else:
                items.append(sub)
        return kind(tuple(items))
    return negate_atom(e) if negate else e


def to_text(e: Expr | Value) -> str:
    """A readable rendering (used in messages and the generated-Python benchmark)."""
    if isinstance(e, Feature):
        return e.name
    if isinstance(e, Const):
        return repr(e.value) if not isinstance(e.value, bool) else str(e.value).lower()
    if isinstance(e, Arith):
        return f"({to_text(e.left)} {e.op} {to_text(e.right)})"
    if isinstance(e, Compare):
        return f"{to_text(e.left)} {e.op} {to_text(e.right)}"
    if isinstance(e, InLiteral):
        return f"{to_text(e.item)} {'not in' if e.negated else 'in'} {list(e.values)!r}"
    if isinstance(e, InList):
        return f"{e.item.name} {'not in' if e.negated else 'in'} lists.{e.list_name}"
    if isinstance(e, IsMissing):
        return f"{e.feature.name} is {'not ' if e.negated else ''}missing"
    if isinstance(e, Not):
        return f"not ({to_text(e.item)})"
    joiner = " and " if isinstance(e, And) else " or "
    return "(" + joiner.join(to_text(i) for i in e.items) + ")"
