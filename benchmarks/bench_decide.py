"""The worker's CPU per decision, in one process: no HTTP server, no load generator.

    python benchmarks/bench_decide.py [--decisions 3000] [--warmup 500] [--artifacts DIR] [--callgrind]
                                      [--callgrind-redis]

Why: on a shared 2-core machine bench_api's requests/s move with everything else that
runs; what the decision path costs the worker moves much less when measured as CPU
(``time.process_time``) in a process that does nothing else, and not at all when counted
in instructions under callgrind. Two parts are measured:

* ``service``: bench_api's payloads (the same generator, a fixed seed) through the
  service's ASGI app (`create_app`, its fast layer, 32 requests in flight at a time, an
  embedded Redis, the case consumer off as in bench_api's comparisons), after a warm-up:
  the HTTP server's parsing is left out, everything from the raw body to the answer's
  bytes and the write-behind is in (``--consumer``: and the case consumer's thread, filing
  the review decisions into SQLite in this process, as each worker did before `fengkong
  serve` ran it as a process of its own);
* ``decide_on``: `pipeline.decide_on` alone (models, rules, fused risk) on the store
  features the service computed for the same payloads.

With ``--artifacts DIR`` (a folder `fengkong train` wrote, e.g. the one bench_api trains)
the models are served; without, rules only. ``--callgrind``: run under
``valgrind --tool=callgrind --instr-atstart=no``; the script switches instrumentation on
before each measured loop and dumps after it (``callgrind_control``), so the start-up runs
at full speed and each dump (``callgrind.out.<pid>.1`` the service, ``.2`` decide_on)
counts only its loop: instructions per decision = the dump's ``summary`` / ``--decisions``.
``redis_cpu_us``: the embedded Redis's CPU (``INFO cpu``) per decision over the service loop
and its last write-behind: the feature script and every write, on the same traffic; on 2 cores
Redis's CPU bounds bench_api's requests/s next after the worker's. ``--callgrind-redis`` runs that
Redis under callgrind instead (instrumentation on for the same span only) and adds
``redis_ir_per_decision``, a count that does not move with the machine's load. The last line
is JSON: the CPU per decision of each part, the count of each decision, and a digest of
every answer (decision ids and latencies left out) so two versions of the code can be
checked to decide alike (``PYTHONHASHSEED`` does not matter: the payloads are seeded).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_api  # noqa: E402  (the payload generator and the key)

CONCURRENCY = 32


def _bodies(count: int) -> list[bytes]:
    rng = random.Random(20261205)
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    return [bench_api._event_bytes(rng, i, "decide", t0) for i in range(count)]


async def _one(app: Any, body: bytes, out: list[bytes]) -> None:
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")
        if message["type"] == "http.response.body":
            out.append(message["body"])

    scope = {"type": "http", "method": "POST", "path": "/v1/decisions", "query_string": b"", "root_path": "",
             "headers": [(b"x-api-key", bench_api.KEY.encode()), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    await app(scope, receive, send)


def _callgrind(what: str, pid: int | None = None) -> None:
    """Switch callgrind's instrumentation of process ``pid`` (this one by default) on (``-i on``),
    or dump and switch it off (``-d``, ``-i off``)."""
    for args in (["-i", "on"],) if what == "start" else (["-d"], ["-i", "off"]):
        subprocess.run(["callgrind_control", *args, str(pid or os.getpid())], check=True, capture_output=True)


def _redis_under_callgrind(data_dir: str) -> Path:
    """Make the embedded Redis start under ``valgrind --tool=callgrind --instr-atstart=no`` (a
    wrapper script in place of the binary; the benchmark's own, nothing the service does) and
    return where its dumps go (``<that>.<n>``)."""
    from fengkong.features import embedded_redis

    binary = embedded_redis.find_redis_server()
    out = Path(data_dir) / "redis.callgrind"
    wrapper = Path(data_dir) / "redis-under-callgrind"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
                       f"--callgrind-out-file={out} {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    embedded_redis.find_redis_server = lambda: str(wrapper)
    return out


def _redis_cpu_s(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _dumped_instructions(path: Path) -> int:
    """The instructions of callgrind's last dump at ``path``.<n> (its ``summary`` line)."""
    dumps = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]))
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"bench_decide: no summary in {dumps[-1]}")


