"""The online store's Python side per decision, phase by phase, on bench_decide's events.

    PYTHONPATH=<code root> python benchmarks/bench_store_phases.py [phase ...]
    valgrind --tool=callgrind --instr-atstart=no <python3.11 binary> benchmarks/bench_store_phases.py --callgrind

Phases (each over the same 1,000 events, after 200 warming ones, the IP cache emptied
before each): ``event_row``; ``command`` (the decision path's call: row, plan, packed
EVALSHA; on code without `OnlineStore._packed_call`, `_prepare` then hiredis'
``pack_command``, which is what that code sent); ``finish`` (the script's reply to
features: unpack, read, `derive`); ``process_async`` (the whole call over a pipelined
connection to an embedded Redis, 32 in flight as in bench_decide, uvloop). Prints CPU
microseconds per event of each phase (``time.process_time``), or under ``--callgrind``
switches instrumentation on around each phase and dumps after it (``callgrind.out.<pid>.N``
in phase order; instructions per event = the dump's ``totals:`` / 1,000). The code on
PYTHONPATH runs, so two versions compare side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_decide  # noqa: E402  (the payloads)
import hiredis  # noqa: E402

from fengkong.events import parse_event  # noqa: E402
from fengkong.features.embedded_redis import EmbeddedRedis  # noqa: E402
from fengkong.features.ipintel import IpIntel  # noqa: E402
from fengkong.features.lists import ListStore, load_list_specs  # noqa: E402
from fengkong.features.online import OnlineStore  # noqa: E402
from fengkong.features.pipelined import PipelinedRedis  # noqa: E402
from fengkong.features.rows import event_row  # noqa: E402

WARM, N = 200, 1000
PHASES = ("event_row", "command", "finish", "process_async")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phases", nargs="*", default=list(PHASES), help=f"some of {', '.join(PHASES)}")
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        ap.error(f"phases: unknown {unknown}; choose among {list(PHASES)}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    events = [parse_event(json.loads(b)) for b in bench_decide._bodies(WARM + N)]
    lists_dir = ROOT / "rules" / "lists"
    specs = load_list_specs(lists_dir)
    intel = IpIntel.load(lists_dir)
    prefixes = (f"phases{i}" for i in itertools.count())

    def ctl(*what: str) -> None:
        if args.callgrind:
            subprocess.run(["callgrind_control", *what, str(os.getpid())], check=True, capture_output=True)

    with EmbeddedRedis(persist=False) as server:
        client = server.client()

        def fresh() -> OnlineStore:
            prefix = next(prefixes)
            ListStore(client, specs, prefix=prefix).seed_from_files(lists_dir)
            return OnlineStore(client, ipintel=intel, lists=specs, prefix=prefix)

        store = fresh()
        calls = []
        for event in events:
            call = store._prepare(event)
            calls.append((event, call, store._script(keys=call.keys, args=call.args)))
        measured, replies = events[WARM:], calls[WARM:]
        packed = getattr(store, "_packed_call", None)

        async def stream(st: OnlineStore, batch: list[Any], conn: PipelinedRedis) -> None:
            for i in range(0, len(batch), 32):
                await asyncio.gather(*(st.process_async(e, conn, 5.0) for e in batch[i:i + 32]))

        def process_async() -> None:
            st = fresh()

            async def run() -> None:
                conn = PipelinedRedis(server.url)
                await stream(st, events[:WARM], conn)  # the script loaded, the paths warm
                ctl("-i", "on")
                cpu = time.process_time()
                await stream(st, measured, conn)
                out["process_async"] = (time.process_time() - cpu) / N * 1e6
                ctl("-d")
                ctl("-i", "off")
                conn.close()

            asyncio.run(run())

        phases: dict[str, Callable[[], Any]] = {
            "event_row": lambda: [event_row(e, intel, store.biz_offset_min) for e in measured],
            "command": (lambda: [packed(e) for e in measured]) if packed is not None else
            (lambda: [hiredis.pack_command(store._prepare(e).command) for e in measured]),
            "finish": lambda: [store._finish(e, c, r) for e, c, r in replies],
        }
        out: dict[str, float] = {}

        def timed(phase: Callable[[], Any], name: str) -> None:
            intel.lookup_with_subnet.cache_clear()
            phase()  # warm
            intel.lookup_with_subnet.cache_clear()
            ctl("-i", "on")
            cpu = time.process_time()
            phase()
            out[name] = (time.process_time() - cpu) / N * 1e6
            ctl("-d")
            ctl("-i", "off")

        for name in args.phases:
            if name == "process_async":
                intel.lookup_with_subnet.cache_clear()
                process_async()
            else:
                timed(phases[name], name)
    print(json.dumps({"phases": args.phases, "events": N, "cpu_us": {k: round(v, 2) for k, v in out.items()},
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
