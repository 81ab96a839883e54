"""Alembic environment: runs migrations on the engine `fengkong.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

from fengkong.db.engine import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    # render_as_batch: SQLite alters tables by copying them; Alembic's batch mode does it
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
