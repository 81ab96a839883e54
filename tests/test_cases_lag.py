"""Filing yields to decisions with a bounded lag: the backlog read from the intake stream
(its length and its oldest item's age on Redis' clock), the gate that opens past the
bound and closes at half of it, and a real `fengkong cases consume --catch-up` process
that files a backlog older than the bound while CPU-bound processes take every core,
and files nothing younger."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from api_fixtures import RULES_DIR
from fengkong.cases.config import CasesConfig
from fengkong.cases.consumer import Consumer
from fengkong.cases.intake import item_text, stream_key
from fengkong.cases.lag import Backlog, LagGate, read_backlog
from fengkong.cases.service import Desk
from fengkong.db import migrate
from fengkong.db.engine import make_engine, session_factory


def _redis_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def _item(n: int) -> dict:
    """A review's case item as the decision path queues it (`fengkong.cases.intake.item_for`)."""
    return {"decision_id": f"d_lag{n}", "event_id": f"e_lag{n}", "type": "payment", "decision": "review",
            "score": 50, "risk": 0.3, "reasons": [{"id": "ip.tor_exit", "score": 50, "tags": ["proxy_ip"],
                                                   "values": {"ip.is_tor": True}}],
            "occurred_at": "2026-12-05T10:00:00+00:00", "amount_minor": 1000 + n, "currency": "EUR",
            "card": f"card_lag{n}", "user_id": f"u_lag{n}", "merchant_id": "m_lag"}


def _queue(client, prefix: str, numbers: range, at_ms: int | None = None) -> None:
    """Queue review items as the decision path does (``XADD``, never trimmed); with
    ``at_ms``, with stream ids of that Redis time (as if queued then)."""
    for k, n in enumerate(numbers):
        entry_id = "*" if at_ms is None else f"{at_ms}-{k}"
        client.execute_command("XADD", stream_key(prefix), entry_id, "item", item_text(_item(n)))


@pytest.fixture
def db(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'gated.sqlite3'}")
    migrate.upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def test_the_backlog_is_the_streams_length_and_its_oldest_items_age(redis_client, prefix):
    stream = stream_key(prefix)
    assert read_backlog(redis_client, stream) == Backlog(0, None)  # nothing was ever queued
    _queue(redis_client, prefix, range(3), at_ms=_redis_ms(redis_client) - 40_000)
    _queue(redis_client, prefix, range(3, 5))
    backlog = read_backlog(redis_client, stream)
    assert backlog.length == 5
    assert backlog.oldest_age_s is not None and 40 <= backlog.oldest_age_s < 45


def test_the_gate_opens_past_either_bound_and_closes_under_half_of_both(redis_client, prefix):
    stream = stream_key(prefix)
    gate = LagGate(redis_client, stream, max_lag_s=10, max_backlog=4, every_s=0)
    assert gate() is False  # nothing queued
    _queue(redis_client, prefix, range(3), at_ms=_redis_ms(redis_client) - 7_000)
    assert gate() is False  # 3 items, 7 s old: under both bounds
    old = [entry_id for entry_id, _ in redis_client.xrange(stream)]
    _queue(redis_client, prefix, range(3, 5))
    assert gate() is True and gate.openings == 1  # 5 items > 4
    redis_client.xdel(stream, old[0])
    assert gate() is True  # 4 items, the oldest 7 s: over half of both, still open
    redis_client.xdel(stream, *old[1:])
    assert gate() is False  # 2 items, seconds old: caught up
    with pytest.raises(ValueError, match="max_lag_s"):
        LagGate(redis_client, stream, max_lag_s=0, max_backlog=4)


def test_a_gated_consumer_files_nothing_while_the_gate_is_shut(db, redis_client, prefix):
    """The catch-up consumer's loop consults the gate before each step."""
    stream = stream_key(prefix)
    _queue(redis_client, prefix, range(2))
    shut = Consumer(redis_client, Desk(sessions=db, config=CasesConfig()), stream=stream, name="shut",
                    block_ms=50, gate=lambda: False).start()
    time.sleep(0.5)
    shut.stop()
    assert shut.filed == 0 and redis_client.xlen(stream) == 2
    opened = Consumer(redis_client, Desk(sessions=db, config=CasesConfig()), stream=stream, name="opened",
                      gate=lambda: True)
    assert opened.step(block_ms=0) == 2  # the same items, through an open gate


