"""Filing queued decisions as cases: a whole batch of intake items in a handful of SQL
statements (SQLAlchemy Core), because the consumer runs inside the service's workers
and what it spends per case is taken from the decisions.

Grouping: the case is about the first entity of ``group_by`` the event has (card
fingerprint, user, merchant). A decision joins the entity's unresolved case (open or
claimed) whose first decision is within ``window_minutes`` of it in event time (the
newest such case); otherwise it opens a new case in the queue of its rules. Items of
one batch group with each other as if filed one after the other, in their order.

A batch is: take the entities' locks, read which of its decisions are filed already
(a redelivery files nothing: filing is idempotent by decision id, and the unique
``decision_id`` column is the last guard), read the entities' unresolved cases within
the batch's window, group in memory, then one bulk INSERT of the new cases (on
PostgreSQL their ids returned in order; on SQLite, where that would insert row by row,
ids allocated after the largest under the write lock the batch holds), one bulk UPDATE of the cases that took decisions, one bulk INSERT of
the decisions and one of the audit rows. The caller owns the transaction.

Concurrent consumers (one per worker) cannot open two cases for one entity nor file a
decision twice: on PostgreSQL they take an advisory lock per entity (in one order, so
two batches never deadlock) and lock the cases they read (``FOR UPDATE``, so an
analyst's resolve that commits meanwhile is seen); on SQLite the transaction takes the
database's write lock before it reads.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence, cast

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from fengkong.cases.config import CasesConfig
from fengkong.cases.models import Case, CaseDecision, CaseEvent, CaseRow

#: The actor named in the audit rows the intake writes.
INTAKE_ACTOR = "intake"

_CASES = cast(Table, Case.__table__)
_DECISIONS = cast(Table, CaseDecision.__table__)
_EVENTS = cast(Table, CaseEvent.__table__)
#: How many values one IN (...) binds (SQLite's default limit is far above; PostgreSQL has none).
_CHUNK = 500

_SQLITE_LOCK = text("UPDATE cases SET status = status WHERE id = -1")
_PG_LOCKS = text("SELECT pg_advisory_xact_lock(k) FROM (SELECT k FROM unnest(CAST(:keys AS bigint[])) AS u(k) "
                 "ORDER BY k) AS s")
_FILED = select(_DECISIONS.c.decision_id).where(_DECISIONS.c.decision_id.in_(bindparam("ids", expanding=True)))
_ROW_COLUMNS = tuple(_CASES.c[f.name] for f in fields(CaseRow))
_OPEN = (select(*_ROW_COLUMNS)
         .where(_CASES.c.status != "resolved", _CASES.c.entity_kind.in_(bindparam("kinds", expanding=True)),
                _CASES.c.entity_id.in_(bindparam("ids", expanding=True)),
                _CASES.c.first_occurred_at >= bindparam("lo"), _CASES.c.first_occurred_at <= bindparam("hi"))
         .order_by(_CASES.c.id))
_NEW_CASE = insert(_CASES).returning(_CASES.c.id, sort_by_parameter_order=True)
_NEW_CASE_WITH_ID = insert(_CASES)
_LAST_ID = select(func.max(_CASES.c.id))
#: A new case's columns that are null until an analyst acts (left to their default).
_UNSET_ON_OPEN = frozenset({"id", "assignee", "disposition", "note", "claimed_at", "resolved_at"})
_GROUPED = (update(_CASES).where(_CASES.c.id == bindparam("b_id"))
            .values(priority=bindparam("b_priority"), max_score=bindparam("b_max_score"),
                    first_occurred_at=bindparam("b_first"), last_occurred_at=bindparam("b_last"),
                    rule_ids=bindparam("b_rule_ids"), decision_count=bindparam("b_count"),
                    updated_at=bindparam("b_updated_at")))


def entity_of(item: Mapping[str, Any], group_by: tuple[str, ...]) -> tuple[str, str] | None:
    """(kind, id) of the entity a decision's case is about, or None if the event names none."""
    fields = {"card": item.get("card"), "user": item.get("user_id"), "merchant": item.get("merchant_id")}
    for kind in group_by:
        if fields.get(kind):
            return kind, str(fields[kind])
    return None


def _joined(ids: Iterable[str]) -> str:
    ids = sorted(set(ids))
    return " " + " ".join(ids) + " " if ids else " "


