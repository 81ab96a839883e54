"""Shared fixtures: one real Redis server for the whole run (started the way
`fengkong serve` starts its embedded one), a fresh key prefix per test.

Property tests run derandomized by default: the same examples on every machine, so
a CI run cannot fail on an example no one has seen. ``HYPOTHESIS_PROFILE=explore``
draws fresh examples (and more of them) to look for new failures."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import os

import pytest
from hypothesis import settings

from fengkong.features.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
LISTS_DIR = RULES_DIR / "lists"
sys.path.insert(0, str(Path(__file__).resolve().parent))

_prefixes = itertools.count()

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def redis_server():
    server = EmbeddedRedis(persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}"


@pytest.fixture(scope="session")
def ipintel():
    from fengkong.features.ipintel import IpIntel

    return IpIntel.load(LISTS_DIR)


@pytest.fixture(scope="session")
def list_specs():
    from fengkong.features.lists import load_list_specs

    return load_list_specs(LISTS_DIR)


@pytest.fixture
def store(redis_client, ipintel, list_specs, prefix):
    from fengkong.features.online import OnlineStore

    return OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the session (tests/pg_server.py); yields its URL."""
    from pg_server import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each supported kind: SQLite in WAL mode in a fresh data
    directory, and a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        from fengkong.db.url import database_url as resolve

        yield resolve(None, tmp_path / "data")
        return
    import uuid

    import sqlalchemy as sa

    server_url = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield server_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
