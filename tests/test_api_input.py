"""Bad input: malformed JSON, wrong types, unknown enum values, oversized bodies and
card numbers get a 4xx naming the field, echo nothing, and touch no counter; and a
property test: no generated body gets a 5xx from any endpoint that takes one."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from api_fixtures import ADMIN_KEY, DECIDE_KEY, REPORT_KEY, Served, payment, settings

PAN = "4111111111111111"  # Luhn-valid test card number


@pytest.fixture(scope="module")
def quiet_api(redis_server):
    """An app with its own prefix that only ever receives refused requests."""
    with Served(settings(redis_server.url, "tbad", max_body_bytes=4096)) as served:
        yield served


@pytest.mark.parametrize("body, status, field", [
    (b'{"event_id": "x", "type": ', 400, "body"),
    (b"", 400, "body"),
    (b"[1, 2]", 422, "<event>"),
    (json.dumps(payment(amount=12.5)).encode(), 422, "amount"),
    (json.dumps(payment(amount=True)).encode(), 422, "amount"),
    (json.dumps(payment(amount=2**70)).encode(), 422, "amount"),  # found by the property test below
    (json.dumps(payment(occurred_at="yesterday")).encode(), 422, "occurred_at"),
    (json.dumps(payment(occurred_at="2026-11-25T10:00:00")).encode(), 422, "occurred_at"),
    (json.dumps(payment(channel="carrier_pigeon")).encode(), 422, "channel"),
    (json.dumps(payment(type="gift")).encode(), 422, "type"),
    (json.dumps(payment(card={"fingerprint": "t1", "type": "charge"})).encode(), 422, "card.type"),
    (json.dumps(payment(ip="999.1.1.1")).encode(), 422, "ip"),
    (json.dumps(payment(merchant_id=None)).encode(), 422, "merchant_id"),
    (json.dumps(payment(nickname="bob")).encode(), 422, "nickname"),
    (json.dumps(payment(card={"fingerprint": PAN})).encode(), 422, "card.fingerprint"),
    (json.dumps(payment(user_id=f"{PAN[:4]} {PAN[4:8]} {PAN[8:12]} {PAN[12:]}")).encode(), 422, "user_id"),
    (json.dumps(payment(device_id=int(PAN))).encode(), 422, "device_id"),
    (json.dumps(payment(refers_to="x" * 200)).encode(), 422, "refers_to"),
])
def test_bad_events_get_a_4xx_naming_the_field_and_never_echo_it(quiet_api, body, status, field):
    with quiet_api.client(DECIDE_KEY) as c:
        r = c.post("/v1/decisions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(field)
    assert PAN not in r.text and PAN[:8] not in r.text


def test_oversized_bodies_get_413_naming_the_limit_before_parsing(quiet_api):
    big = json.dumps(payment(user_id="u" * 100, pad=["x" * 100] * 60)).encode()
    assert len(big) > 4096
    with quiet_api.client(DECIDE_KEY) as c:
        r = c.post("/v1/decisions", content=big)
        assert r.status_code == 413 and "4096" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            for i in range(0, len(big), 512):
                yield big[i:i + 512]

        r = c.post("/v1/decisions", content=chunks())
        assert r.status_code == 413
    with quiet_api.client(ADMIN_KEY) as a:
        r = a.post("/v1/lists/blocked_users/entries", json={"entries": ["u" * 100] * 60})
        assert r.status_code == 413
        # streamed to a route whose body FastAPI reads for its model: still 413, not FastAPI's 400
        listed = json.dumps({"entries": ["u" * 100] * 60}).encode()
        r = a.post("/v1/lists/blocked_users/entries", content=iter([listed[:3000], listed[3000:]]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json() == {"detail": "body: is larger than the limit of 4096 bytes",
                                                     "field": "body"}


def test_refused_requests_touch_no_counter(quiet_api, redis_client):
    """Runs after the refusals above (same module app): no feature, dedup, claim or
    audit key exists under its prefix (only the list seeded at start), and no decision was counted."""
    with quiet_api.client(DECIDE_KEY) as c:
        c.post("/v1/decisions", json=payment(card={"fingerprint": PAN}))
        c.post("/v1/decisions", json=payment(channel="nope"))
        metrics = c.get("/metrics").text
    seeded = {b"tbad:v1:{list:proxy_ips}:members", b"tbad:v1:{list:proxy_ips}:ranges"}  # loaded at start
    assert set(redis_client.keys("tbad:*")) <= seeded
    assert "fengkong_decisions_total{" not in metrics
    assert 'fengkong_rejected_requests_total{status="422"}' in metrics


# --- property test: nothing gets a 5xx ----------------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
_fields = st.sampled_from(["event_id", "type", "occurred_at", "merchant_id", "user_id", "amount", "currency",
                           "channel", "card", "ip", "device_id", "merchant_mcc", "refers_to", "extra"])
_types = st.sampled_from(["payment", "signup", "login", "card_bind", "refund", "chargeback", "withdrawal",
                          "fraud_report", "settlement", "decline"])


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(_json)).encode()
    ev = payment(type=draw(_types))
    for _ in range(draw(st.integers(0, 3))):
        field, action = draw(_fields), draw(st.integers(0, 3))
        if action == 0:
            ev.pop(field, None)
        elif action == 1:
            ev[field] = draw(_json)
        elif action == 2:
            ev[field] = PAN
        else:
            ev["card"] = {"fingerprint": draw(st.text(max_size=12)), "bin": draw(st.text(max_size=9)),
                          "type": draw(st.sampled_from(["credit", "debit", "x"]))}
    if draw(st.booleans()):
        ev["event_id"] = draw(st.sampled_from(["dup-1", "dup-2"]))  # collide: exercise 409 and duplicates
    return json.dumps(ev).encode()


@pytest.fixture(scope="module")
def fuzz_clients(redis_server):
    with Served(settings(redis_server.url, "tfuzz")) as served:
        with served.client(ADMIN_KEY) as admin, served.client(REPORT_KEY) as rep:
            yield admin, rep


@hsettings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), endpoint=st.sampled_from(["/v1/decisions", "/v1/events", "/v1/rules/dry-run",
                                                "/v1/lists/blocked_ips/entries"]))
def test_no_generated_body_gets_a_5xx(fuzz_clients, body, endpoint):
    admin, rep = fuzz_clients
    client: httpx.Client = rep if endpoint == "/v1/events" else admin
    r = client.post(endpoint, content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text)
    assert PAN not in r.text
    if r.status_code >= 400:
        assert r.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("PUT", "/v1/merchants/m-pan", {"grade": "B", "reason": "card 4111 1111 1111 1111 was stolen"}, "reason"),
    ("PUT", "/v1/merchants/4111111111111111", {"grade": "B"}, "merchant_id"),
    ("POST", "/v1/lists/blocked_cards/entries", {"entries": ["tok-ok", "4111-1111-1111-1111"]}, "entries"),
    ("POST", "/v1/lists/blocked_users/entries", {"entries": ["u-1"], "reason": "pan:4111111111111111"}, "reason"),
])
def test_admin_changes_refuse_a_card_number_without_repeating_it(quiet_api, redis_client, method, path, body, field):
    """List and merchant changes are stored and audited like events: a PAN in an entry, a
    reason or a path id is a 422 naming the field, never stored, never echoed."""
    with quiet_api.client(ADMIN_KEY) as admin:
        r = admin.request(method, path, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field
        assert "4111" not in r.text
        stored = b"".join(k for k in redis_client.scan_iter("tbad:*"))
        assert b"4111" not in stored
