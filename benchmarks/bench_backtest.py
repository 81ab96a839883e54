"""Time `fengkong rules backtest` end to end on a simulated history.

Generates (seeded) a history of at least 500,000 events with the simulator and a
candidate = the live pack plus 50 generated rules over real feature names
(`fengkong.replay.rulegen`), then times, ``--repeat`` times, the whole backtest as
the CLI runs it: read the history file, offline features once, both rule sets
evaluated by the vectorised evaluator, the diff table. Prints each run's stages;
the last line is one JSON object with ``events``, ``seconds`` (median end-to-end
backtest time) and ``events_per_s``, plus the medians without the features.

Run: python benchmarks/bench_backtest.py [--events 500000] [--repeat 3]
Target: events_per_s >= 50,000.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fengkong.replay.backtest import backtest  # noqa: E402
from fengkong.replay.rulegen import write_candidate  # noqa: E402
from fengkong.simulation import SimConfig, run, write_outputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        sim = run(SimConfig.for_events(args.events, seed=args.seed))
        paths = write_outputs(sim, work / "sim", formats=("parquet",))
        n_events = len(sim.events)
        assert n_events >= args.events, f"simulated {n_events} events, fewer than {args.events}"
        from fengkong.features.ipintel import IpIntel
        from fengkong.features.lists import load_list_specs
        from fengkong.features.offline import offline_features

        lists_dir = ROOT / "rules" / "lists"
        # thresholds of the generated rules come from this history's own feature quantiles
        frame = offline_features(sim.events, ipintel=IpIntel.load(lists_dir), lists=load_list_specs(lists_dir))
        cand = write_candidate(work / "candidate", ROOT / "rules", n_rules=50, seed=args.seed, frame=frame)
        print(f"setup: {n_events:,} events simulated, candidate = live pack + 50 generated rules "
              f"({time.perf_counter() - t0:.1f} s)")
        runs = []
        for i in range(args.repeat):
            t = time.perf_counter()
            result = backtest(paths["events.parquet"], cand, live_dir=ROOT / "rules",
                              lists_file=paths["blacklist.json"], merchants_file=paths["merchants.parquet"])
            total = time.perf_counter() - t
            tm = result.timings
            runs.append({"seconds": total, "features_s": tm["features_s"], "read_s": tm["read_s"],
                         "rules_and_diff_s": tm["evaluate_s"] + tm["compare_s"]})
            print(f"run {i + 1}: {total:.2f} s end to end = read {tm['read_s']:.2f} + features "
                  f"{tm['features_s']:.2f} + two evaluations {tm['evaluate_s']:.2f} + diff {tm['compare_s']:.2f} "
                  f"(+ rule loading); {len(result.features):,} decisions, "
                  f"{int(result.overall['decisions_changed']):,} changed")
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({
        "events": n_events, "seconds": round(med["seconds"], 3),
        "events_per_s": round(n_events / med["seconds"]),
        "features_seconds": round(med["features_s"], 3),
        "rules_and_diff_seconds": round(med["rules_and_diff_s"], 3),
        "events_per_s_without_features": round(n_events / (med["seconds"] - med["features_s"])),
        "runs": args.repeat,
    }))


if __name__ == "__main__":
    main()
