"""What `fengkong replay --nightly` costs: the same simulated history replayed with and without it.

Simulates (seeded) about ``--events`` events over ``--days`` business days and replays
them as the CLI does (`run_replay`, the simulator's lists and merchant profiles, many
events in flight) against one embedded Redis, alternating the two variants
``--repeat`` times each so both see the same neighbours: without the nightly job, and
with it (`fengkong.training.nightly.Nightly`: the grade policy of rules/grades, and a
merchants model trained on the same history unless ``--no-model``). CPU, not wall
time, is the figure: the replaying process's CPU per event (all its threads) and its
Redis's (INFO cpu), and for the nightly variant the CPU of each nightly run (the
first, the last and the mean: each run grades the whole history before its boundary,
so the cost of a run grows with the days behind it).

Run: python benchmarks/bench_replay_nightly.py [--events 100000] [--days 30] [--repeat 2] [--no-model]
Last line: JSON with both variants' CPU per event, the added CPU per event and per
business day, and the nightly runs' CPU.
"""

from __future__ import annotations

import argparse
import json
import os
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
from fengkong.training.nightly import Nightly  # noqa: E402

POLICY = ROOT / "rules" / "grades" / "grades.yaml"


def _redis_cpu(server: EmbeddedRedis) -> float:
    client = server.client()
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def one(sim_dir: Path, server: EmbeddedRedis, prefix: str, job: Nightly | None) -> dict[str, Any]:
    """One replay, with its CPU per event (this process and Redis) and the nightly runs' CPU."""
    r0, p0 = _redis_cpu(server), time.process_time()
    result = run_replay(sim_dir / "events.parquet", rules_dir=ROOT / "rules", redis_url=server.url, prefix=prefix,
                        lists_file=sim_dir / "blacklist.json", merchants_file=sim_dir / "merchants.parquet",
                        models_dir=None, nightly=job)
    python_cpu, redis_cpu = time.process_time() - p0, _redis_cpu(server) - r0
    events = result.events_in + result.reports_generated
    out: dict[str, Any] = {"events": events, "seconds": round(result.seconds, 2),
                           "python_cpu_us_per_event": round(1e6 * python_cpu / events, 1),
                           "redis_cpu_us_per_event": round(1e6 * redis_cpu / events, 1)}
    if job is not None:
        cpu = [r.cpu_s for r in job.runs]
        out.update(nightly_runs=len(cpu), nightly_cpu_s=round(sum(cpu), 3),
                   nightly_first_run_ms=round(1000 * cpu[0], 1), nightly_last_run_ms=round(1000 * cpu[-1], 1),
                   nightly_mean_run_ms=round(1000 * sum(cpu) / len(cpu), 1),
                   grades=result.decisions["merchant_grade"].value_counts().to_dict())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--model", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sim = run(SimConfig.for_events(args.events, seed=args.seed, days=args.days))
        write_outputs(sim, work / "sim", formats=("parquet",))
        models = None
        if args.model:
            from fengkong.training.train import train_merchants

            train_merchants(sim.events, profiles=sim.merchants, root=work / "artifacts", n_estimators=100)
            models = work / "artifacts"
        print(f"setup: {len(sim.events):,} events, {sim.merchants.shape[0]:,} merchants, {args.days} days; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        server = EmbeddedRedis(persist=False).start()
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "nightly": []}
        try:
            for i in range(args.repeat):
                for name in ("plain", "nightly"):
                    job = Nightly.load(policy_path=POLICY, models_dir=models) if name == "nightly" else None
                    r = one(work / "sim", server, f"bn{name}{i}", job)
                    r["load"] = round(os.getloadavg()[0], 2)
                    runs[name].append(r)
                    print(name, json.dumps(r), flush=True)
        finally:
            server.stop()
    plain, nightly = runs["plain"], runs["nightly"]
    added = [n["python_cpu_us_per_event"] + n["redis_cpu_us_per_event"] - p["python_cpu_us_per_event"]
             - p["redis_cpu_us_per_event"] for p, n in zip(plain, nightly)]
    print(json.dumps({
        "events": plain[0]["events"], "days": args.days, "model": bool(args.model),
        "plain_cpu_us_per_event": [p["python_cpu_us_per_event"] + p["redis_cpu_us_per_event"] for p in plain],
        "nightly_cpu_us_per_event": [n["python_cpu_us_per_event"] + n["redis_cpu_us_per_event"] for n in nightly],
        "added_cpu_us_per_event": [round(a, 1) for a in added],
        "nightly_mean_run_ms": [n["nightly_mean_run_ms"] for n in nightly],
        "nightly_first_last_run_ms": [(n["nightly_first_run_ms"], n["nightly_last_run_ms"]) for n in nightly],
        "load": [r["load"] for r in plain + nightly]}))


if __name__ == "__main__":
    main()
