"""Throughput and latency of the decision service against a minimal FastAPI app.

    python benchmarks/bench_api.py [--seconds 8] [--concurrency 32] [--minimal-http service] [--webhook]

Starts its own Redis (embedded, no snapshots), the service (default rules, one
uvicorn worker) and, after it, a minimal FastAPI app with one POST endpoint that
takes the same `Event` model and returns a constant (one worker). Each is loaded
from a second process at 32 keep-alive connections on 127.0.0.1 with varied events
(many cards, merchants, users, devices and IPs; every event_id fresh), after a
warm-up. The load generator speaks HTTP/1.1 on raw asyncio streams (uvloop): httpx
would be slower than the server it measures. It builds its requests before the
clock starts, so that on 2 shared cores it takes as little CPU from the server as
it can (its own CPU per request is printed as ``load``).

The last line is one JSON object: service_rps, service_p50_ms, service_p99_ms,
minimal_rps, minimal_p50_ms, minimal_p99_ms, ratio_rps, and the CPU each server
process used per answered request (service_worker_cpu_us, service_redis_cpu_us,
minimal_worker_cpu_us; from /proc, warm-up included on both sides of the
division): on a shared 2-core machine they say where the cores went, and move
less between runs than requests/s. The service's worker also reports, per answered
request, its read and write system calls (service_worker_reads, service_worker_writes:
``/proc/<pid>/io``, sockets included: the caller's request and answer, and Redis's
reads and writes of the batches they share) and its context switches
(service_worker_switches, of which service_worker_preempted were involuntary): the
part of its CPU the in-process benchmark (bench_decide) does not see, counted rather
than timed.

With models (the default; ``--no-models`` skips it): the merchant and transaction
models are first trained through the library (`fengkong.training.train`, with the
fused score on the default rules) on a small simulated history into a temporary
artifacts folder, which a second service run reads (passed as
``FENGKONG_ARTIFACTS_DIR``, the setting the service reads); the run stops with an
error unless /readyz lists both artifacts loaded and a probe decision carries the
fused ``risk``, since a silent rules-only run would be a false figure. The
history ends in 2025, the benchmark's payments are in 2026-11, after the training
window. It is loaded like the rules-only run (same generator, concurrency and
duration, from an empty key prefix of the same Redis) and adds service_models_rps,
service_models_p50_ms, service_models_p99_ms, ratio_models_rps
(service_models_rps / minimal_rps, the same minimal app), service_models_worker_cpu_us (and
service_models_worker_reads, _writes, _switches, _preempted as above),
service_models_redis_cpu_us and service_models_degraded_share (answers the failure
policy gave, which no model scored: the figures hold only when it is near 0). The
models are trained with the `fengkong train` defaults (200 boosting iterations, 100
trees per forest), so the served artifact has the usual size; training, with the
fused score's out-of-fold fits, takes some tens of seconds before the run.

``--artifacts DIR`` serves the artifacts of DIR instead of training (the same check
that both loaded): interleaved runs of two codes then serve one artifact and skip the
training's minutes of CPU between them.

Both runs also report the share of measured answers that were ``review``
(service_review_share, service_models_review_share: each opens a case), and, when
`fengkong serve` runs the case consumer as a process of its own, that process's CPU per
answered request (service_cases_cpu_us, service_models_cases_cpu_us): it is the
service's CPU too, on the same 2 cores; and the review items still queued, not filed,
when the load stopped (service_cases_backlog, service_models_cases_backlog: filing that a
lagging consumer deferred past the run). Each load starts once the case consumers are idle
(their start-up is not filing).

With ``--webhook`` a receiver process (answering 200) is subscribed to
``decision.deny`` and ``decision.review`` before the rules-only run, so the worker
queues those decisions' events and delivers them while it decides; the JSON adds
webhook_delivered, webhook_failed and webhook_pending (after up to 30 s of draining).

The minimal app runs on uvicorn's defaults. The service runs uvicorn as
`fengkong serve` does (`fengkong.api.http_protocol.UVICORN_OPTIONS`: one write per
answer, no proxy-header rewriting); ``--minimal-http service`` gives the minimal
app the same options, to see how much of the ratio is the engine and how much the
HTTP layer.
"""


