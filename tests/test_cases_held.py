"""A review whose case item Redis cannot take is held until it can, and the hold outlives
the worker: Redis down and the whole service killed with kill -9, or the decision's
write-behind batch refused by Redis."""

from __future__ import annotations

import json
import time

import hiredis

from api_fixtures import DECIDE_KEY, KillableRedis, Served, payment, settings
from fengkong.cases.intake import stream_key
from serve_process import ServeProcess, wait_until
from test_cases_api import ANALYST_KEY, CASE_KEYS, TOR, wait_case


def _cases(c, card: str) -> list:
    r = c.get("/v1/cases", params={"entity_kind": "card", "entity_id": card})
    assert r.status_code == 200, r.text
    return r.json()["cases"]


def test_a_review_held_while_redis_is_down_survives_kill_9_of_the_service(tmp_path):
    """Redis is down, a review is answered degraded and its item held; the service is then
    killed (SIGKILL to the whole process group) before Redis returns. Redis comes back
    empty, `fengkong serve` starts again on the same data directory: the case opens."""
    killable = KillableRedis().start()
    data = tmp_path / "data"
    env = {"FENGKONG_REDIS_URL": killable.url, "FENGKONG_KEY_PREFIX": "theld1", "FENGKONG_BREAKER_S": "0.2"}
    first = ServeProcess(data, tmp_path / "serve.log", workers=2, env=env)
    second = ServeProcess(data, tmp_path / "serve2.log", workers=2, env=env)
    try:
        first.start()
        killable.kill()
        cards, ids = [], []
        with first.client() as c:
            for _ in range(3):
                ev = payment(ip=TOR)
                out = c.post("/v1/decisions", json=ev).json()
                assert out["degraded"] and out["decision"] == "review", out
                cards.append(ev["card"]["fingerprint"])
                ids.append(out["decision_id"])
        first.kill_everything()
        killable.start()  # empty: nothing of the outage reached it
        second.start()
        with second.client() as c:
            assert wait_until(lambda: all(_cases(c, card) for card in cards), 30), second.output()
            for card, decision_id in zip(cards, ids):
                found = _cases(c, card)
                assert len(found) == 1 and found[0]["decision_count"] == 1
        assert not list((data / "cases" / "held").glob("held-*.jsonl"))  # queued, then deleted
    finally:
        first.close()
        second.close()
        killable.close()


def test_a_review_whose_write_behind_redis_refuses_is_held_and_becomes_a_case(redis_server, redis_client,
                                                                             database_url, tmp_path):
    """The decision was made on real features; its write-behind batch (record, pointer,
    audit entry, case item) is refused at the case item (the intake stream's key holds a
    string: XADD gets WRONGTYPE). The item is held like one of a degraded decision and
    queued once Redis takes it."""
    prefix = "theld2"
    with Served(settings(redis_server.url, prefix, database_url=database_url, api_keys=CASE_KEYS, breaker_s=0.2,
                         data_dir=tmp_path)) as api, api.client(DECIDE_KEY) as pay, api.client(ANALYST_KEY) as desk:
        redis_client.set(stream_key(prefix), "not a stream")
        ev = payment(ip=TOR)
        out = pay.post("/v1/decisions", json=ev).json()
        assert not out["degraded"] and out["decision"] == "review", out
        assert wait_until(lambda: len(api.runtime.intake.held) == 1, 5)
        time.sleep(0.5)
        redis_client.delete(stream_key(prefix))
        case = wait_case(desk, ev["card"]["fingerprint"], timeout=20)
        assert [d["decision_id"] for d in case["decisions"]] == [out["decision_id"]]


