"""Many events' feature-script calls in flight on one Redis connection, in order.

Why: a replay that waits for each event's round trip leaves Redis idle while
Python parses, assembles and decides, and Python idle while Redis runs the script.
Redis runs one connection's commands in the order it receives them, so the calls of
a history can be sent ahead, in event-time order, and every event still gets
exactly the features `OnlineStore.process` would have given it one by one: the
script is the only thing that reads or writes the store, and each call sees the
effects of every call sent before it (counters, the event-id claim and its stored
reply for a retry, the merchant's limit).

How: the calling thread prepares each event's EVALSHA exactly as `OnlineStore.process`
does (`OnlineStore._prepare`), packs a chunk of them with ``hiredis.pack_command`` and
hands the bytes to a writer thread, which sends them (a blocking ``sendall`` that
releases the GIL, so a full socket buffer never stalls the caller); the caller then
reads replies in order and turns each into a `FeatureResult` (`OnlineStore._finish`).
At most ``depth`` events are sent and not yet read. The first chunk, and then one
chunk per ``depth`` events, starts with a ``SCRIPT LOAD`` of the script (a no-op when
cached): a server that lost its script cache (a ``SCRIPT FLUSH``) answers NOSCRIPT for
at most one window, and the run stops there with a `FeatureStoreError`, as for any
refused call. Not every chunk: Redis hashes the whole script text on each load, most of
an event's own work (docs/benchmarks.md, "Replay at the speed of Redis").

One Redis server: on a Redis Cluster an event's work is a claim and then one call per
entity on several nodes, kept in flight by `fengkong.features.inflight_cluster`.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Any, Iterable, Iterator, TypeVar

import hiredis
import redis

from fengkong.events import Event
from fengkong.features.errors import FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.online import FeatureResult, OnlineStore

T = TypeVar("T")

#: Events prepared and packed together (one write to the socket).
CHUNK = 64


class SocketWriter:
    """A thread that sends packed chunks on one connection, in order (a blocking ``sendall``
    that releases the GIL, so a full socket buffer never stalls the thread reading replies)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="fengkong-inflight-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            data = self.chunks.get()
            if data is None:
                return
            if self.error is not None:
                continue
            try:
                self.conn.send_packed_command([data], check_health=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                self.error = exc
                self.conn.disconnect()  # wakes the reader blocked on this socket

    def close(self) -> None:
        self.chunks.put(None)
        self.thread.join()


class InFlight:
    """Feature-script calls of an ordered event stream, up to ``depth`` events in flight.

    ``run(items)`` takes ``(tag, event)`` pairs (``event`` None: a row that makes no
    call, passed through in its place) and yields ``(tag, event, result)`` in the same
    order; ``result`` is what ``store.process(event)`` would have returned one by one.
    A store error is raised at the event it belongs to, as `process` would raise it."""

    def __init__(self, store: OnlineStore, *, depth: int = 1024, chunk: int = CHUNK) -> None:
        if depth < 1:
            raise ValueError(f"depth: must be at least 1, got {depth}")
        self.store = store
        self.depth = depth
        self.chunk = max(1, min(chunk, depth))

    def run(self, items: Iterable[tuple[T, Event | None]]) -> Iterator[tuple[T, Event | None, FeatureResult | None]]:
        store = self.store
        pool = getattr(store.client, "connection_pool", None)
        if pool is None:  # e.g. a cluster client: one event's work spans several connections
            raise ValueError(f"in flight: needs one Redis server's client, not {type(store.client).__name__}; "
                             "a cluster's store goes through inflight_cluster.ClusterInFlight")
        conn = pool.make_connection()
        try:
            conn.connect()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise FeatureStoreUnavailable(f"feature store unreachable: {type(exc).__name__}: {exc}") from exc
        writer = SocketWriter(conn)
        script: tuple[Any, ...] = ("SCRIPT", "LOAD", store._script.script)
        load = hiredis.pack_command(script)
        sent: deque[tuple[list[tuple[T, Event | None, Any]], int, bool]] = deque()  # chunk, its calls, loads
        in_flight = 0
        since_load = self.depth  # calls sent since the last SCRIPT LOAD: the first chunk loads
        try:
            chunk: list[tuple[T, Event | None, Any]] = []
            calls = 0
            for tag, event in items:
                call = store._prepare(event) if event is not None else None
                chunk.append((tag, event, call))
                calls += call is not None
                if calls >= self.chunk:
                    loads = since_load >= self.depth
                    since_load = calls if loads else since_load + calls
                    in_flight += self._send(writer, load if loads else b"", chunk, calls, sent)
                    chunk, calls = [], 0
                    while in_flight > self.depth - self.chunk and sent:
                        done, ncalls, loaded = sent.popleft()
                        in_flight -= ncalls
                        yield from self._receive(conn, writer, done, loaded)
            if chunk:
                in_flight += self._send(writer, load if since_load >= self.depth else b"", chunk, calls, sent)
            while sent:
                done, _, loaded = sent.popleft()
                yield from self._receive(conn, writer, done, loaded)
        finally:  # disconnect first: a writer still sending (the caller stopped early) then stops at once
            conn.disconnect()
            writer.close()

    @staticmethod
    def _send(writer: SocketWriter, load: bytes, chunk: list[tuple[T, Event | None, Any]], calls: int,
              sent: deque[tuple[list[tuple[T, Event | None, Any]], int, bool]]) -> int:
        """Hand the chunk's calls to the writer, after ``load`` (a packed SCRIPT LOAD, or
        nothing); returns how many calls it sent."""
        loads = bool(calls and load)
        if calls:
            writer.chunks.put(b"".join([load, *(hiredis.pack_command(c.command) for _, _, c in chunk
                                                if c is not None)]))
        sent.append((chunk, calls, loads))
        return calls

    def _receive(self, conn: Any, writer: SocketWriter, chunk: list[tuple[T, Event | None, Any]],
                 loads: bool) -> Iterator[tuple[T, Event | None, FeatureResult | None]]:
        store = self.store
        if loads:
            self._read(conn, writer)  # the chunk's SCRIPT LOAD
        for tag, event, call in chunk:
            if call is None or event is None:
                yield tag, event, None
                continue
            reply = self._read(conn, writer)
            if isinstance(reply, redis.ResponseError):
                raise FeatureStoreError(f"feature store refused the update: {reply}")
            yield tag, event, store._finish(event, call, reply)

    @staticmethod
    def _read(conn: Any, writer: SocketWriter) -> Any:
        try:
            return conn.read_response()
        except redis.ResponseError as exc:  # one command's error reply: the stream stays in step
            return exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            cause = writer.error or exc
            raise FeatureStoreUnavailable(f"feature store unreachable: {type(cause).__name__}: {cause}") from exc
