"""One decision's features as the JSON fact durable's parser reads.

Only the fields a shard's rules read are written, under their short keys. ``None``,
NaN and wrong-typed values are left out: that is how a missing feature reaches
durable. So are values no durable test can tell from an absent field (a false flag
tested only for true, a string no rule names: `sent_values`) and fields read only
through a derived field; durable walks less, and the fires are the same. A number
(or a derived field) that durable only compares with constants travels as its class's
representative, and not at all when its class passes no test (`classes`). Of what is
left, only the fields some rule able to fire reads are sent (`guards.kept_fields`).
Python, not durable, reports the missing features.
See docs/benchmarks.md for the cost.

`encode_fact` interprets a shard's `FactPlan` and is the reference; what a decision
runs is the straight-line writer `fact_code` compiles from the same plan, which
tests/test_engine_fact_code.py holds equal to it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from json.encoder import encode_basestring as encode_str  # what json.dumps(str, ensure_ascii=False) returns
from typing import Any, Iterable, Mapping

import numpy as np

from fengkong.engine.durable_backend.classes import (  # EXACT_INT, float_text: facts' names too
    EXACT_INT,
    Classes,
    classify,
    float_text,
    number_tests,
    plain_number,
    sometimes_unsent,
    value_classes,
)
from fengkong.engine.durable_backend.compiler import leaf_tests, refs
from fengkong.engine.durable_backend.guards import Liveness, guard_keys, kept_fields, liveness
from fengkong.engine.predicates import ValueFn, clean


@dataclass(frozen=True, slots=True)
class FactPlan:
    """What `encode_fact` reads for one shard, split by type, so the common values
    are written without a call (prefixes are ``"key":``; ``report`` is False for a
    feature another shard already reports missing)."""

    numbers: tuple[tuple[str, str, bool, Classes], ...]  # name, prefix, report, its classes (`classes`)
    bools: tuple[tuple[str, str | None, str | None, bool], ...]  # name, true member, false member (None: not sent)
    strings: tuple[tuple[str, str, frozenset[Any] | None, bool], ...]  # name, prefix, values sent (None: all)
    others: tuple[tuple[str, str, str | None, bool], ...]  # name, prefix, dtype, report
    unsent: tuple[tuple[str, str | None], ...]  # read only to report them missing
    computed: tuple[tuple[str, ValueFn, Classes], ...]  # prefix, derived field's function, its classes
    #: prefixes of the shard's `guards.guard_keys`: a fact with none of them is not asserted
    #: (() : always asserted)
    guards: tuple[str, ...] = ()
    #: each rule's required and read fields, as prefixes (`guards.kept_fields`: the fact keeps
    #: only what a rule able to fire reads); None: every field is kept, `guards` alone decide
    live: Liveness | None = None


def make_plan(field_keys: Iterable[str], conditions: Iterable[dict[str, Any]], names: Mapping[str, str],
              derived: Mapping[str, ValueFn], dtypes: Mapping[str, str], owned: set[str]) -> FactPlan:
    """The plan of a shard whose rules read ``field_keys`` through ``conditions``.

    ``names`` maps a field key to its feature, ``derived`` a derived key to its
    function; ``owned`` (updated) holds the features some shard already reports."""
    conditions = list(conditions)
    constants, other_uses = field_uses(conditions)
    tests = number_tests(conditions)
    numbers: list[tuple[str, str, bool, Classes]] = []
    bools: list[tuple[str, str | None, str | None, bool]] = []
    strings: list[tuple[str, str, frozenset[Any] | None, bool]] = []
    others: list[tuple[str, str, str | None, bool]] = []
    unsent: list[tuple[str, str | None]] = []
    computed: list[tuple[str, ValueFn, Classes]] = []
    partly: set[str] = set()  # the fields sent for some values only, so most often left out
    for key in sorted(field_keys):
        prefix = field_prefix(key)
        when = value_classes(tests.get(key))
        if sometimes_unsent(when) and key not in derived:  # a writer checks a feature guard before all else
            partly.add(key)
        if key in derived:
            computed.append((prefix, derived[key], when))
            continue
        name = sys.intern(names[key])  # as the store's keys are: found by identity
        dtype = dtypes.get(name)
        report = name not in owned  # a field read by two shards is reported missing once
        owned.add(name)
        if key not in constants and key not in other_uses:
            if report:
                unsent.append((name, dtype))
        elif dtype == "number":
            numbers.append((name, prefix, report, when))
        elif dtype == "bool":
            sent = None if key in other_uses else sent_values(dtype, constants[key])
            if sent is not None and len(sent) == 1:
                partly.add(key)
            bools.append((name, prefix + "true" if sent is None or True in sent else None,
                          prefix + "false" if sent is None or False in sent else None, report))
        elif dtype == "string":
            sent = None if key in other_uses else sent_values(dtype, constants[key])
            if sent is not None:
                partly.add(key)
            strings.append((name, prefix, sent, report))
        else:
            others.append((name, prefix, dtype, report))
    guards = tuple(field_prefix(key) for key in guard_keys(conditions, partly))
    return FactPlan(tuple(numbers), tuple(bools), tuple(strings), tuple(others), tuple(unsent), tuple(computed),
                    guards, liveness(conditions, field_prefix))


def field_prefix(key: str) -> str:
    """How a field starts in a fact: ``"key":``."""
    return f'"{key}":'


def encode_fact(plan: FactPlan, features: Mapping[str, Any], head: str, missing: list[str]) -> str | None:
    """One shard's fact: ``head`` (its id), then ``"key":value`` for each present
    field worth sending that a rule able to fire reads (`guards.kept_fields`); the names of
    absent features are added to ``missing``. None when no rule of the shard can fire.

    The reference `fact_code.compile_writer`'s writers are held to; written inline by
    type rather than through `json_value` for each field (docs/benchmarks.md)."""
    get = features.get
    parts = [head]
    append = parts.append
    low, high = -EXACT_INT, EXACT_INT
    value: Any
    for name, prefix, report, when in plan.numbers:
        value = get(name)
        kind = type(value)
        if when is not None and ((kind is int and low <= value <= high) or (kind is float and value - value == 0)):
            text = classify(value, when)
            if text is not None:
                append(prefix + text)
        elif kind is int and low <= value <= high:
            append(f"{prefix}{value}")
        elif kind is float and value - value == 0:  # finite
            text = repr(value)
            if "e" in text and "." not in text:  # 1e-05 -> 1.0e-05, as `float_text`
                text = text.replace("e", ".0e")
            append(prefix + text)
        elif value is None:
            if report:
                missing.append(name)
        else:
            written_clean(parts, missing, name, value, prefix, "number", report, when)
    for name, true, false, report in plan.bools:
        value = get(name)
        if value is not True and value is not False:
            value = clean(value, "bool")
            if value is None:
                if report:
                    missing.append(name)
                continue
        member = true if value else false
        if member is not None:
            append(member)
    for name, prefix, sent, report in plan.strings:
        value = get(name)
        if type(value) is str:
            if sent is None or value in sent:
                append(prefix + encode_str(value))
        elif value is None:
            if report:
                missing.append(name)
        else:
            value = clean(value, "string")  # a str subclass, np.str_, or not a string at all
            if value is None:
                if report:
                    missing.append(name)
            elif sent is None or value in sent:
                append(prefix + json_value(value))
    for name, prefix, dtype, report in plan.others:
        written_clean(parts, missing, name, get(name), prefix, dtype, report)
    for name, dtype in plan.unsent:
        value = get(name)
        if value is None or clean(value, dtype) is None:
            missing.append(name)
    for prefix, fn, when in plan.computed:
        value = fn(features)
        if value is None:
            continue
        if when is not None and plain_number(value):
            text = classify(value, when)
            if text is not None:
                append(prefix + text)
        else:
            append(prefix + json_value(value))
    if plan.live is not None:  # only the fields a rule able to fire reads (`guards.kept_fields`)
        kept = kept_fields(plan.live, [part[:part.index('":') + 2] for part in parts[1:]])
        if kept is None:
            return None
        return ",".join([head, *(parts[i + 1] for i in kept)]) + "}"
    text = ",".join(parts) + "}"
    if plan.guards and not any(guard in text for guard in plan.guards):
        return None
    return text


def written_clean(parts: list[str], missing: list[str], name: str, value: Any, prefix: str, dtype: str | None,
                   report: bool, classes: Classes = None) -> None:
    """The slow path of `encode_fact` (and of `fact_code`'s writers): the value `clean`
    makes of it (its class's text, with ``classes``), or the feature's name in ``missing``."""
    value = clean(value, dtype)
    if value is not None:
        if classes is not None and plain_number(value):
            text = classify(value, classes)
            if text is not None:
                parts.append(prefix + text)
        else:
            parts.append(prefix + json_value(value))
    elif report:
        missing.append(name)


def json_value(value: Any) -> str:
    """One value as JSON that durable's own parser reads correctly.

    durable rejects a number with an exponent but no decimal point (``1e-05``: error
    204), which is how Python writes such floats, so they are written ``1.0e-05``;
    integers beyond ±2^53 are written as doubles (`EXACT_INT`). numpy scalars become
    Python's first: numpy 2 writes ``np.float64(0.3)`` as its repr, which is not JSON."""
    kind = type(value)
    if kind is int and -EXACT_INT <= value <= EXACT_INT:
        return str(value)
    if kind is float:  # first: a derived field's value is most often a float
        return float_text(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, np.generic):
        value = value.item()
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        if -EXACT_INT <= value <= EXACT_INT:
            return str(value)
        value = float(value)
    if isinstance(value, float):
        return float_text(value)
    return json.dumps(value, ensure_ascii=False)


def field_uses(conditions: Iterable[dict[str, Any]]) -> tuple[dict[str, set[Any]], set[str]]:
    """How compiled conditions use each field key: the constants it is tested EQUAL to
    (``{key: constant}``), and the keys used any other way (an ordered or ``$neq``
    comparison, ``$ex`` / ``$nex``, equality with an expression, a right-hand ``$m``)."""
    constants: dict[str, set[Any]] = {}
    other: set[str] = set()

    for op, arg in leaf_tests(conditions):
        if op.startswith("$"):
            for key, rhs in arg.items():
                other.add(key)
                other.update(refs(rhs))
        elif isinstance(arg, dict):
            other.add(op)
            other.update(refs(arg))
        else:
            constants.setdefault(op, set()).add(arg)
    return constants, other


def sent_values(dtype: str, constants: set[Any]) -> frozenset[Any] | None:
    """The values worth sending of a field whose every durable test is ``field ==
    constant`` (None: send every value).

    durable makes a test on an absent field false; a value equal to none of the
    constants fails every such test too, so leaving it out changes no fire. This holds
    for bools, and for strings whose constants need no JSON escape (durable compares
    the escaped texts with strcmp, which then agrees with Python's ==); numbers have
    their classes (`classes`), which hold only for constants durable compares as Python does."""
    if dtype == "bool" and all(type(c) is bool for c in constants):
        return frozenset(constants)
    if dtype == "string" and all(type(c) is str and encode_str(c) == f'"{c}"' for c in constants):
        return frozenset(constants)
    return None
