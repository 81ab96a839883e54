"""How much of the worker's CPU per decision the models' batch wait saves: two waits
side by side in one worker, under bench_api's load with models.

    python benchmarks/bench_batch_turns.py --artifacts DIR [--turns 0,2] [--seconds 60] [--window 0.5]

On a shared 2-core host, two bench_api runs a minute apart differ by more than a 10 %
change (docs/benchmarks.md): the host's other tenants, not the code. Here one worker
runs both: `turns_probe` (loaded into the service's worker only) switches the turns a
new batch of `fengkong.models.batch.TickBatcher` waits between the values of
``--turns`` every ``--window`` seconds, and notes the worker's CPU time and the payments
scored in each window. Each pair of adjacent windows (one of each wait) gives a ratio
of CPU per decision, both halves under the same load and the same neighbours.

The service is `fengkong serve` as bench_api runs it (one worker, embedded Redis, the
default rules, the artifacts of ``--artifacts``: e.g. a `fengkong train` output), loaded
by bench_api's generator (32 connections, fresh varied events). Only windows at full
load count (at least 60 % of the busiest window's payments: not the warm-up's, not the
last). The last line is JSON: ``turns`` (the two waits, a then b), ``windows``,
``pairs``, ``cpu_us_per_decision_a`` / ``_b`` (medians over their windows),
``ratio_b_over_a`` (median of the pairs' ratios) with ``ratio_q1`` / ``ratio_q3``, and
bench_api's figures of the whole run (``rps``, ``p99_ms``: the two waits mixed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_api

HERE = Path(__file__).resolve().parent


def pair_ratios(windows: list[list[float]], turns: tuple[int, int]) -> tuple[list[float], dict[int, list[float]]]:
    """The CPU-per-decision ratio b/a of every two adjacent windows of different waits, and each
    wait's CPU per decision (µs) in its windows; only windows with at least 60 % of the busiest's
    payments count (a window of the warm-up or of the load's end would pair unlike with like)."""
    busiest = max((w[2] for w in windows), default=0)
    loaded = [w for w in windows if w[2] >= 0.6 * busiest and w[2] > 0]
    per: dict[int, list[float]] = {t: [w[1] / w[2] * 1e6 for w in loaded if w[0] == t] for t in turns}
    ratios = []
    for x, y in zip(loaded, loaded[1:]):
        if x[0] != y[0]:
            a, b = (x, y) if x[0] == turns[0] else (y, x)
            ratios.append((b[1] / b[2]) / (a[1] / a[2]))
    return ratios, per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="a `fengkong train` output folder to serve")
    parser.add_argument("--turns", default="0,2", help="the two waits, a,b (loop turns)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    turns = tuple(int(t) for t in args.turns.split(","))
    if len(turns) != 2 or min(turns) < 0 or turns[0] == turns[1]:
        parser.error(f"--turns: two different waits of 0 or more loop turns, not {args.turns!r}")

    from fengkong.features.embedded_redis import EmbeddedRedis

    versions = bench_api.given_models(args.artifacts.resolve())
    redis_server = EmbeddedRedis(persist=False).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            site.mkdir()
            # the probe goes into the `fengkong serve` process only (it is the worker with one worker)
            (site / "sitecustomize.py").write_text(
                "import sys\nif 'serve' in sys.argv:\n"
                f"    sys.path.insert(0, {str(HERE)!r})\n    import turns_probe  # noqa: F401\n")
            log = Path(tmp) / "windows.jsonl"
            port = bench_api._free_port()
            env = dict(os.environ)
            env.update({
                "FENGKONG_REDIS_URL": redis_server.url, "FENGKONG_RULES_DIR": str(bench_api.ROOT / "rules"),
                "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": bench_api.KEY, "scopes": ["decide"]}]),
                "FENGKONG_KEY_PREFIX": f"turns{os.getpid()}", "FENGKONG_RULES_WATCH_S": "0",
                "FENGKONG_ARTIFACTS_DIR": str(args.artifacts.resolve()),
                "PYTHONPATH": os.pathsep.join([str(site), str(bench_api.ROOT), env.get("PYTHONPATH", "")]),
                "BENCH_TURNS": ",".join(map(str, turns)), "BENCH_TURNS_WINDOW": str(args.window),
                "BENCH_TURNS_LOG": str(log)})
            service = bench_api._serve(port, env, str(Path(tmp) / "data"))
            try:
                bench_api._wait_http(port)
                print(f"models: {bench_api.check_models_served(port, versions)}", flush=True)
                run = f"{os.getpid()}-{int(time.time())}T"
                load = bench_api._run_load(port, args.seconds, 2.0, args.concurrency, run,
                                           {"worker": service.pid})
            finally:
                bench_api._stop(service)
            windows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    finally:
        redis_server.stop()
    ratios, per = pair_ratios(windows, turns)
    if len(ratios) < 4 or not all(per.values()):
        sys.exit(f"too few loaded windows to compare ({len(windows)} noted, {len(ratios)} pairs): "
                 "was the probe loaded and were the models scored?")
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(json.dumps({
        "turns": list(turns), "windows": sum(len(v) for v in per.values()), "pairs": len(ratios),
        "cpu_us_per_decision_a": round(statistics.median(per[turns[0]]), 1),
        "cpu_us_per_decision_b": round(statistics.median(per[turns[1]]), 1),
        "ratio_b_over_a": round(statistics.median(ratios), 4), "ratio_q1": round(q1, 4), "ratio_q3": round(q3, 4),
        "rps": round(load["rps"], 1), "p99_ms": round(load["p99_ms"], 3),
        "worker_cpu_us": load["cpu_us_per_request"]["worker"]}))


if __name__ == "__main__":
    main()
