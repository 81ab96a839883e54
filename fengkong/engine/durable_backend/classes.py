"""A number durable only compares with constants travels as its class's representative.

When every durable test of a field compares it with a constant (`number_tests`), the
fires depend on the value only through which side of each constant it lies on. The
constants cut the number line into classes (below the first, each constant, between
two, above the last); a value and any other member of its class pass exactly the
same tests. So a fact carries, instead of the value, a fixed text of its class (a
constant, or a short number strictly between two): no float is formatted per
decision. A class that passes no test is not sent at all: the value fails every
test, as an absent field does. `value_classes` builds the classes once per rule-set
compile, `classify` places a value. Exact because durable compares such constants as
Python does (`exact_constant`), and a value reaches `classify` only when it is a plain
number (`plain_number`); any other value is sent as it is.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Iterable

from fengkong.engine.durable_backend.compiler import leaf_tests, refs

#: Integers beyond this go to durable as doubles. durable computes with 64-bit integers,
#: which wrap (``x >= 3 * y`` fired for x = 0 with y = 3074457345618258603); a double
#: never wraps, and up to 2^53 it is exact. (`facts` writes values by it too.)
EXACT_INT = 2**53

#: A field's classes, in order along the number line: (op, constant, text) where a
#: value belongs to the first class whose ``value op constant`` holds (op None: the
#: last class, every value left), and ``text`` is the JSON the fact carries (None: not
#: sent). None: the field has no classes, its value is sent as it is.
Classes = tuple[tuple[str | None, int | float | None, str | None], ...] | None

#: the comparisons `number_tests` reads: durable's operator -> Python's
_ORDER = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}


def number_tests(conditions: Iterable[dict[str, Any]]) -> dict[str, list[tuple[str, int | float]]]:
    """The field keys whose every durable test is a comparison with a number constant
    (``$lt``, ``$lte``, ``$gt``, ``$gte`` or equality), each with its tests as (Python
    operator, constant). A key used any other way (``$neq``, ``$ex`` / ``$nex``, with a
    field or an expression, on the right of ``$m``) or against a constant `exact_constant`
    refuses is left out: its value is always sent as it is."""
    tests: dict[str, list[tuple[str, int | float]]] = {}
    other: set[str] = set()
    for op, arg in leaf_tests(conditions):
        if op in _ORDER and len(arg) == 1 and exact_constant(next(iter(arg.values()))):
            (key, const), = arg.items()
            tests.setdefault(key, []).append((_ORDER[op], const))
        elif op.startswith("$"):
            for key, rhs in arg.items():
                other.add(key)
                other.update(refs(rhs))
        elif exact_constant(arg):
            tests.setdefault(op, []).append(("==", arg))
        else:
            other.add(op)
            other.update(refs(arg))
    return {key: found for key, found in tests.items() if key not in other}


def exact_constant(value: Any) -> bool:
    """Whether durable compares a value with this constant as Python does: a plain int
    within ±2^53 or a finite float written without an exponent. durable reads the
    constant with atoll / atof and compares an int with an int as int64s, anything else
    as doubles (events.c, reduceProperties); a plain number (`plain_number`) and such a
    constant are both exact doubles, so every comparison gives Python's answer."""
    if type(value) is int:
        return -EXACT_INT <= value <= EXACT_INT
    return type(value) is float and value - value == 0 and "e" not in repr(value)


def plain_number(value: Any) -> bool:
    """An int within ±2^53 or a finite float: a value `classify` may place."""
    kind = type(value)
    return (kind is int and -EXACT_INT <= value <= EXACT_INT) or (kind is float and value - value == 0)


def value_classes(tests: list[tuple[str, int | float]] | None) -> Classes:
    """The classes of a field with these tests (`number_tests`), neighbours that pass
    the same tests merged; None without tests, or when some class has no plain
    representative strictly inside it (then the value is sent as it is)."""
    if not tests:
        return None
    consts = sorted({c for _, c in tests})
    # the elementary classes: below the first constant, each constant, between two, above the last;
    # class i is the values within bounds[i] and past bounds[i - 1]; the last has no bound
    reps: list[int | float] = [consts[0] - 1]
    for low, high in zip(consts, consts[1:]):
        reps += [low, (low + high) / 2]
    reps += [consts[-1], consts[-1] + 1]
    bounds = [(op, c) for c in consts for op in ("<", "<=")]
    for i, rep in enumerate(reps):
        if not plain_number(rep) or (i < len(bounds) and not OPS[bounds[i][0]](rep, bounds[i][1])) \
                or (i > 0 and OPS[bounds[i - 1][0]](rep, bounds[i - 1][1])):
            return None  # constants too close for a representative between them
    outcomes = [tuple(OPS[op](rep, c) for op, c in tests) for rep in reps]
    groups: list[list[int]] = []
    for i, outcome in enumerate(outcomes):
        if groups and outcomes[groups[-1][0]] == outcome:
            groups[-1].append(i)  # the same tests pass: one class with the one before
        else:
            groups.append([i])
    out: list[tuple[str | None, int | float | None, str | None]] = []
    for group in groups:
        op, const = bounds[group[-1]] if group[-1] < len(bounds) else (None, None)
        pick = next((i for i in group if i % 2), group[0])  # a constant, when the class holds one
        out.append((op, const, float_text(reps[pick]) if any(outcomes[group[0]]) else None))
    return tuple(out)


def classify(value: int | float, classes: tuple[tuple[str | None, int | float | None, str | None], ...]) -> str | None:
    """The text a plain number's class carries (None: not sent)."""
    for op, const, text in classes:
        if op is None or OPS[op](value, const):
            return text
    return None  # unreachable: the last class has no bound


def sometimes_unsent(classes: Classes) -> bool:
    """Whether some values of a field with these classes are left out of the fact."""
    return classes is not None and any(text is None for _, _, text in classes)


def float_text(value: int | float) -> str:
    """``repr``, with a decimal point before an exponent (``1e-05`` -> ``1.0e-05``): a number
    as durable's parser reads it exactly (an int is its ``repr``)."""
    text = repr(value)
    return text.replace("e", ".0e") if "e" in text and "." not in text else text
