"""Helpers for the decision-service tests: the real app served by uvicorn on a
loopback port (tests talk HTTP with httpx), and a Redis server the tests may kill,
freeze (SIGSTOP) and bring back on the same socket path."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn

from fengkong.api.app import create_app
from fengkong.api.config import Settings
from fengkong.api.http_protocol import UVICORN_OPTIONS
from fengkong.features.embedded_redis import find_redis_server

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"

DECIDE_KEY = "test-decide-key-0123456789"
REPORT_KEY = "test-report-key-0123456789"
ADMIN_KEY = "test-admin-key-0123456789ab"
KEYS = [
    {"name": "gateway", "key": DECIDE_KEY, "scopes": ["decide"]},
    {"name": "ledger", "key": REPORT_KEY, "scopes": ["report"]},
    {"name": "analyst-ana", "key": ADMIN_KEY, "scopes": ["admin"]},
]
#: The data directory of the apps these tests start (the cases database's SQLite file):
#: one per test process, never the checkout's .fengkong.
DATA_DIR = Path(tempfile.gettempdir()) / f"fk-api-{os.getpid()}"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=8)))
_ids = itertools.count(int.from_bytes(os.urandom(2), "big") * 1000)  # fresh entities per run


def settings(redis_url: str, prefix: str, **overrides: Any) -> Settings:
    # A budget of 1 s, not the service's 50 ms: on a loaded CI machine a 50 ms budget
    # degrades answers now and then, and only the tests of the budget itself (which
    # set deadline_ms) are about that.
    base: dict[str, Any] = dict(redis_url=redis_url, key_prefix=prefix, api_keys=KEYS, rules_dir=RULES_DIR,
                                artifacts_dir=None, rules_watch_s=0, log_level="warning", deadline_ms=1000,
                                data_dir=DATA_DIR)
    base.update(overrides)
    return Settings(**base)


class Served:
    """One app served by uvicorn in a background thread (its lifespan runs: a real start).

    `fast_path` and `middleware` ((class, options) pairs added to the app before it
    starts) are what a deployment could choose."""

    def __init__(self, app_settings: Settings, *, fast_path: bool = True,
                 middleware: tuple[tuple[type, dict[str, Any]], ...] = (),
                 uvicorn_options: dict[str, Any] | None = None) -> None:
        self.settings = app_settings
        self.app = create_app(app_settings, fast_path=fast_path)
        for cls, kwargs in middleware:
            self.app.add_middleware(cls, **kwargs)
        # served as `fengkong serve` serves it (its HTTP protocol and uvicorn options) unless told
        options = UVICORN_OPTIONS if uvicorn_options is None else uvicorn_options
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.exit_code: object = None

    def _run(self) -> None:
        try:
            self.server.run()
        except SystemExit as exc:  # uvicorn exits when the app refuses to start
            self.exit_code = exc.code

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start (exit code {self.exit_code})")
            time.sleep(0.01)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def client(self, key: str | None = DECIDE_KEY, **kwargs: Any) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)


def event_id(tag: str = "e") -> str:
    return f"{tag}-{os.getpid()}-{next(_ids)}"


def payment(**overrides: Any) -> dict[str, Any]:
    """A plain payment (no rule fires on it alone) with fresh ids unless given."""
    n = next(_ids)
    ev: dict[str, Any] = {
        "event_id": event_id("pay"), "type": "payment", "occurred_at": T0.isoformat(),
        "merchant_id": f"m-{n}", "user_id": f"u-{n}", "amount": "120.00", "currency": "CNY", "channel": "quick_pay",
        "card": {"fingerprint": f"tok-{n}", "bin": "622202", "type": "debit", "issuer_country": "CN"},
        # 183.0.0.0/10 is Chinese broadband in the bundled IP data (a test holds it), so the
        # IP agrees with the card's country and no geography rule fires
        "ip": f"183.{n % 64}.{n // 64 % 256}.{n % 97 + 1}", "device_id": f"dev-{n}",
    }
    ev.update(overrides)
    return ev


class KillableRedis:
    """redis-server on a fixed unix socket, so a restarted server is found at the same URL."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fk-kr-")
        self.socket = os.path.join(self.dir, "r.sock")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> "KillableRedis":
        self.proc = subprocess.Popen(
            [find_redis_server(), "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--dir", self.dir, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=self.socket)
        for _ in range(2000):
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, OSError):
                time.sleep(0.005)
        client.close()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=5)
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedProcess:
    """The app in its own process (uvicorn as `fengkong serve` runs it), configured by
    FENGKONG_* variables: for tests where the load generator must not share the
    server's interpreter (its GIL) or where the server is given signals.
    ``pythonpath`` picks the code it runs (default: this checkout)."""

    def __init__(self, redis_url: str, prefix: str, *, pythonpath: str | None = None, **env: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FENGKONG_")}
        self.env.update({
            "PYTHONPATH": pythonpath or str(ROOT), "FENGKONG_REDIS_URL": redis_url, "FENGKONG_KEY_PREFIX": prefix,
            "FENGKONG_API_KEYS": json.dumps(KEYS), "FENGKONG_RULES_DIR": str(RULES_DIR),
            "FENGKONG_ARTIFACTS_DIR": os.path.join(tempfile.gettempdir(), "fk-no-artifacts"),
            "FENGKONG_RULES_WATCH_S": "0", "FENGKONG_LOG_LEVEL": "warning", "FENGKONG_DATA_DIR": str(DATA_DIR),
        })
        self.env.update({f"FENGKONG_{k.upper()}": str(v) for k, v in env.items()})
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ServedProcess":
        code = ("import uvicorn\nfrom fengkong.api.app import create_app\nfrom fengkong.api.config import Settings\n"
                "from fengkong.api.http_protocol import UVICORN_OPTIONS\n"
                f"uvicorn.run(create_app(Settings()), host='127.0.0.1', port={self.port}, log_level='warning', "
                "**UVICORN_OPTIONS)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.__exit__()
                raise RuntimeError(f"the app did not start: {err[-2000:]}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def client(self, key: str | None = DECIDE_KEY, **kwargs: Any) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)


class CpuHogs:
    """Processes that only burn CPU (a busy machine), stopped on exit."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "CpuHogs":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=5)
