"""Every use of durable_rules in fengkong lives in this module.

durable_rules 2.0.28 is unmaintained, so it is kept behind one small class. We drive
its C module (`durable_rules_engine`) directly rather than through the Python host
(DESIGN.md, "durable_rules: what is known"):

* each decision asserts ONE fact (``assert_fact`` fires every matching rule; ``post``
  would fire only one), then drains the fired actions with
  ``start_action_for_state`` / ``complete_and_start_action`` on the calling thread,
  then ``retract_fact``. No host, so no background dispatcher that could steal or
  delay a fire;
* the whole assert/drain/retract sequence holds a per-ruleset lock, and each fire is
  matched to our fact by its unique id (the session's own state message can match a
  ``$nex`` rule once, and is ignored). A decision therefore never misses or borrows
  a fire, whichever thread calls (tests/test_engine_durable.py proves it under
  load). The C module never releases the GIL, so the lock costs no parallelism;
* one session id for all facts, no per-entity state (state lives in Redis);
* only the fields the rules read are sent, under short keys (``f0``, ``f1``...), so
  the fact stays small; ``None``, NaN and wrong-typed values are left out, which is
  how a missing feature reaches durable. So are values no test can tell from an
  absent field (`_sent_values`: a false flag tested only for true, a string no rule
  names) and fields read only through a derived field: they still count as missing
  or present in the decision's ``missing_features``, which Python computes.

Compilation of the typed tree (after `to_nnf`): durable's JSON form is "field op
constant-or-expression-of-fields". ``x > 3`` and ``x >= 3 * y`` and ``x in [..]``
compile natively (``$gt``, ``$mul``/``$m``, ``$or`` of equalities). A comparison
whose left side is arithmetic, or any division (a zero divisor must make the
comparison false, not crash C), gets a derived field computed in Python before the
fact is asserted (absent when it cannot be computed). durable treats a comparison
on an absent LEFT field as false, as `tree.py` requires, but not an absent field on
the right (``x < 2 * y`` fires with y absent), so every right-hand field gets an
``$ex`` guard. ``is missing`` is ``$nex``. A rule with ``or`` fires once per true
branch: fires are collected into a set.

Limits of the C engine: the alpha network is walked with a stack of 64 nodes, so the
rules are packed into shards (separate durable rulesets) whose worst case stays well
inside it (`ALPHA_STACK_BUDGET`, `_alpha_stack_peak`); one decision asserts one fact
per shard. The default rules fit in one shard. The benchmark and
tests/test_engine_durable.py compare every fire with the plain-Python evaluator.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_str  # what json.dumps(str, ensure_ascii=False) returns
from typing import Any, Iterable, Mapping, Sequence

import durable_rules_engine as _dre
import numpy as np

from fengkong.engine.errors import EvaluationError
from fengkong.engine.predicates import ValueFn, clean, compile_value
from fengkong.engine.tree import (
    And,
    Arith,
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
_ARITH = {"+": "$add", "-": "$sub", "*": "$mul"}
_SID = "0"
_names = itertools.count(1)
_names_lock = threading.Lock()


def unique_name(prefix: str) -> str:
    """A ruleset name never used before in this process (durable names are one-shot)."""
    with _names_lock:
        return f"{prefix}_{next(_names)}"


class RuleSetClosed(EvaluationError):
    """The ruleset was retired by a reload; the caller retries with the live one."""


@dataclass(frozen=True)
class FireResult:
    fired: list[str]  # rule keys, in declaration order
    missing: list[str]  # features read by some rule that were missing


#: The limit of durable's C engine that a fact meets at run time: the alpha network is
#: walked with a stack of 64 nodes (MAX_STACK_SIZE in events.c; one more push fails with
#: error 303, which the former limit of 28 fields per shard was guarding against), and
#: every test that holds pushes its node. `_alpha_stack_peak` bounds that stack for any
#: fact; rules are packed into shards (separate durable rulesets) that each stay within
#: this budget, a margin left for any difference between our model and durable's node
#: sharing. The default rules fit in one shard (peak 43), the benchmark's 200 generated
#: rules in 5 (18 under the former limit).
ALPHA_STACK_BUDGET = 48
#: a message holds 255 properties, id and sid included (MAX_OBJECT_PROPERTIES, state.h)
MAX_FIELDS_PER_SHARD = 200
#: durable links at most 256 rules to one alpha node (BETA_LIST_LENGTH, rules.h)
MAX_RULES_PER_SHARD = 200


class _Shard:
    """One durable_rules ruleset holding a subset of the rules (and of the fields)."""

    def __init__(self) -> None:
        self.fields: set[str] = set()
        self.shapes: list[Any] = []  # the conditions as `_alpha_shape` gives them
        self.definition: dict[str, Any] = {}
        self.rule_of: dict[str, str] = {}
        self.handle: Any = None
        self.field_list: list[str] = []
        # the evaluation plan (`DurableRuleset._plan`)
        self.numbers: tuple[tuple[str, str, bool], ...] = ()
        self.bools: tuple[tuple[str, str | None, str | None, bool], ...] = ()  # None: that value is not sent
        self.strings: tuple[tuple[str, str, frozenset[str] | None, bool], ...] = ()  # None: every value is sent
        self.others: tuple[tuple[str, str, str | None, bool], ...] = ()
        self.unsent: tuple[tuple[str, str | None], ...] = ()  # read only to report them missing
        self.computed: tuple[tuple[str, ValueFn], ...] = ()


class DurableRuleset:
    """A set of named conditions compiled into durable_rules rulesets (shards).

    ``conditions`` maps a key (a rule id) to its typed tree; `fire` returns the keys
    whose condition holds for one mapping of features.
    """

    def __init__(self, name: str, conditions: Sequence[tuple[str, Expr]], dtypes: Mapping[str, str]) -> None:
        self.name = name
        self._dtypes = dict(dtypes)
        self._keys: dict[str, str] = {}  # feature name -> short field key
        self._derived: dict[str, tuple[str, ValueFn]] = {}  # expression text -> (key, fn)
        self._order: dict[str, int] = {}
        self._shards: list[_Shard] = []
        self._used: set[str] = set()
        for i, (key, expr) in enumerate(conditions):
            self._order[key] = i
            self._used = set()
            cond = self._cond(to_nnf(expr))
            shape = _alpha_shape(cond)
            if len(self._used) > MAX_FIELDS_PER_SHARD:
                raise EvaluationError(f"rule {key} reads {len(self._used)} features; durable_rules allows "
                                      f"{MAX_FIELDS_PER_SHARD} per rule")
            shard = next((s for s in self._shards
                          if len(s.fields | self._used) <= MAX_FIELDS_PER_SHARD
                          and len(s.definition) < MAX_RULES_PER_SHARD
                          and _alpha_stack_peak([*s.shapes, shape]) <= ALPHA_STACK_BUDGET), None)
            if shard is None:  # a rule over budget on its own gets a shard of its own
                shard = _Shard()
                self._shards.append(shard)
            rname = f"r{i}"
            shard.fields |= self._used
            shard.shapes.append(shape)
            shard.rule_of[rname] = key
            shard.definition[rname] = {"all": [{"m": cond}]}
        self.definition = {f"{name}_s{j}": s.definition for j, s in enumerate(self._shards)}
        self._derived_list = list(self._derived.values())
        self._owned: set[str] = set()
        try:
            for j, shard in enumerate(self._shards):
                shard.field_list = sorted(shard.fields)
                self._plan(shard)
                shard.handle = _dre.create_ruleset(f"{name}_s{j}", json.dumps(shard.definition, ensure_ascii=False))
        except Exception as exc:  # the C module raises its own error type
            raise EvaluationError(f"durable_rules refused ruleset {name}: {exc}") from exc
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def shard_count(self) -> int:
        return len(self._shards)

    # --- compilation ---------------------------------------------------------
    def _field(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = f"f{len(self._keys)}"
        self._used.add(key)
        return key

    def _derive(self, v: Value) -> str:
        text = to_text(v)
        if text not in self._derived:
            self._derived[text] = (f"d{len(self._derived)}", compile_value(v, self._dtypes))
        for name in _leaves(v):
            self._field(name)  # so "missing" is reported for derived operands too
        key = self._derived[text][0]
        self._used.add(key)
        return key

    def _rhs(self, v: Value) -> Any:
        if isinstance(v, Const):
            return v.value
        if isinstance(v, Feature):
            return {"$m": self._field(v.name)}
        if _native_arith(v):
            assert isinstance(v, Arith)
            return {_ARITH[v.op]: {"$l": self._rhs(v.left), "$r": self._rhs(v.right)}}
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
            # durable does not make a comparison false when a field on the right side is
            # absent (measured: `x < 2 * y` fires with y missing), so guard each one.
            guards = [{"$ex": {k: 1}} for k in sorted(_refs(right))]
            return {"$and": [*guards, cmp]}
        if isinstance(e, InLiteral):
            item = self._field(e.item.name) if isinstance(e.item, Feature) else self._derive(e.item)
            if e.negated:
                parts = [{"$neq": {item: v}} for v in e.values]
                return parts[0] if len(parts) == 1 else {"$and": parts}
            parts = [{item: v} for v in e.values]
            return parts[0] if len(parts) == 1 else {"$or": parts}
        if isinstance(e, InList):
            return {self._field(e.flag): not e.negated}
        if isinstance(e, IsMissing):
            return {("$ex" if e.negated else "$nex"): {self._field(e.feature.name): 1}}
        raise TypeError(f"not an NNF node: {e!r}")

    # --- evaluation ----------------------------------------------------------
    def _plan(self, shard: _Shard) -> None:
        """What `fire` reads for one shard, split by type, so the common values are
        written without a call: bools as ready-made members, ints and floats with one
        f-string, strings with json's own string encoder (what ``json.dumps`` of a str
        calls). Anything else takes `clean` and `_json_value`, as before.

        A value that no durable test of the shard can tell from an absent field is left
        out of the fact (`_sent_values`): durable parses and walks less, and the result
        is the same. A field that no test reads at all (an operand of a derived field
        only) is not sent, only checked for the missing report."""
        names = {key: name for name, key in self._keys.items()}
        derived = {key: fn for key, fn in self._derived_list}
        constants, other_uses = _field_uses(rule["all"][0]["m"] for rule in shard.definition.values())
        owned = self._owned
        numbers, bools, strings, others, unsent, computed = [], [], [], [], [], []
        for key in shard.field_list:
            prefix = f'"{key}":'
            if key in derived:
                computed.append((prefix, derived[key]))
                continue
            name = sys.intern(names[key])  # as the store's keys are: found by identity (`_fact`)
            dtype = self._dtypes.get(name)
            report = name not in owned  # a field read by two shards is reported missing once
            owned.add(name)
            if key not in constants and key not in other_uses:
                if report:
                    unsent.append((name, dtype))
            elif dtype == "number":
                numbers.append((name, prefix, report))
            elif dtype == "bool":
                sent = None if key in other_uses else _sent_values(dtype, constants[key])
                bools.append((name, prefix + "true" if sent is None or True in sent else None,
                              prefix + "false" if sent is None or False in sent else None, report))
            elif dtype == "string":
                sent = None if key in other_uses else _sent_values(dtype, constants[key])
                strings.append((name, prefix, sent, report))
            else:
                others.append((name, prefix, dtype, report))
        shard.numbers, shard.bools, shard.strings = tuple(numbers), tuple(bools), tuple(strings)
        shard.others, shard.unsent, shard.computed = tuple(others), tuple(unsent), tuple(computed)

    def fire(self, features: Mapping[str, Any]) -> FireResult:
        """Assert one fact per shard, collect every rule it fires, retract it."""
        fired, missing = self.fire_keys(features)
        return FireResult(fired, missing)

    def fire_keys(self, features: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """`fire` as a plain pair (the keys that fired, in declaration order; the missing
        features), for the decision path, which unpacks it at once."""
        missing: list[str] = []
        fid = next(self._ids)  # one id per decision: each shard is a durable ruleset of its own
        head = f'{{"id":{fid},"sid":"{_SID}"'
        texts = [self._fact(shard, features, head, missing) for shard in self._shards]
        fired: set[str] = set()
        retract = head + "}"
        with self._lock:
            if self._closed:
                raise RuleSetClosed(f"ruleset {self.name} is closed")
            for shard, text in zip(self._shards, texts):
                self._fire_shard(shard, fid, text, retract, fired)
        if not fired:
            return [], missing
        return sorted(fired, key=self._order.__getitem__), missing

    @staticmethod
    def _fact(shard: _Shard, features: Mapping[str, Any], head: str, missing: list[str]) -> str:
        """One shard's fact as JSON that durable's parser reads (see `_json_value`):
        ``head`` (id and sid), then ``"key":value`` for each present field that a test
        can tell from an absent one (`_plan`); the names of absent fields are added to
        ``missing``.

        With a `_json_value` call per field and a join per shard this took 33 us per
        decision with the default rules (29,500 feature mappings from the feature
        store); written inline by type (see `_plan`) 15 us; 9.4 us (from 11.4, a fresh
        bench_api mapping per call) since values no test can tell from absent are left
        out and a missing value (about 8 of the 30 numbers of a payment) is noted
        without a call. ``repr`` of floats is much of what is left (dtoa: ~30k of the
        decision's ~300k instructions), and no other exact formatting beats it."""
        get = features.get
        parts = [head]
        append = parts.append
        low, high = -_EXACT_INT, _EXACT_INT
        for name, prefix, report in shard.numbers:
            value = get(name)
            kind = type(value)
            if kind is int and low <= value <= high:
                append(f"{prefix}{value}")
            elif kind is float and value - value == 0:  # finite
                text = repr(value)
                if "e" in text and "." not in text:  # 1e-05 -> 1.0e-05, as `_float_text` (inline: ~10 a decision)
                    text = text.replace("e", ".0e")
                append(prefix + text)
            elif value is None:
                if report:
                    missing.append(name)
            else:
                _written_clean(parts, missing, name, value, prefix, "number", report)
        for name, true, false, report in shard.bools:
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
        for name, prefix, sent, report in shard.strings:
            value = get(name)
            if type(value) is str:
                if sent is None or value in sent:
                    append(prefix + _encode_str(value))
            elif value is None:
                if report:
                    missing.append(name)
            else:
                value = clean(value, "string")  # a str subclass, np.str_, or not a string at all
                if value is None:
                    if report:
                        missing.append(name)
                elif sent is None or value in sent:
                    append(prefix + _json_value(value))
        for name, prefix, dtype, report in shard.others:
            _written_clean(parts, missing, name, get(name), prefix, dtype, report)
        for name, dtype in shard.unsent:
            value = get(name)
            if value is None or clean(value, dtype) is None:
                missing.append(name)
        for prefix, fn in shard.computed:
            value = fn(features)
            if value is not None:
                append(prefix + _json_value(value))
        return ",".join(parts) + "}"

    def _fire_shard(self, shard: _Shard, fid: int, text: str, retract: str, fired: set[str]) -> None:
        handle = shard.handle
        rule_of = shard.rule_of
        # durable hands each fire back as '{"<rule>":{"m":<our fact text, verbatim>}}'.
        # Recognising that shape spares a json.loads of the whole fact per fire (about
        # 7 us each when the default rules' facts had 58 fields; 1.4 fires per decision); any
        # other message (the session's state message, another layout) is parsed.
        tail = '":{"m":' + text + "}}"
        try:
            code, state = _dre.assert_fact(handle, text)
            try:
                if code == 0:
                    result = _dre.start_action_for_state(handle, state)
                    while result:
                        message = result[1] if isinstance(result, tuple) else result
                        rname = message[2:-len(tail)]
                        if message.startswith('{"') and message.endswith(tail) and rname in rule_of:
                            fired.add(rule_of[rname])
                        else:
                            # A rule with `or` fires once per true branch; the set dedupes.
                            for rname, body in json.loads(message).items():
                                if body.get("m", {}).get("id") == fid:
                                    fired.add(rule_of[rname])
                        result = _dre.complete_and_start_action(handle, state)
                elif code != 1:  # 1: no rule matched
                    raise EvaluationError(f"durable_rules returned code {code} for a fresh fact")
            finally:
                # durable finds a fact to retract by its sid and id alone (events.c,
                # ACTION_RETRACT_FACT), so the retraction does not re-parse every field.
                _dre.retract_fact(handle, retract)
        except EvaluationError:
            raise
        except Exception as exc:
            raise EvaluationError(f"durable_rules failed: {exc}") from exc

    def close(self) -> None:
        """Free the C rulesets (after a reload has swapped them out)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for shard in self._shards:
                    _dre.delete_ruleset(shard.handle)


def _written_clean(parts: list[str], missing: list[str], name: str, value: Any, prefix: str, dtype: str,
                   report: bool) -> None:
    """The slow path of `DurableRuleset._fact`: the value `clean` makes of it, or the
    feature's name in ``missing``."""
    value = clean(value, dtype)
    if value is not None:
        parts.append(prefix + _json_value(value))
    elif report:
        missing.append(name)


#: Integers beyond this go to durable as doubles. durable computes with 64-bit integers,
#: which wrap: with y = 3074457345618258603, ``x >= 3 * y`` fired for x = 0 (found by the
#: property test). A double never wraps; up to 2^53 it is exact, and no feature comes
#: near (amounts are capped at 10^15 minor units, the store's counters are Lua doubles).
_EXACT_INT = 2**53


def _json_value(value: Any) -> str:
    """One value as JSON that durable's own parser reads correctly.

    durable rejects a number with an exponent but no decimal point (``1e-05``,
    ``1e+16``: error 204, found by the property test), which is how Python writes
    such floats; they are written as ``1.0e-05``. Integers beyond ±2^53 are written
    as doubles (`_EXACT_INT`).

    numpy scalars are converted to Python's first: ``np.float64`` is a ``float``, but
    numpy 2 writes its repr as ``np.float64(0.3)``, which is not JSON (error 202), and
    ``np.int64`` / ``np.bool_`` are neither ``int`` nor ``bool``."""
    kind = type(value)
    if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
        return str(value)
    if kind is float:  # first: a derived field's value is most often a float
        return _float_text(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, np.generic):
        value = value.item()
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        if -_EXACT_INT <= value <= _EXACT_INT:
            return str(value)
        value = float(value)
    if isinstance(value, float):
        return _float_text(value)
    return json.dumps(value, ensure_ascii=False)


def _float_text(value: float) -> str:
    """``repr``, with a decimal point before an exponent (``1e-05`` -> ``1.0e-05``)."""
    text = repr(value)
    return text.replace("e", ".0e") if "e" in text and "." not in text else text


class _Alpha:
    """A node of our model of durable's alpha network: its tests (shared, keyed by
    their JSON) and the nodes pushed when it holds, in order, repeats included."""

    __slots__ = ("next", "tests")

    def __init__(self) -> None:
        self.tests: dict[str, _Alpha] = {}
        self.next: list[_Alpha] = []


def _alpha_stack_peak(conditions: Sequence[Any]) -> int:
    """The most entries durable's alpha stack can hold for any fact, given these rules
    (each condition as `_alpha_shape` gives it).

    The network is built as rete.c builds it: a test under the same parent with the
    same field, operator and value is one shared node; ``$and`` chains its items;
    ``$or`` hangs each item under the parent and links each to one new join node
    (pushed once per true item, hence one fire per true branch). events.c pops a node,
    then pushes every child whose test holds; assuming every test holds, the stack
    while a node's children are worked through is at most (children - 1) plus the
    deepest child's own need. Checked against durable itself in
    tests/test_engine_durable.py (64 entries pass, 65 fail with error 303)."""
    root = _Alpha()
    for shape in conditions:
        _alpha_link(shape, root)
    return _alpha_need(root, {})


def _alpha_shape(cond: dict[str, Any]) -> Any:
    """A compiled condition as ("and", items), ("or", items) or a test's JSON text, so
    that packing (which models each shard many times) writes each test once."""
    if len(cond) == 1 and "$and" in cond:
        return ("and", tuple(_alpha_shape(c) for c in cond["$and"]))
    if len(cond) == 1 and "$or" in cond:
        return ("or", tuple(_alpha_shape(c) for c in cond["$or"]))
    return json.dumps(cond, sort_keys=True)


def _alpha_link(shape: Any, parent: _Alpha) -> _Alpha:
    """Add one condition under ``parent``; return the node it ends on."""
    if isinstance(shape, str):
        node = parent.tests.get(shape)
        if node is None:
            node = parent.tests[shape] = _Alpha()
            parent.next.append(node)
        return node
    kind, items = shape
    if kind == "and":
        node = parent
        for item in items:
            node = _alpha_link(item, node)
        return node
    join = _Alpha()
    for item in items:
        _alpha_link(item, parent).next.append(join)
    return join


def _alpha_need(node: _Alpha, memo: dict[int, int]) -> int:
    need = memo.get(id(node))
    if need is None:
        k = len(node.next)
        need = max(k, k - 1 + max(_alpha_need(c, memo) for c in node.next)) if k else 0
        memo[id(node)] = need
    return need


def _refs(node: Any) -> set[str]:
    """Field keys a compiled right-hand side refers to with ``$m``."""
    if isinstance(node, dict):
        out: set[str] = set()
        for k, v in node.items():
            if k == "$m" and isinstance(v, str):
                out.add(v)
            else:
                out |= _refs(v)
        return out
    return set()


def _field_uses(conditions: Iterable[dict[str, Any]]) -> tuple[dict[str, set[Any]], set[str]]:
    """How compiled conditions use each field key: the constants it is tested EQUAL to
    (``{key: constant}``), and the keys used any other way (an ordered or ``$neq``
    comparison, ``$ex`` / ``$nex``, equality with an expression, a right-hand ``$m``)."""
    constants: dict[str, set[Any]] = {}
    other: set[str] = set()

    def walk(cond: dict[str, Any]) -> None:
        (op, arg), = cond.items()
        if op in ("$and", "$or"):
            for item in arg:
                walk(item)
        elif op.startswith("$"):
            for key, rhs in arg.items():
                other.add(key)
                other.update(_refs(rhs))
        elif isinstance(arg, dict):
            other.add(op)
            other.update(_refs(arg))
        else:
            constants.setdefault(op, set()).add(arg)

    for cond in conditions:
        walk(cond)
    return constants, other


def _sent_values(dtype: str, constants: set[Any]) -> frozenset[Any] | None:
    """The values worth sending of a field whose every durable test is ``field ==
    constant`` (None: send every value).

    durable makes a test on an absent field false; a value equal to none of the
    constants fails every such test too, so leaving it out of the fact changes no fire.
    A list flag (``x in lists.blocked_cards``: ``{flag: true}``) is then sent only when
    true, ``event.type`` only when it is a type some rule names. This holds for bools,
    and for strings whose constants need no JSON escape (durable compares the escaped
    texts with strcmp, which then agrees with Python's ==); numbers are always sent
    (durable's int64/double comparisons are not Python's). On bench_api's payments it
    leaves 15 of the default rules' 20 bools and 2 of their 4 strings out of the fact
    (with the two operands of derived fields: 52 -> 32 properties, 587 -> 361
    characters). durable's alpha network loops over every property of the fact at each
    node it visits: its handleAlpha went from 53k to 35k instructions per decision."""
    if dtype == "bool" and all(type(c) is bool for c in constants):
        return frozenset(constants)
    if dtype == "string" and all(type(c) is str and _encode_str(c) == f'"{c}"' for c in constants):
        return frozenset(constants)
    return None


def _leaves(v: Value) -> list[str]:
    if isinstance(v, Feature):
        return [v.name]
    if isinstance(v, Arith):
        return _leaves(v.left) + _leaves(v.right)
    return []


def _native_arith(v: Value) -> bool:
    """Arithmetic durable evaluates itself: + - * over fields and constants, no division."""
    if isinstance(v, (Feature, Const)):
        return True
    return v.op in _ARITH and _native_arith(v.left) and _native_arith(v.right)
