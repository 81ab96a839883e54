"""Case filing's CPU per item on a database that is not empty, repeatable and quick to A/B.

    python benchmarks/bench_case_filing.py prep 300000     # once: the stream and the database
    python benchmarks/bench_case_filing.py run benchmarks/.filing/template_300000.sqlite3 [GROW]

``prep`` fills the intake stream as the service does (bench_decide's 3,000 decisions
through the ASGI app; the reviews among them are queued), saves it with ``DUMP``, and
makes a SQLite database (the current schema) holding N older cases, decisions and audit
rows with random keys, so that index trees are as deep as on a running desk. ``run``
restores the stream into a fresh Redis, files it into a copy of that database with one
`Consumer` stepped by hand, and prints CPU per filed item (time.process_time of the
filing loop; the Redis server's too). ``GROW=0``: batches kept at 100 (the idle-priority
consumer's). Environment: ``GCF=1`` calls ``gc.freeze()`` before the loop, as
`fengkong cases consume` does after start-up; ``CG=1`` under ``valgrind
--tool=callgrind --instr-atstart=no`` (the real python binary, not a shim) counts only
the loop. Only public interfaces: ``PYTHONPATH=/older/checkout`` measures older code
with the same stream and database.
"""
import sys, os, time, asyncio, shutil, tempfile, random, sqlite3, json
from pathlib import Path
HERE = Path(__file__).resolve().parent
OUT = HERE / ".filing"
DUMP = OUT / "stream.dump"

def prep(n):
    sys.path.insert(0, str(HERE))
    OUT.mkdir(exist_ok=True)
    import bench_decide
    from fengkong.features.embedded_redis import EmbeddedRedis
    servers = []
    orig = EmbeddedRedis.start
    def start(self):
        servers.append(self); return orig(self)
    EmbeddedRedis.start = start
    EmbeddedRedis.stop = lambda self: None
    args = bench_decide.argparse.Namespace(decisions=3000, warmup=500, artifacts=None, consumer=False, callgrind=False)
    asyncio.run(bench_decide._run(args))
    prefix = os.environ["FENGKONG_KEY_PREFIX"]
    from fengkong.cases.intake import stream_key
    c = servers[0].client()
    key = stream_key(prefix)
    DUMP.write_bytes(json.dumps({"prefix": prefix, "dump": c.dump(key).hex(), "len": c.xlen(key)}).encode())
    # the template database, current schema, n older cases
    from fengkong.db.engine import make_engine
    from fengkong.db import migrate
    tpl = OUT / f"template_{n}.sqlite3"
    if tpl.exists(): tpl.unlink()
    eng = make_engine(f"sqlite:///{tpl}"); migrate.upgrade(eng); eng.dispose()
    rnd = random.Random(3)
    con = sqlite3.connect(tpl)
    ts = "2026-01-01 00:00:00.000000"
    con.executemany("INSERT INTO cases (id, entity_kind, entity_id, status, queue, priority, max_score, opened_at, updated_at, "
                    "first_occurred_at, last_occurred_at, merchant_id, rule_ids, decision_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    ((i, "card", "%016x" % rnd.getrandbits(64), "resolved" if i % 3 else "open", "general", rnd.random(), 50.0,
                      ts, ts, ts, ts, "m%05d" % rnd.randrange(20000), " x ", 1) for i in range(1, n + 1)))
    con.executemany("INSERT INTO case_decisions (case_id, decision_id, event_id, event_type, decision, score, reasons, rule_ids, "
                    "occurred_at, added_at, merchant_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    ((i, "%032x" % rnd.getrandbits(128), "e%d" % i, "payment", "review", 50.0, "[]", " x ", ts, ts,
                      "m%05d" % rnd.randrange(20000)) for i in range(1, n + 1)))
    con.executemany("INSERT INTO case_events (case_id, at, actor, action) VALUES (?,?,?,?)",
                    ((i, ts, "intake", "opened") for i in range(1, n + 1)))
    con.commit(); con.execute("PRAGMA wal_checkpoint(TRUNCATE)"); con.close()
    print("prepared", DUMP, tpl)

def run(template, grow):
    meta = json.loads(DUMP.read_bytes())
    prefix = meta["prefix"]
    from fengkong.features.embedded_redis import EmbeddedRedis
    server = EmbeddedRedis(persist=False).start()
    try:
        from fengkong.cases.intake import stream_key
        from fengkong.cases.runtime import cases_client, open_cases
        from fengkong.features.cluster_store import store_class_for
        from fengkong.features.ipintel import IpIntel
        from fengkong.features.lists import load_list_specs
        rules = HERE.parent / "rules"
        client = cases_client(server.url)
        client.restore(stream_key(prefix), 0, bytes.fromhex(meta["dump"]))
        store = store_class_for(server.url)(client, ipintel=IpIntel.load(rules / "lists"), lists=load_list_specs(rules / "lists"), prefix=prefix)
        d = Path(tempfile.mkdtemp())
        db = d / "cases.sqlite3"
        shutil.copy(template, db)
        cases = open_cases(database_url=f"sqlite:///{db}", rules_dir=rules, client=client, store=store, prefix=prefix,
                           maxlen=1000, publish=None, consume=False, hold_dir=None)
        cons = cases.consumer
        if grow == "0" and hasattr(cons, "max_batch"):
            cons.max_batch = cons.batch
        import subprocess, gc
        if os.environ.get("GCF"):
            gc.collect(); gc.freeze()
        if os.environ.get("GCT"):
            gc.set_threshold(*map(int, os.environ["GCT"].split(",")))
        cg = os.environ.get("CG")
        if cg:
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
        c0 = time.process_time(); r0 = client.info("cpu")
        while cons.step(block_ms=1):
            pass
        c1 = time.process_time(); r1 = client.info("cpu")
        if cg:
            subprocess.run(["callgrind_control", "-d", str(os.getpid())], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
        n = cons.filed
        print(json.dumps({"filed": n, "cpu_us_per_item": round((c1 - c0) / n * 1e6, 1),
                          "redis_us_per_item": round(((r1['used_cpu_user'] + r1['used_cpu_sys']) - (r0['used_cpu_user'] + r0['used_cpu_sys'])) / n * 1e6, 1),
                          "load": os.getloadavg()[0]}))
        shutil.rmtree(d)
    finally:
        server.stop()

if __name__ == "__main__":
    if sys.argv[1] == "prep":
        prep(int(sys.argv[2]))
    else:
        run(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "1")
