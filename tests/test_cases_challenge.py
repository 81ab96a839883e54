"""A failed step-up opens a case (issue 16): the ``challenge_result`` outcome through the
real service (real Redis, SQLite and PostgreSQL), its contract, the ``open_on.challenge_failed``
setting, and the online store and offline twin accepting the event."""

from __future__ import annotations

import re
import shutil
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from api_fixtures import DECIDE_KEY, KEYS, REPORT_KEY, RULES_DIR, T0, Served, payment, settings
from fengkong.api.console.i18n import ZH
from fengkong.cases.config import CasesConfigError, parse
from fengkong.events import OUTCOME_TYPES, EventType, event_to_flat, flat_to_dict, parse_event
from fengkong.features.offline import offline_features

ANALYST_KEY = "test-analyst-key-challenge-0123"
CASE_KEYS = KEYS + [{"name": "analyst-bo", "key": ANALYST_KEY, "scopes": ["analyst"]}]
TOR = "185.220.101.7"  # the pack answers review: a sentinel case


def stepped_up() -> dict:
    """A payment the default pack answers `challenge`: an online-banking top-up of 1,500 from
    a device new to the user (channel.ob_new_device, 30 points; nothing reaches review)."""
    return payment(channel="online_banking", amount="1500.00")


def result(ev: dict, passed: object, **extra: object) -> dict:
    body = {"event_id": f"{ev['event_id']}:challenge", "type": "challenge_result",
            "occurred_at": (T0 + timedelta(minutes=1)).isoformat(), "refers_to": ev["event_id"],
            "card": ev["card"], "challenge": {"passed": passed, "method": "sms"}}
    body.update(extra)
    return body


def cases_of(desk, card: str) -> list[dict]:
    r = desk.get("/v1/cases", params={"entity_kind": "card", "entity_id": card})
    assert r.status_code == 200, r.text
    return r.json()["cases"]


