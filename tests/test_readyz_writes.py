"""/readyz says not ready, with the reason, while Redis answers but refuses the decision's
writes (full at maxmemory under noeviction, a read-only replica, a failed snapshot with
stop-writes-on-bgsave-error); decisions meanwhile follow the failure policy."""

from __future__ import annotations

import pytest
import redis

from api_fixtures import DECIDE_KEY, KillableRedis, Served, free_port, payment, settings
from serve_process import wait_until


def _oom(r: redis.Redis) -> None:
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")


def _readonly(r: redis.Redis) -> None:
    r.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a master that never answers


def _misconf(r: redis.Redis) -> None:
    r.config_set("save", "900 1")
    r.config_set("dir", "/proc")  # the snapshot cannot be written there
    r.bgsave()
    assert wait_until(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "err", 10)


@pytest.mark.parametrize(("refuse", "reason"), [(_oom, "OOM"), (_readonly, "READONLY"), (_misconf, "MISCONF")])
def test_readyz_is_not_ready_while_redis_refuses_writes(refuse, reason):
    server = KillableRedis().start()
    try:
        with Served(settings(server.url, "tready", breaker_s=0.2)) as api, api.client(DECIDE_KEY) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
            refuse(redis.Redis(unix_socket_path=server.socket))
            ready = c.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["redis"].startswith(f"refuses writes: {reason}"), ready.text
            out = c.post("/v1/decisions", json=payment())
            assert out.status_code == 200 and out.json()["degraded"] and out.json()["decision"] == "allow", out.text
    finally:
        server.close()
