"""Engines and the declarative base every table of the project derives from."""

from __future__ import annotations

import json
from typing import Any, Callable

import orjson
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker

#: Constraint names fixed by convention, so migrations can name (and later drop) them
#: the same way on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the project's tables (cases, accounts, ...)."""

    metadata = MetaData(naming_convention=NAMING)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets the service read while another process (the CLI, a second worker) writes;
    foreign keys are off by default in SQLite; a busy timeout makes writers queue
    instead of failing at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def json_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON text: orjson (the standard library's encoder was a large part of
    filing a case and of queueing one), the standard library's for what orjson refuses (an
    integer past 64 bits, a key that is not a string). ``default`` as both take it. A JSON
    column's serializer, and the case intake's item (`fengkong.cases.intake.item_text`)."""
    try:
        return orjson.dumps(value, default=default).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, default=default, separators=(",", ":"))


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the per-dialect settings the project relies on."""
    kwargs.setdefault("json_serializer", json_text)
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Any]:
    """Sessions whose objects stay readable after commit (answers are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)