import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef"


# --- the minimal app (run in its own process) ---------------------------------------------------
def minimal_app():  # pragma: no cover - benchmark only
    from fastapi import FastAPI

    from fengkong.events import Event

    app = FastAPI()

    @app.post("/v1/decisions")
    async def decide(event: Event) -> dict:
        return {"decision": "allow", "score": 0}

    return app


# --- the load generator (run in its own process) -------------------------------------------------
def _event_bytes(rng: random.Random, i: int, run: str, t0: datetime) -> bytes:
    card = rng.randrange(20_000)
    ev = {
        "event_id": f"b{run}-{i}", "type": "payment",
        "occurred_at": (t0 + timedelta(milliseconds=i * 3)).isoformat(),
        "merchant_id": f"m{rng.randrange(500)}", "user_id": f"u{rng.randrange(15_000)}",
        "amount": rng.choice([rng.randrange(100, 500_000), f"{rng.randrange(1, 3000)}.{rng.randrange(100):02d}"]),
        "currency": "CNY", "channel": rng.choice(["quick_pay", "online_banking", "wallet", "pos"]),
        "card": {"fingerprint": f"c{card}", "bin": f"{622000 + card % 300}", "type": rng.choice(["credit", "debit"]),
                 "issuer_country": rng.choice(["CN", "CN", "CN", "HK", "US"])},
        "ip": f"{rng.choice([113, 117, 183, 36, 52])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "device_id": f"d{rng.randrange(12_000)}",
    }
    return json.dumps(ev, separators=(",", ":")).encode()


def _requests(host: str, run: str, count: int) -> list[bytes]:
    """`count` whole HTTP requests, each with a fresh event: built before the clock
    starts, so the load generator spends its CPU on sockets, not on making events
    (it shares the 2 cores with the server it measures)."""
    rng = random.Random(hash(run) & 0xFFFF)
    t0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    head = (f"POST /v1/decisions HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n")
    out = []
    for i in range(count):
        body = _event_bytes(rng, i, run, t0)
        out.append(head.format(len(body)).encode() + body)
    return out


async def _load(host: str, port: int, seconds: float, warmup: float, concurrency: int, run: str,
                pool_rps: float = 14_000) -> dict:
    requests = _requests(host, run, int(pool_rps * (warmup + seconds)))
    counter = iter(range(10**9))
    latencies: list[float] = []
    completed = [0]  # every answered request, warm-up included (the CPU figures divide by it)
    errors: dict = {"status": 0, "io": 0, "degraded": 0}
    decisions: dict[str, int] = {}  # measured answers by decision (the review share files cases)
    cpu_before = time.process_time()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            i = next(counter)
            if i >= len(requests):  # the pool ran out: go on with fresh events, made now
                requests.extend(_requests(host, f"{run}x{i}", 1000))
            writer.write(requests[i])
            t = time.perf_counter()
            try:
                status_line = await reader.readuntil(b"\r\n")
                headers = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                errors["io"] += 1
                return
            length = 0
            for line in headers.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await reader.readexactly(length)
            done = time.perf_counter()
            completed[0] += 1
            if t < measure_from:
                continue
            latencies.append(done - t)
            at = payload.find(b'"decision":"') + 12
            if at >= 12:
                decision = payload[at:payload.find(b'"', at)].decode()
                decisions[decision] = decisions.get(decision, 0) + 1
            if status_line[9:12] != b"200":
                errors["status"] += 1
                errors["last"] = (status_line + payload)[:300].decode(errors="replace")
            elif b'"degraded":true' in payload:
                errors["degraded"] += 1
                reason = json.loads(payload).get("degraded_reason")
                errors.setdefault("degraded_reasons", {}).setdefault(reason, 0)
                errors["degraded_reasons"][reason] += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load_cpu_s = time.process_time() - cpu_before
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "completed": completed[0], "rps": n / seconds,
            "p50_ms": latencies[n // 2] * 1000 if n else None,
            "p99_ms": latencies[int(n * 0.99)] * 1000 if n else None, "errors": errors, "load_cpu_s": load_cpu_s,
            "decisions": decisions}


