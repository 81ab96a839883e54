"""What webhooks cost: Redis bytes per queued event, pending delivery and dead letter,
and how fast one delivery loop drains a backlog to a receiver on loopback.

    python benchmarks/bench_webhooks.py [--events 20000] [--deliver 3000]

Starts its own Redis (embedded, persistence off) and one subscription to
``decision.deny``. Bytes: it publishes ``--events`` events shaped like the decision
path's (`fengkong.api.hooks.Hooks.decision_command`'s payload: ids, decision, score,
three rule ids, version, time) and reads ``MEMORY USAGE`` of the outbox stream; then
fans them out (fanout.lua, as a worker does) and measures the delivery hashes (sampled)
and the schedule; then dead-letters a sample (settle.lua) and measures the dead-letter
stream. Delivery: ``--deliver`` events are published and one `Deliverer` (concurrency
16, as a worker's default) sends them to an `http.server` receiver in another process
that answers 200; the figure is deliveries per second from the first publish to the
last 2xx, on whatever else the machine is doing, and the CPU this process (the
delivery loop, and the bench's stats polls) spent per delivery.

The last line is one JSON object: outbox_bytes_per_event, delivery_bytes_per_pending,
dead_letter_bytes_per_entry, body_bytes, outbox_bytes_at_default_cap, deliveries_per_s,
cpu_us_per_delivery, deliver_failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def payload(i: int) -> dict:
    return {"decision_id": f"d_{i:024x}", "event_id": f"evt-bench-{i}", "decision": "deny", "score": 100,
            "reasons": ["lists.blocked_card", "card.velocity_10m", "ip.tor_exit"], "event_type": "payment",
            "merchant_id": f"m-{i % 500}", "user_id": f"u-{i % 15000}", "risk": 0.8731,
            "ruleset_version": "675013852d1f@2026-11-25T20:45:09.089746Z", "decided_at": "2026-11-25T12:00:00.123Z"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--deliver", type=int, default=3_000)
    args = parser.parse_args()

    from fengkong.features.embedded_redis import EmbeddedRedis
    from fengkong.webhooks import Deliverer, DeliveryConfig, Subscriptions, publish_many
    from fengkong.webhooks.store import GROUP, OUTBOX_MAXLEN, WebhookKeys, envelope, script_source

    server = EmbeddedRedis(persist=False).start()
    client = server.client()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(receiver.stdout.readline())  # type: ignore[union-attr]
        out: dict = {}
        # -- bytes ------------------------------------------------------------------------
        prefix = "bw"
        k = WebhookKeys(prefix)
        sub = Subscriptions(client, prefix).create(url=f"http://127.0.0.1:{port}/hook", kinds=["decision.deny"])
        n = args.events
        for s in range(0, n, 1000):
            publish_many(client, [("decision.deny", payload(i)) for i in range(s, min(n, s + 1000))], prefix=prefix)
        out["body_bytes"] = len(envelope("decision.deny", payload(0))[1])
        outbox = client.memory_usage(k.outbox, samples=0)
        out["outbox_bytes_per_event"] = round(outbox / n)
        out["outbox_bytes_at_default_cap"] = out["outbox_bytes_per_event"] * OUTBOX_MAXLEN
        client.xgroup_create(k.outbox, GROUP, id="0")
        fanout = client.register_script(script_source("fanout"))
        while True:
            read = client.xreadgroup(GROUP, "bench", {k.outbox: ">"}, count=500)
            ids = [i for _, entries in read or () for i, _ in entries]
            if not ids:
                break
            fanout(keys=[k.outbox, k.subscriptions, k.schedule], args=[GROUP, time.time(), k.delivery_prefix, *ids])
        members = client.zrange(k.schedule, 0, -1)
        sample = members[:: max(1, len(members) // 2000)]
        per_hash = sum(client.memory_usage(k.delivery(m.decode()), samples=0) for m in sample) / len(sample)
        per_zset = client.memory_usage(k.schedule, samples=0) / len(members)
        out["delivery_bytes_per_pending"] = round(per_hash + per_zset)
        settle = client.register_script(script_source("settle"))
        dead = members[:2000]
        for m in dead:
            d = m.decode()
            settle(keys=[k.schedule, k.delivery(d), k.stats(sub["id"]), k.dead(sub["id"])],
                   args=[d, "dead", 500, "HTTP 500", time.time(), time.time(), 10_000])
        out["dead_letter_bytes_per_entry"] = round(client.memory_usage(k.dead(sub["id"]), samples=0) / len(dead))
        # -- delivery ---------------------------------------------------------------------
        prefix = "bwd"
        subs = Subscriptions(client, prefix)
        sub = subs.create(url=f"http://127.0.0.1:{port}/hook", kinds=["decision.deny"])

        async def drain() -> float:
            deliverer = Deliverer(server.url, DeliveryConfig(prefix=prefix))
            t0, cpu0 = time.perf_counter(), time.process_time()
            publish_many(client, [("decision.deny", payload(i)) for i in range(args.deliver)], prefix=prefix)
            deliverer.start()
            while (subs.get(sub["id"]) or {})["stats"]["delivered"] < args.deliver:
                await asyncio.sleep(0.05)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            await deliverer.stop()
            return elapsed, cpu

        elapsed, cpu = asyncio.run(drain())
        out["deliveries_per_s"] = round(args.deliver / elapsed)
        out["cpu_us_per_delivery"] = round(cpu / args.deliver * 1e6)
        out["deliver_failed"] = (subs.get(sub["id"]) or {})["stats"]["failed"]
        print(json.dumps(out))
    finally:
        receiver.kill()
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
