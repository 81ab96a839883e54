"""Redis Cluster: the URL form, the slot map, and the decision path's pipelined connections.

A deployment past one Redis names its cluster's seed nodes in ``FENGKONG_REDIS_URL``::

    redis+cluster://[user:password@]host1:port1,host2:port2,...

(``rediss+cluster://`` for TLS). Any one reachable seed is enough: the slot map is read
from it with ``CLUSTER SLOTS``. Two clients are made from the URL (`cluster_client`
and `ClusterPipelined`): redis-py's own `RedisCluster` for everything rare (lists,
profiles, grades, admin, the rescore job's writes), and, for the decision path, one
`PipelinedRedis` per master node behind `ClusterPipelined`, which sends each command
to the master that holds its key's slot (CRC16 of the hash tag, redis-py's
``key_slot``), every node's share of a batch in the same loop tick, and follows
``MOVED`` (refreshing the map) and ``ASK`` redirections once.

Why not redis-py's asyncio cluster client for the hot path: the same reasons
`fengkong.features.pipelined` gives for one server (a pooled connection per command,
more Python per call than the call), times the number of shards.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from fengkong.features.pipelined import (
    FLUSH_BYTES,
    ConnectionFailed,
    PipelinedRedis,
    ReplyError,
    ReplyLate,
    packed_args,
)

SCHEMES = ("redis+cluster", "rediss+cluster")
NSLOTS = 16384
#: how long a write nobody waits for (`ClusterPipelined.send_nowait` to a node not yet
#: connected) may take to connect and be answered before it counts as failed
_BEHIND_S = 5.0
#: the least time between two re-reads of the slot map after unreachable masters
REFRESH_EVERY_S = 0.5
#: commands whose first key is not their first argument: where the key is
_KEY_AT = {"EVALSHA": 3, "EVAL": 3, "FCALL": 3, "XREAD": 0, "XREADGROUP": 0}


class ClusterURL(NamedTuple):
    """A ``redis+cluster://`` URL read: the seed nodes and the credentials."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool

    def node_url(self, host: str, port: int) -> str:
        """A plain ``redis://`` URL of one node, with the cluster's credentials."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        return f"{'rediss' if self.tls else 'redis'}://{auth}{host}:{port}"


def is_cluster_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)."""
    return bool(url) and url.split("://", 1)[0].lower() in SCHEMES  # type: ignore[union-attr]


def parse_cluster_url(url: str) -> ClusterURL:
    """The seeds and credentials of a cluster URL; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError(f"not a cluster URL (want {' or '.join(s + '://' for s in SCHEMES)}): {url.split('@')[-1]}")
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username, password = (unquote(user) or None, unquote(pw)) if sep else (None, unquote(user))
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster seed {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    return ClusterURL(tuple(seeds), username, password, parts.scheme.lower().startswith("rediss"))


def cluster_client(url: str, *, timeout_s: float) -> RedisCluster:
    """redis-py's cluster client for the rare calls: bounded waits, no retries (a fault
    is answered by the failure policy, as on one server)."""
    cfg = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cfg.seeds], username=cfg.username,
        password=cfg.password, ssl=cfg.tls, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), health_check_interval=0,
    )


def client_for_url(url: str, *, timeout_s: float | None = None) -> redis.Redis:
    """redis-py's client for a URL of either kind: `RedisCluster` for ``redis+cluster://``
    (typed as the single-server client: the stores call the same commands on both)."""
    if is_cluster_url(url):
        return cast(redis.Redis, cluster_client(url, timeout_s=timeout_s or 5.0))
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def async_client_for_url(url: str, *, timeout_s: float) -> Any:
    """redis-py's asyncio client for a URL of either kind (the webhooks' delivery loop):
    `redis.asyncio.RedisCluster` on the seeds of a ``redis+cluster://`` URL."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode, RedisCluster as AsyncRedisCluster

    if is_cluster_url(url):
        cfg = parse_cluster_url(url)
        return AsyncRedisCluster(startup_nodes=[AsyncClusterNode(host, port) for host, port in cfg.seeds],
                                 username=cfg.username, password=cfg.password, ssl=cfg.tls,
                                 socket_timeout=timeout_s, socket_connect_timeout=min(5.0, timeout_s))
    return aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=min(5.0, timeout_s))


