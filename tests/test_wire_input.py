"""The strict reading of the wire, through real HTTP on both endpoints that take an
event: an overflowing or oddly written amount, a time out of range, JSON nested
deep, and card numbers written with separators or inside ids all get 400/422
naming the field, never a policy's answer (200 allow) and never a 500, and
nothing of them reaches Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from api_fixtures import DECIDE_KEY, REPORT_KEY, Served, event_id, payment, settings

PAN = "4111111111111111"
ENDPOINTS = [("/v1/decisions", DECIDE_KEY), ("/v1/events", REPORT_KEY)]


def refund(**overrides: Any) -> dict[str, Any]:
    """An outcome event for /v1/events, built on a plain payment's fields."""
    ev = payment(type="refund", refers_to=event_id("pay"))
    ev.update(overrides)
    return ev


def body_for(endpoint: str, **overrides: Any) -> dict[str, Any]:
    return payment(**overrides) if endpoint == "/v1/decisions" else refund(**overrides)


@pytest.fixture(scope="module")
def wire_api(redis_server):
    """An app with its own key prefix that only ever receives refused requests."""
    with Served(settings(redis_server.url, "twire")) as served:
        yield served


CASES = [
    ({"amount": "1E+999999"}, "amount"),
    ({"amount": "1e-999999999"}, "amount"),
    ({"amount": "４９.９０"}, "amount"),
    ({"amount": "1_000"}, "amount"),
    ({"amount": "1e2"}, "amount"),
    ({"occurred_at": "0001-01-01T00:00:00+00:00"}, "occurred_at"),
    ({"occurred_at": "9999-12-31T23:59:59+00:00"}, "occurred_at"),
    ({"device_id": "4111.1111.1111.1111"}, "device_id"),
    ({"device_id": "pan:4111111111111111"}, "device_id"),
    ({"event_id": "e-4111111111111111"}, "event_id"),
    ({"user_id": "4111_1111_1111_1111"}, "user_id"),
    ({"card": {"fingerprint": "tok-1", "4111/1111/1111/1111": "x"}}, "card.<key>"),
]


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
@pytest.mark.parametrize("change, field", CASES)
def test_bad_input_is_a_4xx_naming_the_field_on_both_endpoints(wire_api, endpoint, key, change, field):
    with wire_api.client(key) as c:
        r = c.post(endpoint, content=json.dumps(body_for(endpoint, **change)),
                   headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text  # never 200 (a policy's allow) nor 500
    out = r.json()
    assert out["field"] == field and out["detail"].startswith(field)
    assert "decision" not in out and "degraded" not in out
    assert "1111" not in r.text and "4111" not in r.text


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
@pytest.mark.parametrize("depth", [33, 968, 1020, 5000])
def test_deep_json_is_refused_before_it_is_parsed(wire_api, endpoint, key, depth):
    ev = json.dumps(body_for(endpoint))
    body = ev[:-1] + ', "note": ' + "[" * depth + "]" * depth + "}"
    with wire_api.client(key) as c:
        t0 = time.perf_counter()
        r = c.post(endpoint, content=body, headers={"content-type": "application/json"})
        took = time.perf_counter() - t0
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "body" and "32 levels" in r.json()["detail"]
    assert took < 1.0


@pytest.mark.parametrize("endpoint, key", ENDPOINTS)
def test_brackets_inside_strings_do_not_count_as_nesting(wire_api, endpoint, key):
    with wire_api.client(key) as c:
        r = c.post(endpoint, json=body_for(endpoint, device_id="[" * 100))
    assert r.status_code == 422 and r.json()["field"] == "device_id"  # the id pattern refuses it, not nesting


def test_nothing_refused_reached_redis(wire_api, redis_client):
    """Runs after the refusals above (same module app): only the list seeded at start exists."""
    seeded = {b"twire:v1:{list:proxy_ips}:members", b"twire:v1:{list:proxy_ips}:ranges"}
    assert set(redis_client.keys("twire:*")) <= seeded
    with wire_api.client(DECIDE_KEY) as c:
        metrics = c.get("/metrics").text
    assert "fengkong_decisions_total{" not in metrics


def test_the_same_service_still_decides_plain_events(wire_api):
    with wire_api.client(DECIDE_KEY) as c:
        r = c.post("/v1/decisions", json=payment(amount="49.90", event_id=f"ORD-20261125-{time.time_ns() % 10**8:08d}"))
    assert r.status_code == 200 and not r.json()["degraded"], r.text
