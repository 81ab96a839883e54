"""Time `fengkong replay` on a simulated history: many events in flight, and one by one.

Simulates (seeded) a history of at least ``--events`` events and replays it as the CLI
does (`run_replay`: read the file, the default rules, the simulator's lists and
merchant profiles, every decision written to a frame) against an embedded Redis the
benchmark starts, with ``--in-flight`` events' feature calls sent ahead on one
connection (the default mode). Then the same one by one (``in_flight=1``, the
service-like path that waits for each round trip) on the first
``--sequential-events`` events of the same history (a full one-by-one run of 200,000
events would take minutes for the same rate). With models (the default;
``--no-models`` skips it): the merchant and transaction models are trained as
benchmarks/bench_api.py trains them (a small simulated history, the `fengkong train`
defaults) into a temporary folder and the in-flight replay is run again with them.

With ``--cluster`` the same two replays (in flight, and one by one on the head) also
run against a 3-master Redis Cluster started from the same redis-server binary
(tests/redis_cluster.py), the in-flight one through `fengkong.features.inflight_cluster`;
the Redis CPU is then the sum over the masters.

Besides wall-clock rates it prints the CPU per event of the replaying process (all
its threads) and of its Redis (from INFO cpu): on a shared machine the rate moves
with the neighbours, the CPU per event much less, and the larger of the two CPU
figures bounds the rate two free cores could reach.

Run: python benchmarks/bench_replay.py [--events 200000] [--sequential-events 30000] [--no-models] [--cluster]
Last line: JSON with ``events``, ``seconds``, ``events_per_s`` (target >= 5,000),
``sequential_events_per_s`` (and ``sequential_events``), ``models_events_per_s``,
``python_cpu_us_per_event`` and ``redis_cpu_us_per_event``; with ``--cluster`` also
``cluster_events_per_s``, ``cluster_python_cpu_us_per_event``, ``cluster_redis_cpu_us_per_event``,
``cluster_sequential_events_per_s`` and ``cluster_sequential_python_cpu_us_per_event``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fengkong.features.embedded_redis import EmbeddedRedis  # noqa: E402
from fengkong.replay.runner import run_replay  # noqa: E402
from fengkong.simulation import SimConfig, run, write_outputs  # noqa: E402


def _redis_cpu(server: Any) -> float:
    """CPU seconds used so far by the server (an `EmbeddedRedis`), or by every master of a
    cluster (tests/redis_cluster.py's `LocalCluster`)."""
    clients = [server.node(i) for i in range(server.n)] if hasattr(server, "ports") else [server.client()]
    total = 0.0
    for client in clients:
        try:
            info = client.info("cpu")
        finally:
            client.close()
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def timed_replay(path: Path, sim_dir: Path, server: Any, prefix: str, *, in_flight: int,
                 models_dir: Path | None = None) -> dict[str, Any]:
    """One replay as the CLI runs it, with its rate and the CPU it cost per event."""
    r0, p0 = _redis_cpu(server), time.process_time()
    result = run_replay(path, rules_dir=ROOT / "rules", redis_url=server.url, prefix=prefix,
                        lists_file=sim_dir / "blacklist.json", merchants_file=sim_dir / "merchants.parquet",
                        models_dir=models_dir, in_flight=in_flight)
    python_cpu, redis_cpu = time.process_time() - p0, _redis_cpu(server) - r0
    events = result.events_in + result.reports_generated
    return {"events": events, "seconds": result.seconds, "events_per_s": result.events_per_s,
            "decisions": len(result.decisions), "models": result.models_status,
            "python_cpu_us_per_event": 1e6 * python_cpu / events, "redis_cpu_us_per_event": 1e6 * redis_cpu / events,
            "model_scores": int(result.decisions["model.txn_risk"].notna().sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--sequential-events", type=int, default=30_000)
    ap.add_argument("--in-flight", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--models", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cluster", action="store_true", help="also replay on a 3-master Redis Cluster")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sim = run(SimConfig.for_events(args.events, seed=args.seed))
        paths = write_outputs(sim, work / "sim", formats=("parquet",))
        head = work / "head.parquet"
        sim.events.iloc[:args.sequential_events].to_parquet(head, index=False)
        print(f"setup: {len(sim.events):,} events simulated", flush=True)
        server = EmbeddedRedis(persist=False).start()
        try:
            fast = timed_replay(paths["events.parquet"], work / "sim", server, "bench1", in_flight=args.in_flight)
            print(f"in flight ({args.in_flight}): {fast['events']:,} events in {fast['seconds']:.1f} s, "
                  f"{fast['events_per_s']:,.0f} events/s; CPU per event: replay {fast['python_cpu_us_per_event']:.0f}"
                  f" us, Redis {fast['redis_cpu_us_per_event']:.0f} us", flush=True)
            seq = timed_replay(head, work / "sim", server, "bench2", in_flight=1)
            print(f"one by one: {seq['events']:,} events in {seq['seconds']:.1f} s, {seq['events_per_s']:,.0f} "
                  f"events/s; CPU per event: replay {seq['python_cpu_us_per_event']:.0f} us, Redis "
                  f"{seq['redis_cpu_us_per_event']:.0f} us", flush=True)
            models: dict[str, Any] | None = None
            if args.models:
                sys.path.insert(0, str(ROOT / "benchmarks"))
                from bench_api import train_models

                t = time.perf_counter()
                versions = train_models(work / "artifacts")
                print(f"models trained in {time.perf_counter() - t:.0f} s: {versions}", flush=True)
                models = timed_replay(paths["events.parquet"], work / "sim", server, "bench3",
                                      in_flight=args.in_flight, models_dir=work / "artifacts")
                if not models["model_scores"]:
                    raise SystemExit(f"bench_replay: no decision was scored by the models ({models['models']}); "
                                     "a rules-only figure would be false")
                print(f"in flight with models ({models['models']}): {models['events_per_s']:,.0f} events/s; CPU "
                      f"per event: replay {models['python_cpu_us_per_event']:.0f} us, Redis "
                      f"{models['redis_cpu_us_per_event']:.0f} us", flush=True)
        finally:
            server.stop()
        clustered = _on_cluster(paths["events.parquet"], head, work / "sim", args.in_flight) if args.cluster else {}
    out = {"events": fast["events"], "seconds": round(fast["seconds"], 2), "events_per_s": round(fast["events_per_s"]),
           "in_flight": args.in_flight,
           "python_cpu_us_per_event": round(fast["python_cpu_us_per_event"]),
           "redis_cpu_us_per_event": round(fast["redis_cpu_us_per_event"]),
           "sequential_events": seq["events"], "sequential_events_per_s": round(seq["events_per_s"]),
           "sequential_python_cpu_us_per_event": round(seq["python_cpu_us_per_event"]),
           "speedup": round(fast["events_per_s"] / seq["events_per_s"], 2)}
    if models is not None:
        out.update(models_events_per_s=round(models["events_per_s"]), models_seconds=round(models["seconds"], 2),
                   models_python_cpu_us_per_event=round(models["python_cpu_us_per_event"]),
                   models_redis_cpu_us_per_event=round(models["redis_cpu_us_per_event"]))
    out.update(clustered)
    print(json.dumps(out))


def _on_cluster(path: Path, head: Path, sim_dir: Path, in_flight: int) -> dict[str, Any]:
    """The in-flight and one-by-one replays on a 3-master cluster started here."""
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_cluster import LocalCluster

    cluster = LocalCluster(3).start()
    try:
        fast = timed_replay(path, sim_dir, cluster, "cbench1", in_flight=in_flight)
        print(f"cluster, in flight ({in_flight}): {fast['events']:,} events in {fast['seconds']:.1f} s, "
              f"{fast['events_per_s']:,.0f} events/s; CPU per event: replay {fast['python_cpu_us_per_event']:.0f}"
              f" us, Redis (3 masters) {fast['redis_cpu_us_per_event']:.0f} us", flush=True)
        seq = timed_replay(head, sim_dir, cluster, "cbench2", in_flight=1)
        print(f"cluster, one by one: {seq['events']:,} events in {seq['seconds']:.1f} s, "
              f"{seq['events_per_s']:,.0f} events/s; CPU per event: replay {seq['python_cpu_us_per_event']:.0f} us,"
              f" Redis {seq['redis_cpu_us_per_event']:.0f} us", flush=True)
    finally:
        cluster.stop()
    return {"cluster_events_per_s": round(fast["events_per_s"]),
            "cluster_python_cpu_us_per_event": round(fast["python_cpu_us_per_event"]),
            "cluster_redis_cpu_us_per_event": round(fast["redis_cpu_us_per_event"]),
            "cluster_sequential_events_per_s": round(seq["events_per_s"]),
            "cluster_sequential_python_cpu_us_per_event": round(seq["python_cpu_us_per_event"]),
            "cluster_sequential_redis_cpu_us_per_event": round(seq["redis_cpu_us_per_event"])}


if __name__ == "__main__":
    main()
