"""The decision service under load while its Redis is killed (kill -9) and frozen (SIGSTOP),
a worker is killed, and the whole service with its Redis is killed and started again.

    python benchmarks/bench_faults.py [--workers 1] [--concurrency 16] [--fault-s 5] [--no-full-kill]

Starts the embedded Redis (`EmbeddedRedis`, persistence as the service runs it) and
the service (`create_app_from_env`, ``--workers`` uvicorn workers, rules-only), adds a
card to ``blocked_cards`` through the lists API, then loads the service from this
process (raw HTTP/1.1 keep-alive connections, fresh events; one in ten pays with the
blocked card) through four phases: before (2 s), Redis killed with SIGKILL for
``--fault-s`` then restarted on the same data directory, between (2 s), Redis frozen
with SIGSTOP for ``--fault-s`` then SIGCONT, after (2 s). The service reaches Redis
through a symlink to the server's socket, repointed at the restarted server.

The last line is one JSON object:

* ``non_2xx``: answers that were not 200 (and requests that failed), all phases;
* ``p99_ms_during_fault``: 99th percentile of the client-side latency during the faults;
* ``recovery_s``: the longer, over the two faults, of the time from Redis back to the
  first answer that was not degraded;
* ``blacklist_enforced_during_fault``: share of blocked-card payments denied during
  the faults (target 1.0);
* ``blacklist_enforced_during_kill`` and ``_during_stop``: the same per fault. When the
  kill loses the entry (see the next key), the restarted Redis no longer lists the
  card, the workers' snapshots reload from it, and the frozen phase cannot deny it:
  that shortfall is the lost state, not degraded mode;
* ``state_survived_kill9``: whether the list entry added before the kill was there
  after the restart (the embedded Redis's persistence decides: RDB snapshots alone
  lose the last changes);
* ``answers``, ``degraded_during_fault``: counts, for context.

With ``--workers`` 2 or more, a fifth phase: one uvicorn worker killed with SIGKILL
under load (uvicorn's supervisor starts another), for as long as the replacement takes
plus 2 s. Its keys (null with one worker, where the worker is the service):

* ``worker_kill_non_2xx``: requests that failed (those in flight on the killed
  worker's connections; the clients reconnect and the live worker answers);
* ``worker_kill_recovery_s``: from the kill to the first full answer after the last
  failed request;
* ``worker_kill_replaced_s``: from the kill to the supervisor's replacement process
  existing (it then still starts up: loads the rules, connects).

Last (unless ``--no-full-kill``), the service and its Redis killed together: a
`fengkong serve` on its own embedded Redis and data directory gets a list entry, a
merchant grade and a denied decision, is loaded for 2 s, then its whole process group
gets SIGKILL and `fengkong serve` starts again on the same ``--data-dir`` and port while
the load keeps trying. Keys:

* ``full_kill_recovery_s``: from the new `fengkong serve` command to its first full
  answer (its start-up: Redis loading the AOF, the workers loading the rules);
  ``full_kill_down_s`` the same from the kill;
* ``full_kill_state_survived``: the list entry, the merchant's grade and the stored
  decision are there, and the denied event_id sent again gets that decision
  (``duplicate: true``); ``full_kill_state`` has each of the four.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fengkong.features.embedded_redis import EmbeddedRedis  # noqa: E402

KEY = "bench-faults-key-0123456789"
BLOCKED = "tok-bench-blocked"


def _event(n: int, blocked: bool) -> bytes:
    return json.dumps({
        "event_id": f"bf-{os.getpid()}-{n}-{random.getrandbits(32)}", "type": "payment",
        "occurred_at": "2026-11-25T10:00:00+08:00", "merchant_id": f"m-{n % 500}", "user_id": f"u-{n % 5000}",
        "amount": "120.00", "currency": "CNY", "channel": "quick_pay",
        "card": {"fingerprint": BLOCKED if blocked else f"tok-{n % 20000}", "bin": "622202", "type": "debit",
                 "issuer_country": "CN"},
        "ip": f"183.{n % 64}.{n // 64 % 256}.{n % 97 + 1}", "device_id": f"dev-{n % 8000}",
    }).encode()


class Load:
    """Concurrent keep-alive clients; every answer is recorded with its time and phase."""

    def __init__(self, port: int, concurrency: int) -> None:
        self.port = port
        self.concurrency = concurrency
        self.phase = "before"
        self.records: list[tuple[float, str, int, float, bool, bool, str | None]] = []
        self.stop = False
        self.n = 0

    async def client(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        while not self.stop:
            self.n += 1
            blocked = self.n % 10 == 0
            body = _event(self.n, blocked)
            head = (f"POST /v1/decisions HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n").encode()
            phase = self.phase
            t0 = time.perf_counter()
            try:
                writer.write(head + body)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                payload = json.loads(await reader.readexactly(length)) if length else {}
                status = int(status_line.split()[1])
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                self.records.append((time.monotonic(), phase, 0, 0.0, blocked, False, None))
                writer.close()
                while not self.stop:  # the whole service may be down (the full kill): retry until it is back
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                        break
                    except OSError:
                        self.records.append((time.monotonic(), self.phase, 0, 0.0, False, False, None))
                        await asyncio.sleep(0.02)
                continue
            self.records.append((time.monotonic(), phase, status, (time.perf_counter() - t0) * 1000, blocked,
                                 bool(payload.get("degraded")), payload.get("decision")))
        writer.close()

    async def run(self, script: Any) -> None:
        clients = [asyncio.create_task(self.client()) for _ in range(self.concurrency)]
        await script(self)
        self.stop = True
        await asyncio.gather(*clients, return_exceptions=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fault-s", type=float, default=5.0)
    ap.add_argument("--no-full-kill", action="store_true", help="skip the last phase (service and Redis killed)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fk-bf-"))
    data = work / "redis"
    link = work / "r.sock"
    server = EmbeddedRedis(data_dir=data, persist=True).start()
    os.symlink(server.socket_path, link)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENGKONG_")}
    env.update({"PYTHONPATH": str(ROOT), "FENGKONG_REDIS_URL": f"unix://{link}", "FENGKONG_KEY_PREFIX": "bf",
                "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": KEY, "scopes": ["decide", "admin"]}]),
                "FENGKONG_RULES_DIR": str(ROOT / "rules"), "FENGKONG_ARTIFACTS_DIR": str(work / "none"),
                "FENGKONG_RULES_WATCH_S": "0", "FENGKONG_LOG_LEVEL": "error",
                "FENGKONG_DATA_DIR": str(work / "data")})  # the cases database too, not the working directory's
    code = ("import uvicorn\nfrom fengkong.api.http_protocol import UVICORN_OPTIONS\n"
            f"uvicorn.run('fengkong.api.app:create_app_from_env', factory=True, host='127.0.0.1', port={port}, "
            f"workers={args.workers}, log_level='error', **UVICORN_OPTIONS)\n")
    service = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    result: dict[str, Any] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=10) as admin:
            r = admin.post("/v1/lists/blocked_cards/entries", json={"entries": [BLOCKED]})
            assert r.status_code == 200, r.text
        time.sleep(1.5)  # every worker's snapshot refreshes (1 s)
        marks: dict[str, float] = {}
        holder = {"server": server}

        async def script(load: Load) -> None:
            await asyncio.sleep(2)
            load.phase = "kill"
            holder["server"].kill()
            await asyncio.sleep(args.fault_s)
            holder["server"].stop()  # the killed server's instance lets go of the data dir's lock
            restarted = EmbeddedRedis(data_dir=data, persist=True).start()
            os.unlink(link)
            os.symlink(restarted.socket_path, link)
            holder["old"], holder["server"] = holder["server"], restarted
            marks["kill_back"] = time.monotonic()
            load.phase = "between"
            await asyncio.sleep(2)
            load.phase = "stop"
            proc = holder["server"]._proc
            assert proc is not None
            proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(args.fault_s)
            proc.send_signal(signal.SIGCONT)
            marks["stop_back"] = time.monotonic()
            load.phase = "after"
            await asyncio.sleep(2)
            if args.workers > 1:  # a worker killed: uvicorn's supervisor starts another
                workers = _worker_pids(service.pid)
                load.phase = "worker_kill"
                marks["worker_killed"] = time.monotonic()
                os.kill(workers[0], signal.SIGKILL)
                until = time.monotonic() + 30
                while time.monotonic() < until:
                    now = _worker_pids(service.pid)
                    if len(now) == len(workers) and workers[0] not in now:
                        marks["worker_replaced"] = time.monotonic()
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(2)

        load = Load(port, args.concurrency)
        asyncio.run(load.run(script))
        restarted_client = redis.Redis(unix_socket_path=str(link))
        survived = bool(restarted_client.sismember("bf:v1:{list:blocked_cards}:members", BLOCKED))
        restarted_client.close()
        everything = load.records
        # a request in flight when the worker was killed belongs to that phase, whenever it was sent
        worker_killed = marks.get("worker_killed", float("inf"))
        records = [r for r in everything if r[1] in ("before", "kill", "between", "stop", "after")
                   and r[0] < worker_killed]
        fault = [r for r in records if r[1] in ("kill", "stop")]
        lat = sorted(r[3] for r in fault if r[2] == 200)
        blocked = [r for r in fault if r[4] and r[2] == 200]

        def recovery(after: float) -> float | None:
            ok = [r[0] for r in records if r[0] >= after and r[2] == 200 and not r[5]]
            return round(min(ok) - after, 3) if ok else None

        rec = [recovery(marks["kill_back"]), recovery(marks["stop_back"])]
        result = {
            "workers": args.workers, "answers": len(records),
            "non_2xx": sum(1 for r in records if r[2] != 200),
            "non_2xx_by_phase_status": _by_phase_status(records),
            "p99_ms_during_fault": round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None,
            "recovery_s": None if None in rec else max(r for r in rec if r is not None),
            "blacklist_enforced_during_fault": round(sum(1 for r in blocked if r[6] == "deny") / len(blocked), 4)
            if blocked else None,
            "blacklist_enforced_during_kill": _share_denied(blocked, "kill"),
            "blacklist_enforced_during_stop": _share_denied(blocked, "stop"),
            "state_survived_kill9": survived,
            "degraded_during_fault": sum(1 for r in fault if r[5]),
        }
        result.update(_worker_kill_figures(everything, marks, args.workers))
        holder["server"].stop()
        holder.get("old", server).stop()
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
    if not args.no_full_kill:
        result.update(full_kill(work / "serve-data", args.workers, args.concurrency))
    print(json.dumps(result))


def _worker_pids(parent: int) -> list[int]:
    """The uvicorn workers of a supervisor: its children started by multiprocessing's spawn."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in cmdline \
                and b"resource_tracker" not in cmdline:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def _worker_kill_figures(records: list[tuple[Any, ...]], marks: dict[str, float], workers: int) -> dict[str, Any]:
    """The worker-kill phase's keys (None with one worker: then the worker is the service)."""
    if workers < 2 or "worker_killed" not in marks:
        return {"worker_kill_non_2xx": None, "worker_kill_recovery_s": None, "worker_kill_replaced_s": None}
    killed = marks["worker_killed"]
    phase = [r for r in records if r[0] >= killed]
    failed = [r[0] for r in phase if r[2] != 200]
    last_failure = max(failed, default=killed)
    ok_after = [r[0] for r in phase if r[0] >= last_failure and r[2] == 200 and not r[5]]
    return {
        "worker_kill_non_2xx": len(failed),  # requests in flight on the killed worker's connections
        "worker_kill_recovery_s": round(min(ok_after) - killed, 3) if ok_after else None,
        "worker_kill_replaced_s": round(marks["worker_replaced"] - killed, 3) if "worker_replaced" in marks else None,
        "worker_kill_answers": len(phase),
        "worker_kill_p99_ms": _p99([r[3] for r in phase if r[2] == 200]),
    }