def _hogs(seconds: float) -> list[subprocess.Popen[bytes]]:
    """One CPU-bound process per core at the service's priority (nice 0), bounded in time."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]


def _filed(path: Path) -> list[tuple[str, str]]:
    """(decision id, opened_at) of each filed decision, read with the plain sqlite3 module."""
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT d.decision_id, c.opened_at FROM case_decisions d "
                                "JOIN cases c ON c.id = d.case_id").fetchall()
        except sqlite3.OperationalError:  # the tables are not there yet
            return []


def test_a_backlog_older_than_the_bound_is_filed_beside_cpu_bound_processes(tmp_path, redis_server, redis_client,
                                                                           prefix):
    bound_s = 4.0
    database = tmp_path / "cases.sqlite3"
    env = dict(os.environ, FENGKONG_REDIS_URL=redis_server.url, FENGKONG_KEY_PREFIX=prefix,
               FENGKONG_DATABASE_URL=f"sqlite:///{database}", FENGKONG_DATA_DIR=str(tmp_path / "data"),
               FENGKONG_RULES_DIR=str(RULES_DIR), FENGKONG_CASES_MAX_LAG_S=str(bound_s))
    said = tmp_path / "consumer.out"
    with said.open("wb") as out:
        consumer = subprocess.Popen([sys.executable, "-c", "from fengkong.cli import app; app()", "cases",
                                     "consume", "--catch-up"], env=env, stdout=out, preexec_fn=lambda: os.nice(10))
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while b"filing cases" not in said.read_bytes() and time.monotonic() < deadline and consumer.poll() is None:
            time.sleep(0.1)
        assert b"while behind the bound (4 s" in said.read_bytes(), said.read_bytes()
        hogs = _hogs(120)
        queued_ms = _redis_ms(redis_client)
        _queue(redis_client, prefix, range(20))
        assert os.sched_getscheduler(consumer.pid) == os.SCHED_OTHER  # a normal-priority process
        deadline = time.monotonic() + 90
        while len(_filed(database)) < 20 and time.monotonic() < deadline and consumer.poll() is None:
            time.sleep(0.2)
        filed = _filed(database)
        assert len(filed) == 20, f"{len(filed)} of 20 filed; consumer exit code {consumer.poll()}"
        assert all(hog.poll() is None for hog in hogs)  # filed while every core was taken
        # none was filed before it was older than the bound: younger reviews are left to
        # the idle-priority consumer (the cases' opened_at is the filing time, in UTC)
        first_ms = min(datetime.fromisoformat(opened + "+00:00").timestamp() * 1000 for _, opened in filed)
        assert first_ms - queued_ms >= bound_s * 1000 - 5, (first_ms, queued_ms)
        deadline = time.monotonic() + 30  # acknowledged and deleted after the commit
        while redis_client.xlen(stream_key(prefix)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert redis_client.xlen(stream_key(prefix)) == 0
    finally:
        for proc in hogs:
            proc.kill()
        consumer.send_signal(signal.SIGTERM)
        try:
            consumer.wait(30)
        except subprocess.TimeoutExpired:
            consumer.kill()
        for proc in hogs:
            proc.wait()


def test_under_a_backlog_batches_grow_and_shrink_back_when_it_is_gone(db, redis_client, prefix):
    stream = stream_key(prefix)
    _queue(redis_client, prefix, range(20))
    consumer = Consumer(redis_client, Desk(sessions=db, config=CasesConfig()), stream=stream, name="grow", batch=2,
                        max_batch=8)
    assert [consumer.step(block_ms=0) for _ in range(5)] == [2, 4, 8, 6, 0]  # 6 < 8: the backlog is gone
    assert consumer.count == 2 and consumer.filed == 20
    kept = Consumer(redis_client, Desk(sessions=db, config=CasesConfig()), stream=stream, name="kept", batch=2,
                    max_batch=2)  # the idle-priority consumer's: its transactions stay short
    _queue(redis_client, prefix, range(20, 26))
    assert [kept.step(block_ms=0) for _ in range(4)] == [2, 2, 2, 0]


def test_the_backlog_command_prints_the_backlog_and_the_bound(redis_server, redis_client, prefix):
    from typer.testing import CliRunner

    from fengkong.cli import app

    _queue(redis_client, prefix, range(3), at_ms=_redis_ms(redis_client) - 50_000)
    result = CliRunner().invoke(app, ["cases", "backlog"], env={
        "FENGKONG_REDIS_URL": redis_server.url, "FENGKONG_KEY_PREFIX": prefix, "FENGKONG_CASES_MAX_LAG_S": "40"})
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["unfiled"] == 3 and 50 <= out["oldest_age_s"] < 55 and out["max_lag_s"] == 40
    assert out["over_bound"] is True
