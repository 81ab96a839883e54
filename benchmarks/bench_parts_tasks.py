"""Some part tasks of a split history on disk, in this process and on a local Dask cluster.

A full run of the twin in parts (`bench_offline_dask.py --parts`) of 10 M payments costs
hundreds of CPU seconds per engine; this measures the two engines on the same few parts
of a split that such a run left on disk (``DIR/history/<pass>/part-NNNNN.parquet``), so
that their CPU per part can be compared at that size without the whole run. Each engine
runs `offline_parts.part_task` on the chosen parts of one pass (not the merchant pass,
which needs the card and user passes' flags); the feature files they write are compared
part by part. Prints, per engine, wall seconds, CPU seconds (this process, plus every
worker for Dask) and peak resident memory (this process, which ran the pandas engine
first; each worker). The twin's import and the IP lists are loaded before the clocks
start, in this process and on every worker.

Run: python benchmarks/bench_parts_tasks.py --split DIR --merchants merchants.parquet
     [--pass card] [--parts 0 1] [--workers 2] [--out DIR2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from fengkong.features.lists import load_list_specs  # noqa: E402
from fengkong.features.offline_parts import part_task  # noqa: E402
from fengkong.features.offline_split import LAST_PASS, declared_entities, lists_files  # noqa: E402


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stats() -> tuple[float, float]:
    """This process's CPU seconds and peak resident MB (run on every worker too)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime, _peak_mb()


def _warm(files: dict[str, bytes]) -> None:
    """Import the twin and load the IP lists once, so that neither engine's figure carries them."""
    import fengkong.features.offline  # noqa: F401
    from fengkong.features.offline_split import worker_ipintel

    worker_ipintel(files)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", type=Path, required=True, help="a folder holding history/<pass>/part-*.parquet")
    ap.add_argument("--merchants", type=Path, default=None)
    ap.add_argument("--pass", dest="pass_name", default="card")
    ap.add_argument("--parts", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_parts_tasks"))
    args = ap.parse_args()
    if args.pass_name == LAST_PASS:
        raise SystemExit(f"--pass: not {LAST_PASS} (it needs the card and user passes' flags)")
    lists_dir = ROOT / "rules" / "lists"
    shared: dict[str, Any] = {"declared": declared_entities(), "lists_files": lists_files(lists_dir),
                              "lists": load_list_specs(lists_dir), "pass_name": args.pass_name,
                              "profiles": pd.read_parquet(args.merchants) if args.merchants else None}
    history = args.split / "history" / args.pass_name
    jobs = {p: history / f"part-{p:05d}.parquet" for p in args.parts}
    import pyarrow.parquet as pq

    events = sum(pq.ParquetFile(path).metadata.num_rows for path in jobs.values())
    out: dict[str, Any] = {"pass": args.pass_name, "parts": args.parts, "events": events}
    for engine in ("pandas", "dask"):
        folder = args.out / engine
        folder.mkdir(parents=True, exist_ok=True)
        _warm(shared["lists_files"])
        t, c = time.perf_counter(), time.process_time()
        if engine == "pandas":
            for p, path in jobs.items():
                part_task(part=str(path), out=str(folder / f"part-{p:05d}.pkl"), **shared)
            workers: dict[str, Any] = {}
            seconds, cpu = time.perf_counter() - t, time.process_time() - c
        else:
            from dask.distributed import Client, LocalCluster

            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                scattered = {k: client.scatter(v, broadcast=True) if isinstance(v, pd.DataFrame) else v
                             for k, v in shared.items()}
                client.run(_warm, shared["lists_files"])
                before = client.run(_stats)
                t, c = time.perf_counter(), time.process_time()
                futures = [client.submit(part_task, part=str(path), out=str(folder / f"part-{p:05d}.pkl"),
                                         pure=False, **scattered) for p, path in jobs.items()]
                client.gather(futures)
                seconds, cpu = time.perf_counter() - t, time.process_time() - c
                after = client.run(_stats)
            workers = {w: {"cpu_s": round(after[w][0] - before[w][0], 1), "peak_mb": round(after[w][1])}
                       for w in after if w in before}
        total = cpu + sum(w["cpu_s"] for w in workers.values())
        out[engine] = {"seconds": round(seconds, 1), "cpu_s": round(total, 1), "this_process_cpu_s": round(cpu, 1),
                       "us_per_event": round(1e6 * total / events, 1), "peak_mb": round(_peak_mb()),
                       "workers": workers}
        print(f"{engine}: {len(jobs)} parts of {args.pass_name} ({events:,} events): {seconds:.1f} s, CPU {total:.1f} s "
              f"({1e6 * total / events:.1f} us per event); this process's peak {_peak_mb():,.0f} MB; "
              f"workers {workers}", flush=True)
    equal = all(pd.read_pickle(args.out / "pandas" / f"part-{p:05d}.pkl").equals(
        pd.read_pickle(args.out / "dask" / f"part-{p:05d}.pkl")) for p in jobs)
    out["equal"] = equal
    print(json.dumps(out))


if __name__ == "__main__":
    main()
