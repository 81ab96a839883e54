"""The same rules as plain Python closures: the reference the other evaluators are
held equal to, and the baseline the benchmark compares durable_rules with.

Built from the typed tree (never from text): each node becomes a small closure.
Semantics are those of `tree.py`: after `to_nnf`, a comparison reading a missing
value (absent, None, NaN, wrong type, or an arithmetic result that cannot be
computed: a zero divisor, or a result that is not a finite number) is false.
Nothing here raises on a value: an integer too large for a double is missing too.
"""

from __future__ import annotations

import math
import operator
import sys
from typing import Any, Callable, Mapping

import numpy as np

from fengkong.engine.tree import (
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
)

Features = Mapping[str, Any]
Predicate = Callable[[Features], bool]
ValueFn = Callable[[Features], Any]

_CMP = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}
_TYPES: dict[str, tuple[type, ...]] = {"number": (int, float), "string": (str,), "bool": (bool,)}
#: the largest finite double: an integer beyond it has no double, so it counts as missing
FLOAT_MAX = sys.float_info.max


def clean(value: Any, dtype: str | None) -> Any:
    """The value as the rules see it: None when missing or of the wrong type."""
    if value is None:
        return None
    if isinstance(value, np.generic):  # numpy scalars (pandas rows, model outputs) as Python values
        value = value.item()
    if dtype == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, int) and not -FLOAT_MAX <= value <= FLOAT_MAX:
            return None
        return value
    if dtype is not None and not isinstance(value, _TYPES[dtype]):
        return None
    return value


def compile_value(v: Value, dtypes: Mapping[str, str]) -> ValueFn:
    if isinstance(v, Const):
        c = v.value
        return lambda f: c
    if isinstance(v, Feature):
        name, dtype = sys.intern(v.name), dtypes.get(v.name)  # interned: see `_number_reader`
        if dtype == "number":
            return _number_reader(name)
        return lambda f: clean(f.get(name), dtype)
    left, right, op = compile_value(v.left, dtypes), compile_value(v.right, dtypes), v.op
    if op == "/":

        def divide(f: Features) -> Any:
            a = left(f)
            if a is None:
                return None
            b = right(f)
            if b is None or b == 0:
                return None
            return finite(a / b)

        return divide
    apply = _ARITH[op]

    def arith(f: Features) -> Any:
        a = left(f)
        if a is None:
            return None
        b = right(f)
        if b is None:
            return None
        return finite(apply(a, b))

    return arith


def finite(value: Any) -> Any:
    """An arithmetic result as a rule sees it: None (missing) when it is not a finite
    number. Operands are finite doubles or integers within them (`clean`), so an
    int x int product can outgrow a double: that is missing too."""
    if type(value) is float:
        return value if value - value == 0 else None
    return value if -FLOAT_MAX <= value <= FLOAT_MAX else None


_ARITH: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _number_reader(name: str) -> ValueFn:
    """``clean(f.get(name), "number")``, with the common values (a plain int, a finite
    float) returned without the call: durable's derived fields read two per decision.
    ``name`` is interned, as the feature store's keys are (features/assemble.py), so the
    lookup finds the key by identity instead of comparing the text."""

    def number(f: Features) -> Any:
        value: Any = f.get(name)
        kind = type(value)
        if (kind is int and -FLOAT_MAX <= value <= FLOAT_MAX) or (kind is float and value - value == 0):
            return value
        return clean(value, "number")

    return number


def compile_predicate(expr: Expr, dtypes: Mapping[str, str]) -> Predicate:
    """A closure f(features) -> bool with the engine's missing-feature semantics."""
    return _compile(to_nnf(expr), dtypes)


def _compile(e: Expr, dtypes: Mapping[str, str]) -> Predicate:
    # `and` / `or` as loops rather than all()/any() over a generator: the decision path
    # evaluates the policy's lanes with these closures on every event
    if isinstance(e, And):
        parts = tuple(_compile(i, dtypes) for i in e.items)

        def every(f: Features) -> bool:
            for p in parts:
                if not p(f):
                    return False
            return True

        return every
    if isinstance(e, Or):
        parts = tuple(_compile(i, dtypes) for i in e.items)

        def some(f: Features) -> bool:
            for p in parts:
                if p(f):
                    return True
            return False

        return some
    if isinstance(e, Compare):
        left, right, cmp = compile_value(e.left, dtypes), compile_value(e.right, dtypes), _CMP[e.op]

        def compare(f: Features) -> bool:
            a = left(f)
            if a is None:
                return False
            b = right(f)
            return b is not None and cmp(a, b)

        return compare
    if isinstance(e, InLiteral):
        item, values, negated = compile_value(e.item, dtypes), frozenset(e.values), e.negated

        def member(f: Features) -> bool:
            a = item(f)
            return a is not None and ((a in values) != negated)

        return member
    if isinstance(e, InList):
        flag, want = e.flag, not e.negated

        def listed(f: Features) -> bool:
            a = f.get(flag)
            if a is True or a is False:  # what the store gives: no need to clean it
                return a is want
            a = clean(a, "bool")
            return a is not None and a == want

        return listed
    if isinstance(e, IsMissing):
        get, negated = compile_value(e.feature, dtypes), e.negated
        return lambda f: (get(f) is not None) == negated
    raise TypeError(f"not an NNF node: {e!r}")
