"""The case desk: list, read, claim, resolve, reopen cases, and the queues' SLA ages.

Keyword-only functions that know nothing of HTTP; the API routes (acting analyst = the
API key's name) and the web console (the logged-in user) call the same ones with an
``actor``. Every change writes a `CaseEvent` (who, when, action, from and to status,
note) in the same transaction as the change. Life cycle::

    open --claim--> claimed --resolve--> resolved --reopen--> open
    open ---------------resolve--------> resolved   (resolving an open case claims it)

Anything else is `IllegalTransition` (409) with the case's status and assignee in the
message. Resolving as ``fraud`` or ``legit`` records the label first
(`fengkong.cases.labels`); if that fails nothing changes (`LabelsUnavailable`, 503).
Functions block on SQL: async callers run them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from fengkong.cases import hooks
from fengkong.cases.config import CasesConfig
from fengkong.cases.errors import CaseNotFound, IllegalTransition, InvalidCaseInput
from fengkong.events import looks_like_pan
from fengkong.cases.models import DISPOSITIONS, ENTITY_KINDS, STATUSES, Case, CaseDecision, CaseEvent, CaseRow

if TYPE_CHECKING:  # at run time only `resolve` needs labels: a consumer process does without the feature store
    from fengkong.cases.labels import LabelSink

MAX_LIMIT = 500
MAX_NOTE = 4000
MAX_BULK = 500


@dataclass
class Desk:
    """What the case functions work with: the database's sessions, the analysts'
    configuration (queues and SLAs), where labels go (None: labels are not sent) and who
    is told of case changes (`fengkong.cases.hooks`)."""

    sessions: sessionmaker[Session]
    config: CasesConfig
    labels: LabelSink | None = None
    #: who hears of cases opened and resolved (the webhooks); None: nobody
    publish: hooks.Publish | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summary(case: Case | CaseRow, config: CasesConfig, now: datetime | None = None) -> dict[str, Any]:
    """A case as the queue shows it (JSON-ready); from the ORM object or the intake's row."""
    now = now or _now()
    age = (now - case.opened_at).total_seconds()
    sla = config.sla_hours(case.queue)
    return {
        "id": case.id, "entity": {"kind": case.entity_kind, "id": case.entity_id}, "status": case.status,
        "queue": case.queue, "priority": case.priority, "max_score": case.max_score, "assignee": case.assignee,
        "disposition": case.disposition, "note": case.note, "opened_at": _iso(case.opened_at),
        "claimed_at": _iso(case.claimed_at), "resolved_at": _iso(case.resolved_at),
        "first_occurred_at": _iso(case.first_occurred_at), "last_occurred_at": _iso(case.last_occurred_at),
        "merchant_id": case.merchant_id, "rule_ids": case.rule_ids.split(), "decision_count": case.decision_count,
        "age_s": round(age, 3), "sla_hours": sla,
        "sla_breached": case.status != "resolved" and age > sla * 3600,
    }


def _decision(d: CaseDecision) -> dict[str, Any]:
    return {"decision_id": d.decision_id, "event_id": d.event_id, "type": d.event_type, "decision": d.decision,
            "score": d.score, "risk": d.risk, "reasons": d.reasons, "rule_ids": d.rule_ids.split(),
            "occurred_at": _iso(d.occurred_at), "added_at": _iso(d.added_at), "amount_minor": d.amount_minor,
            "currency": d.currency, "card": d.card_fingerprint, "user_id": d.user_id, "merchant_id": d.merchant_id}


def _history(e: CaseEvent) -> dict[str, Any]:
    return {"at": _iso(e.at), "actor": e.actor, "action": e.action, "from_status": e.from_status,
            "to_status": e.to_status, "note": e.note, "detail": e.detail}


def detail(case: Case, config: CasesConfig, now: datetime | None = None) -> dict[str, Any]:
    """A case with its decisions (reasons and the feature values that fired) and its history."""
    out = summary(case, config, now)
    out["decisions"] = [_decision(d) for d in case.decisions]
    out["history"] = [_history(e) for e in case.history]
    return out


