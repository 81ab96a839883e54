"""The webhooks through the running service: the admin routes, and the events the
service publishes itself (a deny decision, a rules reload, a merchant's grade change)
reaching a real receiver on loopback, signed with the subscription's secret."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from api_fixtures import ADMIN_KEY, DECIDE_KEY, RULES_DIR, Served, event_id, payment, settings
from fengkong.features.keys import audit_stream
from fengkong.webhooks import verify
from webhook_receiver import Receiver

PREFIX = "twh"


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(RULES_DIR, target)
    return target


@pytest.fixture(scope="module")
def api(redis_server, rules_dir):
    s = settings(redis_server.url, PREFIX, rules_dir=rules_dir, webhook_retry_base_s=0.05,
                 webhook_retry_max_s=0.2, webhook_max_attempts=2, webhook_poll_s=0.05)
    with Served(s) as served:
        yield served


@pytest.fixture
def admin(api):
    with api.client(ADMIN_KEY) as client:
        yield client


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def subscribe(admin, url: str, kinds: list[str]) -> dict:
    r = admin.post("/v1/webhooks", json={"url": url, "kinds": kinds})
    assert r.status_code == 201, r.text
    return r.json()


def of_kind(receiver: Receiver, kind: str) -> list[dict]:
    return [r for r in receiver.accepted() if r["headers"]["x-fengkong-event"] == kind]


def test_admin_routes_create_show_the_secret_once_list_get_pause_delete(api, admin, redis_client):
    sub = subscribe(admin, "https://hooks.example.com/fk", ["decision.deny", "case.opened"])
    assert sub["secret"].startswith("whsec_") and sub["active"] is True
    assert sub["stats"] == {"delivered": 0, "failed": 0, "dead_lettered": 0, "dead_letters": 0,
                            "last_status": None, "last_error": None, "last_attempt_at": None}
    got = admin.get(f"/v1/webhooks/{sub['id']}").json()
    assert got["secret"] is None and got["url"] == "https://hooks.example.com/fk"
    assert got["kinds"] == ["decision.deny", "case.opened"]
    assert sub["id"] in [s["id"] for s in admin.get("/v1/webhooks").json()]
    assert all(s["secret"] is None for s in admin.get("/v1/webhooks").json())
    assert admin.patch(f"/v1/webhooks/{sub['id']}", json={"active": False}).json()["active"] is False
    changes = [json.loads(v[b"record"]) for _, v in redis_client.xrange(f"{PREFIX}:v1:audit:changes")]
    mine = [x for x in changes if x.get("subscription_id") == sub["id"]]
    assert [x["action"] for x in mine] == ["webhook.create", "webhook.update"]
    assert sub["secret"] not in json.dumps(changes)
    assert admin.delete(f"/v1/webhooks/{sub['id']}").status_code == 204
    assert admin.get(f"/v1/webhooks/{sub['id']}").status_code == 404
    assert admin.delete(f"/v1/webhooks/{sub['id']}").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://hooks.example.com/x", "kinds": ["decision.deny"]}, "url"),
    ({"url": "hooks.example.com/x", "kinds": ["decision.deny"]}, "url"),
    ({"url": "https://hooks.example.com/x", "kinds": ["decision.allow"]}, "kinds"),
    ({"url": "https://hooks.example.com/x", "kinds": []}, "kinds"),
    ({"url": "https://hooks.example.com/x"}, "kinds"),
    ({"url": "https://hooks.example.com/x", "kinds": ["case.opened"], "secret": "mine"}, "secret"),
    ({"url": "https://hooks.example.com/x?card=4111111111111111", "kinds": ["decision.deny"]}, "url"),
    ({"url": "https://hooks.example.com/4111-1111-1111-1111/in", "kinds": ["decision.deny"]}, "url"),
    ({"url": "https://hooks.example.com/x", "kinds": ["decision.deny"], "description": "pan:4111.1111.1111.1111"},
     "description"),
])
def test_bad_subscriptions_get_422_naming_the_field(admin, body, field):
    r = admin.post("/v1/webhooks", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert "ftp://" not in r.text and "4111" not in r.text  # the refused value is not echoed
    assert "4111" not in admin.get("/v1/webhooks").text  # nor stored


def test_webhooks_need_the_admin_scope(api):
    with api.client(DECIDE_KEY) as c:
        assert c.get("/v1/webhooks").status_code == 403
        assert c.post("/v1/webhooks", json={"url": "https://x.example/h", "kinds": ["decision.deny"]}).status_code == 403
    with api.client(None) as anonymous:
        assert anonymous.get("/v1/webhooks").status_code == 401


def test_a_deny_decision_reaches_the_subscribed_receiver(api, admin, receiver):
    sub = subscribe(admin, receiver.url, ["decision.deny"])
    card = {"fingerprint": f"tok-wh-{event_id()}", "bin": "622202", "type": "debit", "issuer_country": "CN"}
    assert admin.post("/v1/lists/blocked_cards/entries", json={"entries": [card["fingerprint"]]}).status_code == 200
    with api.client(DECIDE_KEY) as c:
        allowed = c.post("/v1/decisions", json=payment()).json()
        denied = c.post("/v1/decisions", json=payment(card=card)).json()
    assert allowed["decision"] == "allow" and denied["decision"] == "deny"
    assert receiver.wait_for(lambda r: len(of_kind(r, "decision.deny")) == 1)
    [request] = of_kind(receiver, "decision.deny")
    assert verify(sub["secret"], request["headers"]["x-fengkong-signature"], request["body"])
    body = json.loads(request["body"])
    assert body["kind"] == "decision.deny" and body["data"]["decision_id"] == denied["decision_id"]
    assert body["data"]["decision"] == "deny" and body["data"]["event_id"] == denied["event_id"]
    assert body["data"]["reasons"] == [x["id"] for x in denied["reasons"]] and body["data"]["reasons"]
    assert request["headers"]["x-fengkong-delivery"] == f"{body['id']}.{sub['id']}"
    time.sleep(0.3)
    assert len(receiver.received) == 1  # the allow was not sent
    stats = admin.get(f"/v1/webhooks/{sub['id']}").json()["stats"]
    assert stats["delivered"] == 1 and stats["last_status"] == 200
    metrics = admin.get("/metrics").text
    assert 'fengkong_webhook_deliveries_total{result="delivered"}' in metrics
    admin.delete(f"/v1/webhooks/{sub['id']}")


def test_a_rules_reload_is_published_and_a_refused_one_is_not(api, admin, receiver, rules_dir):
    sub = subscribe(admin, receiver.url, ["rules.reloaded"])
    path = rules_dir / "channels.yaml"
    good = path.read_text(encoding="utf-8")
    path.write_text(good + "\n  - id: broken\n", encoding="utf-8")
    try:
        refused = admin.post("/v1/rules/reload").json()
        assert refused["ok"] is False and refused["problems"], refused  # the problem list is answered
    finally:
        path.write_text(good, encoding="utf-8")
    changes = [json.loads(v[b"record"]) for _, v in api.runtime.client.xrange(audit_stream(PREFIX, "changes"))]
    audited = [x for x in changes if x["action"] == "rules.reload"][-1]  # and the refusal is audited
    assert audited["actor"] == "analyst-ana" and audited["result"]["ok"] is False
    assert audited["result"]["problems"] == refused["problems"]
    same = admin.post("/v1/rules/reload").json()  # the live set's own files: a no-op, not published
    assert same["ok"] is True and same["changed"] is False and same["unchanged"] is True
    path.write_text(good + "\n# reviewed\n", encoding="utf-8")  # a change: a new set
    try:
        reloaded = admin.post("/v1/rules/reload").json()
    finally:
        path.write_text(good, encoding="utf-8")
    assert reloaded["ok"] is True and reloaded["changed"] is True
    assert receiver.wait_for(lambda r: len(of_kind(r, "rules.reloaded")) == 1)
    time.sleep(0.3)
    assert len(receiver.received) == 1  # the refused reload was not published
    data = json.loads(receiver.received[0]["body"])["data"]
    assert data["version"] == reloaded["version"] and data["previous_version"] == reloaded["previous_version"]
    assert data["actor"] == "analyst-ana"
    admin.delete(f"/v1/webhooks/{sub['id']}")


def test_a_merchant_grade_change_is_published_once(api, admin, receiver):
    sub = subscribe(admin, receiver.url, ["merchant.grade_changed"])
    merchant = f"m-wh-{event_id()}"
    assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "C", "reason": "chargebacks"}).status_code == 200
    assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "C"}).status_code == 200  # same grade
    assert admin.put(f"/v1/merchants/{merchant}", json={"mcc": "5411"}).status_code == 200  # no grade
    assert receiver.wait_for(lambda r: len(of_kind(r, "merchant.grade_changed")) == 1)
    time.sleep(0.3)
    assert len(receiver.received) == 1
    data = json.loads(receiver.received[0]["body"])["data"]
    assert data == {"merchant_id": merchant, "grade": "C", "previous_grade": "NEW", "reason": "chargebacks",
                    "source": "api", "actor": "analyst-ana"}
    admin.delete(f"/v1/webhooks/{sub['id']}")


def test_dead_letters_are_listed_and_redriven_over_the_api(api, admin, receiver):
    receiver.status = 500
    sub = subscribe(admin, receiver.url, ["merchant.grade_changed"])
    merchant = f"m-wh-{event_id()}"
    assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "B"}).status_code == 200
    url = f"/v1/webhooks/{sub['id']}"

    def dead() -> list:
        return admin.get(f"{url}/dead-letters").json()

    assert receiver.wait_for(lambda r: len(dead()) == 1), (dead(), admin.get(url).json(), receiver.received)
    [letter] = dead()
    assert letter["attempts"] == 2 and letter["last_status"] == 500 and letter["kind"] == "merchant.grade_changed"
    assert letter["body"]["data"]["merchant_id"] == merchant
    stats = admin.get(url).json()["stats"]
    assert (stats["failed"], stats["dead_lettered"], stats["dead_letters"]) == (2, 1, 1)
    bad = admin.post(f"{url}/dead-letters/redrive", json={"ids": ["not-an-id"]})
    assert bad.status_code == 422 and bad.json()["field"] == "ids[0]"
    receiver.status = 200
    assert admin.post(f"{url}/dead-letters/redrive", json={"ids": [letter["id"]]}).json()["redriven"] == 1
    assert receiver.wait_for(lambda r: len(r.accepted()) == 1)
    assert receiver.accepted()[0]["headers"]["x-fengkong-delivery"] == letter["delivery_id"]
    assert dead() == []
    assert admin.get(f"{url}/dead-letters").status_code == 200
    assert admin.get("/v1/webhooks/wh_00000000000000000000/dead-letters").status_code == 404
    admin.delete(url)


def test_without_a_subscriber_a_deny_queues_nothing_and_another_workers_subscription_is_seen(
        api, admin, receiver, redis_client):
    from fengkong.webhooks import Subscriptions
    from fengkong.webhooks.store import WebhookKeys

    outbox = WebhookKeys(PREFIX).outbox
    card = {"fingerprint": f"tok-wh-{event_id()}", "bin": "622202", "type": "debit", "issuer_country": "CN"}
    assert admin.post("/v1/lists/blocked_cards/entries", json={"entries": [card["fingerprint"]]}).status_code == 200
    assert admin.get("/v1/webhooks").json() == []  # every earlier test deleted its subscription
    def last_id() -> bytes | None:  # the outbox's last entry id ever (Redis 6.2 has no entries-added)
        return redis_client.xinfo_stream(outbox)["last-generated-id"] if redis_client.exists(outbox) else None

    last = last_id()
    with api.client(DECIDE_KEY) as c:
        assert c.post("/v1/decisions", json=payment(card=card)).json()["decision"] == "deny"
        time.sleep(0.2)
        assert last_id() == last  # nothing queued
        # a subscription made elsewhere (another worker, this very Redis): this worker's
        # delivery loop reads the wanted kinds again within about a second
        sub = Subscriptions(redis_client, PREFIX).create(url=receiver.url, kinds=["decision.deny"])
        time.sleep(1.5)
        denied = c.post("/v1/decisions", json=payment(card=card)).json()
    assert receiver.wait_for(lambda r: len(of_kind(r, "decision.deny")) == 1)
    assert json.loads(receiver.received[0]["body"])["data"]["decision_id"] == denied["decision_id"]
    assert last_id() not in (None, last)
    admin.delete(f"/v1/webhooks/{sub['id']}")
