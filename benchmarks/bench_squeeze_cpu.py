"""Redis CPU of the current feature script against an older one, side by side on the same
events: for a change to how entity values are stored, CPU against memory. (First written
for entity values squeezed of their zero-byte runs against plain doubles; since used for
the compact state, each ring's buckets in use only.) The current script's rows are
labelled ``current``, the older one's ``plain``.

    python benchmarks/bench_squeeze_cpu.py --plain-script OLD.lua [--events 5000] [--rounds 3]

``OLD.lua``: the script before the change (``git show <commit>:fengkong/features/lua/update_read.lua``).
Starts an embedded Redis and runs the simulator's first ``--events`` decision events through
`OnlineStore.process` once per variant and round, alternating, each on a fresh key prefix;
Redis' own CPU (``INFO cpu``: user + sys of the server process, not wall time) per event is
printed per run, then the bytes of every key of each variant's last run (``MEMORY USAGE``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fengkong.events import OUTCOME_TYPES, flat_to_dict, parse_event  # noqa: E402
from fengkong.features.embedded_redis import EmbeddedRedis  # noqa: E402
from fengkong.features.ipintel import IpIntel  # noqa: E402
from fengkong.features.online import OnlineStore, load_script  # noqa: E402
from fengkong.simulation import SimConfig, simulate  # noqa: E402


def _cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plain-script", type=Path, required=True)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    outcome = {t.value for t in OUTCOME_TYPES}
    frame = simulate(SimConfig.for_events(int(args.events / 0.8) + 500, seed=7))
    events = [parse_event(flat_to_dict(r)) for r in frame[~frame["type"].isin(outcome)].head(args.events)
              .to_dict("records")]
    server = EmbeddedRedis(persist=False).start()
    client = server.client()
    ipintel = IpIntel.load(Path(__file__).resolve().parent.parent / "rules" / "lists")
    variants = {"current": load_script(), "plain": args.plain_script.read_text()}
    out: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, int] = {}
    try:
        for r in range(args.rounds):
            for name, text in variants.items():
                prefix = f"{name}{r}"
                store = OnlineStore(client, ipintel=ipintel, prefix=prefix)
                store._script = client.register_script(text)
                store._script(keys=["x"], args=["0", 0, b"\x90", "t"])  # loaded before the clock
                before = _cpu(client)
                for event in events:
                    store.process(event)
                out[name].append(round((_cpu(client) - before) / len(events) * 1e6, 1))
                sizes[name] = sum(int(client.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0") or 0)
                                  for k in client.scan_iter(match=f"{prefix}:*", count=10_000))
                print(name, r, out[name][-1], "us of Redis CPU per event", sizes[name], "bytes", flush=True)
    finally:
        server.stop()
    print(json.dumps({"events": len(events), "redis_cpu_us_per_event": out, "key_bytes_last_round": sizes}))


if __name__ == "__main__":
    main()
