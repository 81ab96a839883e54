"""The case tables (SQLAlchemy 2 typed ORM): cases, the decisions grouped into each, and
their audit trail.

The schema is owned by the hand-written Alembic migration of the ``cases`` branch
(``fengkong/db/migrations/versions/cases_0001_*.py``); these classes must match it
(`tests/test_cases_db.py` compares them). Times are stored in UTC and always come back
timezone-aware, on SQLite (which keeps no offset) as on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from fengkong.db.engine import Base

STATUSES = ("open", "claimed", "resolved")
DISPOSITIONS = ("fraud", "legit", "needs_info")
ENTITY_KINDS = ("card", "user", "merchant")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware on every dialect: SQLite
    drops the offset, and comparing naive with aware datetimes raises."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: case times must carry a timezone")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Case(Base):
    """One case: an entity's decisions an analyst should look at, and what was concluded."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'claimed', 'resolved')", name="status"),
        CheckConstraint("disposition IS NULL OR disposition IN ('fraud', 'legit', 'needs_info')",
                        name="disposition"),
        Index("ix_cases_status_queue_priority", "status", "queue", "priority"),
        Index("ix_cases_entity", "entity_kind", "entity_id", "status"),
        Index("ix_cases_assignee_status", "assignee", "status"),
        Index("ix_cases_merchant_id", "merchant_id"),
        Index("ix_cases_opened_at", "opened_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_kind: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="open")
    queue: Mapped[str] = mapped_column(String(64))
    #: the fused risk: the highest ``risk`` of the grouped decisions (null: none had one)
    priority: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the highest rule score of the grouped decisions (orders cases without a risk)
    max_score: Mapped[float] = mapped_column(Float, default=0.0)
    assignee: Mapped[str | None] = mapped_column(String(128), nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: event time of the first and latest grouped decision (the grouping window runs on it)
    first_occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    merchant_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: the rule ids that fired in any grouped decision, space-separated with a space at
    #: each end (so `contains(" id ")` finds one exactly)
    rule_ids: Mapped[str] = mapped_column(Text, default=" ")
    decision_count: Mapped[int] = mapped_column(Integer, default=0)

    decisions: Mapped[list[CaseDecision]] = relationship(back_populates="case", order_by="CaseDecision.id",
                                                         cascade="all, delete-orphan")
    history: Mapped[list[CaseEvent]] = relationship(back_populates="case", order_by="CaseEvent.id",
                                                    cascade="all, delete-orphan")


class CaseDecision(Base):
    """A decision grouped into a case: what was decided, why, and the payment it was about."""

    __tablename__ = "case_decisions"
    __table_args__ = (Index("ix_case_decisions_case_id", "case_id"),
                      Index("ix_case_decisions_merchant_id", "merchant_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    decision_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    risk: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: the rules that fired: id, action, score, mode, tags and the feature values each read
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    rule_ids: Mapped[str] = mapped_column(Text, default=" ")
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    card_fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    merchant_id: Mapped[str | None] = mapped_column(String(128), nullable=True)

    case: Mapped[Case] = relationship(back_populates="decisions")


class CaseEvent(Base):
    """The audit trail of a case: who did what, when, from which status to which."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case_id", "case_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    case: Mapped[Case] = relationship(back_populates="history")


@dataclass(kw_only=True)
class CaseRow:
    """A case's columns as plain values: what the intake reads and writes with SQLAlchemy
    Core (no ORM object per case) and what `fengkong.cases.service.summary` shows."""

    id: int
    entity_kind: str
    entity_id: str
    status: str
    queue: str
    priority: float | None
    max_score: float
    assignee: str | None = None
    disposition: str | None = None
    note: str | None = None
    opened_at: datetime
    claimed_at: datetime | None = None
    resolved_at: datetime | None = None
    updated_at: datetime
    first_occurred_at: datetime
    last_occurred_at: datetime
    merchant_id: str | None
    rule_ids: str
    decision_count: int
