"""The per-event decision pipeline, in one place.

Replay calls `decide`; the decision service gets the store's features over its
asynchronous connection (`OnlineStore.process_async`, the same script) and calls
`decide_on`, the part of `decide` after the store. So a replayed history gets
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
the signature stays ``(decision, features)`` and replay gets it too. The rules
never read it: it is computed after them, and it is not a catalog feature.

Outcome events (refund, chargeback, fraud_report, settlement, withdrawal, decline,
legit_confirmed, challenge_result) get no decision: they go through `record_outcome`, which only updates the
features. `handle` dispatches on the event type for callers (replay) that see both.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from fengkong.engine.decision import Decision
from fengkong.events import OUTCOME_TYPES, Event
from fengkong.features.online import FeatureResult, OnlineStore


class Evaluates(Protocol):
    def evaluate(self, features: Mapping[str, Any]) -> Decision: ...


#: Where `decide` puts the fused risk in the features it returns (absent when None).
RISK_FEATURE = "model.risk"


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
    decision = rules.evaluate(features)
    fuse = getattr(models, "fuse", None)
    if fuse is not None:
        risk = fuse(features, decision)  # reads model.txn_risk, the model output merged in above
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
