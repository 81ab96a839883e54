"""Degraded mode: Redis killed mid-run, Redis frozen (slow past the budget), a model
that fails. The service answers under its failure policy, says so, and recovers
without a restart when Redis is back. A fault that is not a dependency's (a bug)
is not hidden behind the policy: it is a 500."""

from __future__ import annotations

import time

import pytest

from api_fixtures import DECIDE_KEY, KillableRedis, Served, payment, settings
from fengkong.api.service.records import is_record
from fengkong.features.keys import audit_stream, request_key
from fengkong.features.online import holds_features


@pytest.fixture
def killable():
    server = KillableRedis().start()
    yield server
    server.close()


def _decide(client, ev=None) -> dict:
    r = client.post("/v1/decisions", json=ev or payment())
    assert r.status_code == 200, r.text  # never a 5xx, whatever Redis does
    return r.json()


def _until_recovered(client, limit_s: float = 10.0) -> dict:
    """Poll with fresh events until one is decided normally (the breaker lets a probe through)."""
    stop = time.monotonic() + limit_s
    while True:
        out = _decide(client)
        if not out["degraded"] or time.monotonic() > stop:
            return out
        time.sleep(0.05)


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_redis_killed_mid_run_degrades_fail_open_and_recovers_without_restart(killable):
    with Served(settings(killable.url, "tkill", breaker_s=0.2)) as api, api.client(DECIDE_KEY) as c:
        assert not _decide(c)["degraded"]
        killable.kill()
        answers = [_decide(c) for _ in range(5)]
        assert all(a["degraded"] and a["decision"] == "allow" for a in answers)
        assert all("feature store" in a["degraded_reason"] for a in answers)
        assert all(a["reasons"] == [] and a["score"] == 0 for a in answers)
        assert c.get("/readyz").status_code == 503
        assert _metric(c.get("/metrics").text, "fengkong_degraded_total") >= 5
        assert _metric(c.get("/metrics").text, 'fengkong_decisions_total{decision="allow",degraded="true"}') >= 5
        killable.start()  # same socket path: the same URL the running service holds
        recovered = _until_recovered(c)
        assert not recovered["degraded"], recovered
        assert c.get("/readyz").status_code == 200
        tor = _decide(c, payment(ip="185.220.101.7"))  # rules decide again on real features
        assert tor["decision"] == "review" and not tor["degraded"]


def test_a_frozen_redis_is_answered_fail_closed_within_the_budget_then_recovers(killable):
    """SIGSTOP leaves the socket accepting but never answering: only the budget can end
    the wait. The 1 s bound is deliberately loose (the budget is 50 ms; the machine is
    shared and noisy): without the deadline the request would hang until the client's
    10 s timeout, so the assertion still fails if the deadline is not enforced."""
    with Served(settings(killable.url, "tfreeze", failure_policy="fail_closed", deadline_ms=50,
                         breaker_s=0.2)) as api, api.client(DECIDE_KEY) as c:
        assert not _decide(c)["degraded"]
        killable.freeze()
        try:
            t0 = time.perf_counter()
            out = _decide(c)
            elapsed = time.perf_counter() - t0
            assert out["degraded"] and out["decision"] == "review", out
            assert elapsed < 1.0 and out["latency_ms"] < 1000
            assert _decide(c)["decision"] == "review"  # the breaker answers at once meanwhile
        finally:
            killable.thaw()
        assert not _until_recovered(c)["degraded"]


class _FailingModels:
    available = True
    status = "test: failing model"

    def score(self, features):
        raise RuntimeError("model exploded")