def wait_case(desk, card: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while not (found := cases_of(desk, card)):
        assert time.monotonic() < deadline, f"no case for card {card}"
        time.sleep(0.05)
    return desk.get(f"/v1/cases/{found[0]['id']}").json()  # type: ignore[no-any-return]


def console_case_page(api: Served, case_id: int) -> str:
    """The console's page of a case as an analyst sees it."""
    api.app.state.console.accounts.create(username="ana", password="challenge-test-password", role="analyst")
    with httpx.Client(base_url=api.url, timeout=15) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
        assert token is not None
        assert client.post("/console/login", data={"username": "ana", "password": "challenge-test-password",
                                                    "csrf": token.group(1)}).status_code == 303
        page = client.get(f"/console/cases/{case_id}")
        assert page.status_code == 200
        return page.text


def test_a_failed_challenge_opens_a_case_with_the_payments_decision(redis_server, database_url):
    s = settings(redis_server.url, "tchal1", database_url=database_url, api_keys=CASE_KEYS)
    with Served(s) as api, api.client(DECIDE_KEY) as pay, api.client(REPORT_KEY) as ledger, \
            api.client(ANALYST_KEY) as desk:
        passed_ev, failed_ev = stepped_up(), stepped_up()
        decided = [pay.post("/v1/decisions", json=ev).json() for ev in (passed_ev, failed_ev)]
        assert [d["decision"] for d in decided] == ["challenge", "challenge"], decided
        ok = ledger.post("/v1/events", json=result(passed_ev, True))
        assert ok.status_code == 200 and ok.json()["recorded"] is True, ok.text
        failed = ledger.post("/v1/events", json=result(failed_ev, False))
        assert failed.status_code == 200 and failed.json()["recorded"] is True, failed.text
        again = ledger.post("/v1/events", json=result(failed_ev, False))  # a retry: counted once
        assert again.json()["duplicate"] is True

        case = wait_case(desk, failed_ev["card"]["fingerprint"])
        assert case["status"] == "open" and case["decision_count"] == 1
        filed = case["decisions"][0]
        assert filed["decision_id"] == decided[1]["decision_id"] and filed["decision"] == "challenge"
        assert filed["event_id"] == failed_ev["event_id"] and filed["amount_minor"] == 150000
        fired = {r["id"]: r for r in filed["reasons"]}
        assert fired["channel.ob_new_device"]["values"]  # the feature values the rule read
        opened = case["history"][0]
        assert opened["action"] == "opened"
        assert opened["detail"]["challenge"]["event_id"] == f"{failed_ev['event_id']}:challenge"
        assert opened["detail"]["challenge"]["method"] == "sms"
        # the passed challenge was queued before the failed one: filed by now if it wrongly was
        assert cases_of(desk, passed_ev["card"]["fingerprint"]) == []
        assert f"{ZH['challenge_failed']} (sms)" in console_case_page(api, case["id"])  # the default language

        # a second payment of the card, reviewed, joins the entity's open case as usual
        pay.post("/v1/decisions", json=payment(ip=TOR, card=failed_ev["card"],
                                               occurred_at=(T0 + timedelta(minutes=5)).isoformat()))
        deadline = time.monotonic() + 15
        while desk.get(f"/v1/cases/{case['id']}").json()["decision_count"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_failed_challenge_of_a_review_or_an_unknown_payment_opens_nothing_more(redis_server, database_url):
    s = settings(redis_server.url, "tchal2", database_url=database_url, api_keys=CASE_KEYS)
    with Served(s) as api, api.client(DECIDE_KEY) as pay, api.client(REPORT_KEY) as ledger, \
            api.client(ANALYST_KEY) as desk:
        unknown = stepped_up()  # never decided: no record to show
        assert ledger.post("/v1/events", json=result(unknown, False)).status_code == 200
        reviewed = payment(ip=TOR)
        assert pay.post("/v1/decisions", json=reviewed).json()["decision"] == "review"
        assert ledger.post("/v1/events", json=result(reviewed, False)).status_code == 200
        case = wait_case(desk, reviewed["card"]["fingerprint"])
        time.sleep(0.5)  # the failed challenge, queued after the review, had time to be filed
        case = desk.get(f"/v1/cases/{case['id']}").json()
        assert case["decision_count"] == 1 and [h["action"] for h in case["history"]] == ["opened"]
        assert "challenge" not in case["history"][0]["detail"]
        assert cases_of(desk, unknown["card"]["fingerprint"]) == []


def test_with_challenge_failed_off_a_failed_challenge_opens_no_case(redis_server, database_url, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    config = rules / "cases" / "cases.yaml"
    text = config.read_text(encoding="utf-8")
    assert "challenge_failed: true" in text
    config.write_text(text.replace("challenge_failed: true", "challenge_failed: false"), encoding="utf-8")
    s = settings(redis_server.url, "tchal3", database_url=database_url, api_keys=CASE_KEYS, rules_dir=str(rules))
    with Served(s) as api, api.client(DECIDE_KEY) as pay, api.client(REPORT_KEY) as ledger, \
            api.client(ANALYST_KEY) as desk:
        ev = stepped_up()
        assert pay.post("/v1/decisions", json=ev).json()["decision"] == "challenge"
        assert ledger.post("/v1/events", json=result(ev, False)).status_code == 200
        sentinel = payment(ip=TOR)  # queued after the failed challenge
        pay.post("/v1/decisions", json=sentinel)
        wait_case(desk, sentinel["card"]["fingerprint"])
        assert cases_of(desk, ev["card"]["fingerprint"]) == []


@pytest.mark.parametrize("change, field", [
    ({"challenge": {"method": "sms"}}, "challenge.passed"),
    ({"challenge": {"passed": "no"}}, "challenge.passed"),
    ({"challenge": {"passed": False, "method": "carrier-pigeon"}}, "challenge.method"),
    ({"challenge": None}, "challenge"),
    ({"refers_to": "pay 1/../x"}, "refers_to"),
    ({"refers_to": None}, "refers_to"),
])
def test_a_bad_challenge_result_is_a_422_naming_the_field(redis_server, change, field):
    with Served(settings(redis_server.url, "tchal4")) as api, api.client(REPORT_KEY) as ledger:
        body = result(payment(), False)
        body.update(change)
        r = ledger.post("/v1/events", json={k: v for k, v in body.items() if v is not None})
        assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_challenge_is_refused_on_other_events_and_the_setting_is_checked():
    with pytest.raises(ValueError, match="^challenge: is only for challenge_result"):
        parse_event({**payment(), "challenge": {"passed": False}})
    assert parse({}).challenge_failed is True  # default: on
    assert parse({"open_on": {"challenge_failed": False}}).challenge_failed is False
    with pytest.raises(CasesConfigError, match="open_on.challenge_failed: expected true or false"):
        parse({"open_on": {"challenge_failed": "yes"}})
    with pytest.raises(CasesConfigError, match="open_on.challenges_failed: unknown key"):
        parse({"open_on": {"challenges_failed": True}})


def test_challenge_result_is_an_outcome_the_store_and_the_twin_accept(store, ipintel, list_specs):
    assert EventType.CHALLENGE_RESULT in OUTCOME_TYPES
    p = parse_event(stepped_up())
    failed = parse_event(result(p.model_dump(mode="json", exclude_none=True), False))
    nxt = parse_event(stepped_up() | {"card": p.card.model_dump(exclude_none=True), "user_id": p.user_id,
                                      "occurred_at": (T0 + timedelta(minutes=2)).isoformat()})
    online = [store.process(e) for e in (p, failed, nxt)]
    assert not online[1].duplicate and online[1].features == {}  # counted once, no features
    assert store.process(failed).duplicate
    flat = pd.DataFrame([event_to_flat(e) for e in (p, failed, nxt)])
    assert flat.loc[1, "challenge_passed"] is False or flat.loc[1, "challenge_passed"] == False  # noqa: E712
    assert parse_event(flat_to_dict(flat.iloc[1].to_dict())) == failed  # the flat form keeps it
    offline = offline_features(flat, ipintel=ipintel, lists=list_specs).set_index("event.event_id")
    assert list(offline.index) == [p.event_id, nxt.event_id]  # the outcome gets no row
    for name in ("card.count_10m", "user.devices_seen_90d", "card.fraud_reports_30d"):
        assert online[2].features[name] == offline.loc[nxt.event_id, name], name


def test_a_csv_history_reads_challenge_passed_as_text():
    row = {"event_id": "c1", "type": "challenge_result", "occurred_at": T0.isoformat(), "refers_to": "p1",
           "challenge_passed": "false", "challenge_method": "3ds"}
    event = parse_event(flat_to_dict(row))
    assert event.challenge is not None and event.challenge.passed is False and event.challenge.method == "3ds"
    assert Path(RULES_DIR, "cases", "cases.yaml").exists()
