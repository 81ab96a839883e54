"""The console as a person uses it, in a real headless Chromium (the system's
/usr/bin/chromium, driven by Playwright's driver from its wheel: no browser download).

One real service (uvicorn with the real app, a real Redis, SQLite in a fresh data
directory) and one browser for the module; each test has its own browser context
(its own cookies). Screenshots of every page go to test-artifacts/console/.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from api_fixtures import ADMIN_KEY, DECIDE_KEY, ROOT, Served, payment, settings

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "test-artifacts" / "console"
TOR_IP = "185.220.101.7"  # in rules/lists/tor_exit_ranges.txt: ip.tor_exit -> review
USERS = {"boss": ("admin", "boss-password-1"), "ana": ("analyst", "ana-password-1"),
         "vic": ("viewer", "vic-password-1")}
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="the system's chromium is not installed")


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("console-data")
    with Served(settings(redis_server.url, f"cb{os.getpid()}", data_dir=data)) as api:
        accounts = api.app.state.console.accounts
        for name, (role, password) in USERS.items():
            accounts.create(username=name, password=password, role=role)
        yield api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    yield pg
    context.close()


def login(page: Any, service: Served, username: str, password: str | None = None) -> None:
    page.goto(f"{service.url}/console/")
    assert "/console/login" in page.url  # not logged in: sent to the form
    page.fill("#username", username)
    page.fill("#password", password or USERS[username][1])
    page.click("#login-submit")
    page.wait_for_selector("#whoami")
    assert page.inner_text("#whoami") == username


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def decide(service: Served, event: dict) -> dict:
    with service.client(DECIDE_KEY) as c:
        r = c.post("/v1/decisions", json=event)
        assert r.status_code == 200, r.text
        return r.json()


def stored(service: Served, decision_id: str) -> dict:
    with service.client(ADMIN_KEY) as c:
        r = c.get(f"/v1/decisions/{decision_id}")
        assert r.status_code == 200, r.text
        return r.json()


def queue_row(page: Any, service: Served, entity: str) -> Any:
    """The queue's row of the case about `entity`. The worker's consumer files cases
    from a Redis stream, so the queue is reloaded until the row shows (or 20 s pass)."""
    row = page.locator(f'tr[data-case]:has(code:text-is("{entity}"))')
    deadline = time.monotonic() + 20
    while True:
        page.goto(f"{service.url}/console/queue")
        if row.count() or time.monotonic() > deadline:
            return row
        page.wait_for_timeout(250)


def csrf_of(page: Any) -> str:
    return str(page.get_attribute('meta[name="csrf-token"]', "content"))


def test_a_wrong_password_is_refused(page, service) -> None:
    page.goto(f"{service.url}/console/login")
    page.fill("#username", "ana")
    page.fill("#password", "not-her-password")
    with page.expect_response(lambda r: r.url.endswith("/console/login") and r.request.method == "POST") as answer:
        page.click("#login-submit")
    assert answer.value.status == 401
    assert page.is_visible("#login-failed") and page.locator("#whoami").count() == 0
    shot(page, "login-refused")
    assert page.request.get(f"{service.url}/console/rules", max_redirects=0).status == 303  # still no session


def test_review_to_queue_to_fraud_and_the_next_payment_counts_it(page, service) -> None:
    card = f"tok-cb-{uuid.uuid4().hex[:12]}"
    first = payment(ip=TOR_IP)
    first["card"]["fingerprint"] = card
    decided = decide(service, first)
    assert decided["decision"] == "review"
    login(page, service, "ana")
    # the case is filed by the worker's consumer: reload the queue until it shows
    row = queue_row(page, service, card)
    assert row.count() == 1, page.content()
    shot(page, "queue")
    row.locator('[data-key="open"]').click()
    page.wait_for_selector("#case-decisions")
    shot(page, "case")
    page.click(f'#case-decisions a[href$="{decided["decision_id"]}"]')
    page.wait_for_selector("#fired")
    assert "ip.tor_exit" in page.inner_text("#fired")
    assert card in page.inner_text("#event")
    shot(page, "decision")
    page.go_back()
    page.fill("#note", "tor exit, card reported stolen")
    page.click("#resolve-fraud")
    page.wait_for_selector("#case-status")
    assert page.get_attribute("#case-status", "data-status") == "resolved" and "fraud" in page.inner_text("#case-status")
    assert "user:ana" in page.inner_text("#case-history")
    page.goto(f"{service.url}/console/rules")  # the label counts in the rule's precision
    assert re.search(r"\d+% \(\d+/\d+\)", page.inner_text('tr[data-rule="ip.tor_exit"] >> nth=0'))
    shot(page, "rules-after-fraud")
    page.go_back()

    later = payment(ip=first["ip"], merchant_id=first["merchant_id"], user_id=first["user_id"],
                    device_id=first["device_id"], occurred_at=first["occurred_at"])
    later["card"]["fingerprint"] = card
    record = stored(service, decide(service, later)["decision_id"])
    # the label reached the feature store: the card's fraud reports count it and the rule reads it
    assert record["features"]["card.fraud_reports_30d"] >= 1
    assert record["decision"] == "deny" and "theft.reported_card" in [r["id"] for r in record["reasons"]]
    page.goto(f"{service.url}/console/decisions/{record['decision_id']}")
    assert "theft.reported_card" in page.inner_text("#fired") and "card.fraud_reports_30d" in page.inner_text("#fired")
    assert decided["decision_id"] in page.inner_html("#card-history")  # the card's earlier decision
    shot(page, "decision-after-fraud")


def _select(page: Any, case_id: str) -> None:
    """Press j until the queue's selected row is `case_id` (as a person would)."""
    for _ in range(page.locator("tr[data-case]").count()):
        if page.get_attribute("tr.selected", "data-case") == case_id:
            return
        page.keyboard.press("j")
    assert page.get_attribute("tr.selected", "data-case") == case_id