def command_key(command: Sequence[Any] | bytes) -> Any:
    """The key a command is routed by (its first), or None for a command without one. A
    command may come already packed as Redis reads it (RESP ``bytes``, as the decision
    path writes its record, audit entry and case item): its arguments are read back first."""
    if isinstance(command, bytes):
        command = packed_args(command)
    name = command[0]
    name = (name.decode() if isinstance(name, bytes) else str(name)).upper()
    at = _KEY_AT.get(name, 1)
    if at == 3:
        return command[3] if int(command[2]) > 0 else None
    if at == 0 or len(command) <= at or name in ("SCRIPT", "PING", "ASKING", "CLUSTER", "INFO"):
        return None
    return command[at]


def slot_of(key: Any) -> int:
    """The cluster slot of a key (its hash tag's, if it has one)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterPipelined:
    """The decision path's connection to a cluster: one `PipelinedRedis` per master,
    commands routed by slot. Same contract as `PipelinedRedis` (``execute``,
    ``send_nowait``, ``close``): replies in the order of the commands, error replies as
    values, `ConnectionFailed` when a node the batch needs is unreachable.

    A command without a key (``SCRIPT LOAD``) goes with the next command that has one,
    so a script is loaded on the node that runs it."""

    def __init__(self, url: str, *, connect_timeout_s: float = 1.0, dead_after_s: float | None = None,
                 late_wait_s: float = 0.0, flush_bytes: int = FLUSH_BYTES) -> None:
        self.cfg = parse_cluster_url(url)
        self._opts = dict(connect_timeout_s=connect_timeout_s, dead_after_s=dead_after_s, late_wait_s=late_wait_s,
                          flush_bytes=flush_bytes)
        self.nodes: dict[str, PipelinedRedis] = {}
        self.slots: list[str | None] = [None] * NSLOTS
        self._refreshing: asyncio.Task[None] | None = None
        self._suspected_at = float("-inf")

    # -- the slot map ---------------------------------------------------------------------
    def node(self, address: str) -> PipelinedRedis:
        """The connection to the node at ``host:port`` (made on first use)."""
        conn = self.nodes.get(address)
        if conn is None:
            host, _, port = address.rpartition(":")
            conn = self.nodes[address] = PipelinedRedis(self.cfg.node_url(host, int(port)), **self._opts)  # type: ignore[arg-type]
        return conn

    async def refresh(self, timeout_s: float) -> None:
        """Read the slot map (``CLUSTER SLOTS``) from a known node or a seed, the first
        that answers. Concurrent callers share one refresh."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.get_running_loop().create_task(self._refresh(timeout_s))
        await asyncio.shield(task)

    async def _refresh(self, timeout_s: float) -> None:
        candidates = list(dict.fromkeys([*self.nodes, *(f"{h}:{p}" for h, p in self.cfg.seeds)]))
        failure: BaseException | None = None
        for address in candidates:
            try:
                reply = (await self.node(address).execute((("CLUSTER", "SLOTS"),), timeout_s))[0]
            except ConnectionFailed as exc:
                failure = exc
                continue
            if isinstance(reply, ReplyError):
                failure = ConnectionFailed(f"CLUSTER SLOTS refused by {address}: {reply}")
                continue
            asked_host = address.rpartition(":")[0]
            slots: list[str | None] = [None] * NSLOTS
            for start, end, master, *_ in reply:
                host = _text(master[0]) or asked_host
                where = f"{host}:{int(master[1])}"
                slots[int(start):int(end) + 1] = [where] * (int(end) - int(start) + 1)
            self.slots = slots
            return
        raise ConnectionFailed(f"no cluster node answered CLUSTER SLOTS: {failure}")

    def _route(self, commands: Sequence[Sequence[Any]]) -> dict[str, list[int]] | None:
        """Command positions by node address; None when a slot has no known node."""
        by_node: dict[str, list[int]] = {}
        waiting: list[int] = []  # keyless commands, sent with the next keyed one
        for i, command in enumerate(commands):
            key = command_key(command)
            if key is None:
                waiting.append(i)
                continue
            address = self.slots[slot_of(key)]
            if address is None:
                return None
            by_node.setdefault(address, []).extend([*waiting, i])
            waiting = []
        if waiting:  # keyless commands alone: any node
            address = next((a for a in self.slots if a is not None), None)
            if address is None:
                return None
            by_node.setdefault(address, []).extend(waiting)
        return by_node

    # -- commands -------------------------------------------------------------------------
    async def execute(self, commands: Sequence[Sequence[Any]], timeout_s: float) -> list[Any]:
        """Send each command to its slot's master, every node's share pipelined on its
        connection and all shares at once; the replies in the commands' order. A
        ``MOVED`` reply refreshes the map and the command is sent again (``ASK``: sent
        once to the named node after ``ASKING``). Raises the first node's
        `ConnectionFailed` (after every share has settled) when any node failed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        route = self._route(commands)
        if route is None:
            await self.refresh(timeout_s)
            route = self._route(commands)
            if route is None:
                raise ConnectionFailed("the cluster's slot map does not cover every key (cluster down?)")
        replies: list[Any] = [None] * len(commands)
        await self._send(commands, route, replies, timeout_s)
        redirected = [i for i, r in enumerate(replies) if isinstance(r, ReplyError) and str(r)[:4] in ("MOVE", "ASK ")]
        if redirected:
            left = max(0.001, deadline - loop.time())
            if any(str(replies[i]).startswith("MOVED") for i in redirected):
                await self.refresh(left)
            for i in redirected:
                where = str(replies[i]).split()[2]
                asking = str(replies[i]).startswith("ASK ")
                batch = (("ASKING",), commands[i]) if asking else (commands[i],)
                if not asking:
                    where = self.slots[slot_of(command_key(commands[i]))] or where
                replies[i] = (await self.node(where).execute(batch, left))[-1]
        return replies

    async def _send(self, commands: Sequence[Sequence[Any]], route: dict[str, list[int]], replies: list[Any],
                    timeout_s: float) -> None:
        try:
            await self._send_shares(commands, route, replies, timeout_s)
        except ConnectionFailed as exc:
            if not isinstance(exc, ReplyLate):
                self._suspect_map()
            raise

    def _suspect_map(self) -> None:
        """A master could not be reached: re-read the slot map in the background (at most
        every `REFRESH_EVERY_S`), so that after a failover the next commands go to the
        promoted replica; until then they fail as this one did (the breaker's job)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._suspected_at < REFRESH_EVERY_S:
            return
        self._suspected_at = loop.time()
        task = loop.create_task(self.refresh(max(0.05, float(self._opts["connect_timeout_s"] or 1.0))))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_shares(self, commands: Sequence[Sequence[Any]], route: dict[str, list[int]], replies: list[Any],
                           timeout_s: float) -> None:
        if len(route) == 1:  # the common case: no gather
            (address, positions), = route.items()
            got = await self.node(address).execute([commands[i] for i in positions], timeout_s)
            for i, reply in zip(positions, got):
                replies[i] = reply
            return
        shares = list(route.items())
        results = await asyncio.gather(
            *(self.node(address).execute([commands[i] for i in positions], timeout_s) for address, positions in shares),
            return_exceptions=True)
        failure: BaseException | None = None
        for (_, positions), result in zip(shares, results):
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            for i, reply in zip(positions, result):
                replies[i] = reply
        if failure is not None:
            raise failure

    def send_nowait(self, commands: Sequence[Sequence[Any]]) -> "asyncio.Future[list[Any]]":
        """Queue the commands like `execute` and return the future of their replies without
        waiting. Shares for nodes whose connection is open are queued on it now (so a
        later command on the same key runs after them); any other share (a node this
        worker has not talked to yet) is sent by a task that connects first."""
        route = self._route(commands)
        loop = asyncio.get_running_loop()
        if route is None or any(not self._open(address) for address in route):
            return loop.create_task(self.execute(commands, _BEHIND_S))
        futures = [(positions, self.nodes[address].send_nowait([commands[i] for i in positions]))
                   for address, positions in route.items()]
        done: asyncio.Future[list[Any]] = loop.create_future()
        replies: list[Any] = [None] * len(commands)
        left = [len(futures)]

        def settle(positions: list[int], future: "asyncio.Future[list[Any]]") -> None:
            if done.done():
                return
            if future.cancelled() or future.exception() is not None:
                done.set_exception(future.exception() or ConnectionFailed("cancelled"))
                return
            for i, reply in zip(positions, future.result()):
                replies[i] = reply
            left[0] -= 1
            if not left[0]:
                done.set_result(replies)

        for positions, future in futures:
            future.add_done_callback(functools.partial(settle, positions))
        return done

    def _open(self, address: str) -> bool:
        conn = self.nodes.get(address)
        return conn is not None and conn.is_open()

    def close(self) -> None:
        """Close every node's connection (from any thread)."""
        for conn in self.nodes.values():
            conn.close()


def wait_cluster_ok(client: redis.Redis, timeout_s: float) -> bool:
    """Whether a node reports ``cluster_state:ok`` within ``timeout_s`` (polls)."""
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" in text:
                return True
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    return False
