"""Many events in flight on a Redis Cluster, in order: a replay at the speed of the shards.

Why: `fengkong.features.inflight` keeps a history's script calls in flight on one
Redis; on a cluster an event is a claim of its id and then one call per entity on
several masters (`fengkong.features.cluster_store`), and one by one every event
waits for two round trips.

Why it stays exact: each master runs one connection's commands in the order it
receives them, and this keeps one connection per master. Every command of an event
goes to the master of its key's slot, and the events' commands are sent in
event-time order, so each entity's calls (and each claim) run in event-time order on
their master, as one by one. What one by one does between the two steps is kept:

1. the claims (``SET NX`` and ``GET`` of ``{evt:<id>}``) of a chunk of events are sent;
2. once their replies are read, the entity calls and list lookups of the events whose
   claim took are sent (a refused claim counts nothing, exactly as one by one);
3. once those replies are read, each event's joined reply is its features, and is
   stored under its claim (the same blob as one by one).

A retry whose claim was read before its first delivery's reply was stored (step 3
of an event still in flight) reads ``~claimed``; its features are then the blob this
run is storing for that id, which is what one by one would have read. A claim that
is ``~claimed`` by someone else is polled as `ClusterOnlineStore.process` polls it.

Each chunk's claims are sent ``lag`` chunks before its entity calls, and its entity
calls ``lag`` chunks before they are read, so every master always has work queued
while this thread prepares and reads. A ``MOVED`` or ``ASK`` reply (the slot map
changed while the history was in flight) is an error naming the cause: the order of
the calls that followed it on the old master is no longer known to be kept.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Iterator, TypeVar

import hiredis
import msgpack
import redis
from redis.crc import key_slot

from fengkong.events import Event
from fengkong.features.cluster import NSLOTS
from fengkong.features.cluster_store import CLAIMED, POLL_S, ClusterOnlineStore, Join, Lookup
from fengkong.features.errors import FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.inflight import CHUNK, InFlight, SocketWriter
from fengkong.features.online import FeatureResult, OnlineStore, _Call
from fengkong.features import keys
from fengkong.features.makeup import FIELDS
from fengkong.features.plan import Plan
from fengkong.features.rows import event_row

T = TypeVar("T")

#: slots remembered by key before the cache is emptied (keys of a long history repeat; memory stays bounded)
_SLOT_CACHE = 500_000


class _Batch:
    """Commands sent together to one master; their replies once read."""

    __slots__ = ("n", "replies", "seq")

    def __init__(self, n: int, seq: int) -> None:
        self.n = n
        self.replies: list[Any] | None = None
        self.seq = seq  # its place among the batches sent to its master


class _Node:
    """One master's connection: batches are sent by a writer thread and read back in order."""

    def __init__(self, name: str, conn: Any) -> None:
        self.name = name
        self.conn = conn
        self.writer = SocketWriter(conn)
        self.queue: deque[_Batch] = deque()
        # replies parsed straight off the socket: redis-py's read_response costs more than
        # the parse for the ~15 small replies of each event
        self.sock = conn._sock
        self.reader = hiredis.Reader()
        self.sent = 0

    def send(self, commands: list[tuple[Any, ...]], head: bytes = b"", head_n: int = 0) -> _Batch:
        """Queue ``commands`` (after ``head``: ``head_n`` packed commands whose replies are skipped)."""
        batch = _Batch(len(commands) + head_n, self.sent)
        self.sent += 1
        self.queue.append(batch)
        self.writer.chunks.put(head + b"".join([hiredis.pack_command(c) for c in commands]))
        return batch

    def wait(self, batch: _Batch) -> list[Any]:
        """The replies of ``batch``, reading those of every batch sent before it first."""
        while batch.replies is None:
            head = self.queue.popleft()
            head.replies = [self._read() for _ in range(head.n)]
        return batch.replies

    def _read(self) -> Any:
        """The next reply (an error reply as a `hiredis.ReplyError` value: the stream stays in step)."""
        reader = self.reader
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            try:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("closed by the server")
            except OSError as exc:
                cause = self.writer.error or exc
                raise FeatureStoreUnavailable(f"feature store unreachable: cluster master {self.name}: "
                                              f"{type(cause).__name__}: {cause}") from exc
            reader.feed(data)

    def close(self) -> None:
        self.conn.disconnect()  # first: a writer still sending (the caller stopped early) then stops at once
        self.writer.close()


