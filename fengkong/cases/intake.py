"""From a decision to a case: the item the decision path queues, and how the consumer
files it (opening a case, or joining the entity's open case).

The decision path only queues. `Intake.command` gives one ``XADD`` to the capped stream
``{prefix}:v1:cases:intake`` that the decision service appends to the decision's own
pipelined write (the record, its pointer, the audit entry), so opening a case costs a
decision no round trip; decisions the configuration does not send to a case cost a set
lookup. A failed step-up is queued the same way from the outcome path
(`Intake.challenge_command`: a ``challenge_result`` with ``passed: false`` for a payment
answered ``challenge``), with the payment's stored decision. `ingest` runs later in the consumer (`fengkong.cases.consumer`), in SQL.

Grouping: the case is about the first entity of ``group_by`` the event has (card
fingerprint, user, merchant). A decision joins the entity's unresolved case (open or
claimed) whose first decision is within ``window_minutes`` of it in event time;
otherwise it opens a new case in the queue of its rules. Concurrent consumers (one per
worker) cannot open two cases for one entity: on PostgreSQL an advisory lock per entity
serialises them, on SQLite the transaction takes the database's write lock first.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from fengkong.cases.config import CasesConfig
from fengkong.cases.models import Case, CaseDecision, CaseEvent, UtcDateTime
from fengkong.events import Event, EventRejected, EventType, parse_event

#: The actor named in the audit rows the intake writes.
INTAKE_ACTOR = "intake"
#: What an item keeps of a reason (the description is in the stored decision).
_REASON_KEYS = ("id", "action", "score", "mode", "tags", "values")


def stream_key(prefix: str) -> str:
    """The capped stream the decision path queues case items on."""
    return f"{prefix}:v1:cases:intake"


def item_for(record: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """The compact item a case needs from a decision and its event."""
    card = event.card
    return {
        "decision_id": record["decision_id"], "event_id": event.event_id, "type": event.type.value,
        "decision": record["decision"], "score": record.get("score") or 0, "risk": record.get("risk"),
        "reasons": [{k: r.get(k) for k in _REASON_KEYS} for r in record.get("reasons") or ()],
        "occurred_at": event.occurred_at.isoformat(), "amount_minor": event.amount_minor,
        "currency": event.currency, "card": card.fingerprint if card else None,
        "user_id": event.user_id, "merchant_id": event.merchant_id,
    }


class Intake:
    """Builds the decision path's queue command; holds the configuration it checks.

    ``config`` may be swapped (a changed cases.yaml) while requests run: each call reads
    the attribute once."""

    def __init__(self, config: CasesConfig, *, prefix: str, maxlen: int) -> None:
        self.config = config
        self.key = stream_key(prefix)
        self.maxlen = maxlen

    def command(self, record: Mapping[str, Any], event: Event) -> tuple[Any, ...] | None:
        """``XADD`` of this decision's case item, or None when it opens no case."""
        if not self.config.opens_case(record["decision"], record.get("reasons") or []):
            return None
        return self._xadd(item_for(record, event))

    def wants_challenge(self, outcome: Event) -> bool:
        """Whether this outcome is a failed challenge the configuration sends to a case: only
        then does the outcome path read the challenged payment's decision record."""
        challenge = outcome.challenge
        return (outcome.type is EventType.CHALLENGE_RESULT and challenge is not None and not challenge.passed
                and self.config.challenge_failed)

    def challenge_command(self, record: Mapping[str, Any] | None, outcome: Event) -> tuple[Any, ...] | None:
        """``XADD`` of the case item of a failed challenge: the challenged payment's stored
        decision (``record``), so the case shows its decision, reasons and values, plus the
        challenge. None unless `wants_challenge` and the payment was answered ``challenge``
        (a review already opened its case; a payment with no stored record, expired or
        decided degraded, has nothing to show)."""
        if record is None or record.get("kind") != "decision" or record.get("decision") != "challenge":
            return None
        if not self.wants_challenge(outcome):
            return None
        try:
            payment = parse_event(record["event"])
        except (EventRejected, KeyError, TypeError):
            return None
        item = item_for(record, payment)
        challenge = outcome.challenge
        item["challenge"] = {"event_id": outcome.event_id, "passed": False,
                             "occurred_at": outcome.occurred_at.isoformat(),
                             "method": challenge.method.value if challenge and challenge.method else None}
        return self._xadd(item)

    def _xadd(self, item: Mapping[str, Any]) -> tuple[Any, ...]:
        text_ = json.dumps(item, separators=(",", ":"), default=str)
        return ("XADD", self.key, "MAXLEN", "~", self.maxlen, "*", "item", text_)


def entity_of(item: Mapping[str, Any], group_by: tuple[str, ...]) -> tuple[str, str] | None:
    """(kind, id) of the entity a decision's case is about, or None if the event names none."""
    fields = {"card": item.get("card"), "user": item.get("user_id"), "merchant": item.get("merchant_id")}
    for kind in group_by:
        if fields.get(kind):
            return kind, str(fields[kind])
    return None


