"""What a user expects to survive a crash survives it.

The embedded Redis's persistence is checked on the running server (CONFIG GET, the
files it writes, a restart after SIGKILL); then `fengkong serve` itself is killed
with SIGKILL, service, workers and redis-server at once, and started again on the
same data directory: lists, merchant grades, the rule-change audit, stored
decisions, idempotency (a deny replayed stays the same deny) and feature counters
are all there."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from api_fixtures import T0, payment
from fengkong.features.embedded_redis import AOF_FILE, RDB_FILE, EmbeddedRedis
from serve_process import ServeProcess, pid_alive, wait_until


def test_the_default_bound_is_a_quarter_of_the_machines_memory(tmp_path: Path) -> None:
    """Without --redis-maxmemory the persisting server is bounded by a quarter of the memory
    /proc/meminfo reports (at least 1 GB), never by a fixed small figure that an ordinary
    day's decisions would fill."""
    kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")))
    expected_mb = max(1024, kib // 4 // 1024)
    with EmbeddedRedis(data_dir=tmp_path, persist=True) as server:
        c = server.client()
        bound = int(c.config_get("maxmemory")["maxmemory"])
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        c.close()
    assert abs(bound - expected_mb * (1 << 20)) <= 2 * (1 << 20), (bound, expected_mb)


def test_persistence_is_configured_as_documented(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, persist=True, maxmemory="64mb") as server:
        c = server.client()
        assert c.config_get("save")["save"] == "300 1 60 10000"  # both rules, not "" (never)
        assert c.config_get("appendonly")["appendonly"] == "yes"
        assert c.config_get("appendfsync")["appendfsync"] == "everysec"
        assert c.config_get("appendfilename")["appendfilename"] == AOF_FILE
        assert c.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert c.config_get("dir")["dir"] == str(tmp_path.resolve())
        c.set("k", "v")
        c.bgsave()
        assert wait_until(lambda: (tmp_path / RDB_FILE).exists() and not c.info("persistence")["rdb_bgsave_in_progress"],
                          10)
        assert (tmp_path / AOF_FILE).stat().st_size > 0
        c.close()


def test_a_save_rule_snapshots_by_itself(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, persist=True, snapshot_rules=((1, 1), (60, 10000))) as server:
        c = server.client()
        assert c.config_get("save")["save"] == "1 1 60 10000"
        assert not (tmp_path / RDB_FILE).exists()
        c.set("k", "v")  # one change: the 1-second rule saves with no BGSAVE asked
        assert wait_until(lambda: (tmp_path / RDB_FILE).exists(), 10)
        c.close()


def test_without_persistence_nothing_is_written(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, persist=False) as server:
        c = server.client()
        assert c.config_get("save")["save"] == "" and c.config_get("appendonly")["appendonly"] == "no"
        c.set("k", "v")
        c.close()
    assert not (tmp_path / RDB_FILE).exists() and not (tmp_path / AOF_FILE).exists()


def test_sigkill_of_redis_loses_no_acknowledged_write(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path, persist=True).start()
    c = server.client()
    c.mset({f"k{i}": i for i in range(1000)})
    c.sadd("list", "a", "b")
    c.close()
    server.kill()  # no shutdown, no snapshot: only the AOF has the writes
    assert not (tmp_path / RDB_FILE).exists()
    server.stop()
    with EmbeddedRedis(data_dir=tmp_path, persist=True) as again:
        c = again.client()
        assert c.get("k999") == b"999" and c.smembers("list") == {b"a", b"b"}
        c.close()


def test_a_data_dir_with_only_a_snapshot_is_loaded_and_gets_an_aof(tmp_path: Path) -> None:
    # A data directory written with snapshots only: starting with AOF on would load
    # an empty AOF and ignore the snapshot. It must be loaded, then the AOF written.
    with EmbeddedRedis(data_dir=tmp_path, persist=True) as server:
        c = server.client()
        c.set("old", "state")
        c.close()
    (tmp_path / AOF_FILE).unlink()
    assert (tmp_path / RDB_FILE).exists()
    with EmbeddedRedis(data_dir=tmp_path, persist=True) as server:
        c = server.client()
        assert c.get("old") == b"state"
        assert c.config_get("appendonly")["appendonly"] == "yes"
        c.close()
    assert (tmp_path / AOF_FILE).stat().st_size > 0
    with EmbeddedRedis(data_dir=tmp_path, persist=True) as server:  # now from the AOF
        c = server.client()
        assert c.get("old") == b"state"
        c.close()


def test_one_data_dir_holds_one_server(tmp_path: Path) -> None:
    from fengkong.features.errors import FeatureStoreUnavailable

    first = EmbeddedRedis(data_dir=tmp_path, persist=True).start()
    try:
        with pytest.raises(FeatureStoreUnavailable, match="in use"):
            EmbeddedRedis(data_dir=tmp_path, persist=True).start(timeout_s=0.5)
    finally:
        first.stop()
    with EmbeddedRedis(data_dir=tmp_path, persist=True) as second:  # free again once the first stopped
        assert second.running


def test_a_full_server_refuses_writes_and_evicts_nothing(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, persist=False, maxmemory="3mb") as server:
        c = server.client()
        assert c.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        value = "x" * 10_000
        written = 0
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(10_000):
                c.set(f"state:{i}", value)
                written += 1
        assert 0 < written < 10_000
        assert c.dbsize() == written and c.exists("state:0")  # nothing was evicted to make room
        c.close()


def test_a_supervised_server_is_restarted_with_its_data(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path, persist=True, supervise=True).start()
    try:
        c = server.client(socket_timeout=1)
        c.set("survives", "yes")
        first = server.pid
        assert first is not None
        server.kill()
        t0 = time.monotonic()
        assert wait_until(lambda: server.restarts == 1, 5, 0.01)  # counted once it answers
        assert time.monotonic() - t0 < 2.0
        assert server.pid != first and server.running
        assert c.get("survives") == b"yes"  # the same socket path, the same data
        assert server.restarts_file.read_text().strip() == "1"
        c.close()
    finally:
        server.stop()
    assert not server.running and not pid_alive(first)


def test_a_server_that_will_not_start_is_retried_until_it_does(tmp_path: Path, caplog) -> None:
    server = EmbeddedRedis(data_dir=tmp_path, persist=True, supervise=True).start()
    try:
        c = server.client(socket_timeout=1)
        c.set("survives", "yes")
        aof = tmp_path / AOF_FILE
        aof.rename(tmp_path / "aside.aof")  # the running server keeps writing to it
        aof.write_bytes(b"*not an AOF*\r\n")  # what the restart will find: redis refuses to load it
        with caplog.at_level("ERROR", logger="fengkong.features.embedded_redis"):
            server.kill()
            assert wait_until(lambda: "did not restart" in caplog.text, 5, 0.01)
        assert server.restarts == 0
        (tmp_path / "aside.aof").rename(aof)  # repaired: the next retry starts it
        assert wait_until(lambda: server.restarts == 1, 10, 0.02)
        assert c.get("survives") == b"yes"
        c.close()
    finally:
        server.stop()


def test_kill_9_of_the_whole_service_keeps_what_decides(tmp_path: Path) -> None:
    data = tmp_path / "data"
    serve = ServeProcess(data, tmp_path / "serve1.log", env={"FENGKONG_REDIS_MAXMEMORY": "256mb"}).start()
    stolen = payment()
    card = stolen["card"]
    merchant = stolen["merchant_id"]
    try:
        with serve.client() as c:
            assert c.post("/v1/lists/blocked_cards/entries",
                          json={"entries": [card["fingerprint"]], "reason": "reported stolen"}).status_code == 200
            assert c.put(f"/v1/merchants/{merchant}", json={"grade": "A", "reason": "kyc"}).status_code == 200
            denied = c.post("/v1/decisions", json=stolen).json()
            assert denied["decision"] == "deny" and not denied["degraded"]
            for i in range(1, 3):  # the same card again: counted by the card's features
                later = payment(card=card, merchant_id=merchant, occurred_at=(T0 + timedelta(seconds=i)).isoformat())
                assert not c.post("/v1/decisions", json=later).json()["degraded"]
            r = redis.Redis(unix_socket_path=serve.redis_socket)
            assert r.config_get("maxmemory")["maxmemory"] == str(256 * 1024 * 1024)
            assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
            assert r.config_get("appendonly")["appendonly"] == "yes"
            changes_before = r.xlen("fk:v1:audit:changes")
            r.close()
            assert changes_before >= 2  # the list change and the merchant profile change
        time.sleep(1.5)  # past the AOF's one-second fsync window
        serve.kill_everything()
        assert not pid_alive(serve.redis_pid)
    finally:
        serve.close()

    again = ServeProcess(data, tmp_path / "serve2.log").start()
    try:
        with again.client() as c:
            entries = c.get("/v1/lists/blocked_cards").json()["entries"]
            assert card["fingerprint"] in entries
            assert c.get(f"/v1/merchants/{merchant}").json()["grade"] == "A"
            stored = c.get(f"/v1/decisions/{denied['decision_id']}")
            assert stored.status_code == 200 and stored.json()["decision"] == "deny"
            replay = c.post("/v1/decisions", json=stolen).json()
            assert replay["duplicate"] is True
            assert replay["decision_id"] == denied["decision_id"] and replay["decision"] == "deny"
            fourth = payment(card=card, merchant_id=merchant, occurred_at=(T0 + timedelta(seconds=3)).isoformat())
            out = c.post("/v1/decisions", json=fourth).json()
            assert out["decision"] == "deny" and out["merchant_grade"] == "A"
            features = c.get(f"/v1/decisions/{out['decision_id']}").json()["features"]
            assert features["card.count_10m"] == 3  # the three payments before the crash
        r = redis.Redis(unix_socket_path=again.redis_socket)
        assert r.xlen("fk:v1:audit:changes") >= changes_before
        r.close()
    finally:
        again.send(signal.SIGTERM)
        again.wait(60)
        again.close()