# --- orchestration ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, timeout: float = 60.0) -> None:
    import httpx

    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _io_counts(pid: int) -> dict[str, int]:
    """A process's read and write system calls and its context switches so far (Linux /proc:
    ``syscr``/``syscw`` count every read-like and write-like call, sockets included)."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    status = dict(line.split(":\t") for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    return {"reads": int(io["syscr"]), "writes": int(io["syscw"]),
            "switches": int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"]),
            "preempted": int(status["nonvoluntary_ctxt_switches"])}


def _consumer_pid(parent: int, catch_up: bool = False) -> int | None:
    """The case consumer process `fengkong serve` runs beside its worker (its child running
    `fengkong cases consume`; with ``catch_up``, the one run with ``--catch-up``); None when
    the code under test files cases in the worker (or has no catch-up consumer)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"cases" in cmdline and b"consume" in cmdline and (b"--catch-up" in cmdline) == catch_up:
            return int(stat.parent.name)
    return None


def _backlog(redis_server, prefix: str) -> int:  # noqa: ANN001 - benchmark only
    """Review items queued and not yet filed when the load stopped (a consumer that lags
    defers its CPU past the run: this says how much)."""
    return int(redis_server.client().xlen(f"{prefix}:v1:cases:intake"))


def _watch(service: subprocess.Popen, redis_pid: int) -> dict[str, int]:
    """The processes whose CPU a run reports: the worker, Redis, and the case consumer when
    it runs apart (its CPU is the service's too: on 2 cores it competes with the worker)."""
    watch = {"worker": service.pid, "redis": redis_pid}
    consumer = _consumer_pid(service.pid)
    if consumer is not None:
        watch["cases"] = consumer
    catch_up = _consumer_pid(service.pid, catch_up=True)
    if catch_up is not None:
        watch["cases_catch_up"] = catch_up
    return watch


def _settled(watch: dict[str, int], quiet_s: float = 0.5, idle_cpu_s: float = 0.02, limit_s: float = 15.0) -> None:
    """Wait until the case consumers have finished starting (less than ``idle_cpu_s`` of
    CPU each in ``quiet_s``; at most ``limit_s``): they start beside the worker and their
    imports would otherwise be counted as filing in the run's CPU per request."""
    pids = [pid for name, pid in watch.items() if name.startswith("cases")]
    start = time.monotonic()
    while pids and time.monotonic() < start + limit_s:
        before = [_cpu_s(pid) for pid in pids]
        time.sleep(quiet_s)
        if all(_cpu_s(pid) - b < idle_cpu_s for pid, b in zip(pids, before)):
            break
    if pids:
        print(f"case consumers idle after {time.monotonic() - start:.1f} s", file=sys.stderr)


def _run_load(port: int, seconds: float, warmup: float, concurrency: int, run: str,
              watch: dict[str, int]) -> dict:
    """Load the server from a second process; also report the CPU each watched process
    spent per answered request (on 2 shared cores, CPU is what the servers compete for),
    once the case consumers have finished starting (`_settled`)."""
    _settled(watch)
    before = {name: _cpu_s(pid) for name, pid in watch.items()}
    io_before = _io_counts(watch["worker"])
    out = subprocess.run([sys.executable, __file__, "--load", str(port), "--seconds", str(seconds),
                          "--warmup", str(warmup), "--concurrency", str(concurrency), "--run", run],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    done = max(result["completed"], 1)
    result["cpu_us_per_request"] = {name: round((_cpu_s(pid) - before[name]) / done * 1e6, 1)
                                    for name, pid in watch.items()}
    result["cpu_us_per_request"]["load"] = round(result["load_cpu_s"] / done * 1e6, 1)
    result["worker_per_request"] = {k: round((v - io_before[k]) / done, 3) for k, v in _io_counts(watch["worker"]).items()}
    return result


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def train_models(root: Path) -> dict[str, str]:
    """Train the merchant and transaction models (the latter with its fused score on the
    default rules, oracle labels) on a small simulated history into ``root``: enough for
    real artifacts of the usual shape, whose serving cost is what the benchmark measures.
    Returns kind -> version."""
    from fengkong.simulation import SimConfig, run
    from fengkong.training.train import train_merchants, train_transactions, transaction_frame

    sim = run(SimConfig(seed=11, days=14, shoppers=800, merchants=40))
    merchants = train_merchants(sim.events, profiles=sim.merchants, root=root, n_estimators=100)
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=ROOT / "rules" / "lists")
    transactions = train_transactions(feats, root=root, max_iter=200, habit_trees=100, rules_dir=ROOT / "rules",
                                      labels="oracle", events=sim.events)
    return {"merchants": merchants.version, "transactions": transactions.version}


