"""Webhooks on a real Redis with a real HTTP receiver on loopback: signatures, retries,
dead letters and their redrive, takeover of a dead worker's work, and the stats.

The delivery loop runs as it does in a service worker (an asyncio task), here in a
thread of its own with a short retry schedule."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest

from fengkong.webhooks import Deliverer, DeliveryConfig, Subscriptions, publish, retry_delay, verify
from fengkong.webhooks.signing import signature_header
from fengkong.webhooks.store import GROUP, WebhookKeys
from webhook_receiver import Receiver


class Running:
    """A `Deliverer` running in its own event loop thread (as in a service worker)."""

    def __init__(self, url: str, config: DeliveryConfig) -> None:
        self.results: list[str] = []
        self.deliverer = Deliverer(url, config, on_result=self.results.append)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.deliverer.start()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.deliverer.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def config(prefix: str, **overrides: Any) -> DeliveryConfig:
    base: dict[str, Any] = dict(prefix=prefix, max_attempts=3, retry_base_s=0.05, retry_max_s=0.2, timeout_s=5,
                                lease_s=30, poll_s=0.05)
    base.update(overrides)
    return DeliveryConfig(**base)


def wait(predicate: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_signature_verifies_with_the_secret_only() -> None:
    body = b'{"id":"evt_1","kind":"decision.deny","data":{}}'
    header = signature_header("whsec_right", body, timestamp=1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify("whsec_right", header, body, now=1_800_000_010)
    assert not verify("whsec_other", header, body, now=1_800_000_010)
    assert not verify("whsec_right", header, body + b" ", now=1_800_000_010)  # body changed
    assert not verify("whsec_right", header, body, now=1_800_000_000 + 301)  # replayed too late
    assert not verify("whsec_right", "v1=" + header.split("v1=")[1], body, now=1_800_000_010)  # no timestamp


def test_retry_delay_doubles_with_jitter_and_a_cap() -> None:
    assert [retry_delay(n, 5, 3600, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert [retry_delay(n, 5, 3600, rand=lambda: 0.0) for n in (1, 2, 3)] == [2.5, 5, 10]  # jitter: upper half
    assert retry_delay(30, 5, 3600, rand=lambda: 1.0) == 3600


def test_nothing_is_queued_without_a_subscriber(redis_client, prefix) -> None:
    assert publish(redis_client, "decision.deny", {"decision_id": "d_1"}, prefix=prefix) is None
    assert not redis_client.exists(WebhookKeys(prefix).outbox)
    with pytest.raises(ValueError):
        publish(redis_client, "decision.maybe", {}, prefix=prefix)


def test_a_delivery_is_signed_with_the_subscriptions_secret(redis_client, redis_server, prefix) -> None:
    subs = Subscriptions(redis_client, prefix)
    with Receiver() as receiver:
        sub = subs.create(url=receiver.url, kinds=["rules.reloaded"])
        other = subs.create(url=receiver.url, kinds=["case.opened"])  # not subscribed to this kind
        event_id = publish(redis_client, "rules.reloaded", {"version": "v2"}, prefix=prefix)
        assert event_id is not None
        with Running(redis_server.url, config(prefix)) as running:
            assert receiver.wait_for(lambda r: len(r.accepted()) == 1)
            assert wait(lambda: running.results == ["delivered"])
        request = receiver.received[0]
        headers = request["headers"]
        assert verify(sub["secret"], headers["x-fengkong-signature"], request["body"])
        assert not verify(other["secret"], headers["x-fengkong-signature"], request["body"])
        body = orjson.loads(request["body"])
        assert body["id"] == event_id and body["kind"] == "rules.reloaded" and body["data"] == {"version": "v2"}
        assert headers["x-fengkong-delivery"] == f"{event_id}.{sub['id']}"
        assert headers["x-fengkong-event"] == "rules.reloaded" and headers["x-fengkong-attempt"] == "1"
        assert len(receiver.received) == 1  # the other subscription did not get it
        stats = subs.get(sub["id"])["stats"]
        assert stats["delivered"] == 1 and stats["failed"] == 0 and stats["last_status"] == 200
        assert "secret" not in subs.get(sub["id"]) and all("secret" not in s for s in subs.list_all())


def test_500_twice_then_200_is_sent_three_times_and_counted_delivered_once(redis_client, redis_server,
                                                                            prefix) -> None:
    subs = Subscriptions(redis_client, prefix)
    with Receiver() as receiver:
        sub = subs.create(url=receiver.url, kinds=["decision.deny"])
        event_id = publish(redis_client, "decision.deny", {"decision_id": "d_9"}, prefix=prefix)
        delivery_id = f"{event_id}.{sub['id']}"
        receiver.answers[delivery_id] = [500, 500]
        with Running(redis_server.url, config(prefix, max_attempts=5)) as running:
            assert receiver.wait_for(lambda r: len(r.accepted()) == 1)
            assert wait(lambda: len(running.results) == 3)
            time.sleep(0.3)  # a fourth send would have come by now (retries are 0.05-0.2 s apart)
        assert [r["status"] for r in receiver.received] == [500, 500, 200]
        assert {r["headers"]["x-fengkong-delivery"] for r in receiver.received} == {delivery_id}
        assert [r["headers"]["x-fengkong-attempt"] for r in receiver.received] == ["1", "2", "3"]
        assert len({r["body"] for r in receiver.received}) == 1  # the same event each time
        assert running.results == ["failed", "failed", "delivered"]
        stats = subs.get(sub["id"])["stats"]
        assert (stats["delivered"], stats["failed"], stats["dead_lettered"]) == (1, 2, 0)
        assert stats["last_status"] == 200 and stats["last_error"] is None
        assert subs.pending() == 0


def test_dead_lettered_after_the_last_attempt_and_redrive_delivers_it(redis_client, redis_server, prefix) -> None:
    subs = Subscriptions(redis_client, prefix)
    with Receiver(status=500) as receiver:
        sub = subs.create(url=receiver.url, kinds=["case.opened"])
        event_id = publish(redis_client, "case.opened", {"case_id": "c-1"}, prefix=prefix)
        with Running(redis_server.url, config(prefix, max_attempts=3)) as running:
            assert wait(lambda: subs.get(sub["id"])["stats"]["dead_lettered"] == 1)
            assert wait(lambda: running.results == ["failed", "failed", "dead_lettered"])  # counted after settling
            stats = subs.get(sub["id"])["stats"]
            assert (stats["delivered"], stats["failed"], stats["dead_letters"]) == (0, 3, 1)
            assert stats["last_status"] == 500 and stats["last_error"] == "HTTP 500"
            assert len(receiver.received) == 3 and subs.pending() == 0
            [dead] = subs.dead_letters(sub["id"])
            assert dead["event_id"] == event_id and dead["attempts"] == 3 and dead["last_status"] == 500
            assert dead["body"]["data"] == {"case_id": "c-1"}

            receiver.status = 200
            assert subs.redrive(sub["id"], [dead["id"]]) == 1
            assert receiver.wait_for(lambda r: len(r.accepted()) == 1)
            assert wait(lambda: subs.get(sub["id"])["stats"]["delivered"] == 1)
        accepted = receiver.accepted()[0]
        assert accepted["headers"]["x-fengkong-delivery"] == dead["delivery_id"]
        assert accepted["headers"]["x-fengkong-attempt"] == "1"  # attempts start again
        assert orjson.loads(accepted["body"])["id"] == event_id
        assert subs.dead_letters(sub["id"]) == [] and subs.get(sub["id"])["stats"]["dead_letters"] == 0


def test_a_dead_workers_entries_and_leases_are_taken_over(redis_client, redis_server, prefix) -> None:
    """One worker read an outbox entry and died before fanning it out; another held a
    lease on a delivery and died before sending it. A live worker delivers both."""
    subs = Subscriptions(redis_client, prefix)
    k = WebhookKeys(prefix)
    with Receiver() as receiver:
        sub = subs.create(url=receiver.url, kinds=["rules.reloaded"])
        leased = publish(redis_client, "rules.reloaded", {"n": 1}, prefix=prefix)
        # the dying worker fans out and leases the first event (its lease runs 1 s) ...
        redis_client.xgroup_create(k.outbox, GROUP, id="0", mkstream=True)
        read = redis_client.xreadgroup(GROUP, "dead-worker-1", {k.outbox: ">"})
        ids = [entry_id for _, entries in read for entry_id, _ in entries]
        redis_client.register_script(_script("fanout"))(
            keys=[k.outbox, k.subscriptions, k.schedule], args=[GROUP, time.time(), k.delivery_prefix, *ids])
        claimed = redis_client.register_script(_script("claim"))(
            keys=[k.schedule, k.subscriptions], args=[time.time(), 1.0, 10, k.delivery_prefix])
        assert [c[0].decode() for c in claimed] == [f"{leased}.{sub['id']}"]
        # ... and another reads the second event and dies before fanning it out
        read_only = publish(redis_client, "rules.reloaded", {"n": 2}, prefix=prefix)
        assert redis_client.xreadgroup(GROUP, "dead-worker-2", {k.outbox: ">"})
        with Running(redis_server.url, config(prefix, lease_s=1.0)):
            assert receiver.wait_for(lambda r: len(r.accepted()) == 2, timeout_s=20)
            # the worker counts a delivery once the receiver's answer is back: wait for it
            # before stopping the worker (stopped in between, the delivery is sent again later)
            assert wait(lambda: subs.get(sub["id"])["stats"]["delivered"] == 2)
        got = sorted(orjson.loads(r["body"])["id"] for r in receiver.accepted())
        assert got == sorted([leased, read_only])
        assert subs.get(sub["id"])["stats"]["delivered"] == 2
        assert redis_client.xlen(k.outbox) == 0 and subs.pending() == 0


def test_deleting_a_subscription_drops_its_queued_deliveries(redis_client, redis_server, prefix) -> None:
    subs = Subscriptions(redis_client, prefix)
    with Receiver() as receiver:
        sub = subs.create(url=receiver.url, kinds=["decision.review"])
        kept = subs.create(url=receiver.url, kinds=["decision.review"], active=False)  # paused: gets nothing new
        publish(redis_client, "decision.review", {"decision_id": "d_1"}, prefix=prefix)
        assert subs.delete(sub["id"]) and not subs.delete(sub["id"])
        assert publish(redis_client, "decision.review", {"decision_id": "d_2"}, prefix=prefix) is None  # nobody
        with Running(redis_server.url, config(prefix)):
            time.sleep(0.5)
        assert receiver.received == [] and subs.pending() == 0
        assert subs.get(sub["id"]) is None and subs.get(kept["id"])["active"] is False
        assert subs.set_active(kept["id"], True)["active"] is True
        assert publish(redis_client, "decision.review", {"decision_id": "d_3"}, prefix=prefix) is not None


def test_subscription_input_is_checked(redis_client, prefix) -> None:
    subs = Subscriptions(redis_client, prefix)
    for bad in ("ftp://example.com/x", "example.com/hook", "http:///nohost", "http://u:p@example.com/",
                "http://exa mple.com/"):
        with pytest.raises(ValueError):
            subs.create(url=bad, kinds=["decision.deny"])
    with pytest.raises(ValueError, match="unknown event kind"):
        subs.create(url="https://example.com/hook", kinds=["decision.allow"])
    assert subs.list_all() == []


def _script(name: str) -> str:
    from fengkong.webhooks.store import script_source

    return script_source(name)


def test_rescoring_publishes_only_the_grades_it_changed(store, redis_client, prefix) -> None:
    import pandas as pd

    from fengkong.training.rescore import write_to_store

    Subscriptions(redis_client, prefix).create(url="https://hooks.example.com/g", kinds=["merchant.grade_changed"])
    outbox = WebhookKeys(prefix).outbox

    def published() -> list[dict]:
        return [orjson.loads(f[b"body"])["data"] for _, f in redis_client.xrange(outbox)]

    first = pd.DataFrame({"merchant_id": ["m-up", "m-new"], "grade": ["A", "NEW"], "reason": ["clean 30d", ""]})
    write_to_store(store, first, policy=None, write_caps=False)  # type: ignore[arg-type]
    assert published() == [{"merchant_id": "m-up", "grade": "A", "previous_grade": "NEW", "reason": "clean 30d",
                            "source": "rescore"}]  # m-new kept the default grade: nothing to say
    second = pd.DataFrame({"merchant_id": ["m-up", "m-new"], "grade": ["C", "NEW"], "reason": ["chargebacks", ""]})
    write_to_store(store, second, policy=None, write_caps=False)  # type: ignore[arg-type]
    write_to_store(store, second, policy=None, write_caps=False)  # type: ignore[arg-type]  (unchanged)
    assert [(d["merchant_id"], d["previous_grade"], d["grade"]) for d in published()] == [
        ("m-up", "NEW", "A"), ("m-up", "A", "C")]
    assert store.get_merchant_profile("m-up")["grade"] == "C"
