"""What the decision service stores per decision and per entity: Redis bytes and worker RSS.

    python benchmarks/bench_memory.py [--decisions 200000] [--warmup 2000] [--traffic simulated|fresh]
                                      [--seed 7] [--concurrency 32] [--sample 2000]

Starts its own Redis (embedded, persistence off, no maxmemory) and the service (default rules,
one uvicorn worker, started as `fengkong serve` with that Redis), as benchmarks/bench_api.py
does, and sends it ``--warmup`` then ``--decisions`` decision events over keep-alive
connections at a bounded concurrency, reading Redis' ``used_memory`` and the worker's RSS
(/proc) between the two and after.

The traffic (``--traffic``):

* ``simulated`` (default): the first decision events (payments, sign-ups, logins, card
  bindings; the outcome events are left out) of a history from the project's simulator
  (`fengkong.simulation`, docs/simulation.md) sized for the run, in event-time order: its
  defaults, 60 days, shoppers paying 0.3 times a day at their usual merchants with one to
  a few cards and devices, households and carrier-grade NAT sharing IPs. So a card pays
  again, a shopper comes back to the merchants it knows, and an IP is shared or reused
  within a session: for 202,000 decisions about 10 payments per card, 2 per merchant-card
  pair and per IP (the JSON's ``traffic`` has the counts of that run). Real traffic
  repeats entities; a benchmark that makes a new card, pair and IP with every decision
  measures entity state, not what a decision costs.
* ``fresh``: bench_api's generator (20,000 cards, 15,000 users, 500 merchants, nearly
  every merchant-card pair, IP and /24 new): the worst case for entity state, and what
  this benchmark sent before.

The run compresses the history's weeks into minutes while every key's TTL runs on the
wall clock, so nothing expires during it: keys that a deployment drops after 25 h (IPs,
devices, a merchant's ``top:<day>``) pile up here. ``redis_bytes_per_decision`` is the
honest total (``used_memory`` growth / decisions under this traffic, entity state
included); size a deployment with the two parts apart (docs/scale.md): bytes per decision
x decisions per day x retention, plus bytes per active entity x entities active within
the entity's TTL.

Then it walks every key of the service's prefix (SCAN) and sorts it by kind from its shape
(`fengkong.features.keys`): decision records (``{evt:<id>}:request``), event-id dedup claims
(``{evt:<id>}:<other>``), decision pointers (``{decision:<id>}:event``, or their hour's
buckets ``{dp:<hour><shard>}:ptr``), the records'
schemas (``{schema:<id>}:names``), merchant snapshots, the feature keys of each entity kind
(card, user, merchant, ip, device, ...) and the streams (audit, case intake). For each kind
it measures ``MEMORY USAGE ... SAMPLES 0`` and ``PTTL`` on up to ``--sample`` keys and
scales the mean by the count.

The last line is one JSON object: decisions, traffic (what it was made of: distinct
entities, decisions per entity), redis_bytes_per_decision, redis_bytes_per_decision_without_streams
(the same without the audit streams' growth: they are capped, so they stop growing),
bytes_per_decision_stored (record, claim and pointer: what every decision leaves for its
TTL), bytes_per_card, bytes_per_user, bytes_per_device, bytes_per_ip, bytes_per_subnet
(an IPv4 /24), bytes_per_merchant_card_pair, bytes_per_merchant (every key of the entity,
divided by the entities seen), bytes_by_family (bytes summed by what they are stored per),
worker_rss_growth_mb, audit_stream_bytes (MEMORY USAGE of the audit streams),
audit_stream_entries, and ``kinds``: per kind its key count, estimated bytes, bytes per
key, bytes per decision, distinct entities and bytes per entity (feature keys), and the TTL
range seen (``[null, null]`` when a sampled key has no TTL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import KEY, ROOT, _event_bytes, _free_port, _serve, _stop, _wait_http  # noqa: E402

#: ``{prefix}:v1:{<entity>:<id>}:<suffix>`` (`fengkong.features.keys.entity_key`)
_ENTITY = re.compile(rb"^[^:]+:v1:\{([^:}]+):(.*)\}:([^{}]+)$")


def _rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _simulated(count: int, seed: int) -> tuple[list[bytes], dict[str, Any]]:
    """The first ``count`` decision events (payment, signup, login, card_bind) of a
    history from the project's simulator (`fengkong.simulation`, its defaults: 60 days,
    0.3 payments per shopper and day, households, shared and carrier-grade NAT IPs),
    in event-time order, as request bodies; and what the traffic is made of."""
    from fengkong.events import OUTCOME_TYPES, flat_to_dict
    from fengkong.simulation import SimConfig, simulate

    outcome = {t.value for t in OUTCOME_TYPES}
    frame = simulate(SimConfig.for_events(int(count / 0.8) + 1000, seed=seed))
    frame = frame[~frame["type"].isin(outcome)].head(count)
    if len(frame) < count:
        raise SystemExit(f"bench_memory: the simulated history has {len(frame)} decision events, {count} needed")
    bodies = [json.dumps(flat_to_dict(row), separators=(",", ":")).encode() for row in frame.to_dict("records")]
    pay = frame[frame["type"] == "payment"]
    ip = frame["ip"].dropna()
    distinct = {"cards": pay["card_fingerprint"].nunique(), "users": frame["user_id"].nunique(),
                "devices": frame["device_id"].nunique(), "ips": ip.nunique(),
                "subnets": ip.str.rsplit(".", n=1).str[0].nunique(), "merchants": pay["merchant_id"].nunique(),
                "merchant_card_pairs": (pay["merchant_id"] + "|" + pay["card_fingerprint"]).nunique()}
    traffic = {"kind": "simulated", "seed": seed, "decisions": count, "payments": len(pay),
               "from": str(frame["occurred_at"].iloc[0]), "to": str(frame["occurred_at"].iloc[-1]),
               "distinct": distinct,
               "decisions_per_entity": {k: round((len(pay) if k in ("cards", "merchant_card_pairs", "merchants")
                                                 else count) / v, 2) for k, v in distinct.items() if v}}
    return bodies, traffic


def _fresh(count: int, run: str) -> tuple[list[bytes], dict[str, Any]]:
    """bench_api's generator: nearly every merchant-card pair, IP and /24 new (the
    worst case for entity state; what this benchmark sent before it used the simulator)."""
    rng = random.Random(hash(run) & 0xFFFF)
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    return [_event_bytes(rng, i, run, t0) for i in range(count)], {"kind": "fresh", "decisions": count}


async def _send(port: int, bodies: list[bytes], concurrency: int) -> dict[str, int]:
    """Send ``bodies`` in order, ``concurrency`` requests in flight; count the answers."""
    head = (f"POST /v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n")
    counter = iter(bodies)
    stats = {"ok": 0, "status": 0, "degraded": 0}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for body in counter:
            writer.write(head.format(len(body)).encode() + body)
            status = await reader.readuntil(b"\r\n")
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(int(h[15:]) for h in headers.split(b"\r\n") if h[:15].lower() == b"content-length:")
            payload = await reader.readexactly(length)
            if status[9:12] != b"200":
                stats["status"] += 1
                stats.setdefault("last", payload[:300].decode(errors="replace"))  # type: ignore[arg-type]
            elif b'"degraded":true' in payload:
                stats["degraded"] += 1
            else:
                stats["ok"] += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


def _kind(key: bytes) -> tuple[str, str | None]:
    """(kind, entity id or None) of one key, from its shape."""
    m = _ENTITY.match(key)
    if m is None:
        rest = key.split(b":", 2)[-1].decode(errors="replace")
        return f"stream/other:{rest}", None
    entity, ident, suffix = (g.decode(errors="replace") for g in m.groups())
    if entity == "evt":
        return ("request record" if suffix == "request" else f"dedup claim ({suffix})"), None
    if entity in ("decision", "dp"):  # one key per decision before; a bucket of them (dp) since
        return f"decision pointer ({suffix})", None
    if entity == "schema":  # shared by the records of one rule set (fengkong.api.service.records)
        return "record schema", None
    if entity == "merchant" and suffix == "last_decision":
        return "merchant snapshot", ident
    return f"features {entity}", ident


def _breakdown(client: Any, prefix: str, sample: int, decisions: int) -> dict[str, dict[str, Any]]:
    """Every key of ``prefix`` by kind: count, and bytes and TTL from a sample of each kind."""
    counts: dict[str, int] = defaultdict(int)
    entities: dict[str, set[str]] = defaultdict(set)
    sampled: dict[str, list[bytes]] = defaultdict(list)
    suffixes: dict[str, set[str]] = defaultdict(set)
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        kind, ident = _kind(key)
        counts[kind] += 1
        if ident is not None:
            entities[kind].add(ident)
            suffixes[kind].add(re.sub(r"(?<=:)\d+$", "<n>", key.rsplit(b"}:", 1)[-1].decode(errors="replace")))
        if len(sampled[kind]) < sample:
            sampled[kind].append(key)
    out: dict[str, dict[str, Any]] = {}
    for kind, keys in sorted(sampled.items()):
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0")
            pipe.pttl(k)
        res = pipe.execute()
        # a key that expired between SCAN and here (PTTL -2) is left out, not counted as 0 bytes
        live = [(int(s or 0), int(t)) for s, t in zip(res[0::2], res[1::2]) if int(t) != -2] or [(0, -1)]
        sizes = [s for s, _ in live]
        ttls = [t for _, t in live]
        per_key = sum(sizes) / len(sizes)
        total = per_key * counts[kind]
        row: dict[str, Any] = {"keys": counts[kind], "bytes": round(total), "bytes_per_key": round(per_key, 1),
                               "bytes_per_decision": round(total / decisions, 1),
                               "ttl_s": [None, None] if min(ttls) < 0 else
                               [round(min(ttls) / 1000), round(max(ttls) / 1000)]}
        if kind in entities:
            row["entities"] = len(entities[kind])
            row["bytes_per_entity"] = round(total / len(entities[kind]), 1)
            row["suffixes"] = sorted(suffixes[kind])
        out[kind] = row
    return out


#: per-decision key kinds (stored for `decision_ttl_s` or the dedup TTL) and their family
_PER_DECISION = {"request record": "record", "decision pointer (event)": "pointer", "decision pointer (ptr)": "pointer"}


def _family(kind: str) -> str:
    """The family a key kind is summed into in ``bytes_by_family``: what it is stored per."""
    if kind in _PER_DECISION:
        return _PER_DECISION[kind]
    if kind.startswith("dedup claim"):
        return "claim"
    if kind.startswith("stream/other:"):
        return kind.split(":", 1)[1].replace(":", "_") + "_stream"
    if kind.startswith("features "):
        return kind.split(" ", 1)[1]
    return {"merchant snapshot": "merchant", "record schema": "schema"}.get(kind, kind)


def _summary(kinds: dict[str, dict[str, Any]], decisions: int) -> dict[str, Any]:
    """``bytes_by_family``, the bytes per decision of what each decision stores (record,
    claim, pointer; the capped streams apart) and the bytes per entity of each kind."""
    families: dict[str, int] = defaultdict(int)
    for kind, row in kinds.items():
        families[_family(kind)] += row["bytes"]
    per_entity = {}
    for entity, name in (("card", "bytes_per_card"), ("user", "bytes_per_user"), ("device", "bytes_per_device"),
                         ("ip", "bytes_per_ip"), ("subnet", "bytes_per_subnet"),
                         ("merchant_card", "bytes_per_merchant_card_pair"), ("merchant", "bytes_per_merchant")):
        rows = [row for kind, row in kinds.items() if _family(kind) == entity and "entities" in row]
        if rows:
            count = max(row["entities"] for row in rows)
            per_entity[name] = round(sum(row["bytes"] for row in rows) / count, 1)
    stored = sum(families.get(f, 0) for f in ("record", "claim", "pointer"))
    return {"bytes_per_decision_stored": round(stored / decisions, 1), **per_entity,
            "bytes_by_family": dict(sorted(families.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample", type=int, default=2_000, help="keys of each kind measured with MEMORY USAGE")
    parser.add_argument("--traffic", choices=("simulated", "fresh"), default="simulated",
                        help="simulated: the project's simulator (default); fresh: bench_api's generator, "
                             "nearly every merchant-card pair and IP new")
    parser.add_argument("--seed", type=int, default=7, help="the simulator's seed")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    from fengkong.features.embedded_redis import EmbeddedRedis
    from fengkong.features.keys import audit_stream

    total_decisions = args.warmup + args.decisions
    if args.traffic == "simulated":
        bodies, traffic = _simulated(total_decisions, args.seed)
    else:
        bodies, traffic = _fresh(total_decisions, f"m{os.getpid()}")
    prefix = f"mem{os.getpid()}"
    redis_server = EmbeddedRedis(persist=False).start()
    client = redis_server.client()
    port = _free_port()
    env = dict(os.environ)
    env.update({"FENGKONG_REDIS_URL": redis_server.url, "FENGKONG_RULES_DIR": str(ROOT / "rules"),
                "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": KEY, "scopes": ["decide"]}]),
                "FENGKONG_KEY_PREFIX": prefix, "FENGKONG_RULES_WATCH_S": "0",
                "FENGKONG_DEADLINE_MS": "2000"})  # a busy machine must not turn decisions into degraded answers
    streams = [audit_stream(prefix, "decisions"), audit_stream(prefix, "changes")]

    def stream_bytes() -> int:
        return sum(int(client.execute_command("MEMORY", "USAGE", s, "SAMPLES", "0") or 0) for s in streams)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            service = _serve(port, env, tmp)
            try:
                _wait_http(port)
                warm = asyncio.run(_send(port, bodies[:args.warmup], args.concurrency))
                mem0, rss0, streams0 = int(client.info("memory")["used_memory"]), _rss_mb(service.pid), stream_bytes()
                t = time.perf_counter()
                sent = asyncio.run(_send(port, bodies[args.warmup:], args.concurrency))
                seconds = time.perf_counter() - t
                mem1, rss1 = int(client.info("memory")["used_memory"]), _rss_mb(service.pid)
            finally:
                _stop(service)
        streams1 = stream_bytes()
        entries = sum(int(client.xlen(s)) for s in streams)
        kinds = _breakdown(client, prefix, args.sample, total_decisions)
        info = client.info("memory")
        script = client.info("commandstats").get("cmdstat_evalsha", {})
    finally:
        redis_server.stop()

    n = args.decisions
    for kind, row in kinds.items():
        extra = (f", {row['entities']:,} entities, {row['bytes_per_entity']:,.0f} B/entity ({', '.join(row['suffixes'])})"
                 if "entities" in row else "")
        print(f"{kind:34s} {row['keys']:>9,} keys {row['bytes'] / 2**20:8.1f} MiB {row['bytes_per_key']:7.0f} B/key "
              f"{row['bytes_per_decision']:7.1f} B/decision ttl {row['ttl_s']}{extra}")
    print(f"{n:,} decisions in {seconds:.0f} s after {args.warmup:,} warm-up ({warm}); answers {sent}; "
          f"used_memory {mem0 / 2**20:.1f} -> {mem1 / 2**20:.1f} MiB (peak {int(info['used_memory_peak']) / 2**20:.1f}); "
          f"worker RSS {rss0:.1f} -> {rss1:.1f} MiB; traffic {traffic}")
    print(json.dumps({
        "decisions": n, "traffic": traffic, "redis_bytes_per_decision": round((mem1 - mem0) / n, 1),
        "redis_bytes_per_decision_without_streams": round((mem1 - mem0 - (streams1 - streams0)) / n, 1),
        **_summary(kinds, total_decisions),
        "worker_rss_growth_mb": round(rss1 - rss0, 1), "audit_stream_bytes": streams1,
        # Redis' own time in the feature script per call (its one thread; a busy machine inflates it)
        "redis_script_usec_per_call": script.get("usec_per_call"),
        "audit_stream_entries": entries, "redis_used_memory_mb": round(mem1 / 2**20, 1),
        "errors": {"status": sent["status"], "degraded": sent["degraded"]}, "kinds": kinds,
    }))


if __name__ == "__main__":
    main()
