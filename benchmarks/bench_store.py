"""The feature store's Python steps per decision, one at a time, as CPU per event.

    python benchmarks/bench_store.py [--events 3500] [--repeats 5] [--callgrind]

Why: bench_decide measures the whole decision; this one splits the online store's part
(`OnlineStore.process_async`) into its steps, each run alone over bench_api's payloads
(the same generator and seed as bench_decide), so that a change to one step can be
measured without the rest's noise: the event row (its IP lookup's cache emptied first,
as the bench's random addresses always miss it), the IP lookup alone, the command
(`Planner.command`: plan, packed values, writer) and the reply's features (`_finish`:
unpack, read, derive) on replies an embedded Redis gave. CPU is ``time.process_time``
(``--callgrind``: instructions instead, one dump per step; per event = the dump's summary
/ ``--events``);
the median of ``--repeats`` passes is printed, as JSON, with the load average and a
digest of every event's features (two versions of the code must print the same).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_decide  # noqa: E402  (bench_api's payloads, seeded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: count one pass of each step "
                             "(callgrind.out.<pid>.1 the event row, .2 the IP lookup, .3 the command, .4 the features)")
    args = parser.parse_args()

    import redis

    from fengkong.events import parse_event
    from fengkong.features.embedded_redis import EmbeddedRedis
    from fengkong.features.ipintel import IpIntel
    from fengkong.features.lists import ListStore, load_list_specs
    from fengkong.features.online import OnlineStore
    from fengkong.features.pipelined import PipelinedRedis
    from fengkong.features.rows import event_row

    events = [parse_event(json.loads(body)) for body in bench_decide._bodies(args.events)]
    server = EmbeddedRedis(persist=False).start()
    try:
        client = redis.Redis.from_url(server.url)
        lists_dir = ROOT / "rules" / "lists"
        specs = load_list_specs(lists_dir)
        store = OnlineStore(client, ipintel=IpIntel.load(lists_dir), lists=specs, prefix="bench-store")
        ListStore(client, specs, prefix="bench-store").seed_from_files(lists_dir)
        conn = PipelinedRedis(server.url)
        calls: list[tuple[Any, Any, Any]] = []
        finish = store._finish

        def keep(event: Any, call: Any, reply: Any) -> Any:
            calls.append((event, call, reply))
            return finish(event, call, reply)

        store._finish = keep  # type: ignore[method-assign]

        async def count() -> list[Any]:
            results: list[Any] = []
            for i in range(0, len(events), bench_decide.CONCURRENCY):
                chunk = events[i:i + bench_decide.CONCURRENCY]
                results += await asyncio.gather(*(store.process_async(e, conn, 5.0) for e in chunk))
            return results

        results = asyncio.run(count())
        store._finish = finish  # type: ignore[method-assign]
        digest = hashlib.sha256(repr([sorted(r.features.items()) for r in results]).encode()).hexdigest()[:16]
        intel, planner, sha = store.ipintel, store.planner, store._script.sha
        rows = [call.row for _, call, _ in calls]

        def rows_uncached() -> None:
            intel.lookup_with_subnet.cache_clear()  # type: ignore[attr-defined]
            for event in events:
                event_row(event, intel, store.biz_offset_min)

        def ip_lookup() -> None:
            for event in events:
                intel._lookup_with_subnet(event.ip)  # type: ignore[arg-type]

        def command() -> None:
            for row in rows:
                planner.command(row, sha, store.dedup_ttl_s)

        def features() -> None:
            for event, call, reply in calls:
                finish(event, call, reply)

        steps: dict[str, Callable[[], None]] = {"event_row_uncached": rows_uncached, "ip_lookup": ip_lookup,
                                                "command": command, "finish": features}
        out: dict[str, Any] = {}
        for name, step in steps.items():
            if args.callgrind:  # one warm pass, then one counted
                step()
                bench_decide._callgrind("start")
                step()
                bench_decide._callgrind("dump")
                continue
            runs = []
            for _ in range(args.repeats):
                cpu = time.process_time()
                step()
                runs.append((time.process_time() - cpu) / len(events) * 1e6)
            out[f"{name}_us"] = round(statistics.median(runs), 2)
    finally:
        server.stop()
    print(json.dumps({"events": len(events), **out, "features_sha256": digest, "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