@dataclass
class _Item:
    """An intake item read and checked: what filing needs of it."""

    raw: Mapping[str, Any]
    entity: tuple[str, str]
    decision_id: Any
    event_id: Any
    decision: Any
    occurred: datetime
    reasons: list[dict[str, Any]]
    rule_ids: set[str]
    risk: Any
    score: float


def _read(item: Mapping[str, Any], group_by: tuple[str, ...]) -> _Item | None:
    """The item ready to file, None when it names no entity; a malformed item raises."""
    entity = entity_of(item, group_by)
    if entity is None:
        return None
    reasons = list(item.get("reasons") or [])
    return _Item(raw=item, entity=entity, decision_id=item["decision_id"],
                 event_id=item["event_id"], decision=item["decision"],
                 occurred=datetime.fromisoformat(item["occurred_at"]).astimezone(timezone.utc), reasons=reasons,
                 rule_ids={str(r["id"]) for r in reasons if r.get("id")}, risk=item.get("risk"),
                 score=float(item.get("score") or 0))


def _detail(item: Mapping[str, Any]) -> dict[str, Any]:
    """The audit row's detail: the decision, and the failed challenge that sent it, if one did."""
    detail: dict[str, Any] = {"decision_id": item["decision_id"]}
    if item.get("challenge"):
        detail["challenge"] = item["challenge"]
    return detail


@dataclass
class Filing:
    """What a batch did: per item, (case id, whether this item opened it) or None (it named
    no entity, or was filed already); and the cases it opened, as they stand after it."""

    results: list[tuple[int, bool] | None]
    opened: list[CaseRow] = field(default_factory=list)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _lock(conn: Connection, entities: Iterable[tuple[str, str]]) -> None:
    """Serialise the consumers that file decisions of these entities (see the module doc)."""
    if conn.dialect.name == "postgresql":
        keys = sorted({zlib.crc32(f"{kind}:{entity}".encode()) - 2**31 for kind, entity in entities})
        conn.execute(_PG_LOCKS, {"keys": keys})
    else:  # SQLite: a write first takes the database's write lock; the reads after see the newest data
        conn.execute(_SQLITE_LOCK)


def _filed(conn: Connection, decision_ids: Sequence[Any]) -> set[Any]:
    out: set[Any] = set()
    for chunk in _chunks(decision_ids):
        out.update(conn.execute(_FILED, {"ids": list(chunk)}).scalars())
    return out


def _open_cases(conn: Connection, items: Sequence[_Item], window: timedelta) -> dict[tuple[str, str], list[CaseRow]]:
    """The entities' unresolved cases that any item's window reaches, oldest first."""
    kinds = sorted({i.entity[0] for i in items})
    ids = sorted({i.entity[1] for i in items})
    lo = min(i.occurred for i in items) - window
    hi = max(i.occurred for i in items) + window
    query = _OPEN.with_for_update() if conn.dialect.name == "postgresql" else _OPEN
    wanted = {i.entity for i in items}
    out: dict[tuple[str, str], list[CaseRow]] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(query, {"kinds": kinds, "ids": list(chunk), "lo": lo, "hi": hi}).mappings():
            key = (row["entity_kind"], row["entity_id"])
            if key in wanted:
                out.setdefault(key, []).append(CaseRow(**row))
    for cases in out.values():
        cases.sort(key=lambda c: c.id)
    return out