def _choice(field: str, value: str | None, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value is not None and value not in allowed:
        raise InvalidCaseInput(field, f"expected one of {', '.join(allowed)}")


def _nonneg(field: str, value: float | None) -> None:
    if value is not None and not value >= 0:
        raise InvalidCaseInput(field, "must be a number of minutes, 0 or more")


def list_cases(desk: Desk, *, status: str | None = None, queue: str | None = None, merchant: str | None = None,
               rule: str | None = None, min_age_minutes: float | None = None,
               max_age_minutes: float | None = None, assignee: str | None = None, entity_kind: str | None = None,
               entity_id: str | None = None, limit: int = 100, offset: int = 0,
               now: datetime | None = None) -> dict[str, Any]:
    """Cases matching every filter given, highest priority first (the fused risk, then the
    rule score, then the oldest): ``{"total": n, "cases": [summary, ...]}``.

    ``merchant``: any of the case's decisions was at that merchant; ``rule``: that rule
    fired in any of them; ages are since the case opened."""
    _choice("status", status, STATUSES)
    _choice("entity_kind", entity_kind, ENTITY_KINDS)
    _nonneg("min_age_minutes", min_age_minutes)
    _nonneg("max_age_minutes", max_age_minutes)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidCaseInput("limit", f"must be from 1 to {MAX_LIMIT}")
    if offset < 0:
        raise InvalidCaseInput("offset", "must be 0 or more")
    now = now or _now()
    where: list[Any] = []
    if status is not None:
        where.append(Case.status == status)
    if queue is not None:
        where.append(Case.queue == queue)
    if assignee is not None:
        where.append(Case.assignee == assignee)
    if entity_kind is not None:
        where.append(Case.entity_kind == entity_kind)
    if entity_id is not None:
        where.append(Case.entity_id == entity_id)
    if merchant is not None:
        where.append(exists().where(CaseDecision.case_id == Case.id, CaseDecision.merchant_id == merchant))
    if rule is not None:
        where.append(Case.rule_ids.contains(f" {rule} ", autoescape=True))
    if min_age_minutes is not None:
        where.append(Case.opened_at <= now - timedelta(minutes=min_age_minutes))
    if max_age_minutes is not None:
        where.append(Case.opened_at >= now - timedelta(minutes=max_age_minutes))
    with desk.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Case).where(*where)) or 0
        rows = session.scalars(
            select(Case).where(*where)
            .order_by(Case.priority.is_(None), Case.priority.desc(), Case.max_score.desc(), Case.opened_at, Case.id)
            .limit(limit).offset(offset)).all()
        return {"total": int(total), "cases": [summary(c, desk.config, now) for c in rows]}


def _load(session: Session, case_id: int, *, lock: bool = False) -> Case:
    if lock and session.get_bind().dialect.name == "sqlite":  # take the write lock before reading
        session.execute(update(Case).where(Case.id == -1).values(status="open"))
    query = select(Case).where(Case.id == case_id).options(selectinload(Case.decisions), selectinload(Case.history))
    case = session.scalars(query.with_for_update() if lock else query).first()
    if case is None:
        raise CaseNotFound("case_id", "no case has this id")
    return case


def get_case(desk: Desk, *, case_id: int) -> dict[str, Any]:
    """One case with its decisions and history."""
    with desk.sessions() as session:
        return detail(_load(session, case_id), desk.config)


def _audit(session: Session, case: Case, *, actor: str, action: str, before: str, note: str | None,
           now: datetime, detail_: dict[str, Any] | None = None) -> None:
    session.add(CaseEvent(case_id=case.id, at=now, actor=actor, action=action, from_status=before,
                          to_status=case.status, note=note, detail=detail_))


def _actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 128:
        raise InvalidCaseInput("actor", "must name the analyst (1 to 128 characters)")
    return actor


def _note(note: str | None) -> str | None:
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise InvalidCaseInput("note", f"must be text of at most {MAX_NOTE} characters")
    if looks_like_pan(note):  # never stored, audited or echoed
        raise InvalidCaseInput("note", "looks like a full card number (PAN); refer to the card by its fingerprint")
    return note or None


def claim(desk: Desk, *, case_id: int, actor: str) -> dict[str, Any]:
    """Take an open case (claiming a case one already holds changes nothing)."""
    actor = _actor(actor)
    with desk.sessions() as session, session.begin():
        case = _load(session, case_id, lock=True)
        if case.status == "claimed" and case.assignee == actor:
            return detail(case, desk.config)
        if case.status != "open":
            raise IllegalTransition("status", _refusal(case, "claim"))
        now = _now()
        case.status, case.assignee, case.claimed_at, case.updated_at = "claimed", actor, now, now
        _audit(session, case, actor=actor, action="claimed", before="open", note=None, now=now)
        session.flush()
        session.refresh(case, ["history"])
        return detail(case, desk.config, now)


def _refusal(case: Case, action: str) -> str:
    if case.status == "resolved":
        return f"cannot {action}: case {case.id} is resolved ({case.disposition}); reopen it first"
    if case.status == "claimed":
        return f"cannot {action}: case {case.id} is claimed by {case.assignee}"
    return f"cannot {action}: case {case.id} is {case.status}"


