"""The users table (the ``accounts`` branch of the migrations)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fengkong.db.engine import Base


class Role(StrEnum):
    """What a console user may do; each role includes the ones before it.

    viewer reads every page; analyst also claims and resolves cases, edits the
    analyst lists and dry-runs rules; admin also manages users and reloads rules."""

    VIEWER = "viewer"
    ANALYST = "analyst"
    ADMIN = "admin"


ROLES: tuple[Role, ...] = (Role.VIEWER, Role.ANALYST, Role.ADMIN)


class User(Base):
    """One person who logs in to the console."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    role: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)
    password_changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)

    __table_args__ = (sa.CheckConstraint("role in ('viewer', 'analyst', 'admin')", name="role"),)