def given_models(root: Path) -> dict[str, str]:
    """kind -> version of the newest merchant and transaction artifacts in ``root`` (``--artifacts``)."""
    from fengkong.models.artifacts import latest

    found = {kind: latest(root, kind) for kind in ("merchants", "transactions")}
    missing = [kind for kind, art in found.items() if art is None]
    if missing:
        raise SystemExit(f"bench_api: --artifacts {root}: no {' or '.join(missing)} artifact")
    return {kind: art.version for kind, art in found.items() if art is not None}


def check_models_served(port: int, versions: dict[str, str]) -> str:
    """Fail loudly unless the service on ``port`` loaded every artifact in ``versions`` (its
    /readyz) and a probe payment comes back scored with the fused risk; returns the status."""
    import httpx

    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
    status = str(ready.get("checks", {}).get("models", ""))
    missing = [f"{kind} {v}" for kind, v in versions.items() if f"{kind} {v}" not in status]
    if missing or "refused" in status:
        raise SystemExit(f"bench_api: the service did not load the trained models ({', '.join(missing) or 'refused'}):"
                         f" /readyz says {status!r}; a rules-only figure would be false")
    t = datetime(2026, 11, 25, 8, 59, tzinfo=timezone(timedelta(hours=8)))
    body = json.loads(_event_bytes(random.Random(1), 0, f"probe{os.getpid()}", t))
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/decisions", json=body, headers={"X-API-Key": KEY},
                        timeout=10).json()
    if answer.get("risk") is None or answer.get("degraded") or not str(answer.get("models", "")).startswith(
            "transactions"):
        raise SystemExit(f"bench_api: a probe payment was not scored by the models: {answer}")
    return status


