"""Check a parsed `when` tree against the schema, before it can reach a payment.

Every problem in the expression is returned (not just the first), so an analyst
fixes a file in one pass: unknown features with a "did you mean", a string compared
with a number, ordering (<, >) on strings or booleans, arithmetic on non-numbers,
a list membership whose attribute does not match the list's kind.
"""

from __future__ import annotations

import difflib

from fengkong.engine.errors import RuleTypeError
from fengkong.engine.schema import KIND_ATTRIBUTE, Schema
from fengkong.engine.tree import (
    And,
    Compare,
    Const,
    Expr,
    Feature,
    InList,
    InLiteral,
    IsMissing,
    Not,
    Or,
    Scalar,
    Value,
)


def _const_type(v: Scalar) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "string"


def suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:
        # Same last part in another namespace (`user.distinct_cards_1h` -> `device.distinct_cards_1h`).
        tail = name.split(".")[-1]
        close = [c for c in candidates if c.split(".")[-1] == tail][:3]
    return f"; did you mean {', '.join(close)}?" if close else ""


class _Checker:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.errors: list[RuleTypeError] = []
        self._names = sorted(schema.dtypes)

    def err(self, reason: str) -> None:
        if not any(e.reason == reason for e in self.errors):
            self.errors.append(RuleTypeError(reason))

    def feature_type(self, f: Feature) -> str | None:
        dtype = self.schema.dtypes.get(f.name)
        if dtype is not None:
            return dtype
        ns = f.name.split(".", 1)[0]
        if ns not in self.schema.namespaces:
            self.err(f"unknown namespace {ns!r} in {f.name!r} (namespaces: {', '.join(self.schema.namespaces)})"
                     + suggest(f.name, self._names))
        elif ns == "lists":
            known = ", ".join(sorted(self.schema.lists)) or "none declared"
            self.err(f"unknown list {f.name!r} (lists: {known})" + suggest(f.name, self._names))
        else:
            self.err(f"unknown feature {f.name!r}" + suggest(f.name, self._names))
        return None

    def value_type(self, v: Value) -> str | None:
        if isinstance(v, Const):
            return _const_type(v.value)
        if isinstance(v, Feature):
            return self.feature_type(v)
        lt, rt = self.value_type(v.left), self.value_type(v.right)
        for side, t in ((v.left, lt), (v.right, rt)):
            if t is not None and t != "number":
                self.err(f"arithmetic `{v.op}` needs numbers, but {_show(side)} is a {t}")
        return "number"

    def check(self, e: Expr) -> None:
        if isinstance(e, (And, Or)):
            for item in e.items:
                self.check(item)
        elif isinstance(e, Not):
            self.check(e.item)
        elif isinstance(e, Compare):
            lt, rt = self.value_type(e.left), self.value_type(e.right)
            if lt is None or rt is None:
                return
            if lt != rt:
                self.err(f"type mismatch: {_show(e.left)} is a {lt} but {_show(e.right)} is a {rt}")
            elif e.op not in ("==", "!=") and lt != "number":
                self.err(f"`{e.op}` needs numbers, but {_show(e.left)} is a {lt} (use == or != or `in`)")
            elif lt == "bool" and not isinstance(e.right, Const):
                self.err(f"compare the bool {_show(e.left)} with true or false")
        elif isinstance(e, InLiteral):
            it = self.value_type(e.item)
            types = {_const_type(v) for v in e.values}
            if len(types) > 1:
                self.err(f"the list {list(e.values)!r} mixes types ({', '.join(sorted(types))})")
            elif it is not None and types and it not in types:
                self.err(f"type mismatch: {_show(e.item)} is a {it} but the list holds {types.pop()}s")
        elif isinstance(e, InList):
            kind = self.schema.lists.get(e.list_name)
            if kind is None:
                known = ", ".join(sorted(self.schema.lists)) or "none declared"
                self.err(f"unknown list 'lists.{e.list_name}' (lists: {known})"
                         + suggest(e.flag, [n for n in self._names if n.startswith("lists.")]))
                return
            expected = KIND_ATTRIBUTE[kind]
            if e.item.name != expected:
                self.feature_type(e.item)
                self.err(f"lists.{e.list_name} is a {kind} list: it is looked up by {expected}, "
                         f"not {e.item.name} (write `{expected} in lists.{e.list_name}`)")
        elif isinstance(e, IsMissing):
            self.feature_type(e.feature)


def _show(v: Value) -> str:
    if isinstance(v, Feature):
        return v.name
    if isinstance(v, Const):
        return repr(v.value)
    return f"({_show(v.left)} {v.op} {_show(v.right)})"


def typecheck(expr: Expr, schema: Schema) -> list[RuleTypeError]:
    """All type problems of one expression (empty when it is well typed)."""
    checker = _Checker(schema)
    checker.check(expr)
    return checker.errors