def resolve(desk: Desk, *, case_id: int, actor: str, disposition: str, note: str | None = None) -> dict[str, Any]:
    """Resolve an open case, or a case the actor claimed, as fraud, legit or needs_info; the
    label is recorded first (see the module doc)."""
    actor = _actor(actor)
    _choice("disposition", disposition, DISPOSITIONS)
    if disposition is None:
        raise InvalidCaseInput("disposition", f"expected one of {', '.join(DISPOSITIONS)}")
    note = _note(note)
    with desk.sessions() as session, session.begin():
        case = _load(session, case_id, lock=True)
        if case.status == "resolved" or (case.status == "claimed" and case.assignee != actor):
            raise IllegalTransition("status", _refusal(case, "resolve"))
        if desk.labels is not None:
            from fengkong.cases.labels import label_events

            events = label_events(case, disposition)
            if events:
                desk.labels.record(events, case_id=case.id, disposition=disposition, actor=actor)
        now = _now()
        before = case.status
        if before == "open":
            case.assignee, case.claimed_at = actor, now
        case.status, case.disposition, case.note, case.resolved_at, case.updated_at = (
            "resolved", disposition, note, now, now)
        _audit(session, case, actor=actor, action="resolved", before=before, note=note, now=now,
               detail_={"disposition": disposition})
        session.flush()
        session.refresh(case, ["history"])
        out = detail(case, desk.config, now)
    hooks.tell(desk.publish, [("case.resolved", {k: v for k, v in out.items() if k not in ("decisions", "history")})])
    return out


def reopen(desk: Desk, *, case_id: int, actor: str, note: str | None = None) -> dict[str, Any]:
    """Put a resolved case back in its queue, unassigned (its earlier disposition stays in
    the history; a label already sent stays sent)."""
    actor = _actor(actor)
    note = _note(note)
    with desk.sessions() as session, session.begin():
        case = _load(session, case_id, lock=True)
        if case.status != "resolved":
            raise IllegalTransition("status", f"cannot reopen: case {case.id} is {case.status}, not resolved")
        now = _now()
        previous = case.disposition
        case.status, case.assignee, case.disposition, case.claimed_at, case.resolved_at, case.updated_at = (
            "open", None, None, None, None, now)
        _audit(session, case, actor=actor, action="reopened", before="resolved", note=note, now=now,
               detail_={"previous_disposition": previous})
        session.flush()
        session.refresh(case, ["history"])
        return detail(case, desk.config, now)


def bulk_resolve(desk: Desk, *, case_ids: list[int], actor: str, disposition: str,
                 note: str | None = None) -> dict[str, Any]:
    """Resolve many cases the same way, each on its own (one refused case does not stop the
    others): ``{"resolved": [ids], "refused": [{"id", "status", "detail"}]}``."""
    _actor(actor)
    _choice("disposition", disposition, DISPOSITIONS)
    _note(note)
    if not case_ids or len(case_ids) > MAX_BULK:
        raise InvalidCaseInput("case_ids", f"give 1 to {MAX_BULK} case ids")
    resolved: list[int] = []
    refused: list[dict[str, Any]] = []
    for case_id in dict.fromkeys(case_ids):
        try:
            resolve(desk, case_id=case_id, actor=actor, disposition=disposition, note=note)
            resolved.append(case_id)
        except (CaseNotFound, IllegalTransition) as exc:
            refused.append({"id": case_id, "status": exc.status, "detail": str(exc)})
    return {"resolved": resolved, "refused": refused}


def queues(desk: Desk, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per queue (configured ones, and any that still holds cases): open and claimed
    counts, the age of the oldest unresolved case and how many are past the SLA."""
    now = now or _now()
    with desk.sessions() as session:
        rows = session.execute(
            select(Case.queue, Case.status, func.count(), func.min(Case.opened_at))
            .where(Case.status != "resolved").group_by(Case.queue, Case.status)).all()
        names = [q.name for q in desk.config.all_queues()]
        names += sorted({r[0] for r in rows} - set(names))
        out = []
        for name in names:
            sla_s = desk.config.sla_hours(name) * 3600
            mine = [r for r in rows if r[0] == name]
            oldest = min((r[3] for r in mine), default=None)
            breached = session.scalar(select(func.count()).select_from(Case).where(
                Case.queue == name, Case.status != "resolved", Case.opened_at < now - timedelta(seconds=sla_s)))
            counts = {status: int(n) for _, status, n, _ in mine}
            out.append({"queue": name, "sla_hours": sla_s / 3600, "open": counts.get("open", 0),
                        "claimed": counts.get("claimed", 0),
                        "oldest_age_s": round((now - oldest).total_seconds(), 3) if oldest else None,
                        "breached": int(breached or 0)})
        return out
