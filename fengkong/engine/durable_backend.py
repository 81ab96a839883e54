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
on an absent field as false, as `tree.py` requires; ``is missing`` is ``$nex``.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import durable_rules_engine as _dre

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


@dataclass(frozen=True)
class FireResult:
    fired: list[str]  # rule keys, in declaration order
    missing: list[str]  # features read by some rule that were missing


class DurableRuleset:
    """A set of named conditions compiled into one durable_rules ruleset.

    ``conditions`` maps a key (a rule id) to its typed tree; `fire` returns the keys
    whose condition holds for one mapping of features.
    """

    def __init__(self, name: str, conditions: Sequence[tuple[str, Expr]], dtypes: Mapping[str, str]) -> None:
        self.name = name
        self._dtypes = dict(dtypes)
        self._keys: dict[str, str] = {}  # feature name -> short field key
        self._derived: dict[str, tuple[str, ValueFn]] = {}  # expression text -> (key, fn)
        self._order: dict[str, int] = {}
        definition: dict[str, Any] = {}
        self._rule_of: dict[str, str] = {}
        for i, (key, expr) in enumerate(conditions):
            rname = f"r{i}"
            self._rule_of[rname] = key
            self._order[key] = i
            definition[rname] = {"all": [{"m": self._cond(to_nnf(expr))}]}
        self.definition = definition
        self._inputs = [(name, key, dtypes.get(name)) for name, key in self._keys.items()]
        self._derived_list = list(self._derived.values())
        try:
            self._handle = _dre.create_ruleset(name, json.dumps(definition, ensure_ascii=False))
        except Exception as exc:  # the C module raises its own error type
            raise EvaluationError(f"durable_rules refused ruleset {name}: {exc}") from exc
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    # --- compilation ---------------------------------------------------------
    def _field(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = f"f{len(self._keys)}"
        return key

    def _derive(self, v: Value) -> str:
        text = to_text(v)
        if text not in self._derived:
            for name in _leaves(v):
                self._field(name)  # so "missing" is reported for derived operands too
            self._derived[text] = (f"d{len(self._derived)}", compile_value(v, self._dtypes))
        return self._derived[text][0]

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
            return {left: right} if e.op == "==" else {_OPS[e.op]: {left: right}}
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
    def fact_fields(self, features: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The fields sent to durable (present values only) and the missing feature names."""
        fact: dict[str, Any] = {}
        missing: list[str] = []
        for name, key, dtype in self._inputs:
            value = clean(features.get(name), dtype)
            if value is None:
                missing.append(name)
            else:
                fact[key] = value
        for key, fn in self._derived_list:
            value = fn(features)
            if value is not None:
                fact[key] = value
        return fact, missing

    def fire(self, features: Mapping[str, Any]) -> FireResult:
        """Assert one fact, collect every rule it fires, retract it."""
        fact, missing = self.fact_fields(features)
        fired: list[str] = []
        with self._lock:
            if self._closed:
                raise EvaluationError(f"ruleset {self.name} is closed")
            fid = next(self._ids)
            fact["id"] = fid
            fact["sid"] = _SID
            text = json.dumps(fact, ensure_ascii=False)
            try:
                code, state = _dre.assert_fact(self._handle, text)
                try:
                    if code == 0:
                        result = _dre.start_action_for_state(self._handle, state)
                        while result:
                            message = result[1] if isinstance(result, tuple) else result
                            for rname, body in json.loads(message).items():
                                if body.get("m", {}).get("id") == fid:
                                    fired.append(self._rule_of[rname])
                            result = _dre.complete_and_start_action(self._handle, state)
                    elif code != 1:  # 1: no rule matched
                        raise EvaluationError(f"durable_rules returned code {code} for a fresh fact")
                finally:
                    _dre.retract_fact(self._handle, text)
            except EvaluationError:
                raise
            except Exception as exc:
                raise EvaluationError(f"durable_rules failed: {exc}") from exc
        fired.sort(key=self._order.__getitem__)
        return FireResult(fired, missing)

    def close(self) -> None:
        """Free the C ruleset (after a reload has swapped it out and traffic has left it)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                _dre.delete_ruleset(self._handle)


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
