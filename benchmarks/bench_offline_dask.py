"""The offline twin in this process (pandas) against the same twin on a Dask cluster.

Simulates (seeded) at least ``--events`` events, computes their features with
`offline_features` (pandas, the twin's own two threads), then with
`offline_features_dask` on a local `distributed` cluster of ``--workers`` worker
processes (one thread each) started here (or the cluster at ``--scheduler``), and
checks the two frames equal. The cluster's start-up is not timed; sending the
history to the workers and gathering the features back is.

On one machine the Dask path cannot win: it splits the history five times by
entity and runs the whole twin on every part (about five times the work, see
`fengkong.features.offline_dask`), plus the transfers. It is for histories past one
machine's memory or cores; this says what it costs per event where it runs.

Run: python benchmarks/bench_offline_dask.py [--events 1000000] [--workers 2] [--partitions 4]
Last line: JSON with ``events``, ``decision_rows``, ``pandas_seconds``, ``pandas_events_per_s``,
``dask_seconds``, ``dask_events_per_s``, ``workers``, ``partitions``, ``equal``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from fengkong.features.ipintel import IpIntel  # noqa: E402
from fengkong.features.lists import load_list_specs  # noqa: E402
from fengkong.features.offline import offline_features  # noqa: E402
from fengkong.features.offline_dask import offline_features_dask  # noqa: E402
from fengkong.simulation import SimConfig, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    from dask.distributed import Client, LocalCluster

    sim = run(SimConfig.for_events(args.events, seed=args.seed))
    events = sim.events
    lists_dir = ROOT / "rules" / "lists"
    specs = load_list_specs(lists_dir)
    print(f"setup: {len(events):,} events ({int((events['type'] == 'payment').sum()):,} payments)", flush=True)
    t = time.perf_counter()
    want = offline_features(events, ipintel=IpIntel.load(lists_dir), lists=specs, profiles=sim.merchants)
    pandas_s = time.perf_counter() - t
    print(f"pandas: {pandas_s:.1f} s, {len(events) / pandas_s:,.0f} events/s", flush=True)
    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None)
    client = Client(args.scheduler or cluster)
    try:
        t = time.perf_counter()
        got = offline_features_dask(events, client=client, lists_dir=lists_dir, lists=specs, profiles=sim.merchants,
                                    partitions=args.partitions)
        dask_s = time.perf_counter() - t
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"dask ({args.workers} workers, {args.partitions} parts per pass): {dask_s:.1f} s, "
          f"{len(events) / dask_s:,.0f} events/s", flush=True)
    try:
        pd.testing.assert_frame_equal(got, want)
        equal = True
    except AssertionError as exc:
        print(f"NOT EQUAL: {str(exc)[:500]}")
        equal = False
    print(json.dumps({"events": len(events), "decision_rows": len(want), "pandas_seconds": round(pandas_s, 2),
                      "pandas_events_per_s": round(len(events) / pandas_s), "dask_seconds": round(dask_s, 2),
                      "dask_events_per_s": round(len(events) / dask_s), "workers": args.workers,
                      "partitions": args.partitions, "equal": equal}))


if __name__ == "__main__":
    main()