def _digest(answers: list[bytes]) -> tuple[str, dict[str, int]]:
    h = hashlib.sha256()
    counts: dict[str, int] = {}
    for raw in answers:
        a = json.loads(raw)
        for k in ("decision_id", "latency_ms", "ruleset_version"):  # the version carries its load time
            a.pop(k, None)
        h.update(json.dumps(a, sort_keys=True).encode())
        counts[a["decision"]] = counts.get(a["decision"], 0) + 1
    return h.hexdigest()[:16], counts


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from fengkong import pipeline
    from fengkong.features.embedded_redis import EmbeddedRedis

    data_dir = tempfile.mkdtemp(prefix="bench-decide-")
    redis_dump = _redis_under_callgrind(data_dir) if args.callgrind_redis else None
    redis_server = EmbeddedRedis(persist=False).start(timeout_s=120.0 if redis_dump else 10.0)
    redis_client = redis_server.client()
    redis_pid = int(redis_client.info("server")["process_id"])
    os.environ.update({
        "FENGKONG_REDIS_URL": redis_server.url, "FENGKONG_RULES_DIR": str(ROOT / "rules"),
        "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": bench_api.KEY, "scopes": ["decide"]}]),
        "FENGKONG_KEY_PREFIX": f"decide{os.getpid()}", "FENGKONG_RULES_WATCH_S": "0",
        "FENGKONG_ARTIFACTS_DIR": str(args.artifacts or Path(data_dir) / "no-artifacts"),
        "FENGKONG_CASES_CONSUMER": "true" if args.consumer else "false", "FENGKONG_DATA_DIR": data_dir,
        # the deadline never degrades a decision here (callgrind runs some 50 times slower)
        "FENGKONG_DEADLINE_MS": "10000"})
    from fengkong.api.app import create_app
    from fengkong.api.config import Settings

    app = create_app(Settings())
    captured: list[dict[str, Any]] = []
    decide_on = pipeline.decide_on

    def capture(store_features: Any, **kw: Any) -> Any:
        captured.append(dict(store_features))
        return decide_on(store_features, **kw)

    try:
        async with app.router.lifespan_context(app):
            app.middleware_stack = app.build_middleware_stack()
            rt = app.state.runtime
            if args.artifacts and not rt.models.available:
                raise SystemExit(f"bench_decide: no model loaded from {args.artifacts}: {rt.models.status}")
            bodies = _bodies(args.warmup + args.decisions)
            answers: list[bytes] = []

            async def decide(chunk: list[bytes]) -> None:
                for i in range(0, len(chunk), CONCURRENCY):
                    await asyncio.gather(*(_one(app, b, answers) for b in chunk[i:i + CONCURRENCY]))

            await decide(bodies[:args.warmup])
            answers.clear()
            pipeline.decide_on = capture  # the service calls it through the module
            if redis_dump:
                _callgrind("start", redis_pid)
            redis_cpu = _redis_cpu_s(redis_client)
            if args.callgrind:
                _callgrind("start")
            cpu = time.process_time()
            await decide(bodies[args.warmup:])
            service_cpu = time.process_time() - cpu
            if args.callgrind:
                _callgrind("dump")
            pipeline.decide_on = decide_on
            await asyncio.sleep(0.2)  # the last write-behind batches
            redis_cpu = _redis_cpu_s(redis_client) - redis_cpu
            if redis_dump:
                _callgrind("dump", redis_pid)
            cases = rt.cases.consumer.filed if args.consumer and rt.cases is not None else None
            models = rt.models if rt.models.available else None
            from fengkong.api.service.decisions import _GuardedModels

            guarded = _GuardedModels(models) if models is not None else None
            if args.callgrind:
                _callgrind("start")
            cpu = time.process_time()
            for features in captured:
                decide_on(features, rules=rt.rules, models=guarded)  # type: ignore[arg-type]
            decide_cpu = time.process_time() - cpu
            if args.callgrind:
                _callgrind("dump")
    finally:
        redis_server.stop()
    digest, counts = _digest(answers)
    n = args.decisions
    return {"decisions": n, "models": bool(args.artifacts), "service_cpu_us": round(service_cpu / n * 1e6, 1),
            "decide_on_cpu_us": round(decide_cpu / len(captured) * 1e6, 1),
            "redis_cpu_us": round(redis_cpu / n * 1e6, 1),
            **({"redis_ir_per_decision": round(_dumped_instructions(redis_dump) / n)} if redis_dump else {}),
            "outcomes": counts,
            "answers_sha256": digest, "load": os.getloadavg()[0],
            **({"cases_filed": cases} if cases is not None else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--artifacts", type=Path, help="serve the models of this artifacts folder")
    parser.add_argument("--consumer", action="store_true",
                        help="run the case consumer in this process, as a worker did before `fengkong serve` ran it "
                             "apart: its filing of the review decisions then counts in service_cpu_us")
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: count only the measured loops")
    parser.add_argument("--callgrind-redis", action="store_true",
                        help="run the embedded Redis under callgrind and count its instructions per decision over "
                             "the service loop (redis_ir_per_decision)")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
