"""The review queue through the real service (uvicorn in a thread, real Redis, real
SQLite and PostgreSQL): a review decision becomes a case, the routes change it with the
analyst's key, a fraud resolution makes the card's next payment count the report, and a
restart loses no queued case."""

from __future__ import annotations

import time

import pytest

from api_fixtures import DECIDE_KEY, KEYS, T0, Served, payment, settings
from fengkong.api.schemas import CaseDetailOut, CaseListOut, QueueOut

ANALYST_KEY = "test-analyst-key-0123456789"
CASE_KEYS = KEYS + [{"name": "analyst-bo", "key": ANALYST_KEY, "scopes": ["analyst"]}]
TOR = "185.220.101.7"  # a Tor exit in the bundled lists: the pack's answer is review


def served(redis_server, prefix, database_url, **kw):
    return Served(settings(redis_server.url, prefix, database_url=database_url, api_keys=CASE_KEYS, **kw))


def wait_case(c, card: str, count: int = 1, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/v1/cases", params={"entity_kind": "card", "entity_id": card})
        assert r.status_code == 200, r.text
        cases = CaseListOut.model_validate(r.json()).cases
        if cases and cases[0].decision_count >= count:
            return c.get(f"/v1/cases/{cases[0].id}").json()
        assert time.monotonic() < deadline, f"no case with {count} decisions for card {card}"
        time.sleep(0.05)


def test_a_review_decision_becomes_a_case_and_the_routes_change_it(redis_server, database_url):
    with served(redis_server, "tcase1", database_url) as api, api.client(DECIDE_KEY) as pay, \
            api.client(ANALYST_KEY) as desk:
        ev = payment(ip=TOR)
        card = ev["card"]["fingerprint"]
        out = pay.post("/v1/decisions", json=ev).json()
        assert out["decision"] == "review"
        allowed = payment()
        assert pay.post("/v1/decisions", json=allowed).json()["decision"] == "allow"
        case = CaseDetailOut.model_validate(wait_case(desk, card)).model_dump()
        assert case["status"] == "open" and case["queue"] == "proxy_ip"  # the Tor rule's tag (rules/cases)
        assert case["decisions"][0]["decision_id"] == out["decision_id"]
        assert case["decisions"][0]["reasons"][0]["values"]  # the feature values that fired
        assert case["decisions"][0]["amount_minor"] == 12000 and case["merchant_id"] == ev["merchant_id"]
        # a second review of the card within the window joins the case
        pay.post("/v1/decisions", json=payment(ip=TOR, card=ev["card"], occurred_at=T0.replace(minute=20).isoformat()))
        case = wait_case(desk, card, count=2)
        assert case["decision_count"] == 2
        time.sleep(0.5)  # the consumer had time to file the allowed payment, if it wrongly did
        nothing = desk.get("/v1/cases", params={"entity_id": allowed["card"]["fingerprint"]}).json()
        assert nothing["total"] == 0

        assert pay.get("/v1/cases").status_code == 403  # a decide key is not an analyst
        cid = case["id"]
        claimed = desk.post(f"/v1/cases/{cid}/claim")
        assert claimed.status_code == 200 and claimed.json()["assignee"] == "analyst-bo"
        bad = desk.post(f"/v1/cases/{cid}/resolve", json={"disposition": "maybe"})
        assert bad.status_code == 422 and bad.json()["field"] == "disposition"
        pan = desk.post(f"/v1/cases/{cid}/resolve", json={"disposition": "legit", "note": "card 4111 1111 1111 1111"})
        assert pan.status_code == 422 and pan.json()["field"] == "note" and "4111" not in pan.text
        done = desk.post(f"/v1/cases/{cid}/resolve", json={"disposition": "needs_info", "note": "call the bank"})
        assert done.status_code == 200 and done.json()["status"] == "resolved"
        again = desk.post(f"/v1/cases/{cid}/claim")
        assert again.status_code == 409 and "reopen it first" in again.json()["detail"]
        assert desk.post(f"/v1/cases/{cid}/reopen", json={"note": "more"}).json()["status"] == "open"
        assert desk.get("/v1/cases/999999999").status_code == 404
        assert desk.get("/v1/cases", params={"status": "pending"}).json()["field"] == "status"
        history = desk.get(f"/v1/cases/{cid}").json()["history"]
        assert [(h["actor"], h["action"]) for h in history] == [
            ("intake", "opened"), ("intake", "decision_added"), ("analyst-bo", "claimed"),
            ("analyst-bo", "resolved"), ("analyst-bo", "reopened")]
        queues = [QueueOut.model_validate(q) for q in desk.get("/v1/cases/queues").json()]
        assert next(q for q in queues if q.queue == "proxy_ip").open >= 1
        bulk = desk.post("/v1/cases/resolve", json={"case_ids": [cid, 999999999], "disposition": "legit"})
        assert bulk.status_code == 200 and bulk.json()["resolved"] == [cid]
        assert bulk.json()["refused"][0]["status"] == 404


def review_resolve_fraud_and_pay_again(pay, desk) -> dict:
    """A Tor payment (review) becomes a case; resolved as fraud, the card's next payment (a
    clean IP, later in event time) is denied with the report counted. Returns the first event."""
    ev = payment(ip=TOR)
    assert pay.post("/v1/decisions", json=ev).json()["decision"] == "review"
    case = wait_case(desk, ev["card"]["fingerprint"])
    r = desk.post(f"/v1/cases/{case['id']}/resolve", json={"disposition": "fraud", "note": "stolen card"})
    assert r.status_code == 200, r.text
    nxt = payment(card=ev["card"], occurred_at=T0.replace(hour=11).isoformat())
    out = pay.post("/v1/decisions", json=nxt).json()
    assert out["decision"] == "deny" and "theft.reported_card" in [x["id"] for x in out["reasons"]]
    record = pay.get(f"/v1/decisions/{out['decision_id']}").json()
    assert record["features"]["card.fraud_reports_30d"] == 1
    return ev


def test_fraud_resolution_counts_for_the_cards_next_payment(redis_server, database_url):
    with served(redis_server, "tcase2", database_url) as api, api.client(DECIDE_KEY) as pay, \
            api.client(ANALYST_KEY) as desk:
        ev = review_resolve_fraud_and_pay_again(pay, desk)
        labels = api.runtime.client.xrange(api.runtime.keys.labels)
        assert any(b'"disposition":"fraud"' in fields[b"record"] and ev["event_id"].encode() in fields[b"record"]
                   for _, fields in labels)


def test_a_restart_loses_no_queued_case(redis_server, database_url):
    cards = []
    with served(redis_server, "tcase3", database_url) as api, api.client(DECIDE_KEY) as pay:
        api.runtime.cases.consumer.stop()  # the worker's consumer is down; decisions still queue
        for _ in range(3):
            ev = payment(ip=TOR)
            cards.append(ev["card"]["fingerprint"])
            assert pay.post("/v1/decisions", json=ev).json()["decision"] == "review"
    with served(redis_server, "tcase3", database_url) as api, api.client(ANALYST_KEY) as desk:
        for card in cards:
            assert wait_case(desk, card)["decision_count"] == 1


@pytest.mark.parametrize("scope", ["admin"])
def test_admin_keys_work_the_queue_too(redis_server, scope, tmp_path):
    from api_fixtures import ADMIN_KEY

    with Served(settings(redis_server.url, "tcase4", data_dir=tmp_path)) as api, api.client(ADMIN_KEY) as c:
        assert c.get("/v1/cases").status_code == 200
        assert (tmp_path / "fengkong.sqlite3").exists()  # the embedded default: SQLite in the data dir


def test_with_the_workers_consumer_off_fengkong_cases_consume_files_them(redis_server, database_url, tmp_path):
    """... and its case.opened reaches the webhooks through the publisher it hands the runtime."""
    import os
    import signal
    import subprocess
    import sys

    from api_fixtures import ADMIN_KEY, ROOT, RULES_DIR
    from webhook_receiver import Receiver

    with served(redis_server, "tcase5", database_url, cases_consumer=False, webhook_poll_s=0.05) as api, \
            api.client(DECIDE_KEY) as pay, api.client(ANALYST_KEY) as desk, api.client(ADMIN_KEY) as admin, \
            Receiver() as receiver:
        assert api.runtime.cases.consumer._thread is None  # no consumer in the worker
        assert admin.post("/v1/webhooks", json={"url": receiver.url, "kinds": ["case.opened"]}).status_code == 201
        ev = payment(ip=TOR)
        assert pay.post("/v1/decisions", json=ev).json()["decision"] == "review"
        time.sleep(0.5)
        assert desk.get("/v1/cases", params={"entity_id": ev["card"]["fingerprint"]}).json()["total"] == 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("FENGKONG_")}
        env.update({"PYTHONPATH": str(ROOT), "FENGKONG_REDIS_URL": redis_server.url, "FENGKONG_KEY_PREFIX": "tcase5",
                    "FENGKONG_DATABASE_URL": database_url, "FENGKONG_RULES_DIR": str(RULES_DIR),
                    "FENGKONG_DATA_DIR": str(tmp_path)})
        log = open(tmp_path / "consume.log", "w")
        proc = subprocess.Popen([sys.executable, "-c", "from fengkong.cli import app; app()", "cases", "consume"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            case = wait_case(desk, ev["card"]["fingerprint"], timeout=60)
            assert case["decision_count"] == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            log.close()
        assert "1 filed" in (tmp_path / "consume.log").read_text()
        assert receiver.wait_for(lambda r: any(b["kind"] == "case.opened" for b in r.bodies()))
        opened = [b["data"] for b in receiver.bodies() if b["kind"] == "case.opened"]
        assert [(o["id"], o["entity"]["id"]) for o in opened] == [(case["id"], ev["card"]["fingerprint"])]


def test_a_review_decided_while_redis_is_down_still_becomes_a_case(tmp_path):
    """Every review must become a case, also one the failure path answered: with Redis
    down the worker cannot queue it, so it holds the item and queues it once Redis is back."""
    from api_fixtures import KillableRedis

    killable = KillableRedis().start()
    try:
        url = f"sqlite:///{tmp_path / 'cases.sqlite3'}"
        with Served(settings(killable.url, "tcase9", database_url=url, api_keys=CASE_KEYS, breaker_s=0.2)) as api, \
                api.client(DECIDE_KEY) as pay, api.client(ANALYST_KEY) as desk:
            killable.kill()
            ev = payment(ip=TOR)
            out = pay.post("/v1/decisions", json=ev).json()
            assert out["degraded"] and out["decision"] == "review", out
            killable.start()  # an empty Redis at the same URL, as after a restart without its data
            case = wait_case(desk, ev["card"]["fingerprint"], timeout=20)
            assert [d["decision_id"] for d in case["decisions"]] == [out["decision_id"]]
    finally:
        killable.close()