def file_items(conn: Connection, items: Sequence[Mapping[str, Any]], config: CasesConfig,
               now: datetime | None = None) -> Filing:
    """File a batch of intake items on ``conn`` (see the module doc); the caller commits.
    A malformed item raises, and the caller's transaction must then be rolled back (the
    consumer then files the batch item by item, to drop only that one)."""
    now = now or datetime.now(timezone.utc)
    window = timedelta(minutes=config.window_minutes)
    read = [_read(item, config.group_by) for item in items]
    live = [i for i in read if i is not None]
    if not live:
        return Filing([None] * len(items))
    _lock(conn, (i.entity for i in live))
    filed = _filed(conn, list(dict.fromkeys(i.decision_id for i in live)))
    cases = _open_cases(conn, live, window)
    results: list[tuple[CaseRow, bool] | None] = []
    new: list[CaseRow] = []
    grouped: dict[int, CaseRow] = {}
    decisions: list[tuple[CaseRow, _Item]] = []
    audit: list[tuple[CaseRow, dict[str, Any]]] = []
    for it in read:
        if it is None or it.decision_id in filed:
            results.append(None)
            continue
        filed.add(it.decision_id)
        candidates = cases.setdefault(it.entity, [])
        lo, hi = it.occurred - window, it.occurred + window
        case = next((c for c in reversed(candidates) if lo <= c.first_occurred_at <= hi), None)
        if case is None:
            case = CaseRow(id=0, entity_kind=it.entity[0], entity_id=it.entity[1], status="open",
                           queue=config.queue_for(it.reasons).name, priority=it.risk, max_score=it.score,
                           opened_at=now, updated_at=now, first_occurred_at=it.occurred,
                           last_occurred_at=it.occurred, merchant_id=it.raw.get("merchant_id"),
                           rule_ids=_joined(it.rule_ids), decision_count=1)
            candidates.append(case)
            new.append(case)
            audit.append((case, {"action": "opened", "from_status": None, "to_status": "open"}))
            results.append((case, True))
        else:
            if it.risk is not None and (case.priority is None or it.risk > case.priority):
                case.priority = it.risk
            case.max_score = max(case.max_score, it.score)
            case.first_occurred_at = min(case.first_occurred_at, it.occurred)
            case.last_occurred_at = max(case.last_occurred_at, it.occurred)
            case.rule_ids = _joined(set(case.rule_ids.split()) | it.rule_ids)
            case.decision_count += 1
            case.updated_at = now
            if case.id:
                grouped[case.id] = case
            audit.append((case, {"action": "decision_added", "from_status": case.status, "to_status": case.status}))
            results.append((case, False))
        audit[-1][1]["detail"] = _detail(it.raw)
        decisions.append((case, it))
    if decisions:
        _write(conn, new, list(grouped.values()), decisions, audit, now)
    return Filing([None if r is None else (r[0].id, r[1]) for r in results], new)


def _write(conn: Connection, new: list[CaseRow], grouped: list[CaseRow], decisions: list[tuple[CaseRow, _Item]],
           audit: list[tuple[CaseRow, dict[str, Any]]], now: datetime) -> None:
    """The batch's rows: new cases first (the others refer to their ids), in item order."""
    if new:
        rows = [{k: v for k, v in vars(c).items() if k not in _UNSET_ON_OPEN} for c in new]
        if conn.dialect.name == "sqlite":
            # the batch holds the database's write lock (`_lock`), so no other writer can
            # take these ids; one executemany, where RETURNING in parameter order would
            # insert row by row on SQLite
            first = (conn.execute(_LAST_ID).scalar() or 0) + 1
            for n, (case, row) in enumerate(zip(new, rows)):
                case.id = row["id"] = first + n
            conn.execute(_NEW_CASE_WITH_ID, rows)
        else:
            for case, case_id in zip(new, conn.execute(_NEW_CASE, rows).scalars()):
                case.id = case_id
    if grouped:
        conn.execute(_GROUPED, [{"b_id": c.id, "b_priority": c.priority, "b_max_score": c.max_score,
                                 "b_first": c.first_occurred_at, "b_last": c.last_occurred_at,
                                 "b_rule_ids": c.rule_ids, "b_count": c.decision_count,
                                 "b_updated_at": c.updated_at} for c in grouped])
    conn.execute(insert(_DECISIONS), [{
        "case_id": case.id, "decision_id": it.decision_id, "event_id": it.event_id,
        "event_type": it.raw.get("type") or "", "decision": it.decision, "score": it.score,
        "risk": it.risk, "reasons": it.reasons, "rule_ids": _joined(it.rule_ids), "occurred_at": it.occurred,
        "added_at": now, "amount_minor": it.raw.get("amount_minor"), "currency": it.raw.get("currency"),
        "card_fingerprint": it.raw.get("card"), "user_id": it.raw.get("user_id"),
        "merchant_id": it.raw.get("merchant_id")} for case, it in decisions])
    conn.execute(insert(_EVENTS), [{"case_id": case.id, "at": now, "actor": INTAKE_ACTOR, "note": None, **row}
                                   for case, row in audit])


def ingest(session: Session, item: Mapping[str, Any], config: CasesConfig,
           now: datetime | None = None) -> tuple[Case, bool] | None:
    """File one item in the session's transaction: (its case, read fresh, and whether it was
    opened); None when the item names no entity or was filed already. The caller commits."""
    got = file_items(session.connection(), [item], config, now).results[0]
    if got is None:
        return None
    case = session.get(Case, got[0], populate_existing=True)
    assert case is not None  # written in this very transaction
    return case, got[1]