def _p99(latencies: list[float]) -> float | None:
    lat = sorted(latencies)
    return round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None


def _serve(data_dir: Path, port: int, workers: int, log: Any) -> subprocess.Popen:
    """`fengkong serve` on its embedded Redis in `data_dir`, in its own session (killed as a whole)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENGKONG_")}
    env.update({"PYTHONPATH": str(ROOT), "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": KEY,
                                                                            "scopes": ["decide", "admin"]}]),
                "FENGKONG_ARTIFACTS_DIR": str(data_dir.parent / "none"), "FENGKONG_RULES_WATCH_S": "0",
                "FENGKONG_LOG_LEVEL": "error"})
    return subprocess.Popen(
        [sys.executable, "-c", "from fengkong.cli import app; app()", "serve", "--port", str(port), "--workers",
         str(workers), "--data-dir", str(data_dir), "--rules-dir", str(ROOT / "rules")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def full_kill(data_dir: Path, workers: int, concurrency: int) -> dict[str, Any]:
    """The service and its Redis killed together (SIGKILL to `fengkong serve`'s process
    group) under load, then `fengkong serve` again on the same data directory: how long
    until full answers, and whether what decides survived (the list entry, the merchant's
    grade, a stored decision, a retried event_id answered with it)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    merchant = f"m-bench-full-{os.getpid()}"
    with open(data_dir.parent / "serve.log", "a") as log:
        serve = _serve(data_dir, port, workers, log)
        again: subprocess.Popen | None = None
        try:
            _wait_ready(base)
            with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=10) as admin:
                assert admin.post("/v1/lists/blocked_cards/entries", json={"entries": [BLOCKED]}).status_code == 200
                assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "A"}).status_code == 200
                stolen = json.loads(_event(7, True))
                stolen["merchant_id"] = merchant
                denied = admin.post("/v1/decisions", json=stolen).json()
                assert denied["decision"] == "deny", denied
                deadline = time.monotonic() + 10
                while admin.get(f"/v1/decisions/{denied['decision_id']}").status_code != 200:
                    assert time.monotonic() < deadline, "the decision record was never stored"
                    time.sleep(0.02)
            marks: dict[str, float] = {}
            holder: dict[str, subprocess.Popen] = {}

            async def script(load: Load) -> None:
                nonlocal again
                await asyncio.sleep(2)
                load.phase = "full_kill"
                marks["killed"] = time.monotonic()
                os.killpg(serve.pid, signal.SIGKILL)
                await asyncio.get_running_loop().run_in_executor(None, serve.wait)
                marks["restarted"] = time.monotonic()
                again = holder["again"] = _serve(data_dir, port, workers, log)
                until = time.monotonic() + 90
                while time.monotonic() < until and not any(
                        r[0] >= marks["restarted"] and r[2] == 200 and not r[5] for r in load.records[-200:]):
                    await asyncio.sleep(0.05)
                load.phase = "full_after"
                await asyncio.sleep(2)

            load = Load(port, concurrency)
            load.phase = "full_before"
            asyncio.run(load.run(script))
            back = [r[0] for r in load.records if r[0] >= marks["restarted"] and r[2] == 200 and not r[5]]
            with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=10) as c:
                listed = BLOCKED in c.get("/v1/lists/blocked_cards").json().get("entries", [])
                graded = c.get(f"/v1/merchants/{merchant}").json().get("grade") == "A"
                stored = c.get(f"/v1/decisions/{denied['decision_id']}")
                kept = stored.status_code == 200 and stored.json()["decision"] == "deny"
                replay = c.post("/v1/decisions", json=stolen).json()
                retried = replay.get("duplicate") is True and replay.get("decision_id") == denied["decision_id"]
            before = [r for r in load.records if r[1] == "full_before" and r[0] < marks["killed"]]
            return {
                "full_kill_recovery_s": round(min(back) - marks["restarted"], 3) if back else None,
                "full_kill_down_s": round(min(back) - marks["killed"], 3) if back else None,
                "full_kill_state_survived": listed and graded and kept and retried,
                "full_kill_state": {"list_entry": listed, "merchant_grade": graded, "stored_decision": kept,
                                    "retried_event_id": retried},
                "full_kill_non_2xx_before": sum(1 for r in before if r[2] != 200),
                "full_kill_in_flight_lost": sum(1 for r in load.records
                                                if r[1] == "full_before" and r[0] >= marks["killed"]),
                "full_kill_answers": sum(1 for r in load.records if r[2] == 200),
            }
        finally:
            for proc in (serve, again):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)


def _by_phase_status(records: list[tuple[Any, ...]]) -> dict[str, int]:
    """The answers that were not 200, counted by ``phase:status`` (status 0: the request failed)."""
    out: dict[str, int] = {}
    for r in records:
        if r[2] != 200:
            out[f"{r[1]}:{r[2]}"] = out.get(f"{r[1]}:{r[2]}", 0) + 1
    return out


def _share_denied(blocked: list[tuple[Any, ...]], phase: str) -> float | None:
    """Share of the blocked-card payments of one fault phase that were denied."""
    mine = [r for r in blocked if r[1] == phase]
    return round(sum(1 for r in mine if r[6] == "deny") / len(mine), 4) if mine else None


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the service did not become ready")


if __name__ == "__main__":
    main()
