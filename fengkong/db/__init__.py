"""The relational store: cases, analyst accounts and other records people edit.

Decisions and features live in Redis; what an analyst creates (cases, their history,
logins) needs queries, joins and transactions, so it lives in a SQL database through
SQLAlchemy 2, with its schema owned by Alembic migrations (`fengkong.db.migrate`). The
embedded default is SQLite in WAL mode in the data directory; PostgreSQL is chosen with
``FENGKONG_DATABASE_URL``.
"""
