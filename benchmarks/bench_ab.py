"""Two or more builds of the decision service compared side by side, in interleaved slices.

    python benchmarks/bench_ab.py --variant base=/tmp/base --variant new=. \\
        [--variant fb0=.:FENGKONG_REDIS_FLUSH_BYTES=0] [--rounds 6] [--seconds 4]

Why: on a shared 2-core machine the load from other processes changes from one
minute to the next, so two `bench_api.py` runs a minute apart compare the
machine's moods as much as the builds. Here every variant runs at once (its own
`fengkong serve` worker, rules only, and its own embedded Redis), idle while the
others are loaded, and the load generator of `bench_api.py` (32 keep-alive
connections, fresh events) visits them in turn, a few seconds each, for several
rounds, in an order that alternates each round. Each round gives each variant's
req/s and its worker's and Redis's CPU per answered request; the last line is one
JSON object with every round's figures and, per variant, the median over rounds of
its req/s divided by the first variant's in the same round.

A variant is ``name=DIR`` (the source tree whose ``fengkong`` is served) with
optional ``:NAME=VALUE`` environment settings, comma separated.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_api  # noqa: E402 - the load generator and the serve helpers

ROOT = Path(__file__).resolve().parent.parent


def _parse(spec: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = spec.partition("=")
    where, _, extra = rest.partition(":")
    if not name or not where:
        raise SystemExit(f"--variant: expected NAME=DIR[:ENV=VALUE,...], got {spec!r}")
    env = dict(item.split("=", 1) for item in extra.split(",") if item)
    return name, Path(where).resolve(), env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="NAME=DIR[:ENV=VALUE,...]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    variants = [_parse(v) for v in args.variant]

    from fengkong.features.embedded_redis import EmbeddedRedis

    started: list[tuple[str, int, int, object, object]] = []  # name, port, worker pid, service, redis
    tmp = tempfile.TemporaryDirectory()
    rounds: list[dict[str, dict]] = []
    try:
        for name, where, extra in variants:
            server = EmbeddedRedis(persist=False).start()
            env = dict(os.environ)
            env.update({"PYTHONPATH": str(where), "FENGKONG_REDIS_URL": server.url,
                        "FENGKONG_RULES_DIR": str(ROOT / "rules"),
                        "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": bench_api.KEY,
                                                          "scopes": ["decide"]}]),
                        "FENGKONG_KEY_PREFIX": f"ab{os.getpid()}{name}", "FENGKONG_RULES_WATCH_S": "0"})
            env.update(extra)
            port = bench_api._free_port()
            data = Path(tmp.name) / name
            data.mkdir()
            service = bench_api._serve(port, env, str(data))
            started.append((name, port, service.pid, service, server))
            bench_api._wait_http(port)
        for r in range(args.rounds):
            order = started if r % 2 == 0 else started[::-1]
            figures: dict[str, dict] = {}
            for name, port, pid, _, server in order:
                redis_pid = int(server.client().info("server")["process_id"])  # type: ignore[attr-defined]
                res = bench_api._run_load(port, args.seconds, args.warmup, args.concurrency, f"{name}{r}{time.time()}",
                                          {"worker": pid, "redis": redis_pid})
                figures[name] = {"rps": round(res["rps"], 1), "p99_ms": res["p99_ms"],
                                 "errors": res["errors"], **res["cpu_us_per_request"]}
            figures["load_avg"] = os.getloadavg()[0]  # type: ignore[assignment]
            rounds.append(figures)
            print(json.dumps({"round": r, **figures}), flush=True)
    finally:
        for _, _, _, service, server in started:
            bench_api._stop(service)  # type: ignore[arg-type]
            server.stop()  # type: ignore[attr-defined]
        tmp.cleanup()
    first = variants[0][0]
    summary = {name: {"median_rps_vs_" + first: round(statistics.median(f[name]["rps"] / f[first]["rps"]
                                                                        for f in rounds), 3),
                      "median_worker_cpu_us": statistics.median(f[name]["worker"] for f in rounds),
                      "median_redis_cpu_us": statistics.median(f[name]["redis"] for f in rounds)}
               for name, _, _ in variants}
    print(json.dumps({"rounds": rounds, "summary": summary}))


if __name__ == "__main__":
    main()
