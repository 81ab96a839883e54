"""No webhook delivery is lost across a crash of the service: `fengkong serve` runs as a
real process, events are published while the receiver is down (they wait in the
retry schedule, some leased by the worker), the whole service is SIGKILLed (service,
workers and redis-server at once), and started again on the same data directory with
the receiver up. Every event then arrives, signed, with its delivery id."""

from __future__ import annotations

import json
from pathlib import Path

from api_fixtures import event_id, free_port, payment
from fengkong.webhooks import verify
from serve_process import ServeProcess, wait_until
from webhook_receiver import Receiver

ENV = {"FENGKONG_WEBHOOK_RETRY_BASE_S": "0.2", "FENGKONG_WEBHOOK_RETRY_MAX_S": "1",
       "FENGKONG_WEBHOOK_MAX_ATTEMPTS": "100", "FENGKONG_WEBHOOK_LEASE_S": "2", "FENGKONG_WEBHOOK_POLL_S": "0.1",
       "FENGKONG_WEBHOOK_TIMEOUT_S": "1"}


def test_no_delivery_is_lost_across_a_kill_of_the_whole_service(tmp_path: Path) -> None:
    port = free_port()  # the receiver's; nothing listens there until after the crash
    url = f"http://127.0.0.1:{port}/hook"
    first = ServeProcess(tmp_path / "data", tmp_path / "serve1.log", env=ENV)
    second = ServeProcess(tmp_path / "data", tmp_path / "serve2.log", workers=2, env=ENV)
    try:
        first.start()
        with first.client() as c:
            r = c.post("/v1/webhooks", json={"url": url, "kinds": ["decision.deny", "merchant.grade_changed"]})
            assert r.status_code == 201, r.text
            sub = r.json()
            card = {"fingerprint": f"tok-wh-{event_id()}", "bin": "622202", "type": "debit", "issuer_country": "CN"}
            assert c.post("/v1/lists/blocked_cards/entries", json={"entries": [card["fingerprint"]]}).status_code == 200
            expected: dict[str, str] = {}  # what each event is about -> its kind
            for _ in range(20):
                out = c.post("/v1/decisions", json=payment(card=card)).json()
                assert out["decision"] == "deny", out
                expected[out["decision_id"]] = "decision.deny"
            for i in range(5):
                merchant = f"m-wh-{event_id()}"
                assert c.put(f"/v1/merchants/{merchant}", json={"grade": "C"}).status_code == 200
                expected[merchant] = "merchant.grade_changed"

            def tried_all() -> bool:  # every event failed at least once: it sits in the retry schedule
                return c.get(f"/v1/webhooks/{sub['id']}").json()["stats"]["failed"] >= len(expected)

            assert wait_until(tried_all, 30, 0.1), c.get(f"/v1/webhooks/{sub['id']}").json()
            assert c.get(f"/v1/webhooks/{sub['id']}").json()["stats"]["delivered"] == 0
        first.kill_everything()

        with Receiver(port=port) as receiver:
            second.start()

            def about(request: dict) -> str:
                data = json.loads(request["body"])["data"]
                return data.get("decision_id") or data["merchant_id"]

            arrived = receiver.wait_for(lambda r: {about(x) for x in r.accepted()} >= set(expected), timeout_s=60)
            assert arrived, (len(receiver.accepted()), second.output()[-3000:])
            for request in receiver.accepted():
                headers = request["headers"]
                assert verify(sub["secret"], headers["x-fengkong-signature"], request["body"])
                body = json.loads(request["body"])
                assert body["kind"] == expected[about(request)] == headers["x-fengkong-event"]
                assert headers["x-fengkong-delivery"] == f"{body['id']}.{sub['id']}"
            # at least once: a receiver that dedupes on X-Fengkong-Delivery sees each event once
            deliveries = {r["headers"]["x-fengkong-delivery"] for r in receiver.accepted()}
            assert len(deliveries) == len(expected)
            with second.client() as c:
                assert wait_until(lambda: c.get(f"/v1/webhooks/{sub['id']}").json()["stats"]["delivered"]
                                  >= len(expected), 10, 0.1)
    finally:
        for serve in (first, second):
            if serve.proc is not None:
                serve.close()
