"""Redis bytes per queued case item: the intake stream is not capped (no review is lost),
so its backlog costs this much per review while no consumer files it.

    python benchmarks/bench_intake_bytes.py [--items 2000]

Starts an embedded redis-server, queues ``--items`` items built by the decision path's
own command (`Intake.command` of a one-reason review) and prints one JSON line with
``bytes_per_item`` (``MEMORY USAGE`` of the stream over its length) and ``item_json_bytes``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fengkong.cases.config import CasesConfig
from fengkong.cases.intake import Intake
from fengkong.events import parse_event
from fengkong.features.embedded_redis import EmbeddedRedis

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    args = ap.parse_args()
    server = EmbeddedRedis(data_dir=Path(tempfile.mkdtemp(prefix="fk-ib-")), persist=False).start()
    try:
        client = server.client()
        intake = Intake(CasesConfig(), prefix="ib")
        command: tuple = ()
        for n in range(args.items):
            ev = parse_event({"event_id": f"ib-{n:08d}", "type": "payment", "occurred_at": (T0 + timedelta(minutes=n)).isoformat(),
                              "merchant_id": f"m-{n}", "user_id": f"u-{n}", "amount": "120.00", "channel": "quick_pay",
                              "card": {"fingerprint": f"tok-{n:08d}", "bin": "622202", "type": "debit",
                                       "issuer_country": "CN"}, "ip": "185.220.101.7", "device_id": f"d-{n}"})
            record = {"decision_id": f"d_{n:024x}", "decision": "review", "score": 50, "risk": 0.3,
                      "reasons": [{"id": "ip.tor_exit", "action": "review", "score": 50, "mode": "enforce",
                                   "tags": ["proxy_ip"], "values": {"ip.is_tor": True}}]}
            command = intake.command(record, ev) or ()
            client.execute_command(*command)
        used = client.memory_usage(intake.key, samples=0) or 0
        print(json.dumps({"items": args.items, "bytes_per_item": round(used / client.xlen(intake.key), 1),
                          "item_json_bytes": len(command[-1])}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
