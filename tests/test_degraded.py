"""Degraded mode is not blind: with Redis killed or frozen, what needs no stored
state still decides from the worker's snapshot of the lists and merchant profiles
(a blacklisted card is denied, a Tor IP gets its rule's action, a payment over the
merchant's limit is caught), and the failure policy answers only the rest, naming
the features it could not read."""

from __future__ import annotations

import time

import pytest

from api_fixtures import ADMIN_KEY, DECIDE_KEY, KillableRedis, Served, event_id, payment, settings
from fengkong.events import parse_event


@pytest.fixture
def killable():
    server = KillableRedis().start()
    yield server
    server.close()


def _decide(client, ev: dict) -> dict:
    r = client.post("/v1/decisions", json=ev)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(out: dict) -> list[str]:
    return [r["id"] for r in out["reasons"]]


def test_lists_tor_and_limits_still_decide_while_redis_is_down(killable):
    with Served(settings(killable.url, "tdeg", breaker_s=0.2)) as api, \
            api.client(DECIDE_KEY) as c, api.client(ADMIN_KEY) as admin:
        card = f"tok-stolen-{event_id()}"
        assert admin.post("/v1/lists/blocked_cards/entries", json={"entries": [card]}).status_code == 200
        assert admin.post("/v1/lists/blocked_ips/entries", json={"entries": ["198.51.100.0/24"]}).status_code == 200
        graded = f"m-graded-{event_id()}"
        assert admin.put(f"/v1/merchants/{graded}", json={"grade": "B", "single_limit_minor": 10_000}).status_code == 200
        blocked = payment()
        blocked["card"]["fingerprint"] = card
        assert _decide(c, blocked)["decision"] == "deny"  # Redis up: the store's own answer
        killable.kill()

        blocked = payment()
        blocked["card"]["fingerprint"] = card
        out = _decide(c, blocked)
        assert out["degraded"] and out["decision"] == "deny" and "blacklist.card" in _ids(out), out
        in_range = _decide(c, payment(ip="198.51.100.77"))
        assert in_range["decision"] == "deny" and "blacklist.ip" in _ids(in_range), in_range
        tor = _decide(c, payment(ip="185.220.101.7"))
        assert tor["degraded"] and tor["decision"] == "review" and "ip.tor_exit" in _ids(tor), tor
        over = _decide(c, payment(merchant_id=graded, amount="150.00"))  # its own limit: 100.00
        assert over["decision"] == "review" and "limits.over_single_limit" in _ids(over), over
        assert over["merchant_grade"] == "B"
        within = _decide(c, payment(merchant_id=graded, amount="50.00"))
        assert within["decision"] == "allow" and within["reasons"] == [], within

        plain = _decide(c, payment())
        assert plain["degraded"] and plain["decision"] == "allow" and plain["reasons"] == []
        assert "feature store" in plain["degraded_reason"]
        missing = set(plain["missing_features"])
        assert missing and all(not n.startswith(("lists.", "event.")) for n in missing), missing
        assert not missing & {"ip.is_tor", "ip.is_hosting", "ip.country_mismatch_card", "merchant.grade"}
        assert any(n.startswith("card.") for n in missing) and any(n.startswith("user.") for n in missing)


def test_fail_closed_never_softens_what_the_snapshot_rules_decided(killable):
    with Served(settings(killable.url, "tdegc", failure_policy="fail_closed", deadline_ms=50, breaker_s=0.2)) as api, \
            api.client(DECIDE_KEY) as c, api.client(ADMIN_KEY) as admin:
        user = f"u-banned-{event_id()}"
        assert admin.post("/v1/lists/blocked_users/entries", json={"entries": [user]}).status_code == 200
        killable.freeze()  # alive socket, no answers: only the budget ends the wait
        try:
            t0 = time.perf_counter()
            out = _decide(c, payment(user_id=user))
            assert time.perf_counter() - t0 < 1.0
            assert out["degraded"] and out["decision"] == "deny" and "blacklist.user" in _ids(out), out
            plain = _decide(c, payment())
            assert plain["degraded"] and plain["decision"] == "review" and plain["missing_features"]
        finally:
            killable.thaw()


def test_another_worker_picks_up_a_list_change_and_enforces_it_while_redis_is_down(killable):
    """Two apps on one Redis stand for two workers: the change goes through the first,
    the second learns it from the version key on its next refresh."""
    base = dict(breaker_s=0.2, snapshot_refresh_s=0.05)
    with Served(settings(killable.url, "tdeg2", **base)) as one, Served(settings(killable.url, "tdeg2", **base)) as two, \
            one.client(ADMIN_KEY) as admin, two.client(DECIDE_KEY) as c2, one.client(DECIDE_KEY) as c1:
        device = f"dev-ring-{event_id()}"
        assert admin.post("/v1/lists/blocked_devices/entries", json={"entries": [device]}).status_code == 200
        merchant = f"m-d-{event_id()}"
        assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "D"}).status_code == 200
        stop = time.monotonic() + 10
        # the two changes bump the version one after the other: a refresh may land between them
        while not (two.runtime.snapshot.current.lists["blocked_devices"].contains(device) is True
                   and two.runtime.snapshot.current.profiles.get(merchant, {}).get("grade") == "D"):
            assert time.monotonic() < stop, "the second worker never refreshed its snapshot"
            time.sleep(0.02)
        killable.kill()
        for client in (c1, c2):
            out = _decide(client, payment(device_id=device))
            assert out["degraded"] and out["decision"] == "deny" and "blacklist.device" in _ids(out), out
            assert _decide(client, payment(merchant_id=merchant))["merchant_grade"] == "D"


def test_the_snapshot_features_agree_with_the_store_on_what_needs_no_counting(killable):
    """The event's own, IP and list features and the merchant's limit, as the degraded
    path builds them, equal the live store's for the same event."""
    with Served(settings(killable.url, "tdegeq")) as api, api.client(ADMIN_KEY) as admin:
        merchant = f"m-eq-{event_id()}"
        assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "C", "daily_cap_minor": 5_000_000}).status_code == 200
        assert admin.post("/v1/lists/blocked_ips/entries", json={"entries": ["203.0.113.0/25"]}).status_code == 200
        rt = api.runtime
        for ev in (payment(merchant_id=merchant, ip="203.0.113.9", amount="9000.00"), payment(ip="185.220.101.7"),
                   payment(device_id=None)):
            event = parse_event(ev)
            live = rt.store.process(event).features
            snap = rt.snapshot.features(event)
            same = [n for n in live if n.startswith(("event.", "lists.", "card.fingerprint"))] + [
                f"ip.{n}" for n in ("country", "asn", "is_hosting", "is_tor", "is_listed_proxy", "is_private",
                                    "country_mismatch_card")] + [
                "merchant.grade", "merchant.single_limit", "merchant.daily_cap"]
            assert {n: snap[n] for n in same} == {n: live[n] for n in same}
            assert live["ip.count_10m"] == 0 and snap["ip.count_10m"] is None  # counted: unknown, not zero
            if ev["ip"] == "203.0.113.9":  # in the listed range: both say so
                assert snap["lists.blocked_ips"] is True
