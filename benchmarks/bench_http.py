"""The worker's CPU per decision over HTTP, for two checkouts of the code side by side.

    python benchmarks/bench_http.py CODE_DIR [CODE_DIR ...] [--pairs 3] [--seconds 6] [--warmup 1.5]

Why: `bench_decide` leaves the HTTP server out (uvicorn's httptools protocol, the
socket), and `bench_api` needs the whole machine. This runs each checkout's service
app under uvicorn as `fengkong serve` runs it (`UVICORN_OPTIONS`, one worker process,
rules only, the case consumer off) on one embedded Redis, loads it from another
process with bench_api's load generator (32 keep-alive connections, the same
events), and reads the worker's CPU from /proc: CPU per answered request, warm-up
included on both sides of the division, as bench_api's ``service_worker_cpu_us``.
The checkouts take turns (A B A B ...), so the machine's load moves both alike;
each turn starts a fresh worker. The last line is JSON: every turn's figure and the
median of each checkout.

``--callgrind``: the worker runs under ``valgrind --tool=callgrind --instr-atstart=no``;
32 keep-alive connections are opened and warmed up (``--warm-requests`` each), then
instrumentation is on for exactly ``--requests`` more on each, and the dump's count is
divided by them (``instructions_per_request``): connection set-up is out, and the
count does not move with the machine's load, where the CPU figures move a lot. The
worker is the bottleneck by far under callgrind, so each loop tick holds many
requests, as in a saturated worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_api  # noqa: E402  (the load generator, the key, the process helpers)

_SERVER = ("import uvicorn; from fengkong.api.app import create_app_from_env; "
           "from fengkong.api.http_protocol import UVICORN_OPTIONS; "
           "uvicorn.run(create_app_from_env, factory=True, host='127.0.0.1', port={port}, log_level='warning', "
           "**UVICORN_OPTIONS)")


def _turn(code: Path, redis_url: str, run: str, args: argparse.Namespace) -> dict:
    port = bench_api._free_port()
    env = dict(os.environ, PYTHONPATH=str(code), FENGKONG_REDIS_URL=redis_url,
               FENGKONG_RULES_DIR=str(code / "rules"), FENGKONG_KEY_PREFIX=f"http{run}",
               FENGKONG_API_KEYS=json.dumps([{"name": "bench", "key": bench_api.KEY, "scopes": ["decide"]}]),
               FENGKONG_RULES_WATCH_S="0", FENGKONG_CASES_CONSUMER="false",
               FENGKONG_ARTIFACTS_DIR=str(code / "no-artifacts"), FENGKONG_DATA_DIR=f"/tmp/bench-http-{run}")
    if args.callgrind:  # a worker under callgrind is slow: its connections must not time out between phases
        env.update(FENGKONG_KEEP_ALIVE_S="600", FENGKONG_BODY_TIMEOUT_S="600", FENGKONG_DEADLINE_MS="10000")
    command = [sys.executable, "-c", _SERVER.format(port=port)]
    out_dir = tempfile.mkdtemp(prefix="bench-http-cg-") if args.callgrind else ""
    if args.callgrind:
        python = os.path.realpath(sys.executable)  # the real binary, not a shim
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={out_dir}/callgrind.out", python, "-c", _SERVER.format(port=port)]
    server = subprocess.Popen(command, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench_api._wait_http(port, timeout=300)
        if args.callgrind:
            counted = asyncio.run(_counted_load(server.pid, port, run, out_dir, args))
            return {"code": str(code), **counted, "load": os.getloadavg()[0]}
        result = bench_api._run_load(port, args.seconds, args.warmup, args.concurrency, run, {"worker": server.pid})
    finally:
        bench_api._stop(server)
        shutil.rmtree(env["FENGKONG_DATA_DIR"], ignore_errors=True)
        if out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"code": str(code), "worker_cpu_us": result["cpu_us_per_request"]["worker"], "rps": round(result["rps"]),
            "errors": {k: v for k, v in result["errors"].items() if v}, "load": os.getloadavg()[0]}


async def _requests_on(connections: list, requests: list[bytes], at: list[int], count: int) -> int:
    """`count` requests on each open connection, one in flight on each (as bench_api's load);
    how many answers were not a plain 200 (an error or a degraded decision)."""
    odd = [0]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(count):
            writer.write(requests[at[0] % len(requests)])
            at[0] += 1
            status = await reader.readuntil(b"\r\n")
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in headers.split(b"\r\n")
                          if line[:15].lower() == b"content-length:")
            body = await reader.readexactly(length)
            odd[0] += status[9:12] != b"200" or b'"degraded":true' in body

    await asyncio.gather(*(one(r, w) for r, w in connections))
    return odd[0]


async def _counted_load(pid: int, port: int, run: str, out_dir: str, args: argparse.Namespace) -> dict:
    """Instructions per request: connections opened and warmed up first, then
    instrumentation on for exactly ``--requests`` requests per connection, then the dump."""
    requests = bench_api._requests("127.0.0.1", run, args.concurrency * (args.warm_requests + args.requests))
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(args.concurrency)]
    for _, writer in connections:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    at = [0]
    await _requests_on(connections, requests, at, args.warm_requests)
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    odd = await _requests_on(connections, requests, at, args.requests)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    for _, writer in connections:
        writer.close()
    dump = sorted(Path(out_dir).glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)[-1]
    totals = next(int(line.split()[1]) for line in dump.read_text().splitlines() if line.startswith("totals:"))
    n = args.requests * args.concurrency
    return {"instructions_per_request": round(totals / n), "requests": n, "not_plain_200": odd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("codes", type=Path, nargs="+", help="checkouts of fengkong to compare")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--callgrind", action="store_true", help="count the worker's instructions per request")
    parser.add_argument("--requests", type=int, default=25, help="--callgrind: measured requests per connection")
    parser.add_argument("--warm-requests", type=int, default=10, help="--callgrind: warm-up requests per connection")
    args = parser.parse_args()
    from fengkong.features.embedded_redis import EmbeddedRedis

    redis_server = EmbeddedRedis(persist=False).start()
    turns: list[dict] = []
    try:
        for i in range(args.pairs):
            for j, code in enumerate(args.codes):
                turn = _turn(code.resolve(), redis_server.url, f"{os.getpid()}-{i}-{j}-{int(time.time())}", args)
                turns.append(turn)
                print(json.dumps(turn), file=sys.stderr)
    finally:
        redis_server.stop()
    figure = "instructions_per_request" if args.callgrind else "worker_cpu_us"
    medians = {str(c.resolve()): statistics.median(t[figure] for t in turns if t["code"] == str(c.resolve()))
               for c in args.codes}
    print(json.dumps({"turns": turns, f"median_{figure}": medians}))


if __name__ == "__main__":
    main()
