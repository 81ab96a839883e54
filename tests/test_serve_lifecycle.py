"""`fengkong serve` stops its embedded Redis cleanly on SIGTERM and SIGINT, with one
worker (uvicorn re-raises the signal it caught) and with two (uvicorn's supervisor
handles it), restarts a redis-server that died, counting it in /metrics, and has a
worker killed with SIGKILL replaced while the other one answers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from api_fixtures import payment
from serve_process import ServeProcess, pid_alive, wait_until, worker_pids


@pytest.mark.parametrize("workers, sig", [(1, signal.SIGTERM), (2, signal.SIGTERM), (1, signal.SIGINT),
                                          (2, signal.SIGINT)])
def test_a_stop_signal_stops_the_embedded_redis_and_saves(tmp_path: Path, workers: int, sig: int) -> None:
    serve = ServeProcess(tmp_path / "data", tmp_path / "serve.log", workers=workers).start()
    try:
        with serve.client() as c:
            ev = payment()
            first = c.post("/v1/decisions", json=ev).json()
            assert not first["degraded"]
        rdb = tmp_path / "data" / "redis" / "fengkong.rdb"
        before = rdb.stat().st_mtime_ns if rdb.exists() else 0
        serve.send(sig)
        code = serve.wait(60)
        assert not pid_alive(serve.redis_pid), "redis-server outlived serve:\n" + serve.output()
        assert not Path(serve.redis_socket).exists()
        assert code in (0, 1, 128 + signal.SIGTERM, 130, -signal.SIGINT), serve.output()
        assert "embedded server stopped" in serve.output()
        assert rdb.exists() and rdb.stat().st_mtime_ns > before  # SHUTDOWN saved a final snapshot

        again = ServeProcess(tmp_path / "data", tmp_path / "serve2.log").start()  # the same state comes back
        try:
            with again.client() as c:
                replay = c.post("/v1/decisions", json=ev).json()
            assert replay["duplicate"] and replay["decision_id"] == first["decision_id"]
        finally:
            again.send(signal.SIGTERM)
            again.wait(60)
            again.close()
    finally:
        serve.close()


def test_a_killed_embedded_redis_is_restarted_on_the_same_socket_and_counted(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path / "data", tmp_path / "serve.log", workers=2).start()
    try:
        with serve.client() as c:
            ev = payment()
            first = c.post("/v1/decisions", json=ev).json()
            assert not first["degraded"]
            # the record is written behind the answer: kill Redis only once it holds it (what
            # reached Redis survives its kill -9; the answer alone does not promise that)
            assert wait_until(lambda: c.get(f"/v1/decisions/{first['decision_id']}").status_code == 200, 5.0, 0.02)
            client = redis.Redis(unix_socket_path=serve.redis_socket, socket_timeout=2)
            old_pid = int(client.info("server")["process_id"])
            assert old_pid == serve.redis_pid
            client.close()
            os.kill(old_pid, signal.SIGKILL)

            def restarted() -> bool:
                try:
                    with redis.Redis(unix_socket_path=serve.redis_socket, socket_timeout=1) as r:
                        return int(r.info("server")["process_id"]) != old_pid
                except (redis.RedisError, OSError):
                    return False

            assert wait_until(restarted, 5.0, 0.02), serve.output()
            assert wait_until(lambda: "restarted as pid" in serve.output(), 5.0), serve.output()

            # the workers reconnect: decisions are full again and the state is still there
            def decided() -> bool:
                return not c.post("/v1/decisions", json=payment()).json()["degraded"]

            assert wait_until(decided, 10.0, 0.1)
            replay = c.post("/v1/decisions", json=ev).json()
            assert replay["duplicate"] and replay["decision_id"] == first["decision_id"]
            metrics = c.get("/metrics").text
            assert "fengkong_embedded_redis_restarts_total 1.0" in metrics, metrics
    finally:
        serve.send(signal.SIGTERM)
        serve.wait(60)
        serve.close()


def test_a_killed_serve_takes_its_redis_with_it(tmp_path: Path) -> None:
    """SIGKILL to the service process alone: the kernel stops its redis-server
    (PR_SET_PDEATHSIG), which shuts down cleanly instead of living on with ppid 1."""
    serve = ServeProcess(tmp_path / "data", tmp_path / "serve.log").start()
    try:
        with serve.client() as c:
            assert not c.post("/v1/decisions", json=payment()).json()["degraded"]
        assert serve.proc is not None
        os.kill(serve.proc.pid, signal.SIGKILL)
        serve.proc.wait(timeout=30)
        assert wait_until(lambda: not pid_alive(serve.redis_pid), 10), "redis-server orphaned"
        assert (tmp_path / "data" / "redis" / "fengkong.rdb").exists()  # its SIGTERM shutdown saved
    finally:
        serve.close()


def test_a_killed_worker_is_replaced_while_the_other_answers(tmp_path: Path) -> None:
    """kill -9 of one of two uvicorn workers: uvicorn's supervisor starts a new one; new
    connections meanwhile go to the live worker (they share the listening socket), the
    embedded Redis is untouched and the stored state answers from the new worker too."""
    serve = ServeProcess(tmp_path / "data", tmp_path / "serve.log", workers=2).start()
    try:
        assert serve.proc is not None
        workers = worker_pids(serve.proc.pid)
        assert len(workers) == 2, serve.output()
        with serve.client() as c:
            ev = payment()
            first = c.post("/v1/decisions", json=ev).json()
            assert not first["degraded"]
            assert wait_until(lambda: c.get(f"/v1/decisions/{first['decision_id']}").status_code == 200, 5.0, 0.02)
        os.kill(workers[0], signal.SIGKILL)
        statuses = []
        for _ in range(20):  # a fresh connection each: the live worker takes them
            with serve.client() as fresh:
                statuses.append(fresh.post("/v1/decisions", json=payment()).status_code)
        assert statuses == [200] * 20

        def replaced() -> bool:
            now = worker_pids(serve.proc.pid)
            return len(now) == 2 and workers[0] not in now

        assert wait_until(replaced, 30.0, 0.1), serve.output()
        new = next(p for p in worker_pids(serve.proc.pid) if p not in workers)
        assert pid_alive(serve.redis_pid)  # the supervisor's Redis was not restarted
        # now kill the other original worker: the new one alone answers, with the stored state
        os.kill(workers[1], signal.SIGKILL)
        with serve.client() as fresh:  # (the new worker may still be starting: the socket's backlog waits)
            replay = fresh.post("/v1/decisions", json=ev, timeout=60).json()
        assert replay["duplicate"] and replay["decision_id"] == first["decision_id"] and pid_alive(new)
    finally:
        serve.send(signal.SIGTERM)
        serve.wait(60)
        serve.close()