def test_the_queue_claims_and_resolves_with_keyboard_shortcuts(page, service) -> None:
    event = payment(ip=TOR_IP)
    decide(service, event)
    login(page, service, "ana")
    card = event["card"]["fingerprint"]
    row = queue_row(page, service, card)
    case_id = row.get_attribute("data-case")
    _select(page, case_id)
    with page.expect_navigation():
        page.keyboard.press("c")  # claim
    assert row.get_attribute("data-status") == "claimed" and "user:ana" in row.inner_text()
    _select(page, case_id)
    with page.expect_navigation():
        page.keyboard.press("l")  # resolve as legit
    assert row.count() == 0  # no longer among the open cases
    page.goto(f"{service.url}/console/cases/{case_id}")
    assert page.get_attribute("#case-status", "data-status") == "resolved" and "legit" in page.inner_text("#case-status")


def test_a_list_edit_is_made_and_audited_with_the_user(page, service) -> None:
    login(page, service, "ana")
    page.goto(f"{service.url}/console/lists")
    name = page.locator("[data-list]").first.get_attribute("data-list")
    page.goto(f"{service.url}/console/lists?name={name}")
    entry = "10.9.8.7" if "ip" in name else f"cb-entry-{uuid.uuid4().hex[:12]}"
    page.fill("#add-entries", entry)
    page.fill("#add-reason", "seen in a card-testing burst")
    page.click("#add-submit")
    page.wait_for_selector("#list-done")
    assert entry in page.inner_text("#entries")
    row = page.locator("#list-changes tr", has_text="seen in a card-testing burst").first
    assert "user:ana" in row.inner_text() and "list.add" in row.inner_text()
    shot(page, "lists")
    rt = service.runtime
    audit = [r for _, r in _changes(rt) if r.get("reason") == "seen in a card-testing burst"]
    assert audit and audit[0]["actor"] == "user:ana" and audit[0]["entries"] == [entry]
    assert entry in rt.lists.members(name)


def _changes(rt: Any) -> list:
    from fengkong.api.encoding import loads

    return [(i, loads(f[b"record"])) for i, f in rt.client.xrevrange(rt.audit.changes_key, count=200)]


