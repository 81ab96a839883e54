"""Feature store benchmark: online update-and-read latency against a Redis PING on the
same connection, and the offline twin's throughput.

    python benchmarks/bench_features.py [--online-events 20000] [--offline-events 1000000] [--runs 3]

Starts its own Redis (the embedded server fengkong uses). Prints p50/p99 of one
`OnlineStore.process` (full feature set, one Lua round trip, Python included) and
of `PING`, their ratio, and the offline twin's events/s on a simulated history.
The last line is one JSON object (keys named by issue 2).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fengkong.events import flat_to_dict, parse_event  # noqa: E402
from fengkong.features.embedded_redis import EmbeddedRedis  # noqa: E402
from fengkong.features.ipintel import IpIntel  # noqa: E402
from fengkong.features.lists import load_list_specs  # noqa: E402
from fengkong.features.offline import offline_features  # noqa: E402
from fengkong.features.online import OnlineStore  # noqa: E402
from fengkong.simulation import SimConfig, simulate  # noqa: E402

LISTS = ROOT / "rules" / "lists"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def online(n_events: int, runs: int) -> dict[str, float]:
    frame = simulate(SimConfig.for_events(max(n_events * 2, 50_000), seed=3))
    records = frame.to_dict("records")[: n_events]
    events = [parse_event(flat_to_dict(r)) for r in records]
    ipintel = IpIntel.load(LISTS)
    p50s, p99s, ping50s, ping99s = [], [], [], []
    with EmbeddedRedis(persist=False) as server:
        print(f"redis-server started in {server.started_in_s * 1000:.1f} ms on {server.url}")
        client = server.client()
        for run in range(runs):
            client.flushall()
            store = OnlineStore(client, ipintel=ipintel, lists=load_list_specs(LISTS), prefix=f"b{run}")
            for e in events[:500]:  # warm the script cache, connection and code paths
                store.process(e)
            gc.collect()
            gc.disable()
            lat, ping = [], []
            for i, e in enumerate(events[500:]):
                t0 = time.perf_counter_ns()
                store.process(e)
                lat.append((time.perf_counter_ns() - t0) / 1000)
                if i % 2 == 0:
                    t0 = time.perf_counter_ns()
                    client.ping()
                    ping.append((time.perf_counter_ns() - t0) / 1000)
            gc.enable()
            p50s.append(pct(lat, 50)), p99s.append(pct(lat, 99))
            ping50s.append(pct(ping, 50)), ping99s.append(pct(ping, 99))
            print(f"run {run + 1}: update+read p50 {p50s[-1]:.1f} us p99 {p99s[-1]:.1f} us | "
                  f"PING p50 {ping50s[-1]:.1f} us p99 {ping99s[-1]:.1f} us | {len(lat)} events")
    return {
        "update_read_p50_us": statistics.median(p50s),
        "update_read_p99_us": statistics.median(p99s),
        "ping_p50_us": statistics.median(ping50s),
        "ping_p99_us": statistics.median(ping99s),
    }


def offline(n_events: int, runs: int) -> float:
    frame = simulate(SimConfig.for_events(n_events, seed=4))
    frame = frame.iloc[:n_events]
    ipintel = IpIntel.load(LISTS)
    specs = load_list_specs(LISTS)
    rates = []
    for run in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        out = offline_features(frame, ipintel=ipintel, lists=specs)
        dt = time.perf_counter() - t0
        rates.append(len(frame) / dt)
        print(f"offline run {run + 1}: {len(frame):,} events ({len(out):,} decision rows, "
              f"{out.shape[1]} features) in {dt:.2f} s = {rates[-1]:,.0f} events/s")
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--online-events", type=int, default=20_000)
    ap.add_argument("--offline-events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    result = online(args.online_events, args.runs)
    result["ratio_p50"] = result["update_read_p50_us"] / result["ping_p50_us"]
    result["offline_events_per_s"] = offline(args.offline_events, args.runs)
    print(f"median of {args.runs} runs: update+read p50 {result['update_read_p50_us']:.1f} us, "
          f"p99 {result['update_read_p99_us']:.1f} us; PING p50 {result['ping_p50_us']:.1f} us; "
          f"ratio {result['ratio_p50']:.2f} (target <= 5); offline {result['offline_events_per_s']:,.0f} events/s "
          f"(target >= 200,000)")
    print(json.dumps({k: round(v, 2) for k, v in result.items()}))


if __name__ == "__main__":
    main()