def test_a_failing_model_degrades_but_the_rules_still_decide(redis_server):
    with Served(settings(redis_server.url, "tmodel")) as api, api.client(DECIDE_KEY) as c:
        api.runtime.models = _FailingModels()
        tor = _decide(c, payment(ip="185.220.101.7"))
        assert tor["degraded"] and tor["degraded_reason"] == "model failed: RuntimeError"
        assert tor["decision"] == "review" and "ip.tor_exit" in [r["id"] for r in tor["reasons"]]
        plain = _decide(c)
        assert plain["degraded"] and plain["decision"] == "allow"  # fail_open: the rules' answer stands
    with Served(settings(redis_server.url, "tmodel2", failure_policy="fail_closed")) as api, \
            api.client(DECIDE_KEY) as c:
        api.runtime.models = _FailingModels()
        plain = _decide(c)
        assert plain["degraded"] and plain["decision"] == "review"  # fail_closed: at least review


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_fault_that_is_not_the_stores_is_a_500_not_a_policy_answer(redis_server, redis_client, fast_path):
    """The failure policy answers a fault of the feature store only. Here the live rule
    set's durable_rules ruleset is closed under the service (the engine raises
    RuleSetClosed): the answer is the error answer, 500 in the service's error shape,
    on the fast layer and on the FastAPI route alike; nothing claims to be a decision,
    none is stored, none is counted as degraded."""
    with Served(settings(redis_server.url, f"tboom{int(fast_path)}"), fast_path=fast_path) as api, \
            api.client(DECIDE_KEY) as c:
        assert not _decide(c)["degraded"]
        api.runtime.rules.current.close()
        ev = payment()
        r = c.post("/v1/decisions", json=ev)
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error (logged); not an error of the request", "field": None}
        # the event id's key holds the store's features (its claim: a retry counts nothing), never a record
        stored = redis_client.get(request_key(f"tboom{int(fast_path)}", ev["event_id"]))
        assert stored is not None and holds_features(stored) and not is_record(stored)
        with api.client(None) as fresh:  # through Starlette's stack, uvicorn closes a connection after a 500
            metrics = fresh.get("/metrics").text
        assert "fengkong_degraded_total{" not in metrics
        assert _metric(metrics, "fengkong_decisions_total") == 1  # the first decision only


def test_a_record_write_redis_refuses_is_logged_counted_and_opens_the_breaker(redis_server, redis_client, caplog):
    """The decision's record, pointer, snapshot and audit entry are written behind the
    answer. When Redis refuses one of them (here the audit stream's key holds a string:
    XADD gets WRONGTYPE), the decision already answered stands, the loss is logged and
    counted, and the breaker opens as for any store fault."""
    # breaker_s: long enough that the second decision still finds the breaker open on a loaded
    # machine (the wait for the log line and two GETs come between), short enough to recover
    with Served(settings(redis_server.url, "tunstored", breaker_s=3.0)) as api, api.client(DECIDE_KEY) as c:
        redis_client.set(audit_stream("tunstored", "decisions"), "not a stream")
        first = _decide(c)
        assert not first["degraded"] and first["decision"] == "allow"
        stop = time.monotonic() + 5
        while "not stored" not in caplog.text and time.monotonic() < stop:
            time.sleep(0.01)
        assert f"decision {first['decision_id']} not stored: ResponseError" in caplog.text
        assert "WRONGTYPE" in caplog.text
        assert _metric(c.get("/metrics").text, "fengkong_decision_records_unstored_total") == 1
        assert c.get(f"/v1/decisions/{first['decision_id']}").status_code == 200  # the SETs before it ran
        second = _decide(c)
        assert second["degraded"] and "ResponseError" in second["degraded_reason"]  # the breaker is open
        redis_client.delete(audit_stream("tunstored", "decisions"))
        assert not _until_recovered(c)["degraded"]


def test_every_answered_decision_is_readable_at_once_from_the_same_worker(redis_server):
    """Answers do not wait for the record's acknowledgement, but GET /v1/decisions goes
    over the connection the record was written on first: 64 concurrent decisions, each
    read back the moment its answer arrives, are all there."""
    import asyncio

    import httpx

    from api_fixtures import DECIDE_KEY as KEY

    with Served(settings(redis_server.url, "treadback")) as api:
        async def one(client: httpx.AsyncClient) -> tuple[int, int]:
            r = await client.post("/v1/decisions", json=payment())
            assert r.status_code == 200 and not r.json()["degraded"], r.text
            got = await client.get(f"/v1/decisions/{r.json()['decision_id']}")
            return r.status_code, got.status_code

        async def main() -> list[tuple[int, int]]:
            async with httpx.AsyncClient(base_url=api.url, headers={"X-API-Key": KEY}, timeout=10) as client:
                return await asyncio.gather(*(one(client) for _ in range(64)))

        assert asyncio.run(main()) == [(200, 200)] * 64
