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
after a warm-up load, instrumentation is switched on for the measured load and the
dump's instruction count is divided by the requests answered in it
(``instructions_per_request``). The worker is then the bottleneck by far, so each loop
tick holds many requests, as in a saturated worker; the count moves little with the
machine's load, where the CPU figures move a lot.
"""

from __future__ import annotations

import argparse
import json
import os
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
    command = [sys.executable, "-c", _SERVER.format(port=port)]
    out_dir = tempfile.mkdtemp(prefix="bench-http-cg-")
    if args.callgrind:
        python = os.path.realpath(sys.executable)  # the real binary, not a shim
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={out_dir}/callgrind.out", python, "-c", _SERVER.format(port=port)]
    server = subprocess.Popen(command, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench_api._wait_http(port, timeout=300)
        if args.callgrind:
            return {"code": str(code), **_counted(server.pid, port, run, out_dir, args), "load": os.getloadavg()[0]}
        result = bench_api._run_load(port, args.seconds, args.warmup, args.concurrency, run, {"worker": server.pid})
    finally:
        bench_api._stop(server)
    return {"code": str(code), "worker_cpu_us": result["cpu_us_per_request"]["worker"], "rps": round(result["rps"]),
            "errors": {k: v for k, v in result["errors"].items() if v}, "load": os.getloadavg()[0]}


def _load(port: int, seconds: float, run: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, bench_api.__file__, "--load", str(port), "--seconds", str(seconds),
                          "--warmup", "0", "--concurrency", str(args.concurrency), "--run", run],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _counted(pid: int, port: int, run: str, out_dir: str, args: argparse.Namespace) -> dict:
    """Instructions per answered request of a load, the worker under callgrind (after a warm-up load)."""
    _load(port, args.warmup, run + "w", args)
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    result = _load(port, args.seconds, run, args)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    dumps = sorted(Path(out_dir).glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
    totals = next(int(line.split()[1]) for line in dumps[-1].read_text().splitlines() if line.startswith("totals:"))
    return {"instructions_per_request": round(totals / max(result["completed"], 1)), "requests": result["completed"],
            "errors": {k: v for k, v in result["errors"].items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("codes", type=Path, nargs="+", help="checkouts of fengkong to compare")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--callgrind", action="store_true", help="count the worker's instructions per request")
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
