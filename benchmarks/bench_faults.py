"""The decision service under load while its Redis is killed (kill -9) and frozen (SIGSTOP).

    python benchmarks/bench_faults.py [--workers 1] [--concurrency 16] [--fault-s 5]

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
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
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
                "FENGKONG_RULES_WATCH_S": "0", "FENGKONG_LOG_LEVEL": "error"})
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

        load = Load(port, args.concurrency)
        asyncio.run(load.run(script))
        restarted_client = redis.Redis(unix_socket_path=str(link))
        survived = bool(restarted_client.sismember("bf:v1:{list:blocked_cards}:members", BLOCKED))
        restarted_client.close()
        records = load.records
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
            "p99_ms_during_fault": round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None,
            "recovery_s": None if None in rec else max(r for r in rec if r is not None),
            "blacklist_enforced_during_fault": round(sum(1 for r in blocked if r[6] == "deny") / len(blocked), 4)
            if blocked else None,
            "blacklist_enforced_during_kill": _share_denied(blocked, "kill"),
            "blacklist_enforced_during_stop": _share_denied(blocked, "stop"),
            "state_survived_kill9": survived,
            "degraded_during_fault": sum(1 for r in fault if r[5]),
        }
        holder["server"].stop()
        holder.get("old", server).stop()
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
    print(json.dumps(result))


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
