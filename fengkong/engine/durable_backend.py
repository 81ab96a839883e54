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
  ``json.dumps`` stays small; ``None``, NaN and wrong-typed values are left out,
  which is how a missing feature reaches durable.

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

Limits of the C engine: a message holds at most 32 properties (``MAX_OBJECT_PROPERTIES``),
so the rules are packed into shards (separate durable rulesets) that each read at most
28 fields; one decision asserts one fact per shard. The benchmark and
tests/test_engine_durable.py compare every fire with the plain-Python evaluator.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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


#: durable_rules' C engine holds at most 32 properties per message (MAX_OBJECT_PROPERTIES
#: in its state.h), id and sid included; past that it fails (error 303) or worse. So the
#: rules are packed into shards whose facts carry at most this many fields.
MAX_FIELDS_PER_SHARD = 28
MAX_RULES_PER_SHARD = 48


class _Shard:
    """One durable_rules ruleset holding a subset of the rules (and of the fields)."""

    def __init__(self) -> None:
        self.fields: set[str] = set()
        self.definition: dict[str, Any] = {}
        self.rule_of: dict[str, str] = {}
        self.handle: Any = None
        self.field_list: list[str] = []


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
            if len(self._used) > MAX_FIELDS_PER_SHARD:
                raise EvaluationError(f"rule {key} reads {len(self._used)} features; durable_rules allows "
                                      f"{MAX_FIELDS_PER_SHARD} per rule")
            shard = next((s for s in self._shards
                          if len(s.fields | self._used) <= MAX_FIELDS_PER_SHARD
                          and len(s.definition) < MAX_RULES_PER_SHARD), None)
            if shard is None:
                shard = _Shard()
                self._shards.append(shard)
            rname = f"r{i}"
            shard.fields |= self._used
            shard.rule_of[rname] = key
            shard.definition[rname] = {"all": [{"m": cond}]}
        self.definition = {f"{name}_s{j}": s.definition for j, s in enumerate(self._shards)}
        self._inputs = [(fname, fkey, dtypes.get(fname)) for fname, fkey in self._keys.items()]
        self._derived_list = list(self._derived.values())
        try:
            for j, shard in enumerate(self._shards):
                shard.field_list = sorted(shard.fields)
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
    def _members(self, features: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
        """The fact's JSON members (``"key":value``, present values only, each written
        once for all shards) and the names of the missing features.

        Plain ints and finite floats of number features (nearly every value) skip
        `clean`; everything else goes through it, so both paths read alike."""
        members: dict[str, str] = {}
        missing: list[str] = []
        get = features.get
        for name, key, dtype in self._inputs:
            value = get(name)
            kind = type(value)
            if not (dtype == "number" and (kind is int or (kind is float and value - value == 0))):
                value = clean(value, dtype)
                if value is None:
                    missing.append(name)
                    continue
            members[key] = _member(key, value)
        for key, fn in self._derived_list:
            value = fn(features)
            if value is not None:
                members[key] = _member(key, value)
        return members, missing

    def fire(self, features: Mapping[str, Any]) -> FireResult:
        """Assert one fact per shard, collect every rule it fires, retract it."""
        members, missing = self._members(features)
        fired: set[str] = set()
        with self._lock:
            if self._closed:
                raise RuleSetClosed(f"ruleset {self.name} is closed")
            for shard in self._shards:
                fid = next(self._ids)
                text = _fact(fid, [members[k] for k in shard.field_list if k in members])
                self._fire_shard(shard, fid, text, fired)
        return FireResult(sorted(fired, key=self._order.__getitem__), missing)

    def _fire_shard(self, shard: _Shard, fid: int, text: str, fired: set[str]) -> None:
        handle = shard.handle
        try:
            code, state = _dre.assert_fact(handle, text)
            try:
                if code == 0:
                    result = _dre.start_action_for_state(handle, state)
                    while result:
                        message = result[1] if isinstance(result, tuple) else result
                        # A rule with `or` fires once per true branch; the set dedupes.
                        for rname, body in json.loads(message).items():
                            if body.get("m", {}).get("id") == fid:
                                fired.add(shard.rule_of[rname])
                        result = _dre.complete_and_start_action(handle, state)
                elif code != 1:  # 1: no rule matched
                    raise EvaluationError(f"durable_rules returned code {code} for a fresh fact")
            finally:
                _dre.retract_fact(handle, text)
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


def _fact(fid: int, members: list[str]) -> str:
    """One fact as JSON: its id, the session id and the members (see `_member`)."""
    return "{" + ",".join([f'"id":{fid}', f'"sid":"{_SID}"', *members]) + "}"


def _member(key: str, value: Any) -> str:
    """``"key":value`` as durable's own parser reads it (see `_json_value`); keys are
    our own short names."""
    return f'"{key}":{_json_value(value)}'


def _json_value(value: Any) -> str:
    """One value as JSON that durable's own parser reads correctly.

    durable rejects a number with an exponent but no decimal point (``1e-05``,
    ``1e+16``: error 204, found by the property test), which is how Python writes
    such floats; they are written as ``1.0e-05``.

    numpy scalars are converted to Python's first: ``np.float64`` is a ``float``, but
    numpy 2 writes its repr as ``np.float64(0.3)``, which is not JSON (error 202), and
    ``np.int64`` / ``np.bool_`` are neither ``int`` nor ``bool``."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, np.generic):
        value = value.item()
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


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
