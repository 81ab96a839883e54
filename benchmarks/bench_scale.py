"""Throughput and CPU per decision with 1, 2 and 4 API workers, on one Redis and on a
3-master Redis Cluster.

    python benchmarks/bench_scale.py [--seconds 8] [--warmup 2] [--concurrency 32] [--cluster-workers 1,2]

Starts one Redis (embedded, no snapshots) and a 3-master Redis Cluster from the same
redis-server binary (tests/redis_cluster.py: cluster mode, slots assigned from
Python), then for each case `fengkong serve --workers N` (default rules, no models)
loaded by bench_api.py's load generator (its second process, fresh varied events,
keep-alive connections). Each case gets a fresh key prefix, and a decision budget of
``--deadline-ms`` (1,000 ms: CPU per decision, not latency, is the point here). Prints one JSON object:
``rps_w1``, ``rps_w2``, ``rps_w4``, ``cluster_rps_w1``, ``cluster_rps_w2``,
``scaling_w2_over_w1``, ``cluster_over_single_w2``, and for every case
``<case>_worker_cpu_us`` (all the service's processes together), ``<case>_redis_cpu_us``
(every Redis process together), ``<case>_p99_ms`` and ``<case>_degraded`` (answers the
failure policy gave: the figures hold only when it is near 0), CPU per answered
decision from /proc (warm-up included on both sides of the division).

On a 2-core machine one worker, its Redis and the load generator already fill the
cores, so requests/s cannot grow much with workers here: the CPU per decision is the
figure that carries to a bigger machine (docs/scale.md turns it into a sizing rule).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_api  # noqa: E402  (its load generator and helpers)
from fengkong.features.embedded_redis import EmbeddedRedis  # noqa: E402
from redis_cluster import LocalCluster  # noqa: E402  (the tests' cluster: same binary, slots from Python)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += bench_api._cpu_s(pid)
        except (OSError, IndexError):
            pass
    return total


def _wait_workers(pid: int, workers: int, timeout_s: float = 60.0) -> list[int]:
    """The service's processes once its ``workers`` workers are up (a supervisor above
    them when more than one)."""
    stop = time.monotonic() + timeout_s
    while True:
        tree = _tree(pid)
        want = 1 + (workers if workers > 1 else 0)
        if len(tree) >= want or time.monotonic() > stop:
            return tree
        time.sleep(0.2)


def run_case(name: str, url: str, redis_pids: list[int], workers: int, args: argparse.Namespace) -> dict:
    port = bench_api._free_port()
    env = dict(os.environ)
    env.update({"FENGKONG_REDIS_URL": url, "FENGKONG_RULES_DIR": str(ROOT / "rules"),
                "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": bench_api.KEY, "scopes": ["decide"]}]),
                "FENGKONG_KEY_PREFIX": f"scale{os.getpid()}{name}", "FENGKONG_RULES_WATCH_S": "0",
                "FENGKONG_DEADLINE_MS": str(args.deadline_ms)})
    with tempfile.TemporaryDirectory() as tmp:
        env["FENGKONG_ARTIFACTS_DIR"] = str(Path(tmp) / "no-artifacts")
        proc = bench_api._serve(port, env, tmp, workers)
        try:
            bench_api._wait_http(port, timeout=240.0)  # 4 workers start slowly on a loaded 2-core machine
            service = _wait_workers(proc.pid, workers)
            before = (_cpu(service), _cpu(redis_pids))
            result = bench_api._run_load(port, args.seconds, args.warmup, args.concurrency,
                                         f"{name}{os.getpid()}{int(time.time())}", watch={})
            service = _tree(proc.pid)  # a worker restarted meanwhile would be missed otherwise
            after = (_cpu(service), _cpu(redis_pids))
        finally:
            bench_api._stop(proc)
    done = max(result["completed"], 1)
    out = {"rps": round(result["rps"], 1), "p50_ms": round(result["p50_ms"] or 0, 2),
           "p99_ms": round(result["p99_ms"] or 0, 2),
           "worker_cpu_us": round((after[0] - before[0]) / done * 1e6, 1),
           "redis_cpu_us": round((after[1] - before[1]) / done * 1e6, 1),
           "load_cpu_us": round(result["load_cpu_s"] / done * 1e6, 1),
           "degraded": result["errors"].get("degraded", 0), "errors": result["errors"].get("status", 0)
           + result["errors"].get("io", 0)}
    print(f"{name}: {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", default="1,2,4", help="worker counts on one Redis")
    ap.add_argument("--deadline-ms", type=int, default=1000,
                    help="the service's decision budget (FENGKONG_DEADLINE_MS): generous by default, so that an "
                         "overloaded shared machine does not turn decisions into degraded ones, which skip Redis "
                         "and would make the CPU per decision look smaller than it is")
    ap.add_argument("--cluster-workers", default="1,2", help="worker counts on the cluster")
    args = ap.parse_args()

    single = EmbeddedRedis(persist=False).start()
    cluster = LocalCluster(3).start()
    cases: dict[str, dict] = {}
    try:
        single_pid = int(single.client().info("server")["process_id"])
        for w in (int(x) for x in args.workers.split(",") if x):
            cases[f"w{w}"] = run_case(f"w{w}", single.url, [single_pid], w, args)
        for w in (int(x) for x in args.cluster_workers.split(",") if x):
            cases[f"cluster_w{w}"] = run_case(f"cluster_w{w}", cluster.url, cluster.pids(), w, args)
    finally:
        cluster.stop()
        single.stop()
    out: dict[str, float | int | None] = {}
    for case, r in cases.items():
        out[f"{'cluster_rps_' + case[8:] if case.startswith('cluster_') else 'rps_' + case}"] = r["rps"]
    for case, r in cases.items():
        for k in ("worker_cpu_us", "redis_cpu_us", "p99_ms", "degraded"):
            out[f"{case}_{k}"] = r[k]
    if "w1" in cases and "w2" in cases:
        out["scaling_w2_over_w1"] = round(cases["w2"]["rps"] / max(cases["w1"]["rps"], 1e-9), 3)
    if "w2" in cases and "cluster_w2" in cases:
        out["cluster_over_single_w2"] = round(cases["cluster_w2"]["rps"] / max(cases["w2"]["rps"], 1e-9), 3)
    out["cpus"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
