"""The per-event decision pipeline, in one place.

Replay one by one calls `decide`; the decision service gets the store's features over
its asynchronous connection (`OnlineStore.process_async`, the same script) and calls
`decide_on`, the part of `decide` after the store, and so does replay with many
events in flight (`fengkong.features.inflight`, the same script pipelined). So a replayed history gets
exactly the decisions the live service would have given for the same event
sequence: there is no second copy of "features, then models, then rules" to drift.

    decision, features = decide(event, store=store, rules=rules, models=models)

* ``store``: an `OnlineStore` (Redis). ``store.process(event)`` counts the event
  and returns its features as of just before it; a retried ``event_id`` counts
  nothing and gets the features of its first delivery, so it gets the same decision.
* ``models``: a `ModelRuntime` or None. Its ``score(features)`` returns ``model.*``
  features, merged over the store's features before the rules read them.
* ``rules``: anything with ``evaluate(features) -> Decision`` (a `RuleSet`, or
  `LiveRules`, which reads its current set once per call).

The fused risk. After the rules decided, a ``models`` object that also has
``fuse(model_outputs, decision)`` (`ModelRuntime` does) gives the fused fraud risk
0-1 of `fengkong.models.fusion` (the review queue's priority). It is returned in
the features under ``RISK_FEATURE`` (``model.risk``), only when it is not None (no
fusion artifact, a non-payment, or no ``model.txn_risk``: the key is absent), so
the signature stays ``(decision, features)`` and replay gets it too. No rule reads
it (it is not a catalog feature): the policy's soft step does (`fengkong.engine.soft`),
through the ``fuse`` callback `RuleSet.evaluate` takes, on the rules' first decision.

Outcome events (refund, chargeback, fraud_report, settlement, withdrawal, decline,
legit_confirmed, challenge_result) get no decision: they go through `record_outcome`, which only updates the
features. `handle` dispatches on the event type for callers (replay) that see both.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Protocol

from fengkong.engine.decision import Decision
from fengkong.engine.errors import Problem
from fengkong.engine.soft import Fuse
from fengkong.events import OUTCOME_TYPES, Event
from fengkong.features.online import FeatureResult, OnlineStore


class Evaluates(Protocol):
    def evaluate(self, features: Mapping[str, Any], fuse: Fuse | None = None) -> Decision: ...


#: Where `decide` puts the fused risk in the features it returns (absent when None); interned,
#: as the feature store's keys are.
RISK_FEATURE = sys.intern("model.risk")


class Scores(Protocol):
    def score(self, features: Mapping[str, Any]) -> Mapping[str, Any]: ...


class NotADecisionEvent(ValueError):
    """`decide` was handed an outcome event (they update features; they get no decision)."""


def is_outcome(event: Event) -> bool:
    return event.type in OUTCOME_TYPES


def decide(
    event: Event, *, store: OnlineStore, rules: Evaluates, models: Scores | None = None
) -> tuple[Decision, dict[str, Any]]:
    """Decide one payment/signup/login/card_bind event: store.process -> models.score -> rules.evaluate.

    Returns the decision and the features the rules saw (store + model features),
    plus ``model.risk`` (`RISK_FEATURE`) when ``models.fuse`` gives a fused risk."""
    _refuse_outcome(event)
    return decide_on(store.process(event).features, rules=rules, models=models)


def decide_on(
    store_features: Mapping[str, Any], *, rules: Evaluates, models: Scores | None = None
) -> tuple[Decision, dict[str, Any]]:
    """The part of `decide` after the store answered: models, rules, fused risk.

    The service calls it with the features of the store's asynchronous call; replay
    reaches it through `decide`. One path, so the two cannot drift.

    The features are copied even without models, so ``store_features`` is never changed
    and the table the rules then read many times is freshly built and in cache (see
    docs/benchmarks.md)."""
    features = dict(store_features)
    if models is not None:
        features.update(models.score(features))
    fuse = getattr(models, "fuse", None)
    if fuse is None:
        return rules.evaluate(features), features
    fused: list[float | None] = []

    def risk_of(first: Decision) -> float | None:
        fused.append(fuse(features, first))  # reads model.txn_risk, the model output merged in above
        return fused[-1]

    decision = rules.evaluate(features, risk_of)  # the policy's soft step asks for it (engine.soft)
    risk = fused[-1] if fused else risk_of(decision)
    if risk is not None:
        features[RISK_FEATURE] = risk
    return decision, features


def _refuse_outcome(event: Event) -> None:
    if is_outcome(event):
        raise NotADecisionEvent(f"type: {event.type.value} is an outcome event; send it with record_outcome")


def record_outcome(event: Event, *, store: OnlineStore) -> FeatureResult:
    """Count an outcome event (refund, chargeback, fraud_report, ...) in the feature store."""
    if not is_outcome(event):
        raise NotADecisionEvent(f"type: {event.type.value} needs a decision; send it with decide")
    return store.process(event)


def handle(
    event: Event, *, store: OnlineStore, rules: Evaluates, models: Scores | None = None
) -> tuple[Decision | None, dict[str, Any]]:
    """`decide` for decision events, `record_outcome` (and no decision) for outcomes."""
    if is_outcome(event):
        record_outcome(event, store=store)
        return None, {}
    return decide(event, store=store, rules=rules, models=models)


def threshold_problems(rules: Any, calibration: Any, version: str | None = None) -> list[Problem]:
    """Rules stating a model threshold as a precision the loaded transactions artifact cannot give.

    ``rules``: a `RuleSet`; ``calibration``: the runtime's (`ModelRuntime.calibration`), None when
    the artifact has none. A comparison that asks ``model.txn_precision`` to reach at least c is a
    problem (file, line, rule id) when c is above the artifact's ``max_precision``, or when a
    transactions artifact is loaded without a calibration: such a rule would never fire, so the
    set is refused rather than silently weakened. A share of traffic (``model.txn_share``) is never
    refused: without a calibration it is missing and its rules do not fire. Rules-only (``version``
    None): no problem, as with any ``model.*`` rule."""
    from fengkong.engine.tree import FLIP_OP, Compare, Const, Feature, to_nnf, walk_atoms
    from fengkong.models.calibration import MIN_SLICE, PRECISION_FEATURE

    if version is None:
        return []
    out: list[Problem] = []
    for rule in rules.rules:
        for atom in walk_atoms(to_nnf(rule.expr)):
            if not isinstance(atom, Compare):
                continue
            op, left, right = atom.op, atom.left, atom.right
            if isinstance(left, Const) and isinstance(right, Feature):
                op, left, right = FLIP_OP[op], right, left
            if not (isinstance(left, Feature) and left.name == PRECISION_FEATURE and isinstance(right, Const)
                    and op in (">=", ">", "==") and isinstance(right.value, (int, float))):
                continue
            if calibration is None:
                out.append(Problem(rule.file, rule.line or None, rule.id,
                                   f"when: {PRECISION_FEATURE} {op} {right.value} states a precision, but the "
                                   f"transactions model {version} carries no calibration (retrain it with this "
                                   "version of fengkong train)"))
            elif float(right.value) > calibration.max_precision:
                out.append(Problem(rule.file, rule.line or None, rule.id,
                                   f"when: {PRECISION_FEATURE} {op} {right.value} asks for a precision the transactions "
                                   f"model {version} cannot reach: at most {calibration.max_precision:.3f} (its riskiest "
                                   f"{MIN_SLICE} calibration-day payments); lower the precision or retrain"))
    return out

