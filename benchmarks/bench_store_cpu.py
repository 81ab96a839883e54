"""CPU per decision of the feature store, Redis's and Python's, on one simulated stream.

    PYTHONPATH=<code root> python benchmarks/bench_store_cpu.py [--events 20000]

CPU time, not wall time (the machine is shared): Redis's own ``used_cpu_user +
used_cpu_sys`` (INFO cpu) and this process's `time.process_time` over the stream,
each divided by the events. Runs the code on PYTHONPATH, so two versions compare side
by side: ``git archive <commit> | tar -x -C /tmp/base`` and alternate the two roots,
three runs each. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import fengkong
from fengkong.events import flat_to_dict, parse_event
from fengkong.features.embedded_redis import EmbeddedRedis
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import load_list_specs
from fengkong.features.online import OnlineStore
from fengkong.simulation import SimConfig, simulate

WARM = 500  # events sent before measuring: the script cache, the connection, the code paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    n = ap.parse_args().events
    root = Path(fengkong.__file__).resolve().parent.parent
    lists = root / "rules" / "lists"
    frame = simulate(SimConfig.for_events(max(int(n * 1.5), 2 * WARM), seed=3))
    events = [parse_event(flat_to_dict(r)) for r in frame.to_dict("records")][:n]
    with EmbeddedRedis(persist=False) as server:
        client = server.client()
        store = OnlineStore(client, ipintel=IpIntel.load(lists), lists=load_list_specs(lists), prefix="cpu")
        for e in events[:WARM]:
            store.process(e)
        before = client.info("cpu")
        p0 = time.process_time()
        for e in events[WARM:]:
            store.process(e)
        p1 = time.process_time()
        after = client.info("cpu")
    redis_s = sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys"))
    count = len(events) - WARM
    print(json.dumps({"code": str(root), "events": count, "redis_cpu_us_per_event": round(redis_s / count * 1e6, 1),
                      "python_cpu_us_per_event": round((p1 - p0) / count * 1e6, 1)}))


if __name__ == "__main__":
    main()
