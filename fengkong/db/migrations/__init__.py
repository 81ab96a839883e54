"""Alembic's environment and the project's migration scripts (see fengkong.db.migrate)."""
