"""`fengkong serve` (a real child process, two workers) with no admin creates one: it prints the
console's URL and a first admin login once, stores only the argon2 hash, and that
login opens the console; the next start creates no other admin."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from serve_process import ServeProcess


def _login(url: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=15) as browser:
        form = browser.get("/console/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        browser.post("/console/login", data={"username": username, "password": password, "csrf": token})
        page = browser.get("/console/")
        page.extensions["cookies"] = dict(browser.cookies)
        return page


def test_serve_prints_the_console_and_a_first_admin_login(tmp_path: Path) -> None:
    data = tmp_path / "data"
    serve = ServeProcess(data, tmp_path / "serve.log", workers=2)
    try:
        serve.start()
        out = serve.output()
        assert f"console: http://127.0.0.1:{serve.port}/console" in out
        m = re.search(r"username: (\S+)  password: (\S+)", out)
        assert m, out
        username, password = m.groups()
        page = _login(serve.url, username, password)
        assert page.status_code == 200 and f'id="whoami">{username}<' in page.text
        # two workers, one signing key: the session holds on whichever worker a new connection reaches
        for _ in range(12):
            again = httpx.get(f"{serve.url}/console/rules", cookies=page.extensions["cookies"], timeout=15)
            assert again.status_code == 200 and f'id="whoami">{username}<' in again.text
        assert _login(serve.url, username, password + "x").status_code == 303  # sent back to the login form
        assert password.encode() not in (data / "fengkong.sqlite3").read_bytes()  # stored hashed only
        assert (data / "console-secret").stat().st_mode & 0o077 == 0  # the cookie key is the owner's alone
        serve.send(15)
        serve.wait()
        again = ServeProcess(data, tmp_path / "serve2.log")
        again.port = serve.port  # same console URL
        again.url = serve.url
        try:
            again.start()
            assert "FIRST ADMIN" not in again.output() and "fengkong users list" in again.output()
        finally:
            again.close()
    finally:
        serve.close()
