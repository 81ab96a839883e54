"""The relational store's foundation on both databases: connection settings and migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from fengkong.db import migrate
from fengkong.db.engine import make_engine
from fengkong.db.url import database_url, redacted


def test_default_is_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    url = database_url(None, tmp_path / "data")
    assert url.startswith("sqlite:///")
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        connection.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        connection.commit()
    engine.dispose()
    assert (tmp_path / "data" / "fengkong.sqlite3").exists()


def test_postgres_urls_get_the_installed_driver(tmp_path: Path) -> None:
    assert database_url("postgresql://u:secret@db:5432/risk", tmp_path).startswith("postgresql+psycopg://u:secret@")
    assert "secret" not in redacted("postgresql+psycopg://u:secret@db:5432/risk")
    with pytest.raises(ValueError, match="FENGKONG_DATABASE_URL"):
        database_url("mysql://u@db/risk", tmp_path)


def test_upgrade_is_idempotent_and_reaches_every_head(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.heads()
    with engine.connect() as connection:
        assert connection.dialect.name in ("sqlite", "postgresql")
        assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_workers_migrating_a_fresh_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Workers started without `fengkong serve` (uvicorn or a process manager running the
    app) each migrate at start: the one that loses the race to create a table must not
    fail (a failed upgrade leaves that worker with no case desk). Processes, as workers
    are (Alembic's command API is not for threads)."""
    import subprocess
    import sys
    import time

    code = ("import sys, time; from fengkong.db import migrate; from fengkong.db.engine import make_engine; "
            "e = make_engine(sys.argv[1]); time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
            "migrate.upgrade(e)")
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'race{round_}.sqlite3'}"
        at = str(time.time() + 2.0)  # after every interpreter has started: they migrate at once
        procs = [subprocess.Popen([sys.executable, "-c", code, url, at], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        failed = [err for p in procs for _, err in [p.communicate(timeout=120)] if p.returncode != 0]
        assert not failed, failed[0][-2000:]
        engine = make_engine(url)
        assert migrate.current(engine) == migrate.heads()
        engine.dispose()
