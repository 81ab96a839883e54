"""The session that drives durable's C module and collects every fire of a decision.

Each decision asserts ONE fact per shard (``assert_fact`` fires every matching rule;
``post`` would fire only one), drains the fired actions with
``start_action_for_state`` / ``complete_and_start_action`` on the calling thread,
then retracts the fact (a fact no rule matched was never stored, and a shard none of
whose rules can fire is not asserted at all: `guards`). There is no host, so no background dispatcher that could
steal or delay a fire. The whole sequence holds a per-ruleset lock, and each fire is
matched to our fact by its unique id (the session's own state message can match a
``$nex`` rule once, and is ignored): a decision never misses or borrows a fire,
whichever thread calls. The C module never releases the GIL, so the lock costs no
parallelism. One session serves every fact: a fact carries no ``sid``, and durable files
it under its default session, "0"; no per-entity state lives here.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import durable_rules_engine

from fengkong.engine.durable_backend.alpha import ALPHA_STACK_BUDGET, MAX_FIELDS_PER_SHARD, alpha_shape, pack
from fengkong.engine.durable_backend.compiler import Compiler
from fengkong.engine.durable_backend.fact_code import FactWriter, compile_writer
from fengkong.engine.durable_backend.facts import FactPlan, field_prefix, make_plan
from fengkong.engine.errors import EvaluationError
from fengkong.engine.predicates import clean
from fengkong.engine.tree import Expr

_names = itertools.count(1)
_names_lock = threading.Lock()


def unique_name(prefix: str) -> str:
    """A ruleset name never used before in this process (durable names are one-shot)."""
    with _names_lock:
        return f"{prefix}_{next(_names)}"


class RuleSetClosed(EvaluationError):
    """The ruleset was retired by a reload; the caller retries with the live one."""


#: durable's refusals of a ruleset, in the analyst's words (error codes of rules.h)
_REFUSALS = {
    113: "it compares features with other features or computed values more often than durable_rules can "
         "hold in one rule (its error 113; about 15 such comparisons at most); split it into several rules",
    202: "durable_rules cannot read one of its constants (its error 202)",
}


class DurableRefused(EvaluationError):
    """durable_rules refused some conditions; ``refusals`` holds (key, reason) for each."""

    def __init__(self, refusals: list[tuple[str, str]]) -> None:
        self.refusals = list(refusals)
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in self.refusals))


def refusal_reason(exc: BaseException) -> str:
    """durable's exception as a plain reason (its error code named)."""
    text = str(exc)
    code = text.rsplit("error code:", 1)[-1].strip() if "error code:" in text else ""
    if code.isdigit() and int(code) in _REFUSALS:
        return _REFUSALS[int(code)]
    return f"durable_rules refused it: {text or type(exc).__name__}"


@dataclass(frozen=True)
class FireResult:
    """The rule keys that fired (in declaration order) and the features found missing."""

    fired: list[str]
    missing: list[str]


def _report_missing(names: Sequence[tuple[str, str | None]], features: Mapping[str, Any], missing: list[str]) -> None:
    """Add to ``missing`` each of ``names`` (name, dtype) that is absent or unreadable, as a
    shard's fact writer does for a feature it reads (`fact_code`)."""
    get = features.get
    for name, dtype in names:
        value = get(name)
        if value is None:
            missing.append(name)
        elif not (dtype == "bool" and (value is True or value is False)) and clean(value, dtype) is None:
            missing.append(name)


class _Shard:
    """One durable ruleset holding a subset of the rules (``rule_of``: durable's name of each,
    ``r<i>``, to its declaration index i), and how to write its fact (``plan``, as data;
    ``write``, the function compiled from it that writes it)."""

    __slots__ = ("definition", "handle", "plan", "rule_of", "write")

    def __init__(self, definition: dict[str, Any], rule_of: dict[str, int], plan: FactPlan, write: FactWriter,
                 handle: Any) -> None:
        self.definition = definition
        self.rule_of = rule_of
        self.plan = plan
        self.write = write
        self.handle = handle


