"""The offline twin in this process (pandas) against the same twin on a Dask cluster.

Takes a history (``--history events.parquet`` with ``--merchants merchants.parquet``,
as `fengkong simulate` writes them; else simulates, seeded, at least ``--events``
events), computes its features with `offline_features` (pandas, the twin's own two
threads), then with `offline_features_dask` on a local `distributed` cluster of
``--workers`` worker processes (one thread each) started here (or the cluster at
``--scheduler``), and checks the two equal. The cluster's start-up is not timed;
sending the history to the workers and gathering the features back is.

Only one result frame is held at a time: each engine's frame is reduced to a digest
of every column (values, dtype, name) and of the index, then freed, and the digests
are compared (``--engine pandas`` or ``dask`` runs one engine alone, e.g. one process
each for a history near the memory of the machine).

Besides the wall-clock rates it prints the CPU each engine used (this process's,
all threads, plus for Dask every worker process's), which moves much less than the
wall clock on a shared machine, and the peak resident memory of this process and of
each worker (divided by the events: the memory per event).

On one machine the Dask path cannot win: every pass repeats the per-row work
(reading the events, IP intelligence, the event's own columns, the assembly; see
`fengkong.features.offline_dask`), plus the transfers. It is for histories past one
machine's memory or cores; this says what it costs per event where it runs.

With ``--parts DIR`` both engines run the twin in parts on disk
(`fengkong.features.offline_parts`: the history file split by entity into files, each
part's features written where it was computed), so neither this process nor a worker
ever holds the whole history or its features: the pandas engine runs the parts one by
one here, the Dask engine on the workers, into ``DIR/pandas`` and ``DIR/dask``; the two
are compared part file by part file (``--compare`` alone compares two such folders
written by earlier runs). The peak resident memory of this process is then given per
step (split, the first passes, the merchant pass), each step's peak reset before it
(``/proc/self/clear_refs``).

``--stages`` (pandas in memory, no ``--parts``) gives the peak and the resident memory
after each stage of the in-memory twin (the event rows, the history in time order, the
feature tasks, the assembly).

Run: python benchmarks/bench_offline_dask.py [--events 1000000 | --history H --merchants M]
     [--workers 2] [--partitions 4] [--engine both|pandas|dask] [--parts DIR] [--stages]
Last line: JSON with ``events``, ``decision_rows``, ``pandas_seconds``, ``pandas_events_per_s``,
``pandas_cpu_s``, ``dask_seconds``, ``dask_events_per_s``, ``dask_cpu_s`` (client + workers),
``peak_rss_mb``, ``worker_peak_rss_mb``, ``workers``, ``partitions``, ``equal`` (with both engines).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from fengkong.features.ipintel import IpIntel  # noqa: E402
from fengkong.features.lists import load_list_specs  # noqa: E402
from fengkong.features.offline import offline_features  # noqa: E402
from fengkong.features.offline_dask import offline_features_dask  # noqa: E402


def digest(frame: pd.DataFrame) -> dict[str, str]:
    """One hash per column (its name, dtype and values) and one of the index: two frames
    with equal digests are equal as `pd.testing.assert_frame_equal` sees them, up to hash
    collisions."""
    out = {"__index__": hashlib.sha256(pd.util.hash_pandas_object(frame.index).to_numpy().tobytes()).hexdigest()}
    for name in frame.columns:
        col = frame[name]
        h = hashlib.sha256(f"{name}\0{col.dtype}\0".encode())
        h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
        out[str(name)] = h.hexdigest()
    out["__columns__"] = hashlib.sha256("\0".join(map(str, frame.columns)).encode()).hexdigest()
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    """Start this process's peak resident memory (VmHWM) again from its current size."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class Steps:
    """The peak resident memory of this process during each step, and its memory after it."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}
        self._t, self._c = time.perf_counter(), time.process_time()
        _reset_peak()

    def __call__(self, name: str) -> None:
        wall, cpu = time.perf_counter() - self._t, time.process_time() - self._c
        self.steps[name] = {"peak_mb": round(_peak_rss_mb()), "after_mb": round(_rss_mb()), "wall_s": round(wall, 1),
                            "cpu_s": round(cpu, 1)}
        print(f"  step {name}: peak {_peak_rss_mb():,.0f} MB, after {_rss_mb():,.0f} MB; {wall:.1f} s, this "
              f"process's CPU {cpu:.1f} s", flush=True)
        self._t, self._c = time.perf_counter(), time.process_time()
        _reset_peak()


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: its own, where ``ru_maxrss`` would carry
    the high-water mark of the process it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_stats() -> tuple[float, float]:
    """This worker process's CPU seconds and peak resident MB (run on every worker)."""
    import resource as r

    use = r.getrusage(r.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime, _peak_rss_mb()


def load(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The events and merchant profiles: read from files, or simulated (the simulator's
    other outputs freed before the twin runs)."""
    if args.history:
        merchants = pd.read_parquet(args.merchants) if args.merchants else None
        return pd.read_parquet(args.history), merchants
    from fengkong.simulation import SimConfig, run

    sim = run(SimConfig.for_events(args.events, seed=args.seed))
    events, merchants = sim.events, sim.merchants
    del sim
    gc.collect()
    return events, merchants


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--history", type=Path, default=None, help="events.parquet to read instead of simulating")
    ap.add_argument("--merchants", type=Path, default=None, help="merchants.parquet (with --history)")
    ap.add_argument("--engine", choices=("both", "pandas", "dask"), default="both")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--parts", type=Path, default=None, help="run the twin in parts on disk under this folder")
    ap.add_argument("--stages", action="store_true", help="memory per stage of the in-memory pandas twin")
    ap.add_argument("--compare", type=Path, nargs=2, default=None, help="compare two --parts folders and stop")
    args = ap.parse_args()
    if args.compare:
        print(json.dumps({"equal": compare_parts(*args.compare)}))
        return
    if args.parts:
        parts_main(args)
        return

    events, merchants = load(args)
    lists_dir = ROOT / "rules" / "lists"
    specs = load_list_specs(lists_dir)
    n = len(events)
    print(f"setup: {n:,} events ({int((events['type'] == 'payment').sum()):,} payments); "
          f"peak RSS so far {_peak_rss_mb():,.0f} MB", flush=True)
    out: dict[str, Any] = {"events": n, "workers": args.workers, "partitions": args.partitions}
    digests: dict[str, dict[str, str]] = {}
    if args.engine in ("both", "pandas"):
        steps = _instrument() if args.stages else None
        t, c = time.perf_counter(), time.process_time()
        want = offline_features(events, ipintel=IpIntel.load(lists_dir), lists=specs, profiles=merchants)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        out.update(decision_rows=len(want), pandas_seconds=round(seconds, 2), pandas_events_per_s=round(n / seconds),
                   pandas_cpu_s=round(cpu, 2), pandas_peak_rss_mb=round(_peak_rss_mb()))
        print(f"pandas: {seconds:.1f} s, {n / seconds:,.0f} events/s, CPU {cpu:.1f} s "
              f"({1e6 * cpu / n:.1f} us per event); peak RSS {_peak_rss_mb():,.0f} MB", flush=True)
        if steps is not None:
            out["pandas_steps"] = steps.steps
        digests["pandas"] = digest(want)
        del want
        gc.collect()
    if args.engine in ("both", "dask"):
        out.update(_dask(events, merchants, lists_dir, specs, args, digests))
    if len(digests) == 2:
        differ = [k for k in digests["pandas"] if digests["pandas"][k] != digests["dask"].get(k)]
        out["equal"] = not differ and digests["pandas"].keys() == digests["dask"].keys()
        if differ:
            print(f"NOT EQUAL: {differ[:20]}")
    out["peak_rss_mb"] = round(_peak_rss_mb())
    print(json.dumps(out))


def _dask(events: pd.DataFrame, merchants: pd.DataFrame | None, lists_dir: Path, specs: Any,
          args: argparse.Namespace, digests: dict[str, dict[str, str]]) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    n = len(events)
    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None)
    client = Client(args.scheduler or cluster)
    try:
        before = client.run(_worker_stats)
        t, c = time.perf_counter(), time.process_time()
        got = offline_features_dask(events, client=client, lists_dir=lists_dir, lists=specs, profiles=merchants,
                                    partitions=args.partitions)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        after = client.run(_worker_stats)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    workers_cpu = sum(after[w][0] - before[w][0] for w in after if w in before)
    worker_rss = max(s[1] for s in after.values())
    print(f"dask ({args.workers} workers, {args.partitions} parts per pass): {seconds:.1f} s, "
          f"{n / seconds:,.0f} events/s, CPU {cpu + workers_cpu:.1f} s (client {cpu:.1f}, workers "
          f"{workers_cpu:.1f}; {1e6 * (cpu + workers_cpu) / n:.1f} us per event); peak RSS client "
          f"{_peak_rss_mb():,.0f} MB, largest worker {worker_rss:,.0f} MB", flush=True)
    digests["dask"] = digest(got)
    return {"decision_rows": len(got), "dask_seconds": round(seconds, 2), "dask_events_per_s": round(n / seconds),
            "dask_cpu_s": round(cpu + workers_cpu, 2), "dask_client_cpu_s": round(cpu, 2),
            "dask_workers_cpu_s": round(workers_cpu, 2), "worker_peak_rss_mb": round(worker_rss)}


def _instrument() -> Steps:
    """Wrap the in-memory twin's stages so that each reports its peak and what stays after it."""
    from fengkong.features import offline

    steps = Steps()
    for name, label in (("frame_rows", "event rows"), ("history", "history in time order"),
                        ("_run_tasks", "feature tasks"), ("assemble_frame", "assembly")):
        inner = getattr(offline, name)

        def wrapped(*a: Any, _inner: Any = inner, _label: str = label, **k: Any) -> Any:
            result = _inner(*a, **k)
            steps(_label)
            return result

        setattr(offline, name, wrapped)
    return steps


def parts_main(args: argparse.Namespace) -> None:
    """Each engine on the history in parts on disk (the history must be a file: ``--history``)."""
    import shutil

    from fengkong.features.offline_parts import offline_features_parts

    if not args.history:
        raise SystemExit("--parts: give the history as a file (--history events.parquet)")
    merchants = pd.read_parquet(args.merchants) if args.merchants else None
    lists_dir = ROOT / "rules" / "lists"
    specs = load_list_specs(lists_dir)
    import pyarrow.parquet as pq

    n = pq.ParquetFile(args.history).metadata.num_rows
    out: dict[str, Any] = {"events": n, "workers": args.workers, "partitions": args.partitions, "parts": True}
    engines = ("pandas", "dask") if args.engine == "both" else (args.engine,)
    for engine in engines:
        folder = args.parts / engine
        shutil.rmtree(folder, ignore_errors=True)
        client = cluster = None
        if engine == "dask":
            from dask.distributed import Client, LocalCluster

            cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                               processes=True, dashboard_address=None)
            client = Client(args.scheduler or cluster)
        try:
            before = client.run(_worker_stats) if client else {}
            steps = Steps()
            t, c = time.perf_counter(), time.process_time()
            parts = offline_features_parts(args.history, folder, lists_dir=lists_dir, client=client,
                                           partitions=args.partitions, lists=specs, profiles=merchants,
                                           progress=steps)
            seconds, cpu = time.perf_counter() - t, time.process_time() - c
            after = client.run(_worker_stats) if client else {}
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        workers_cpu = sum(after[w][0] - before[w][0] for w in after if w in before)
        worker_rss = max((s[1] for s in after.values()), default=0.0)
        each_worker = {w: {"cpu_s": round(after[w][0] - before[w][0], 1), "peak_rss_mb": round(after[w][1])}
                       for w in after if w in before}
        total = cpu + workers_cpu
        print(f"{engine} in {args.partitions} parts per pass: {seconds:.1f} s, {n / seconds:,.0f} events/s, CPU "
              f"{total:.1f} s (this process {cpu:.1f}, workers {workers_cpu:.1f}; {1e6 * total / n:.1f} us per "
              f"event); largest worker {worker_rss:,.0f} MB; {len(parts.names)} columns; this process's peak "
              f"{max(v['peak_mb'] for v in steps.steps.values()):,.0f} MB", flush=True)
        for w, stats in each_worker.items():
            print(f"  worker {w}: CPU {stats['cpu_s']:.1f} s, peak {stats['peak_rss_mb']:,} MB", flush=True)
        out[engine] = {"seconds": round(seconds, 2), "events_per_s": round(n / seconds), "cpu_s": round(total, 2),
                       "events_per_cpu_s": round(n / total), "client_cpu_s": round(cpu, 2),
                       "workers_cpu_s": round(workers_cpu, 2), "worker_peak_rss_mb": round(worker_rss),
                       "workers": each_worker, "steps": steps.steps, "columns": len(parts.names)}
    if len(engines) == 2:
        out["equal"] = compare_parts(args.parts / "pandas", args.parts / "dask")
    print(json.dumps(out))


def compare_parts(a: Path, b: Path) -> bool:
    """Whether two folders of the twin in parts hold equal feature files, part by part (the same
    split: the same history and number of parts), one pair of files in memory at a time."""
    files = sorted(p.relative_to(a) for p in (a / "features").rglob("part-*.pkl"))
    if not files or files != sorted(p.relative_to(b) for p in (b / "features").rglob("part-*.pkl")):
        print(f"NOT EQUAL: the part files differ ({len(files)} in {a})")
        return False
    for rel in files:
        x, y = pd.read_pickle(a / rel), pd.read_pickle(b / rel)
        try:
            pd.testing.assert_frame_equal(x, y)
        except AssertionError as exc:
            print(f"NOT EQUAL: {rel}: {str(exc)[:300]}")
            return False
    return True


if __name__ == "__main__":
    main()
