"""A resolution is a label: the outcome events it sends to the feature store and to the
labels stream that training reads.

``fraud`` sends one ``fraud_report`` per payment of the case, ``legit`` one
``legit_confirmed`` (the confirmed-legitimate outcome; features may ignore it, training
counts it as a confirmed negative), ``needs_info`` nothing. Each goes through
`fengkong.pipeline.record_outcome`, so the features learn it at once (the card's
``card.fraud_reports_30d``, the merchant's chargeback ratio), and is appended to
``{prefix}:v1:labels`` in the same shape as POST /v1/events' entries, plus the case id,
the disposition and the analyst.

Event ids are derived from the payment's (``<payment>:fraud_report``), so resolving the
same case again (after a reopen) counts nothing twice. The report's ``occurred_at`` is the
payment's own time: the engine's windows run on event time, and so the card's next payment
(later in event time) counts it whenever the analyst resolves; the labels stream entry
keeps the wall-clock time it was recorded (``recorded_at``), which training uses as the
time the label became known.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Protocol

import redis

from fengkong import pipeline
from fengkong.cases.errors import LabelsUnavailable
from fengkong.cases.models import Case, CaseDecision
from fengkong.events import Event, parse_event
from fengkong.features.errors import FeatureStoreError
from fengkong.features.keys import labels_stream
from fengkong.features.online import OnlineStore

#: The outcome type each disposition sends (needs_info sends none).
LABEL_TYPES = {"fraud": "fraud_report", "legit": "legit_confirmed"}


class LabelSink(Protocol):
    """Where a resolution's label events go (the store and the labels stream)."""

    def record(self, events: list[Event], *, case_id: int, disposition: str, actor: str) -> None: ...


def _label_id(event_id: str, kind: str) -> str:
    label = f"{event_id}:{kind}"
    if len(label) <= 128:
        return label
    return f"{hashlib.sha256(event_id.encode()).hexdigest()[:40]}:{kind}"


def label_events(case: Case, disposition: str) -> list[Event]:
    """The outcome events resolving ``case`` as ``disposition`` sends: one per payment."""
    kind = LABEL_TYPES.get(disposition)
    if kind is None:
        return []
    return [_label_event(d, kind) for d in case.decisions if d.event_type == "payment"]


def _label_event(d: CaseDecision, kind: str) -> Event:
    data: dict[str, Any] = {"event_id": _label_id(d.event_id, kind), "type": kind,
                            "occurred_at": d.occurred_at.isoformat(), "refers_to": d.event_id}
    for key, value in (("merchant_id", d.merchant_id), ("user_id", d.user_id), ("amount", d.amount_minor),
                       ("currency", d.currency)):
        if value is not None:
            data[key] = value
    if d.card_fingerprint:
        data["card"] = {"fingerprint": d.card_fingerprint}
    return parse_event(data)


class StoreLabels:
    """Sends label events to the Redis feature store and the labels stream.

    Its own client, with a timeout of seconds rather than the decision budget: an
    analyst's click can wait for Redis, a payment cannot."""

    def __init__(self, store: OnlineStore, client: redis.Redis, *, prefix: str, maxlen: int) -> None:
        self.store = store
        self.client = client
        self.stream = labels_stream(prefix)
        self.maxlen = maxlen

    def record(self, events: list[Event], *, case_id: int, disposition: str, actor: str) -> None:
        """Count each event in the store, then append it to the labels stream;
        `LabelsUnavailable` if Redis fails (the caller changes nothing: a retry is safe)."""
        try:
            for event in events:
                pipeline.record_outcome(event, store=self.store)
            if events:
                pipe = self.client.pipeline(transaction=False)
                now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
                for event in events:
                    entry = {"kind": "outcome", "event_id": event.event_id, "type": event.type.value,
                             "recorded_at": now, "caller": actor, "case_id": case_id, "disposition": disposition,
                             "event": event.model_dump(mode="json", exclude_none=True)}
                    pipe.xadd(self.stream, {"record": json.dumps(entry, separators=(",", ":"))},
                              maxlen=self.maxlen, approximate=True)
                pipe.execute()
        except (FeatureStoreError, redis.RedisError, OSError) as exc:
            raise LabelsUnavailable(None, f"feature store unavailable ({type(exc).__name__}): the case was not "
                                          "resolved, retry") from None