class DurableRuleset:
    """A set of named conditions compiled into durable_rules rulesets (shards).

    ``conditions`` maps a key (a rule id) to its typed tree; `fire` returns the keys
    whose condition holds for one mapping of features. ``stack_budget`` bounds each
    shard's alpha stack (`alpha.pack`; durable fails a fact past 64). ``engine`` is
    durable's C module, or a wrapper of it (the tests record the wire through one).
    ``also_missing``: conditions the caller evaluates itself (a rule set's lanes), whose
    features `fire` reports missing exactly as if a shard read them.
    """

    def __init__(self, name: str, conditions: Sequence[tuple[str, Expr]], dtypes: Mapping[str, str], *,
                 stack_budget: int = ALPHA_STACK_BUDGET, engine: Any = None, also_missing: Sequence[Expr] = ()) -> None:
        self.name = name
        self._engine = engine if engine is not None else durable_rules_engine
        compiler = Compiler(dict(dtypes))
        compiled: list[tuple[str, dict[str, Any], set[str]]] = []
        refused: list[tuple[str, str]] = []
        for key, expr in conditions:
            cond, used = compiler.compile(expr)
            if len(used) > MAX_FIELDS_PER_SHARD:
                refused.append((key, f"it reads {len(used)} features and computed values; durable_rules "
                                     f"allows {MAX_FIELDS_PER_SHARD} in one rule"))
            compiled.append((key, cond, used))
        if refused:
            raise DurableRefused(refused)
        #: each condition's key, by its declaration index (the shards name rule i ``r{i}``)
        self._keys: tuple[str, ...] = tuple(key for key, _, _ in compiled)
        # conditions evaluated elsewhere (a rule set's lanes): the features durable would
        # read for them are reported missing as if it evaluated them (`fire_keys`)
        also_keys: set[str] = set()
        for expr in also_missing:
            also_keys |= compiler.compile(expr)[1]
        groups = pack([(alpha_shape(cond), used) for _, cond, used in compiled], stack_budget)
        #: feature name -> the short field key it travels under in a fact
        self.field_keys: dict[str, str] = dict(compiler.keys)
        names = {k: n for n, k in compiler.keys.items()}
        derived = dict(compiler.derived.values())
        exprs = {field_prefix(key): v for key, v in compiler.exprs.items()}
        owned: set[str] = set()
        self._shards: list[_Shard] = []
        for j, (group, _) in enumerate(groups):
            definition = {f"r{i}": {"all": [{"m": compiled[i][1]}]} for i in group}
            fields = set().union(*(compiled[i][2] for i in group))
            plan = make_plan(fields, (compiled[i][1] for i in group), names, derived, dtypes, owned)
            try:
                handle = self._engine.create_ruleset(f"{name}_s{j}", json.dumps(definition, ensure_ascii=False))
            except Exception as exc:  # the C module raises its own error type
                refused += self._culprits(name, [(compiled[i][0], definition[f"r{i}"]) for i in group], exc)
                continue
            self._shards.append(_Shard(definition, {f"r{i}": i for i in group}, plan,
                                       compile_writer(plan, exprs, dtypes), handle))
        if refused:
            for shard in self._shards:
                self._engine.delete_ruleset(shard.handle)
            raise DurableRefused(refused)
        #: (name, dtype) of each feature only ``also_missing`` reads, reported missing like a shard's
        self._also_missing = tuple((names[k], dtypes.get(names[k])) for k in sorted(also_keys)
                                   if k not in derived and names[k] not in owned)
        #: each shard's alpha-stack peak as `alpha.alpha_stack_peak` models it (<= stack_budget
        #: but for a rule over budget on its own)
        self.stack_peaks: tuple[int, ...] = tuple(peak for _, peak in groups)
        #: the JSON rulesets given to durable, by durable ruleset name
        self.definition = {f"{name}_s{j}": s.definition for j, s in enumerate(self._shards)}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False

    def _culprits(self, name: str, rules: list[tuple[str, dict[str, Any]]],
                  exc: BaseException) -> list[tuple[str, str]]:
        """The rules of a shard durable refused that it refuses alone (each compiled in a
        ruleset of its own, then freed); every rule of the shard when none fails alone."""
        if len(rules) == 1:
            return [(rules[0][0], refusal_reason(exc))]
        out: list[tuple[str, str]] = []
        for key, rule in rules:
            try:
                handle = self._engine.create_ruleset(unique_name(f"{name}_probe"),
                                                     json.dumps({"r0": rule}, ensure_ascii=False))
            except Exception as alone:
                out.append((key, refusal_reason(alone)))
            else:
                self._engine.delete_ruleset(handle)
        return out or [(key, f"together with the other rules of its shard: {refusal_reason(exc)}")
                       for key, _ in rules]

    @property
    def shard_count(self) -> int:
        """How many durable rulesets the conditions were packed into."""
        return len(self._shards)

    def fire(self, features: Mapping[str, Any]) -> FireResult:
        """Assert one fact per shard, collect every rule it fires, retract it."""
        fired, missing = self.fire_keys(features)
        return FireResult(fired, missing)

    def fire_keys(self, features: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """`fire` as a plain pair (the keys that fired, in declaration order; the missing
        features), for the decision path, which unpacks it at once. Each shard's fact is
        written and, unless no rule of it can fire, asserted in one pass (the writers run in
        shard order, so ``missing`` is in the order `encode` gives)."""
        missing: list[str] = []
        fid = next(self._ids)  # one id per decision: each shard is a durable ruleset of its own
        head = f'{{"id":{fid}'
        fired: set[int] = set()
        with self._lock:
            if self._closed:
                raise RuleSetClosed(f"ruleset {self.name} is closed")
            for shard in self._shards:
                text = shard.write(features, head, missing)
                if text is not None:  # None: no rule of the shard can fire (`guards`)
                    self._fire_shard(shard, fid, text, head, fired)
        if self._also_missing:
            _report_missing(self._also_missing, features, missing)
        if not fired:
            return [], missing
        # the rules' declaration indices, sorted, as their keys: the declaration order
        return list(map(self._keys.__getitem__, sorted(fired))), missing

    def encode(self, features: Mapping[str, Any]) -> tuple[list[str | None], list[str]]:
        """The facts one decision would assert (one JSON text per shard, id 0; None for a
        shard `fire` skips, as no rule of it can fire), and the missing features: what
        `fire` sends, for a check or a look, asserting nothing."""
        missing: list[str] = []
        head = '{"id":0'
        texts = [shard.write(features, head, missing) for shard in self._shards]
        _report_missing(self._also_missing, features, missing)
        return texts, missing

    def _fire_shard(self, shard: _Shard, fid: int, text: str, head: str, fired: set[int]) -> None:
        """Assert ``text`` into ``shard``, add the declaration index of each rule it fires to
        ``fired``, and retract it (by ``head``, its id)."""
        engine = self._engine
        handle = shard.handle
        try:
            code, state = engine.assert_fact(handle, text)
            if code == 1:
                # no rule matched: durable stores a fact only once it reaches a rule (events.c,
                # handleAlpha calls storeMessage at a beta node, and returns 1 when none was
                # reached), so there is nothing to retract
                return
            try:
                if code == 0:
                    # durable hands each fire back as '{"<rule>":{"m":<our fact text, verbatim>}}';
                    # recognising that shape spares parsing the whole fact per fire. Any other
                    # message (the session's state message, another layout) is parsed.
                    tail = '":{"m":' + text + "}}"
                    cut = -len(tail)
                    rule_of = shard.rule_of
                    result = engine.start_action_for_state(handle, state)
                    while result:
                        message = result[1] if isinstance(result, tuple) else result
                        index = rule_of.get(message[2:cut]) if message.endswith(tail) else None
                        if index is not None and message.startswith('{"'):
                            fired.add(index)
                        else:
                            # A rule with `or` fires once per true branch; the set dedupes.
                            for rname, body in json.loads(message).items():
                                if body.get("m", {}).get("id") == fid:
                                    fired.add(rule_of[rname])
                        result = engine.complete_and_start_action(handle, state)
                else:
                    raise EvaluationError(f"durable_rules returned code {code} for a fresh fact")
            finally:
                # durable finds a fact to retract by its session and id alone (events.c,
                # ACTION_RETRACT_FACT), so the retraction need not repeat every field.
                engine.retract_fact(handle, head + "}")
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
                    self._engine.delete_ruleset(shard.handle)