def test_a_viewer_sees_no_resolve_button_and_a_forged_post_is_refused(page, service) -> None:
    event = payment(ip=TOR_IP)
    decide(service, event)
    login(page, service, "vic")
    entity = event["card"]["fingerprint"]
    row = queue_row(page, service, entity)
    assert row.count() == 1
    assert row.locator("button").count() == 0  # no claim, no resolve
    case_id = row.get_attribute("data-case")
    page.goto(f"{service.url}/console/cases/{case_id}")
    assert page.locator("#resolve-fraud").count() == 0 and page.locator("#case-actions").count() == 0
    forged = page.request.post(f"{service.url}/console/cases/{case_id}/resolve",
                               form={"csrf": csrf_of(page), "disposition": "fraud"}, max_redirects=0)
    assert forged.status == 403 and "role" in forged.text()
    page.reload()
    assert page.get_attribute("#case-status", "data-status") == "open"  # nothing changed


def test_a_post_without_the_csrf_token_is_refused(page, service) -> None:
    login(page, service, "ana")
    page.goto(f"{service.url}/console/lists")
    name = page.locator("[data-list]").first.get_attribute("data-list")
    entry = "10.9.8.99" if "ip" in name else f"csrf-entry-{uuid.uuid4().hex[:12]}"
    for form in ({"entries": entry, "reason": "no token"}, {"entries": entry, "reason": "bad token", "csrf": "x" * 32}):
        refused = page.request.post(f"{service.url}/console/lists/{name}/add", form=form, max_redirects=0)
        assert refused.status == 403 and "csrf" in refused.text()
    assert entry not in service.runtime.lists.members(name)
    # the same request with the session's token goes through: the refusal was the token
    ok = page.request.post(f"{service.url}/console/lists/{name}/add",
                           form={"entries": entry, "reason": "with token", "csrf": csrf_of(page)})
    assert ok.status == 200 and entry in service.runtime.lists.members(name)


def test_every_page_in_both_languages(page, service) -> None:
    """Each page renders for an admin, in Chinese (the default) and English; screenshots."""
    decided = decide(service, payment(ip=TOR_IP))
    login(page, service, "boss")
    merchant = decided and stored(service, decided["decision_id"])["event"]["merchant_id"]
    pages = {"overview": "/console/", "queue": "/console/queue", "rules": "/console/rules",
             "merchants": f"/console/merchants?merchant_id={merchant}", "lists": "/console/lists",
             "users": "/console/users", "decision": f"/console/decisions/{decided['decision_id']}"}
    nav = {"zh": "审核队列", "en": "Queue"}
    for lang in ("zh", "en"):
        page.goto(f"{service.url}/console/lang/{lang}?next=/console/")
        for name, path in pages.items():
            response = page.goto(service.url + path)
            assert response.status == 200, (name, lang)
            assert nav[lang] in page.inner_text("header nav")
            assert page.locator(".error").count() == 0, (name, page.inner_text(".error"))
            shot(page, f"{name}-{lang}")
    page.goto(f"{service.url}/console/")
    assert page.locator("#per-minute svg").count() == 1  # the plot is drawn, inline, no script
    assert int(page.inner_text("#total")) >= 1
    page.goto(f"{service.url}/console/merchants?merchant_id={merchant}")
    assert page.locator("#volume-plot svg").count() == 1
    assert page.locator("#merchant-grade").inner_text() == stored(service, decided["decision_id"])["merchant_grade"]


def test_the_dry_run_form_answers_in_place_and_names_a_bad_field(page, service) -> None:
    """htmx posts the form and swaps in the result (no page load); a refusal shows in the
    page naming the field."""
    login(page, service, "ana")
    page.goto(f"{service.url}/console/rules")
    page.evaluate("window.__same_page = true")
    page.fill("#dry-features", '{"ip.is_tor": true, "event.type": "payment"}')
    page.click("#dry-run")
    page.wait_for_selector("#dry-candidate")
    assert page.inner_text("#dry-candidate") == "review"
    assert page.evaluate("window.__same_page") is True  # swapped in place, not a new page
    page.fill("#dry-features", "{not json")
    page.click("#dry-run")
    page.wait_for_selector('#flash .error[data-field="features"]')
    assert page.evaluate("window.__same_page") is True
    shot(page, "rules-dry-run")
