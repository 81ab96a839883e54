"""The console over plain HTTP (no browser): both label dicts hold the same keys, bad
form input is a 4xx naming the field, report paths cannot leave the reports folder,
pages carry a CSP that allows nothing from elsewhere, and sessions end on logout and on
a password change."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest
from api_fixtures import ADMIN_KEY, DECIDE_KEY, Served, payment, settings

from fengkong.api.console.i18n import EN, ZH

PASSWORD = "http-test-password"


def test_both_languages_label_the_same_things() -> None:
    assert set(EN) == set(ZH)
    assert all(EN[k] != ZH[k] for k in EN if k not in ("sla",))  # translated, not copied


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("console-http")
    (data / "reports" / "replay").mkdir(parents=True)
    (data / "reports" / "replay" / "report.html").write_text("<h1>replay report</h1><script>alert(1)</script>")
    (data / "secret.txt").write_text("not a report")
    with Served(settings(redis_server.url, f"ch{os.getpid()}", data_dir=data)) as api:
        accounts = api.app.state.console.accounts
        accounts.create(username="ana", password=PASSWORD, role="analyst")
        accounts.create(username="root", password=PASSWORD, role="admin")
        accounts.create(username="vic", password=PASSWORD, role="viewer")
        yield api


@contextmanager
def _session(service: Served, username: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=15) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text).group(1)
        assert client.post("/console/login", data={"username": username, "password": PASSWORD,
                                                    "csrf": token}).status_code == 303
        yield client


def _token(client: httpx.Client, path: str = "/console/lists") -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text).group(1)


def test_bad_form_input_is_a_4xx_naming_the_field(service) -> None:
    with _session(service, "ana") as c:
        token = _token(c)
        name = service.runtime.list_specs and next(iter(service.runtime.list_specs))
        no_reason = c.post(f"/console/lists/{name}/add", data={"csrf": token, "entries": "x-1", "reason": ""})
        assert no_reason.status_code == 422 and 'data-field="reason"' in no_reason.text
        unknown = c.post("/console/lists/no_such_list/add", data={"csrf": token, "entries": "x-1", "reason": "r"})
        assert unknown.status_code == 404 and 'data-field="name"' in unknown.text
        pan = c.post(f"/console/lists/{name}/add", data={"csrf": token, "entries": "4111111111111111", "reason": "r"})
        assert pan.status_code == 422 and "4111111111111111" not in pan.text  # never echoed
        pan_reason = c.post(f"/console/lists/{name}/add",
                            data={"csrf": token, "entries": "x-2", "reason": "card 4111-1111-1111-1111 stolen"})
        assert pan_reason.status_code == 422 and 'data-field="reason"' in pan_reason.text, pan_reason.text
        assert "4111" not in pan_reason.text and "4111" not in c.get("/console/lists").text  # nor audited
        dry = c.post("/console/rules/dry-run", data={"csrf": token, "features": "{not json"})
        assert dry.status_code == 422 and 'data-field="features"' in dry.text
    with _session(service, "root") as admin:
        weak = admin.post("/console/users", data={"csrf": _token(admin), "username": "x", "password": "short",
                                                  "role": "viewer"})
        pan_name = admin.post("/console/users", data={"csrf": _token(admin), "username": "u-4111.1111.1111.1111",
                                                      "password": "long enough password", "role": "viewer"})
        assert pan_name.status_code == 422 and 'data-field="username"' in pan_name.text, pan_name.text
        assert "4111" not in pan_name.text and "4111" not in admin.get("/console/users").text
    assert weak.status_code == 422 and 'data-field="password"' in weak.text


def test_reports_are_served_sandboxed_and_only_from_the_reports_folder(service) -> None:
    with _session(service, "ana") as c:
        assert "replay/report.html" in c.get("/console/rules").text
        report = c.get("/console/reports/replay/report.html")
        assert report.status_code == 200 and "replay report" in report.text
        assert report.headers["content-security-policy"].startswith("sandbox")  # its script cannot run
        for escape in ("../secret.txt", "..%2Fsecret.txt", "replay/../../secret.txt"):
            assert c.get(f"/console/reports/{escape}").status_code == 404


def test_pages_load_nothing_from_elsewhere(service) -> None:
    with _session(service, "ana") as c:
        page = c.get("/console/rules")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
        assert not re.search(r'(src|href)="(https?:)?//', page.text)
        htmx = c.get("/console/static/htmx.min.js")
        assert htmx.status_code == 200 and htmx.text.startswith("/*! htmx 2.")


def test_logout_and_a_password_change_end_the_session(service) -> None:
    with _session(service, "ana") as c:
        assert c.get("/console/rules").status_code == 200
        assert c.post("/console/logout", data={"csrf": _token(c)}).status_code == 303
        assert c.get("/console/rules").status_code == 303  # back to the login form
    with _session(service, "ana") as c:
        stale = dict(c.cookies)
        service.app.state.console.accounts.set_password(username="ana", password=PASSWORD)  # same text, new hash
        with httpx.Client(base_url=service.url, cookies=stale) as replay:
            assert replay.get("/console/rules").status_code == 303


def test_a_dry_run_from_the_form_shows_the_candidate_and_deploys_nothing(service) -> None:
    live = service.runtime.rules.version
    with _session(service, "ana") as c:
        page = c.post("/console/rules/dry-run", data={"csrf": _token(c, "/console/rules"),
                                                      "features": '{"ip.is_tor": true, "event.type": "payment"}'})
        assert page.status_code == 200
        assert re.search(r'id="dry-candidate">review<', page.text) and "ip.tor_exit" in page.text
    assert service.runtime.rules.version == live


def test_each_role_is_held_on_the_server(service) -> None:
    """Forged POSTs with a valid CSRF token: a viewer may not edit lists or dry-run, an
    analyst may not reload rules or manage users; an admin may."""
    name = next(iter(service.runtime.list_specs))
    entry = "10.1.2.3" if service.runtime.list_specs[name].kind == "ip" else "role-test-entry"
    with _session(service, "vic") as viewer:
        token = _token(viewer)
        for path, data in ((f"/console/lists/{name}/add", {"entries": entry, "reason": "r"}),
                           ("/console/rules/dry-run", {"features": "{}"})):
            refused = viewer.post(path, data={"csrf": token, **data})
            assert refused.status_code == 403 and 'data-field="role"' in refused.text, path
        assert viewer.get("/console/users").status_code == 403
    assert entry not in service.runtime.lists.members(name)
    with _session(service, "ana") as analyst:
        token = _token(analyst)
        for path, data in (("/console/rules/reload", {}),
                           ("/console/users", {"username": "mallory", "password": "long password 1", "role": "admin"})):
            refused = analyst.post(path, data={"csrf": token, **data})
            assert refused.status_code == 403 and 'data-field="role"' in refused.text, path
    assert service.app.state.console.accounts.by_name("mallory") is None
    with _session(service, "root") as admin:
        assert admin.post("/console/rules/reload", data={"csrf": _token(admin)}).status_code == 200
        added = admin.post("/console/users", data={"csrf": _token(admin), "username": "newbie",
                                                   "password": "long password 1", "role": "viewer"})
        assert added.status_code == 200 and service.app.state.console.accounts.by_name("newbie") is not None


def test_a_merchant_page_shows_its_grade_history_with_reasons_and_its_volume(service) -> None:
    event = payment(amount="321.00")
    merchant = event["merchant_id"]
    with service.client(DECIDE_KEY) as api:  # the second payment's features count the first one
        assert api.post("/v1/decisions", json=event).status_code == 200
        assert api.post("/v1/decisions", json=payment(merchant_id=merchant, amount="10.00")).status_code == 200
    with service.client(ADMIN_KEY) as api:
        assert api.put(f"/v1/merchants/{merchant}", json={"grade": "B", "reason": "clean 30 days"}).status_code == 200
    with _session(service, "vic") as c:
        page = c.get(f"/console/merchants?merchant_id={merchant}").text
    assert re.search(r'id="merchant-grade">B<', page)
    history = page[page.index('id="grade-history"'):]
    assert "analyst-ana" in history and "clean 30 days" in history and "grade</code>=B" in history
    assert 'id="no-baseline"' in page  # a day-old merchant: its grade decides
    plot = page[page.index('id="volume-plot"'):]
    assert "<svg" in plot[:500] and ">321<" in plot and ">n/a<" in plot  # today's volume; no baseline


def test_logins_to_a_name_stop_after_five_failures(service) -> None:
    service.app.state.console.accounts.create(username="guessme", password=PASSWORD, role="viewer")
    with httpx.Client(base_url=service.url, timeout=15) as c:
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/console/login").text).group(1)
        for i in range(5):
            wrong = c.post("/console/login", data={"username": "guessme", "password": f"guess-{i}", "csrf": token})
            assert wrong.status_code == 401
        right = c.post("/console/login", data={"username": "guessme", "password": PASSWORD, "csrf": token})
        assert right.status_code == 429 and 'data-field="username"' in right.text  # even the right password
        other = c.post("/console/login", data={"username": "ana", "password": PASSWORD, "csrf": token})
        assert other.status_code == 303  # another name is not held back
