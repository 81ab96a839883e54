"""Resolutions as labels on a real Redis feature store, and the intake consumer's
delivery guarantees (consumer group, a dead worker's pending items taken over)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from fengkong import pipeline
from fengkong.cases import service
from fengkong.cases.config import CasesConfig
from fengkong.cases.consumer import GROUP, Consumer
from fengkong.cases.filing import ingest
from fengkong.cases.intake import Intake, stream_key, unpacked
from fengkong.cases.labels import StoreLabels
from fengkong.db import migrate
from fengkong.db.engine import make_engine, session_factory
from fengkong.engine import load_ruleset
from fengkong.events import OUTCOME_TYPES, EventType, event_to_flat, parse_event
from fengkong.features.keys import labels_stream
from fengkong.features.offline import offline_features

RULES = Path(__file__).resolve().parents[1] / "rules"
T0 = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)


def pay(n: int, card: str, minutes: float, ip: str = "185.220.101.7") -> dict:
    return {"event_id": f"lab-{card}-{n}", "type": "payment", "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
            "merchant_id": f"m-{card}", "user_id": f"u-{card}", "amount": "120.00", "channel": "quick_pay",
            "card": {"fingerprint": card, "bin": "622202", "type": "debit", "issuer_country": "CN"},
            "ip": ip, "device_id": f"d-{card}"}


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def rules():
    ruleset = load_ruleset(RULES)
    yield ruleset
    ruleset.close()


def test_legit_confirmed_is_an_outcome_the_store_and_the_twin_accept(store, ipintel, list_specs):
    assert EventType.LEGIT_CONFIRMED in OUTCOME_TYPES
    p = parse_event(pay(1, "twin1", 0))
    legit = parse_event({"event_id": "lab-twin1-1:legit_confirmed", "type": "legit_confirmed",
                         "occurred_at": T0.isoformat(), "refers_to": p.event_id, "card": {"fingerprint": "twin1"}})
    fraud = parse_event({"event_id": "lab-twin1-1:fraud_report", "type": "fraud_report",
                         "occurred_at": (T0 + timedelta(minutes=1)).isoformat(), "refers_to": p.event_id,
                         "card": {"fingerprint": "twin1"}, "merchant_id": "m-twin1"})
    nxt = parse_event(pay(2, "twin1", 30))
    online = [store.process(e) for e in (p, legit, fraud, nxt)]
    assert not online[1].duplicate  # counted (once), not refused
    offline = offline_features(pd.DataFrame([event_to_flat(e) for e in (p, legit, fraud, nxt)]), ipintel=ipintel,
                               lists=list_specs).set_index("event.event_id")
    assert online[3].features["card.fraud_reports_30d"] == 1
    assert offline.loc[nxt.event_id, "card.fraud_reports_30d"] == 1
    assert online[0].features["card.fraud_reports_30d"] == offline.loc[p.event_id, "card.fraud_reports_30d"] == 0


def test_a_fraud_resolution_is_counted_for_the_cards_next_decision(db, store, redis_client, prefix, rules):
    desk = service.Desk(sessions=db, config=CasesConfig(),
                        labels=StoreLabels(store, redis_client, prefix=prefix, maxlen=1000))
    first = parse_event(pay(1, "lab-c1", 0))
    decision, features = pipeline.decide(first, store=store, rules=rules)
    assert decision.decision == "review" and features["card.fraud_reports_30d"] == 0
    record = {"decision_id": "d_lab1", "decision": decision.decision, "score": decision.score, "risk": None,
              "reasons": [r.to_dict() for r in decision.reasons]}
    from fengkong.cases.intake import item_for

    with db() as session, session.begin():
        case, opened = ingest(session, item_for(record, first), desk.config)
        case_id = case.id
    service.resolve(desk, case_id=case_id, actor="ana", disposition="fraud", note="cardholder denies it")
    nxt = parse_event(pay(2, "lab-c1", 90, ip="183.1.2.3"))
    decision, features = pipeline.decide(nxt, store=store, rules=rules)
    assert features["card.fraud_reports_30d"] == 1
    assert decision.decision == "deny" and "theft.reported_card" in [r.id for r in decision.reasons]
    # reopened and resolved as fraud again: the store counts the report once
    service.reopen(desk, case_id=case_id, actor="bo")
    service.resolve(desk, case_id=case_id, actor="bo", disposition="fraud")
    _, features = pipeline.decide(parse_event(pay(3, "lab-c1", 120, ip="183.1.2.3")), store=store, rules=rules)
    assert features["card.fraud_reports_30d"] == 1
    service.reopen(desk, case_id=case_id, actor="bo")
    service.resolve(desk, case_id=case_id, actor="bo", disposition="legit")
    entries = [json.loads(f[b"record"]) for _, f in redis_client.xrange(labels_stream(prefix))]
    assert [(e["type"], e["disposition"], e["caller"], e["event"]["refers_to"]) for e in entries] == [
        ("fraud_report", "fraud", "ana", first.event_id), ("fraud_report", "fraud", "bo", first.event_id),
        ("legit_confirmed", "legit", "bo", first.event_id)]


def _item(n: int) -> tuple[dict, object]:
    event = parse_event(pay(n, f"q{n}", n))
    record = {"decision_id": f"d_q{n}", "decision": "review", "score": 50, "risk": 0.3,
              "reasons": [{"id": "ip.tor_exit", "score": 50, "tags": ["proxy_ip"], "values": {"ip.is_tor": True}}]}
    return record, event


def test_the_consumer_takes_over_a_dead_workers_pending_items(db, redis_client, prefix):
    desk = service.Desk(sessions=db, config=CasesConfig())
    intake = Intake(desk.config, prefix=prefix)
    for n in range(4):
        command = intake.command(*_item(n))
        assert command is not None
        redis_client.execute_command(*unpacked(command))
    quiet = {"decision_id": "d_allow", "decision": "allow", "score": 0, "risk": None, "reasons": []}
    assert intake.command(quiet, parse_event(pay(9, "q9", 9))) is None  # an allow opens no case
    stream = stream_key(prefix)
    dead = Consumer(redis_client, desk, stream=stream, name="dead")
    dead.ensure_group()
    taken = redis_client.xreadgroup(GROUP, "dead", {stream: ">"}, count=2)  # read, never acknowledged
    assert len(taken[0][1]) == 2
    alive = Consumer(redis_client, desk, stream=stream, name="alive", claim_idle_ms=0)
    assert alive.step(block_ms=0) == 2  # the dead worker's two, taken over
    assert alive.step(block_ms=0) == 2  # the two nobody had read
    assert alive.step(block_ms=0) == 0
    assert redis_client.xpending(stream, GROUP)["pending"] == 0
    listed = service.list_cases(desk)["cases"]
    assert sorted(c["entity"]["id"] for c in listed) == [f"q{n}" for n in range(4)]
    # a redelivered item (filed, then the worker died before the ack) is filed once
    redis_client.execute_command(*unpacked(intake.command(*_item(0))))
    assert alive.step(block_ms=0) == 1
    assert service.list_cases(desk)["total"] == 4 and alive.filed == 5


def test_a_backlog_longer_than_any_cap_loses_no_review_and_filed_items_leave_the_stream(db, redis_client, prefix):
    """Every review must become a case: with no consumer running (workers stopped, the
    database away), the intake keeps every queued item however many, and a filed item is
    deleted from the stream, so the stream holds only what is still to file."""
    desk = service.Desk(sessions=db, config=CasesConfig())
    intake = Intake(desk.config, prefix=prefix)
    backlog = 2_000  # more than any length cap Redis' approximate trimming would keep (the old cap was >= 100)
    with redis_client.pipeline(transaction=False) as pipe:
        for n in range(backlog):
            pipe.execute_command(*unpacked(intake.command(*_item(n))))
        pipe.execute()
    stream = stream_key(prefix)
    assert redis_client.xlen(stream) == backlog
    consumer = Consumer(redis_client, desk, stream=stream, name="late", linger_s=0)
    while consumer.step(block_ms=0):
        pass
    assert consumer.filed == backlog and consumer.dropped == 0
    assert service.list_cases(desk)["total"] == backlog
    assert redis_client.xlen(stream) == 0  # filed items do not linger in Redis
    assert redis_client.xpending(stream, GROUP)["pending"] == 0


def test_a_locked_database_leaves_the_items_pending_and_they_are_filed_after(tmp_path, redis_client, prefix):
    """SQLite locked by another process past its busy timeout (or full: the same
    OperationalError) is the database away, not a bad item: nothing is acknowledged or
    dropped, and everything is filed once the lock is gone."""
    import sqlite3

    path = tmp_path / "cases.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    desk = service.Desk(sessions=session_factory(engine), config=CasesConfig())
    intake = Intake(desk.config, prefix=prefix)
    for n in range(5):
        redis_client.execute_command(*unpacked(intake.command(*_item(100 + n))))
    stream = stream_key(prefix)
    consumer = Consumer(redis_client, desk, stream=stream, name="c", retry_s=0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert consumer.step(block_ms=0) == 0
        assert (consumer.filed, consumer.dropped) == (0, 0)
        assert redis_client.xpending(stream, GROUP)["pending"] == 5 and redis_client.xlen(stream) == 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert consumer.step(block_ms=0) == 5  # its own pending items, read again at once
    assert service.list_cases(desk)["total"] == 5 and consumer.dropped == 0
    assert redis_client.xlen(stream) == 0
    engine.dispose()


def test_a_full_disk_under_the_database_leaves_the_items_pending(tmp_path, redis_client, prefix):
    """SQLite out of room ("database or disk is full", here by SQLite's own page limit on
    the consumer's connections) is the database away too: the items wait, none dropped."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'full.sqlite3'}"
    migrate.upgrade(make_engine(url))
    full = make_engine(url)

    @sa.event.listens_for(full, "connect")
    def _no_room(dbapi_connection, _record):  # no page beyond those the file has now
        cursor = dbapi_connection.cursor()
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    intake = Intake(CasesConfig(), prefix=prefix)
    for n in range(200):  # enough rows to need pages the file does not have
        redis_client.execute_command(*unpacked(intake.command(*_item(300 + n))))
    stream = stream_key(prefix)
    consumer = Consumer(redis_client, service.Desk(sessions=session_factory(full), config=CasesConfig()),
                        stream=stream, name="c", retry_s=0, batch=200)
    assert consumer.step(block_ms=0) == 0
    assert (consumer.filed, consumer.dropped) == (0, 0)
    assert redis_client.xpending(stream, GROUP)["pending"] == 200
    full.dispose()
    roomy = make_engine(url)
    desk = service.Desk(sessions=session_factory(roomy), config=CasesConfig())
    consumer.desk = desk
    while consumer.step(block_ms=0):
        pass
    assert consumer.filed == 200 and service.list_cases(desk)["total"] == 200
    roomy.dispose()