def test_held_items_are_bounded_written_before_the_answer_and_deleted_once_queued(redis_client, prefix, tmp_path):
    """At the bound a new item is dropped and counted (the held ones stay); each held item
    is a line of the worker's file until `release` queues it, then the file is gone."""
    from fengkong.cases.config import CasesConfig
    from fengkong.cases.intake import Intake

    intake = Intake(CasesConfig(), prefix=prefix, hold_max=2, hold_dir=tmp_path / "held")
    commands = [("XADD", stream_key(prefix), "*", "item", f'{{"decision_id":"d{n}"}}') for n in range(3)]
    for n, command in enumerate(commands):
        intake.hold_command(command, f"d{n}")
    assert intake.lost == 1 and len(intake.held) == 2
    files = list((tmp_path / "held").glob("held-*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 2  # on disk before any fsync
    assert intake.release(redis_client) == 2
    assert [f[b"item"] for _, f in redis_client.xrange(stream_key(prefix))] == [b'{"decision_id":"d0"}',
                                                                                b'{"decision_id":"d1"}']
    assert not list((tmp_path / "held").glob("held-*.jsonl")) and len(intake.held) == 0
    intake.close()


def test_a_review_no_worker_can_hold_is_counted_in_metrics(tmp_path):
    """A worker whose cases database could not be opened holds nothing: a review it cannot
    queue (Redis down) is lost, and counted in /metrics, not only logged."""
    from test_api_faults import _metric

    killable = KillableRedis().start()
    try:
        nowhere = "postgresql://fk:fk@127.0.0.1:1/cases"  # no server listens on port 1
        with Served(settings(killable.url, "theld4", database_url=nowhere, breaker_s=0.2,
                             data_dir=tmp_path)) as api, api.client(DECIDE_KEY) as pay:
            assert api.runtime.cases is None
            killable.kill()
            out = pay.post("/v1/decisions", json=payment(ip=TOR)).json()
            assert out["degraded"] and out["decision"] == "review", out
            assert _metric(pay.get("/metrics").text, "fengkong_case_items_lost_total") == 1
    finally:
        killable.close()


def _review(n: int, score: int = 50) -> tuple[dict, object]:
    from fengkong.events import parse_event

    event = parse_event({"event_id": f"h{n}", "type": "payment", "occurred_at": "2026-11-25T09:00:05.397000+08:00",
                         "merchant_id": "m1", "user_id": "u1", "amount": "12.50", "currency": "CNY",
                         "card": {"fingerprint": "c1"}})
    record = {"decision_id": f"d_h{n}", "decision": "review", "score": score, "risk": 0.3,
              "reasons": [{"id": "ip.tor_exit", "description": "d", "action": "review", "score": 50,
                           "mode": "enforce", "tags": ["proxy_ip"], "values": {"ip.is_tor": True}}]}
    return record, event


def test_the_queued_item_is_what_hiredis_packs_and_held_reads_back(redis_client, prefix, tmp_path):
    """`Intake.command` packs the XADD itself (RESP): byte for byte hiredis' packing of the
    arguments, for a prefix not ASCII and an item only the standard library's JSON writes;
    held, it is kept as those arguments and queued as the same item."""
    from fengkong.cases.config import CasesConfig
    from fengkong.cases.intake import Intake, item_for, item_text, unpacked

    for key_prefix, score in ((prefix, 50), ("租户" + prefix, 2 ** 70)):  # 2**70: orjson refuses it
        intake = Intake(CasesConfig(), prefix=key_prefix, hold_dir=tmp_path / key_prefix)
        record, event = _review(1, score)
        command = intake.command(record, event)
        expected = ("XADD", stream_key(key_prefix), "*", "item", item_text(item_for(record, event)))
        assert command == hiredis.pack_command(expected)
        assert unpacked(command) == expected
        assert json.loads(expected[4])["score"] == score and json.loads(expected[4])["type"] == "payment"
        intake.hold_command(command, "d_h1")  # as the write-behind holds what Redis refused
        assert list(intake.held.items) == [expected]
        assert intake.release(redis_client) == 1
        assert [f[b"item"] for _, f in redis_client.xrange(stream_key(key_prefix))] == [expected[4].encode()]
        intake.close()