def _rule_ids(reasons: list[dict[str, Any]]) -> set[str]:
    return {str(r["id"]) for r in reasons if r.get("id")}


def _joined(ids: set[str]) -> str:
    return " " + " ".join(sorted(ids)) + " " if ids else " "


#: Reads of the hot path as text: built once, not per item (the consumer files every item).
_FILED = text("SELECT 1 FROM case_decisions WHERE decision_id = :d")
_OPEN_CASE = text("SELECT id FROM cases WHERE entity_kind = :k AND entity_id = :e AND status != 'resolved' "
                  "AND first_occurred_at >= :lo AND first_occurred_at <= :hi ORDER BY id DESC LIMIT 1"
                  ).bindparams(bindparam("lo", type_=UtcDateTime()), bindparam("hi", type_=UtcDateTime()))
_SQLITE_LOCK = text("UPDATE cases SET status = status WHERE id = -1")


def _detail(item: Mapping[str, Any]) -> dict[str, Any]:
    """The audit row's detail: the decision, and the failed challenge that sent it, if one did."""
    detail: dict[str, Any] = {"decision_id": item["decision_id"]}
    if item.get("challenge"):
        detail["challenge"] = item["challenge"]
    return detail


def _tx_state(session: Session) -> dict[str, Any]:
    """What this transaction already did for the intake (write lock taken, decisions added
    but not flushed); a new transaction starts afresh."""
    tx = id(session.get_transaction())
    state = session.info.get("fk_intake")
    if state is None or state[0] != tx:
        state = session.info["fk_intake"] = (tx, {"locked": False, "filed": set()})
    return state[1]


def _lock_entity(session: Session, kind: str, entity: str) -> None:
    """Serialise the consumers that file decisions of one entity (see the module doc)."""
    if session.get_bind().dialect.name == "postgresql":
        lock_id = zlib.crc32(f"{kind}:{entity}".encode()) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})
    elif not _tx_state(session)["locked"]:
        # SQLite: a write first takes the database's write lock for the whole transaction;
        # the reads that follow see the newest data
        session.execute(_SQLITE_LOCK)
        _tx_state(session)["locked"] = True


def ingest(session: Session, item: Mapping[str, Any], config: CasesConfig,
           now: datetime | None = None) -> tuple[Case, bool] | None:
    """File one queued decision: (its case, whether it was opened); None when the item
    names no entity or was filed already (a redelivery). The caller commits."""
    now = now or datetime.now(timezone.utc)
    entity = entity_of(item, config.group_by)
    if entity is None:
        return None
    kind, entity_id = entity
    with session.no_autoflush:
        _lock_entity(session, kind, entity_id)
        filed = _tx_state(session)["filed"]  # this transaction's decisions, not flushed yet
        if item["decision_id"] in filed or session.execute(_FILED, {"d": item["decision_id"]}).first() is not None:
            return None
        filed.add(item["decision_id"])
        occurred = datetime.fromisoformat(item["occurred_at"]).astimezone(timezone.utc)
        window = timedelta(minutes=config.window_minutes)
        reasons = list(item.get("reasons") or [])
        ids = _rule_ids(reasons)
        risk = item.get("risk")
        score = float(item.get("score") or 0)
        found = session.execute(_OPEN_CASE, {"k": kind, "e": entity_id,
                                             "lo": occurred - window, "hi": occurred + window}).first()
        case = session.get(Case, found[0]) if found is not None else None
        opened = case is None
        if case is None:
            case = Case(entity_kind=kind, entity_id=entity_id, status="open", queue=config.queue_for(reasons).name,
                        priority=risk, max_score=score, opened_at=now, updated_at=now, first_occurred_at=occurred,
                        last_occurred_at=occurred, merchant_id=item.get("merchant_id"), rule_ids=_joined(ids),
                        decision_count=1)
            session.add(case)
            session.flush()  # its id, and the next item of this entity in the batch finds it
            session.add(CaseEvent(case_id=case.id, at=now, actor=INTAKE_ACTOR, action="opened", to_status="open",
                                  detail=_detail(item)))
        else:
            if risk is not None and (case.priority is None or risk > case.priority):
                case.priority = risk
            case.max_score = max(case.max_score, score)
            case.first_occurred_at = min(case.first_occurred_at, occurred)
            case.last_occurred_at = max(case.last_occurred_at, occurred)
            case.rule_ids = _joined(set(case.rule_ids.split()) | ids)
            case.decision_count += 1
            case.updated_at = now
            session.add(CaseEvent(case_id=case.id, at=now, actor=INTAKE_ACTOR, action="decision_added",
                                  from_status=case.status, to_status=case.status, detail=_detail(item)))
        session.add(CaseDecision(
            case_id=case.id, decision_id=item["decision_id"], event_id=item["event_id"],
            event_type=item.get("type") or "", decision=item["decision"], score=score, risk=risk, reasons=reasons,
            rule_ids=_joined(ids), occurred_at=occurred, added_at=now, amount_minor=item.get("amount_minor"),
            currency=item.get("currency"), card_fingerprint=item.get("card"), user_id=item.get("user_id"),
            merchant_id=item.get("merchant_id")))
    return case, opened
