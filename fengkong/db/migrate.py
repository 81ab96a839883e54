"""Bring a database's schema to the newest version, with Alembic.

Each part of the project that owns tables keeps its own branch of migrations in
``fengkong/db/migrations/versions`` (a ``branch_labels`` entry naming the part), so parts
evolve independently and ``upgrade`` applies every branch's head. The service and the
CLI call ``upgrade`` at start; it is idempotent.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

#: Tries of `upgrade` while other processes migrate the same database at once.
ATTEMPTS = 10

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration bound to ``engine`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration of every branch.

    Workers started without `fengkong serve` (which migrates once before them) migrate
    at once: the loser of the race to create a table gets a database error. It then
    tries again, after the winner committed, and is done when the database is at the
    heads; a fault that persists is raised after `ATTEMPTS` tries."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            command.upgrade(alembic_config(engine), "heads")
            return
        except DBAPIError:
            if attempt == ATTEMPTS:
                raise
            try:
                if current(engine) == heads():
                    return  # another process migrated it meanwhile
            except DBAPIError:
                pass
            time.sleep(0.05 * attempt)


def heads() -> set[str]:
    """The newest revision of each branch, as shipped with this code."""
    return set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def current(engine: Engine) -> set[str]:
    """The revisions the database is at."""
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())
