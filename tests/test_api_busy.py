"""Busy is not dead: a worker and a Redis short of CPU (other processes burning both
cores) keep deciding on real features after an idle period, and the breaker stays
shut; a Redis that does not answer at all (SIGSTOP) still opens it, and decisions
degrade within the budget meanwhile."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api_fixtures import CpuHogs, KillableRedis, ServedProcess, payment

BURST = 600
DEADLINE_MS = int(os.environ.get("FK_BUSY_DEADLINE_MS", "50"))
CONCURRENCY = 16
#: the code the service runs: this checkout unless FK_BUSY_PYTHONPATH names another (to compare)
PYTHONPATH = os.environ.get("FK_BUSY_PYTHONPATH")


@pytest.fixture
def killable():
    server = KillableRedis().start()
    yield server
    server.close()


def _burst(api: ServedProcess, n: int) -> list[dict]:
    def one(_: int) -> dict:
        with api.client() as c:  # a client per thread: httpx clients are not shared across threads here
            r = c.post("/v1/decisions", json=payment())
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(one, range(n)))


def test_a_burst_after_idle_on_a_cpu_starved_machine_does_not_read_redis_as_dead(killable):
    with ServedProcess(killable.url, "tbusy", pythonpath=PYTHONPATH, deadline_ms=DEADLINE_MS) as api:
        _burst(api, 64)  # warm
        with CpuHogs(2):
            time.sleep(2.0)  # idle: the connection has heard nothing for a while
            answers = _burst(api, BURST)
    degraded = [a["degraded_reason"] for a in answers if a["degraded"]]
    lat = sorted(a["latency_ms"] for a in answers)
    dl = sorted(a["latency_ms"] for a in answers if a["degraded"])
    assert len(degraded) <= BURST // 100, (len(degraded), set(degraded), lat[len(lat) // 2], lat[-6], dl)


def test_a_frozen_redis_still_opens_the_breaker_and_decisions_degrade_within_the_budget(killable):
    with ServedProcess(killable.url, "tbusyf", pythonpath=PYTHONPATH, deadline_ms=50, redis_dead_after_ms=300,
                       breaker_s=5) as api, api.client() as c:
        assert not c.post("/v1/decisions", json=payment()).json()["degraded"]
        killable.freeze()
        try:
            stop = time.monotonic() + 5
            reasons = []
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                out = c.post("/v1/decisions", json=payment()).json()
                assert out["degraded"] and time.perf_counter() - t0 < 1.0, out
                reasons.append(out["degraded_reason"])
                if "recent fault" in out["degraded_reason"]:
                    break  # the breaker is open: answered at once without Redis
            assert "recent fault: ConnectionFailed" in reasons[-1], reasons
            assert any("ReplyLate" in r for r in reasons)  # late first, dead only after the silence
            t0 = time.perf_counter()
            assert c.post("/v1/decisions", json=payment()).json()["degraded"]
            assert time.perf_counter() - t0 < 0.05 + 0.5  # no wait for Redis while the breaker is open
        finally:
            killable.thaw()
