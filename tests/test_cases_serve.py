"""`fengkong serve` with nothing installed keeps cases in SQLite in --data-dir; with two
workers each queued decision is filed once; a kill -9 of the whole service and a restart
lose no queued case."""

from __future__ import annotations

import time

from api_fixtures import payment
from serve_process import ServeProcess, wait_until

TOR = "185.220.101.7"


def _cases(c, card):
    r = c.get("/v1/cases", params={"entity_kind": "card", "entity_id": card})
    assert r.status_code == 200, r.text
    return r.json()["cases"]


def test_serve_files_review_decisions_once_and_a_kill_loses_none(tmp_path):
    data = tmp_path / "data"
    first = ServeProcess(data, tmp_path / "serve.log", workers=2)
    cards = []
    try:
        first.start()
        with first.client() as c:
            for _ in range(6):
                ev = payment(ip=TOR)
                cards.append(ev["card"]["fingerprint"])
                assert c.post("/v1/decisions", json=ev).json()["decision"] == "review"
            time.sleep(1.0)  # the decisions' write-behind reached Redis
        first.kill_everything()  # whatever the consumers had not filed yet stays queued
    finally:
        first.close()
    assert "cases database: sqlite:///" in first.output()
    assert (data / "fengkong.sqlite3").exists()

    second = ServeProcess(data, tmp_path / "serve2.log", workers=2)
    try:
        second.start()
        with second.client() as c:
            assert wait_until(lambda: all(_cases(c, card) for card in cards), 30), second.output()
            for card in cards:
                found = _cases(c, card)
                assert len(found) == 1 and found[0]["decision_count"] == 1  # filed once, never twice
    finally:
        second.close()
