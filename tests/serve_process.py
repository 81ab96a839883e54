"""`fengkong serve` as a real child process for the lifecycle and durability tests:
its own session (so a test can SIGKILL the whole tree at once, as a crash would),
output to a file (a pipe nobody reads could fill and stall the service), and the
embedded redis-server's pid and socket read from what it prints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from api_fixtures import RULES_DIR, free_port

KEY = "serve-test-key-0123456789abcdef"
KEYS = [{"name": "ops", "key": KEY, "scopes": ["decide", "report", "admin"]}]


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


def worker_pids(parent: int) -> list[int]:
    """The uvicorn worker processes of a supervisor (its children started by
    multiprocessing's spawn; not its redis-server, not multiprocessing's helpers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline and pid_alive(
                int(stat.parent.name)):
            pids.append(int(stat.parent.name))
    return sorted(pids)


class ServeProcess:
    """One `fengkong serve` on a free loopback port with the data directory `data_dir`."""

    def __init__(self, data_dir: Path, log_path: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.redis_pid = 0
        self.redis_socket = ""

    def start(self, timeout_s: float = 60.0) -> "ServeProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("FENGKONG_")}
        env.update({"FENGKONG_ARTIFACTS_DIR": str(self.data_dir / "no-artifacts"), "FENGKONG_API_KEYS": json.dumps(KEYS),
                    "FENGKONG_RULES_WATCH_S": "0", "FENGKONG_DEADLINE_MS": "2000"})
        env.update(self.extra_env)
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from fengkong.cli import app; app()", "serve", "--port", str(self.port),
             "--workers", str(self.workers), "--data-dir", str(self.data_dir), "--rules-dir", str(RULES_DIR)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if "FENGKONG_REDIS_URL" not in self.extra_env:  # the embedded Redis: its socket and pid
            found = wait_until(lambda: self.proc.poll() is not None or re.search(
                r"embedded server at unix://(\S+) \(pid (\d+)", self.output()) is not None, timeout_s)
            m = re.search(r"embedded server at unix://(\S+) \(pid (\d+)", self.output())
            assert found and m, "serve did not start its Redis:\n" + self.output()
            self.redis_socket, self.redis_pid = m.group(1), int(m.group(2))
        with self.client() as c:
            def ready() -> bool:
                assert self.proc is not None and self.proc.poll() is None, "serve exited:\n" + self.output()
                try:
                    return c.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False
            assert wait_until(ready, timeout_s, 0.1), "serve never became ready:\n" + self.output()
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=15)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout_s)
        self._log.close()
        return code

    def kill_everything(self) -> None:
        """SIGKILL to the service's whole process group at once (service, workers, redis-server)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def close(self) -> None:
        """Whatever the test did, leave no process behind."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        if self.redis_pid and pid_alive(self.redis_pid):
            os.kill(self.redis_pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()
