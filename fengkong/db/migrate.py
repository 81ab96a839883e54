"""Bring a database's schema to the newest version, with Alembic.

Each part of the project that owns tables keeps its own branch of migrations in
``fengkong/db/migrations/versions`` (a ``branch_labels`` entry naming the part), so parts
evolve independently and ``upgrade`` applies every branch's head. The service and the
CLI call ``upgrade`` at start; it is idempotent.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration bound to ``engine`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration of every branch."""
    command.upgrade(alembic_config(engine), "heads")


def heads() -> set[str]:
    """The newest revision of each branch, as shipped with this code."""
    return set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def current(engine: Engine) -> set[str]:
    """The revisions the database is at."""
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())