def _serve(port: int, env: dict[str, str], data_dir: str, workers: int = 1) -> subprocess.Popen:
    """`fengkong serve` as the benchmarks run it: ``workers`` uvicorn workers, output discarded."""
    return subprocess.Popen(
        [sys.executable, "-c", "from fengkong.cli import app; app()", "serve", "--port", str(port),
         "--workers", str(workers), "--data-dir", data_dir], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run", default="x", help=argparse.SUPPRESS)
    parser.add_argument("--minimal-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--minimal-http", choices=("uvicorn", "service"), default="uvicorn",
                        help="the minimal app on uvicorn's defaults, or on the service's uvicorn options")
    parser.add_argument("--webhook", action="store_true",
                        help="subscribe a receiver (another process, answering 200) to decision.deny and "
                             "decision.review before the rules-only run: the worker then queues and delivers them")
    parser.add_argument("--models", action=argparse.BooleanOptionalAction, default=True,
                        help="also load the service with trained models (default); --no-models skips that run")
    parser.add_argument("--artifacts", type=Path,
                        help="serve the models of this folder (a `fengkong train` output, e.g. an earlier run's "
                             "training) instead of training them first: paired runs of two codes on one artifact")
    args = parser.parse_args()

    if args.load is not None:  # the load-generating process
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(_load("127.0.0.1", args.load, args.seconds, args.warmup, args.concurrency, args.run))
        print(json.dumps(result))
        return
    if args.minimal_server is not None:  # the minimal app's process
        import uvicorn

        if args.minimal_http == "service":
            from fengkong.api.http_protocol import UVICORN_OPTIONS

            options = dict(UVICORN_OPTIONS)
        else:
            options = {"access_log": False}
        uvicorn.run(minimal_app(), host="127.0.0.1", port=args.minimal_server, log_level="warning", **options)
        return

    from fengkong.features.embedded_redis import EmbeddedRedis

    run = f"{os.getpid()}-{int(time.time())}"
    redis_server = EmbeddedRedis(persist=False).start()
    redis_pid = int(redis_server.client().info("server")["process_id"])
    results: dict[str, dict] = {}
    try:
        port = _free_port()
        env = dict(os.environ)
        env.update({"FENGKONG_REDIS_URL": redis_server.url, "FENGKONG_RULES_DIR": str(ROOT / "rules"),
                    "FENGKONG_API_KEYS": json.dumps([{"name": "bench", "key": KEY, "scopes": ["decide"]}]),
                    "FENGKONG_KEY_PREFIX": f"bench{os.getpid()}", "FENGKONG_RULES_WATCH_S": "0",
                    "FENGKONG_ARTIFACTS_DIR": str(ROOT / "artifacts")})
        receiver = subs = None
        if args.webhook:
            receiver, subs = _subscribe(redis_server, env["FENGKONG_KEY_PREFIX"])
        with tempfile.TemporaryDirectory() as tmp:
            service = _serve(port, env, tmp)
            try:
                _wait_http(port)
                results["service"] = _run_load(port, args.seconds, args.warmup, args.concurrency, run,
                                               _watch(service, redis_pid))
                results["service"]["cases_backlog"] = _backlog(redis_server, env["FENGKONG_KEY_PREFIX"])
                if subs is not None:
                    results["service"]["webhook"] = _webhook_stats(subs)
            finally:
                _stop(service)
                if receiver is not None:
                    receiver.kill()
        if args.models:
            with tempfile.TemporaryDirectory() as tmp:
                artifacts = args.artifacts.resolve() if args.artifacts else Path(tmp) / "artifacts"
                versions = given_models(artifacts) if args.artifacts else train_models(artifacts)
                port = _free_port()
                # FENGKONG_ARTIFACTS_DIR: the setting `fengkong serve` reads the artifacts folder from
                env_models = {**env, "FENGKONG_ARTIFACTS_DIR": str(artifacts),
                              "FENGKONG_KEY_PREFIX": f"benchm{os.getpid()}"}
                service = _serve(port, env_models, str(Path(tmp) / "data"))
                try:
                    _wait_http(port)
                    print(f"models: {check_models_served(port, versions)}")
                    results["service_models"] = _run_load(port, args.seconds, args.warmup, args.concurrency,
                                                          run + "M", _watch(service, redis_pid))
                    results["service_models"]["cases_backlog"] = _backlog(redis_server,
                                                                          env_models["FENGKONG_KEY_PREFIX"])
                finally:
                    _stop(service)
        port = _free_port()
        minimal = subprocess.Popen([sys.executable, __file__, "--minimal-server", str(port),
                                    "--minimal-http", args.minimal_http],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(port)
            results["minimal"] = _run_load(port, args.seconds, args.warmup, args.concurrency, run + "m",
                                           {"worker": minimal.pid})
        finally:
            _stop(minimal)
    finally:
        redis_server.stop()

    for name, r in results.items():
        cpu = ", ".join(f"{k} {v:.0f} us" for k, v in r["cpu_us_per_request"].items())
        print(f"{name:8s} {r['rps']:8.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms   "
              f"({r['requests']} requests, errors {r['errors']}; CPU per request: {cpu}; the worker's per request: "
              f"{r['worker_per_request']})")
    if args.minimal_http == "service":
        print("(the minimal app ran on the service's uvicorn options)")
    for name in ("service", "service_models"):
        if name in results and results[name]["errors"]["degraded"] > 0.01 * max(results[name]["requests"], 1):
            print(f"warning: {results[name]['errors']['degraded']} of {results[name]['requests']} {name} answers were "
                  "degraded (the failure policy answered, without features or models): its figures do not measure "
                  "the decision path", file=sys.stderr)
    s, m = results["service"], results["minimal"]
    print(json.dumps({
        "service_rps": round(s["rps"], 1), "service_p50_ms": round(s["p50_ms"], 3),
        "service_p99_ms": round(s["p99_ms"], 3), "minimal_rps": round(m["rps"], 1),
        "minimal_p50_ms": round(m["p50_ms"], 3), "minimal_p99_ms": round(m["p99_ms"], 3),
        "ratio_rps": round(s["rps"] / m["rps"], 3),
        "service_worker_cpu_us": s["cpu_us_per_request"]["worker"],
        **{f"service_worker_{k}": v for k, v in s["worker_per_request"].items()},
        "service_redis_cpu_us": s["cpu_us_per_request"]["redis"],
        "minimal_worker_cpu_us": m["cpu_us_per_request"]["worker"],
        **({"service_cases_cpu_us": s["cpu_us_per_request"]["cases"]} if "cases" in s["cpu_us_per_request"] else {}),
        **({"service_cases_catch_up_cpu_us": s["cpu_us_per_request"]["cases_catch_up"]}
           if "cases_catch_up" in s["cpu_us_per_request"] else {}),
        "service_review_share": _share(s, "review"), "service_cases_backlog": s.get("cases_backlog"),
        **(models_keys(results["service_models"], m) if "service_models" in results else {}),
        **({f"webhook_{k}": v for k, v in s["webhook"].items()} if "webhook" in s else {}),
    }))


def _subscribe(redis_server, prefix: str):  # noqa: ANN001, ANN202 - benchmark only
    """A receiver process answering 200, subscribed to decision.deny and decision.review."""
    from fengkong.webhooks import Subscriptions

    from bench_webhooks import RECEIVER  # the same 200-answering receiver bench_webhooks runs

    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())  # type: ignore[union-attr]
    subs = Subscriptions(redis_server.client(), prefix)
    subs.create(url=f"http://127.0.0.1:{port}/hook", kinds=["decision.deny", "decision.review"])
    return receiver, subs


def _webhook_stats(subs) -> dict:  # noqa: ANN001 - benchmark only
    """Deliveries of the run (after the backlog drained, up to 30 s): delivered, failed, still pending."""
    stop = time.monotonic() + 30
    while subs.pending() and time.monotonic() < stop:
        time.sleep(0.2)
    [sub] = subs.list_all()
    return {"delivered": sub["stats"]["delivered"], "failed": sub["stats"]["failed"], "pending": subs.pending()}


def models_keys(sm: dict, m: dict) -> dict[str, float]:
    """The JSON keys of the run with models (``sm``) against the minimal app (``m``)."""
    return {"service_models_rps": round(sm["rps"], 1), "service_models_p50_ms": round(sm["p50_ms"], 3),
            "service_models_p99_ms": round(sm["p99_ms"], 3), "ratio_models_rps": round(sm["rps"] / m["rps"], 3),
            "service_models_worker_cpu_us": sm["cpu_us_per_request"]["worker"],
            **{f"service_models_worker_{k}": v for k, v in sm["worker_per_request"].items()},
            "service_models_redis_cpu_us": sm["cpu_us_per_request"]["redis"],
            "service_models_degraded_share": round(sm["errors"]["degraded"] / max(sm["requests"], 1), 4),
            "service_models_review_share": _share(sm, "review"), "service_models_cases_backlog": sm.get("cases_backlog"),
            **({"service_models_cases_cpu_us": sm["cpu_us_per_request"]["cases"]}
               if "cases" in sm["cpu_us_per_request"] else {})}


def _share(r: dict, decision: str) -> float:
    """The share of a run's measured answers that were ``decision``."""
    return round(r["decisions"].get(decision, 0) / max(r["requests"], 1), 4)


if __name__ == "__main__":
    main()
