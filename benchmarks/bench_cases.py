"""What filing a case costs the process that runs the case consumer (a service worker, or
`fengkong cases consume`): CPU per filed intake item, and items filed per second.

    python benchmarks/bench_cases.py [--items 20000] [--batch 100] [--database-url URL] [--seed 7]

Starts its own Redis (embedded, persistence off) and a SQLite database in a temporary
data directory, or with ``--database-url`` (a PostgreSQL server the user may create
databases on) a fresh database there, dropped at the end; migrated as the service does. It queues
``--items`` intake items on the intake stream with the decision path's own command
(`fengkong.cases.intake.Intake.command`, i.e. `item_for` of a decision record and its
parsed event): payments like bench_api's (many merchants, users, devices, IPs), every
one a ``review`` with two or three reasons taken from the default rule files (id, action,
score, tags, feature values). A third of the payments use a pool of 600 cards, so
decisions of one card arrive within the grouping window and join its open case, as
they do when a card is attacked. Then one `Consumer` (as a worker runs it, batch
``--batch``) steps until every item is filed and acknowledged.

``filing_cpu_us_per_item`` is this process's CPU (time.process_time: the consumer's
Redis reads and acks, JSON, SQLAlchemy, the SQLite engine; not the Redis or PostgreSQL
server) over the filing loop, per item; ``items_per_s`` is wall time and moves with the
machine's load (printed as ``load``). Only public interfaces are used, so the same file
measures an older checkout: ``PYTHONPATH=/path/to/checkout python benchmarks/bench_cases.py``.

The last line is one JSON object: items, cases_filed, decisions_filed, batch, database,
filing_cpu_us_per_item, items_per_s, load, and ``digest``: a hash of what was filed
(cases with their grouped decisions and audit actions, no row ids or times), equal
for two versions of the code that file the same cases from the same ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: an older checkout named there is the one measured

PREFIX = "bcases"


def rule_catalogue(rules_dir: Path) -> list[dict]:
    """The rules of the default files as reasons look (id, action, score, tags), with the
    feature names their conditions read."""
    import re

    import yaml

    out = []
    for path in sorted(rules_dir.glob("*.yaml")):
        if path.name.endswith("_test.yaml"):
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for rule in doc.get("rules") or ():
            if not isinstance(rule, dict) or "id" not in rule:
                continue
            names = sorted(set(re.findall(r"\b(?:card|user|merchant|ip|device)\.[a-z0-9_]+", str(rule.get("when")))))
            out.append({"id": rule["id"], "action": rule.get("then", "review"), "score": rule.get("score", 0),
                        "tags": list(rule.get("tags") or ()), "features": names[:4]})
    return out


def decision(rng: random.Random, i: int, t0: datetime, catalogue: list[dict]) -> tuple[dict, dict]:
    """A review decision record and its payment event (as the API parsed it)."""
    hot = rng.random() < 1 / 3
    card = rng.randrange(600) if hot else 1000 + rng.randrange(50_000)
    event = {
        "event_id": f"bc-{i}", "type": "payment", "occurred_at": (t0 + timedelta(milliseconds=i * 400)).isoformat(),
        "merchant_id": f"m{rng.randrange(500)}", "user_id": f"u{rng.randrange(15_000)}",
        "amount": f"{rng.randrange(1, 30000)}.{rng.randrange(100):02d}", "currency": "CNY",
        "channel": rng.choice(["quick_pay", "online_banking", "wallet", "pos"]),
        "card": {"fingerprint": f"c{card}", "bin": f"{622000 + card % 300}", "type": rng.choice(["credit", "debit"]),
                 "issuer_country": "CN"},
        "ip": f"113.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "device_id": f"d{rng.randrange(12_000)}",
    }
    reasons = []
    for rule in rng.sample(catalogue, rng.choice([2, 2, 3])):
        values = {name: round(rng.uniform(0, 50), 3) for name in rule["features"]}
        reasons.append({"id": rule["id"], "action": rule["action"], "score": rule["score"], "mode": "enforce",
                        "tags": rule["tags"], "values": values, "description": "not kept in the item"})
    score = sum(r["score"] for r in reasons)
    record = {"decision_id": f"d_{i:024x}", "decision": "review", "score": score,
              "risk": round(rng.random(), 4), "reasons": reasons}
    return record, event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="the consumer's batch (a worker's default: 100)")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server (a database is created for the run); default SQLite")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from fengkong.cases import config as cases_config
    from fengkong.cases.consumer import Consumer
    from fengkong.cases.intake import Intake, stream_key
    from fengkong.cases.service import Desk
    from fengkong.db import migrate
    from fengkong.db.engine import make_engine, session_factory
    from fengkong.db.url import database_url
    from fengkong.events import parse_event
    from fengkong.features.embedded_redis import EmbeddedRedis

    rules_dir = ROOT / "rules"
    catalogue = rule_catalogue(rules_dir)
    server = EmbeddedRedis(persist=False).start()
    client = server.client()
    with tempfile.TemporaryDirectory(prefix="bench-cases-") as tmp:
        url = database_url(args.database_url, Path(tmp))
        if args.database_url:
            url = _fresh_database(url, make_engine)
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            config = cases_config.load(rules_dir)
            desk = Desk(sessions=session_factory(engine), config=config)
            intake = Intake(config, prefix=PREFIX)
            rng = random.Random(args.seed)
            t0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone(timedelta(hours=8)))
            pipe = client.pipeline(transaction=False)
            for i in range(args.items):
                command = intake.command(*_parsed(decision(rng, i, t0, catalogue), parse_event))
                if command is None:
                    raise SystemExit("the cases configuration sent a review to no case: check rules/cases/cases.yaml")
                pipe.execute_command(*command)
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
            consumer = Consumer(client, desk, stream=stream_key(PREFIX), name="bench", batch=args.batch)
            consumer.ensure_group()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            acked = 0
            while acked < args.items:
                got = consumer.step(block_ms=0)
                if got == 0 and consumer.filed + consumer.dropped >= args.items:
                    break
                acked += got
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            from sqlalchemy import text

            with engine.connect() as conn:
                cases = conn.execute(text("SELECT count(*) FROM cases")).scalar_one()
                decisions = conn.execute(text("SELECT count(*) FROM case_decisions")).scalar_one()
                digest = _digest(conn, text)
            if decisions != args.items or consumer.dropped:
                raise SystemExit(f"filed {decisions} of {args.items} items ({consumer.dropped} dropped)")
        finally:
            engine.dispose()
            if args.database_url:
                _drop_database(url, make_engine)
            client.close()
            server.stop()
    print(json.dumps({"items": args.items, "cases_filed": int(cases), "decisions_filed": int(decisions),
                      "batch": args.batch, "database": engine.dialect.name,
                      "filing_cpu_us_per_item": round(cpu / args.items * 1e6, 1),
                      "items_per_s": round(args.items / wall), "load": os.getloadavg()[0], "digest": digest}))


def _digest(conn, text) -> str:  # noqa: ANN001 - benchmark only
    """A hash of what was filed, without row ids or filing times: two versions of the code
    that file the same cases (grouping, priority, rules, decisions, audit rows) print the
    same digest."""
    import hashlib

    decisions: dict = {}
    for case_id, decision_id in conn.execute(text("SELECT case_id, decision_id FROM case_decisions")):
        decisions.setdefault(case_id, []).append(decision_id)
    audit: dict = {}
    for case_id, action, before, after in conn.execute(
            text("SELECT case_id, action, from_status, to_status FROM case_events ORDER BY id")):
        audit.setdefault(case_id, []).append((action, before, after))
    rows = sorted(repr((*row[1:], sorted(decisions.get(row[0], [])), audit.get(row[0])))
                  for row in conn.execute(text(
                      "SELECT id, entity_kind, entity_id, status, queue, priority, max_score, first_occurred_at, "
                      "last_occurred_at, merchant_id, rule_ids, decision_count FROM cases")))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _fresh_database(url: str, make_engine):  # noqa: ANN001 - benchmark only
    """A new database on the server of ``url``, so every run starts empty."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"bench_cases_{os.getpid()}"
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str, make_engine) -> None:  # noqa: ANN001 - benchmark only
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    admin = make_engine(make_url(url).set(database="postgres").render_as_string(hide_password=False),
                        isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {make_url(url).database}"))
    admin.dispose()


def _parsed(pair: tuple[dict, dict], parse_event):  # noqa: ANN001, ANN202 - benchmark only
    record, event = pair
    return record, parse_event(event)


if __name__ == "__main__":
    main()