class _Entry:
    """One row of the stream on its way: its event's calls and, as they come, the replies."""

    __slots__ = ("tag", "event", "call", "join", "calls", "lookups", "commands", "claim", "claim_node",
                 "claim_batch", "claim_at", "took", "value", "where", "failure")
    call: _Call
    join: Join
    calls: list[tuple[Plan, list[str], bytes]]
    lookups: list[Lookup]
    commands: list[tuple[Any, ...]]
    claim: str
    claim_node: str
    claim_batch: _Batch
    claim_at: int
    where: list[tuple[str, int]]

    def __init__(self, tag: Any, event: Event | None) -> None:
        self.tag = tag
        self.event = event
        self.took = False
        self.value: Any = None
        self.failure: str | None = None


class _Chunk:
    """Entries sent together, with the batches that carry their entity calls."""

    __slots__ = ("seq", "entries", "batches")

    def __init__(self, seq: int, entries: list[_Entry]) -> None:
        self.seq = seq
        self.entries = entries
        self.batches: dict[str, _Batch] = {}


class ClusterInFlight:
    """`fengkong.features.inflight.InFlight` for a `ClusterOnlineStore`: the same ``run``
    contract (``(tag, event)`` in, ``(tag, event, result)`` out in the same order,
    ``result`` what ``store.process(event)`` gives one by one, a store error raised at its
    event), with up to about ``depth`` events in flight."""

    def __init__(self, store: ClusterOnlineStore, *, depth: int = 1024, chunk: int = CHUNK) -> None:
        if depth < 1:
            raise ValueError(f"depth: must be at least 1, got {depth}")
        if not isinstance(store, ClusterOnlineStore):
            raise ValueError(f"cluster in flight: needs a ClusterOnlineStore, not {type(store).__name__}")
        self.store = store
        self.depth = depth
        self.chunk = max(1, min(chunk, depth))
        self.lag = max(1, depth // (2 * self.chunk))
        self.nodes: dict[str, _Node] = {}
        self.slot_node: list[str] = []
        self._slots: dict[Any, int] = {}
        # event ids whose claim this run took, with their stored blob, until no claim read
        # before that blob was written is left to resolve
        self._mine: dict[str, bytes] = {}
        self._mine_until: deque[tuple[int, list[str]]] = deque()
        self._seq = 0
        # today's make-up counts each payment adds (`_makeup`): per counter key, [batch seq
        # that sent them (None: not yet sent), counts], until no read before them is left
        self._makeup: dict[str, list[list[Any]]] = {}

    # -- connections --------------------------------------------------------------------
    def _connect(self) -> None:
        client: Any = self.store.client  # redis-py's RedisCluster (typed as the one-server client)
        try:
            client.nodes_manager.initialize()  # the current slot map: a stale one would end the run at its first MOVED
        except (redis.RedisError, OSError) as exc:
            raise FeatureStoreUnavailable(f"feature store unreachable: {type(exc).__name__}: {exc}") from exc
        cache = client.nodes_manager.slots_cache
        names: list[str] = []
        masters: dict[str, Any] = {}
        for slot in range(NSLOTS):
            nodes = cache.get(slot)
            if not nodes:
                raise FeatureStoreUnavailable(f"feature store unreachable: cluster slot {slot} has no master")
            names.append(nodes[0].name)
            masters.setdefault(nodes[0].name, nodes[0])
        self.slot_node = names
        for name, node in masters.items():
            conn = client.get_redis_connection(node).connection_pool.make_connection()
            try:
                conn.connect()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise FeatureStoreUnavailable(f"feature store unreachable: cluster master {name}: "
                                              f"{type(exc).__name__}: {exc}") from exc
            self.nodes[name] = _Node(name, conn)

    def _node_of(self, key: Any) -> str:
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) >= _SLOT_CACHE:
                self._slots.clear()
            slot = self._slots[key] = key_slot(key.encode() if isinstance(key, str) else key)
        return self.slot_node[slot]

    # -- the stream ----------------------------------------------------------------------
    def run(self, items: Iterable[tuple[T, Event | None]]) -> Iterator[tuple[T, Event | None, FeatureResult | None]]:
        """Each ``(tag, event)`` with what ``store.process(event)`` returns one by one (None
        for a None event), in the order given."""
        claimed: deque[_Chunk] = deque()  # claims sent, not read
        counting: deque[_Chunk] = deque()  # entity calls sent, not read
        self._mine, self._mine_until, self._seq = {}, deque(), 0
        self._makeup = {}
        try:
            self._connect()
            entries: list[_Entry] = []
            for tag, event in items:
                entries.append(_Entry(tag, event))
                if len(entries) < self.chunk:
                    continue
                claimed.append(self._send_claims(entries))
                entries = []
                while len(claimed) > self.lag:
                    counting.append(self._count(claimed.popleft()))
                    while len(counting) > self.lag:
                        yield from self._resolve(counting.popleft())
            if entries:
                claimed.append(self._send_claims(entries))
            while claimed:
                counting.append(self._count(claimed.popleft()))
            while counting:
                yield from self._resolve(counting.popleft())
        finally:
            for node in self.nodes.values():
                node.close()
            self.nodes = {}

    def _send_claims(self, entries: list[_Entry]) -> _Chunk:
        """Step 1: prepare every event of the chunk and send the claims, each to its master."""
        store = self.store
        ttl = store.dedup_ttl_s
        by_node: dict[str, list[tuple[Any, ...]]] = {}
        for e in entries:
            if e.event is None:
                continue
            row = event_row(e.event, store.ipintel, store.biz_offset_min)
            plan, e.join, e.calls, e.lookups = store.cluster.calls(row)
            e.call = _Call(row, (), plan)
            e.commands = store._commands(e.calls, e.lookups, store._script.sha, row["amount"])
            e.claim = claim = store._claim_key(e.event)
            e.claim_node = self._node_of(claim)
            commands = by_node.setdefault(e.claim_node, [])
            e.claim_at = len(commands)
            commands += [("SET", claim, CLAIMED, "NX", "EX", ttl), ("GET", claim)]
        batches = {name: self.nodes[name].send(commands) for name, commands in by_node.items()}
        for e in entries:
            if e.event is not None:
                e.claim_batch = batches[e.claim_node]
        self._seq += 1
        return _Chunk(self._seq, entries)

    def _count(self, chunk: _Chunk) -> _Chunk:
        """Step 2: read the chunk's claims; send the entity calls of the events whose claim took."""
        by_node: dict[str, list[tuple[Any, ...]]] = {}
        for e in chunk.entries:
            if e.event is None:
                continue
            replies = self.nodes[e.claim_node].wait(e.claim_batch)
            took, e.value = replies[e.claim_at], replies[e.claim_at + 1]
            for reply in (took, e.value):
                if isinstance(reply, Exception):
                    e.failure = f"feature store refused the claim: {reply}"
            if e.failure is not None or took is None:
                continue
            e.took = True
            where = []
            for command in e.commands:
                name = self._node_of(command[3] if command[0] == "EVALSHA" else command[1])
                commands = by_node.setdefault(name, [])
                where.append((name, len(commands) + 1))  # + 1: after the batch's SCRIPT LOAD
                commands.append(command)
            e.where = where
        load = hiredis.pack_command(("SCRIPT", "LOAD", self.store._script.script))  # type: ignore[arg-type]
        # every batch starts with SCRIPT LOAD (a no-op when cached): no master answers NOSCRIPT
        chunk.batches = {name: self.nodes[name].send(commands, load, 1) for name, commands in by_node.items()}
        return chunk

    def _resolve(self, chunk: _Chunk) -> Iterator[tuple[Any, Event | None, FeatureResult | None]]:
        """Step 3: each event's features, in order; the first deliveries' replies stored under their claims."""
        store = self.store
        stores: dict[str, list[tuple[Any, ...]]] = {}
        sent_makeup: dict[str, list[list[Any]]] = {}
        mine: list[str] = []
        ttl = store.dedup_ttl_s
        try:
            for e in chunk.entries:
                event = e.event
                if event is None:
                    yield e.tag, None, None
                    continue
                if e.failure is not None:
                    raise FeatureStoreError(e.failure)
                if not e.took:
                    yield e.tag, event, self._duplicate(e)
                    continue
                replies = [self.nodes[name].wait(chunk.batches[name])[at] for name, at in e.where]
                self._check(e, replies)
                stored, blob = store._joined(e.call, e.join, len(e.calls), e.lookups, replies)
                if e.join.makeup is not None:
                    blob = self._makeup_counts(e, chunk, stored, stores, sent_makeup) or blob
                stores.setdefault(e.claim_node, []).append(("SET", e.claim, blob, "EX", ttl))
                self._mine[event.event_id] = blob
                mine.append(event.event_id)
                yield e.tag, event, store._read(event, e.call, stored, False)
        finally:
            for name, commands in stores.items():
                batch = self.nodes[name].send(commands)  # replies read (and dropped) with a later batch's
                for counted in sent_makeup.get(name, ()):
                    counted[0] = batch.seq
            # a claim read before these blobs are written is in a chunk up to self._seq
            self._mine_until.append((self._seq, mine))
            while self._mine_until and self._mine_until[0][0] <= chunk.seq:
                for event_id in self._mine_until.popleft()[1]:
                    self._mine.pop(event_id, None)

    def _makeup_counts(self, e: _Entry, chunk: _Chunk, stored: list[Any], stores: dict[str, list[tuple[Any, ...]]],
                       sent_makeup: dict[str, list[list[Any]]]) -> bytes | None:
        """Today's make-up as one by one reads it, and what this payment adds to it.

        On a cluster the merchant's call only reads the make-up counters and the store adds
        to them after the join (`ClusterPlanner.makeup_commands`); one by one that write
        lands before the next event's read, here the next events' reads may already be
        sent. So the counts a read missed (added by earlier payments in batches sent to
        the counters' master at or after the read's batch) are added to its reply, and the
        new blob is returned (None when nothing was missed)."""
        store = self.store
        op = e.join.makeup
        assert op is not None
        row = e.call.row
        key = keys.entity_key(store.prefix, op.entity, row[op.column], f"{op.suffix}:{row['biz_day']}")
        node = self._node_of(key)
        read_seq = chunk.batches[node].seq
        log = self._makeup.get(key)
        blob = None
        if log:
            log[:] = [c for c in log if c[0] is None or c[0] >= read_seq]  # later reads come later
            missed = [sum(c[1][i] for c in log) for i in range(len(FIELDS))]
            if any(missed):
                for at, n in zip(e.join.counts, missed):
                    stored[at] = (stored[at] or 0) + n
                blob = msgpack.packb(stored)
        commands = store.cluster.makeup_commands(row, e.join, stored)
        if commands:
            fields = {c[2] for c in commands if c[0] == "HINCRBY"}
            counted: list[Any] = [None, [1 if f in fields else 0 for f in FIELDS]]
            self._makeup.setdefault(key, []).append(counted)
            sent_makeup.setdefault(node, []).append(counted)
            stores.setdefault(node, []).extend(commands)
        elif log is not None and not log:
            del self._makeup[key]
        return blob

    def _check(self, e: _Entry, replies: list[Any]) -> None:
        """Raise as one by one for a refused call (the claim marked unsettled, as
        `ClusterOnlineStore.process` marks it)."""
        for reply in replies:
            if isinstance(reply, Exception):
                text = str(reply)
                if text.startswith(("MOVED ", "ASK ")):
                    raise FeatureStoreUnavailable(
                        f"the cluster's slot map changed while events were in flight ({text}); replay again "
                        "once it is stable, or one by one (--in-flight 1)")
                self.store._unsettle_sync(e.claim)
                raise FeatureStoreError(f"feature store refused the update: {reply}")

    def _duplicate(self, e: _Entry) -> FeatureResult:
        """A retry's features: the blob its first delivery stored (or is storing, in this run)."""
        assert e.event is not None
        value = e.value
        if value == CLAIMED:
            blob = self._mine.get(e.event.event_id)
            if blob is not None:
                value = blob
            else:  # claimed by another process: wait as `ClusterOnlineStore.process` does
                deadline = time.monotonic() + 1.0
                while value == CLAIMED and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    value = self.store.client.get(e.claim)
        return self.store._duplicate(e.event, e.call, value)


def in_flight_for(store: OnlineStore, *, depth: int) -> InFlight | ClusterInFlight:
    """The in-flight sender for a store: `ClusterInFlight` on a cluster, else `InFlight`."""
    if isinstance(store, ClusterOnlineStore):
        return ClusterInFlight(store, depth=depth)
    return InFlight(store, depth=depth)

