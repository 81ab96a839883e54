"""The typed tree (after `to_nnf`) as durable_rules' JSON conditions.

durable's JSON form is "field op constant-or-expression-of-fields". ``x > 3``,
``x >= y`` and ``x in [..]`` compile natively (``$gt``, ``$m``, ``$or`` of
equalities). Every arithmetic (``3 * y``, ``a + b``, ``a / b``) is a derived field
that Python computes before the fact is asserted, absent when it cannot be computed:
an operand missing, a zero divisor, or a result that is not a finite number (the
comparison is then false, docs/rules.md "Missing features"). durable's own
arithmetic would compare an overflow as infinity, and its 64-bit integers wrap.
durable treats a comparison on an absent LEFT field as false, as `tree.py` requires,
but not an absent field on the right (``x < y`` fires with y absent), so every
right-hand field gets an ``$ex`` guard. ``is missing`` is ``$nex``.

Features travel under short keys (``f0``, ``f1``...; derived fields ``d0``...) so a
fact stays small; one `Compiler` gives each feature one key across every shard.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from fengkong.engine.predicates import ValueFn, compile_value
from fengkong.engine.tree import (
    Arith,
    And,
    Compare,
    Const,
    Expr,
    Feature,
    InList,
    InLiteral,
    IsMissing,
    Or,
    Value,
    to_nnf,
    to_text,
)

_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}


class Compiler:
    """Compiles conditions one by one, sharing field keys and derived fields among them."""

    def __init__(self, dtypes: dict[str, str]) -> None:
        self.dtypes = dtypes
        #: feature name -> short field key
        self.keys: dict[str, str] = {}
        #: expression text -> (field key, the function that computes it)
        self.derived: dict[str, tuple[str, ValueFn]] = {}
        #: derived field key -> its expression (what `fact_code` writes inline)
        self.exprs: dict[str, Value] = {}
        self._used: set[str] = set()

    def compile(self, expr: Expr) -> tuple[dict[str, Any], set[str]]:
        """One condition as durable's JSON, and the field keys it reads."""
        self._used = set()
        cond = self._cond(to_nnf(expr))
        return cond, self._used

    def _field(self, name: str) -> str:
        key = self.keys.get(name)
        if key is None:
            key = self.keys[name] = f"f{len(self.keys)}"
        self._used.add(key)
        return key

    def _derive(self, v: Value) -> str:
        text = to_text(v)
        if text not in self.derived:
            self.derived[text] = (f"d{len(self.derived)}", compile_value(v, self.dtypes))
            self.exprs[self.derived[text][0]] = v
        for name in _leaves(v):
            self._field(name)  # so "missing" is reported for derived operands too
        key = self.derived[text][0]
        self._used.add(key)
        return key

    def _rhs(self, v: Value) -> Any:
        if isinstance(v, Const):
            return v.value
        if isinstance(v, Feature):
            return {"$m": self._field(v.name)}
        return {"$m": self._derive(v)}

    def _cond(self, e: Expr) -> dict[str, Any]:
        if isinstance(e, And):
            return {"$and": [self._cond(i) for i in e.items]}
        if isinstance(e, Or):
            return {"$or": [self._cond(i) for i in e.items]}
        if isinstance(e, Compare):
            left = self._field(e.left.name) if isinstance(e.left, Feature) else self._derive(e.left)
            right = self._rhs(e.right)
            cmp = {left: right} if e.op == "==" else {_OPS[e.op]: {left: right}}
            if isinstance(e.right, Const):
                return cmp
            # an absent field on the right does not make durable's comparison false
            guards: list[dict[str, Any]] = [{"$ex": {k: 1}} for k in sorted(refs(right))]
            return {"$and": [*guards, cmp]}
        if isinstance(e, InLiteral):
            item = self._field(e.item.name) if isinstance(e.item, Feature) else self._derive(e.item)
            if e.negated:
                parts = [{"$neq": {item: v}} for v in e.values]
                return parts[0] if len(parts) == 1 else {"$and": parts}
            eqs = [{item: v} for v in e.values]
            return eqs[0] if len(eqs) == 1 else {"$or": eqs}
        if isinstance(e, InList):
            return {self._field(e.flag): not e.negated}
        if isinstance(e, IsMissing):
            return {("$ex" if e.negated else "$nex"): {self._field(e.feature.name): 1}}
        raise TypeError(f"not an NNF node: {e!r}")


def leaf_tests(conditions: Iterable[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Each test of compiled conditions that is not an ``$and`` / ``$or`` of others, as
    (operator or field key, argument): what the walks over a rule set's tests (the
    classes of numbers, the values worth sending) read, in one place."""
    for cond in conditions:
        (op, arg), = cond.items()
        if op in ("$and", "$or"):
            yield from leaf_tests(arg)
        else:
            yield op, arg


def refs(node: Any) -> set[str]:
    """Field keys a compiled right-hand side refers to with ``$m``."""
    if isinstance(node, dict):
        out: set[str] = set()
        for k, v in node.items():
            if k == "$m" and isinstance(v, str):
                out.add(v)
            else:
                out |= refs(v)
        return out
    return set()


def _leaves(v: Value) -> list[str]:
    if isinstance(v, Feature):
        return [v.name]
    if isinstance(v, Arith):
        return _leaves(v.left) + _leaves(v.right)
    return []
