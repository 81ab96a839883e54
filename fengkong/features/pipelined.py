"""One pipelined asyncio connection to Redis for the decision path.

Why not redis-py here. Its synchronous client blocks the event loop for the whole
round trip, and the Lua call's server work lands in that wait (the woken server
often runs on the caller's core). Its asyncio client
takes one pooled connection per command and spends more Python per call than the
call itself. The service's hot path needs something else: every in-flight decision
of a worker writes its commands to *one* connection, the writes of one loop tick go
out together, and replies are matched to callers in order (Redis answers a
connection's commands in the order it received them). The worker then parses and
evaluates other requests while Redis runs the scripts.

When the commands are written. At once when every command written before has had
its reply (Redis has nothing of ours to do, and would otherwise idle until the tick's
end); else when ``flush_bytes`` are queued, or at the end of the loop tick. Writing
every few kilobytes while Redis is busy hands it the first scripts sooner, for more
(smaller) writes and reads on both sides; on the 2-core machines measured that cost
more than it gave, so by default the threshold is past any tick's commands and a busy
tick's commands go out in one write. ``flush_bytes`` 0 writes each call's commands at
once. docs/benchmarks.md has the measurements behind the default. Commands nobody waits
for (`PipelinedRedis.send_nowait`: a decision's write-behind) get no write of their own while
Redis has commands of ours to answer: they leave with the next write, or as soon as Redis has
answered everything written (`_Protocol.send`).

What it is not: a general client. Commands are packed by ``hiredis.pack_command``
and replies parsed by ``hiredis.Reader`` (the C parser redis-py itself uses); error
replies come back as values (`ReplyError`), not exceptions, so one bad command does
not disturb its neighbours. Connection faults fail every pending command with
`ConnectionFailed`; the next command reconnects. A command that outlives its
timeout is judged only after the loop has read what the socket already holds (a
worker short of CPU may run the timer before the reply it has received); while the
server has answered on this connection and is not judged silent, the reply is
waited for up to ``late_wait_s`` more: on a machine short of CPU a live server's
lateness is the scheduler's, not a fault. A connection that never had a reply (one
made to a frozen server) gets no grace. The
connection is then closed only if the server has been silent for ``dead_after_s``
while commands waited on it (silence counts from the later of the last bytes
received and the moment the oldest waiting command was sent: an idle period is not
silence). Otherwise the server is alive and only this reply is late (a busy server,
or a worker too busy to read it): the caller gets `ReplyLate`, the reply is dropped
when it comes, and the connection serves everyone else on. URLs are
read by redis-py's own parser: ``redis://``, ``rediss://`` (TLS with the system's
default verification) and ``unix://``, with user, password and database.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import socket
import ssl
from collections import deque
from typing import Any, Protocol, Sequence

import hiredis
from redis.connection import parse_url

ReplyError = hiredis.ReplyError

#: Queued bytes that are written at once rather than at the end of the loop tick (see `PipelinedRedis`).
#: The default is past any tick's commands, so the threshold is off: in interleaved runs a tick's one
#: write answered more than writing every few kilobytes did (docs/benchmarks.md); it stays a setting.
FLUSH_BYTES = 1 << 30


#: (batch, dead_after, sent_at, late_until): what `_expire` judges a batch by (`_Protocol.watch`)
_Watch = tuple["asyncio.Future[list[Any]]", float, float, float]
#: ties between equal deadlines, broken in the order the batches were watched (futures do not compare)
_ORDER = itertools.count()
#: how early the timer may judge a deadline: uvloop rounds a timer's delay to whole milliseconds
#: and libuv's clock ticks in them, so a timer fires up to about a millisecond early (as the
#: per-call timers did); a deadline that near is judged at once, not re-armed, which could
#: otherwise spin the loop until the clock ticks
_EARLY_S = 0.001


class ConnectionFailed(ConnectionError):
    """The connection broke, could not be made, or the server fell silent on it."""


class ReplyLate(ConnectionFailed):
    """This command's reply did not come in time, but the server kept answering others
    meanwhile (it is slow, or this process is too busy to read): the connection stays."""


def _retrieve(task: "asyncio.Task[Any]") -> None:
    """Mark a finished connect task's exception as seen (the callers that awaited it
    already got it; one whose budget ended first did not, and asyncio would log it)."""
    if not task.cancelled():
        task.exception()


class _Protocol(asyncio.Protocol):
    __slots__ = ("transport", "reader", "pending", "closed", "out", "out_bytes", "flush_bytes", "flush_scheduled",
                 "heard_at", "waiting_since", "replied_at", "watched", "deadlines", "timer", "timer_at")

    def __init__(self, flush_bytes: int = FLUSH_BYTES) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        # one entry per command sent: the batch's reply list, and its future on its last command
        self.pending: deque[tuple[list[Any], asyncio.Future[list[Any]] | None]] = deque()
        self.closed = False
        self.out: list[bytes] = []  # packed commands not yet written
        self.out_bytes = 0  # their size
        self.flush_bytes = flush_bytes
        self.flush_scheduled = False
        self.heard_at = 0.0  # loop time of the last bytes from the server (or of connecting)
        self.waiting_since = 0.0  # loop time the oldest command now waiting was sent after none waited
        self.replied_at = float("-inf")  # loop time of the last bytes from the server (connecting aside)
        #: the batches `execute` waits on (`watch`), in the order they were watched, each due no
        #: earlier than the one before it (with one budget for every call, as the service has: all);
        #: a done one leaves when it comes to the front
        self.watched: deque[tuple[float, int, _Watch]] = deque()
        #: the others, by deadline (a heap); a done one leaves when it comes to the top
        self.deadlines: list[tuple[float, int, _Watch]] = []
        self.timer: asyncio.TimerHandle | None = None  # the one timer, at the earliest deadline
        self.timer_at = float("inf")

    def watch(self, batch: "asyncio.Future[list[Any]]", deadline: float, dead_after: float, sent_at: float,
              late_until: float) -> None:
        """Judge ``batch`` at ``deadline`` unless it is done by then (`_expire`'s steps).

        Why one timer for all: a timer per call (``call_at``, then its cancel when the reply
        came) cost the worker more than the rest of `PipelinedRedis.execute`; replies mostly
        come long before their deadline, so one timer at the earliest deadline, which drops
        the batches done meanwhile when it fires, is set a few times per budget instead of
        once per call. A batch is judged at its own deadline as before.

        Why a queue besides the heap: calls with one budget are due in the order they were
        made, so each joins the end of `watched` and leaves from its front, in place of a
        heap's push and pop, which compare tuples at every level. Only a batch due before the
        last one watched (a shorter budget) goes on the heap; the timer takes both in
        deadline order."""
        entry = (deadline, next(_ORDER), (batch, dead_after, sent_at, late_until))
        watched = self.watched
        if not watched or deadline >= watched[-1][0]:
            watched.append(entry)
        else:
            heapq.heappush(self.deadlines, entry)
        if deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = asyncio.get_running_loop().call_at(deadline, self._deadlines_due)

    def _deadlines_due(self) -> None:
        """The timer: judge every waiting batch whose deadline has come (the queue's and the
        heap's merged in deadline order, ties in the order watched), drop the done ones at the
        front, and set the timer again for the earliest deadline left."""
        self.timer, self.timer_at = None, float("inf")
        loop = asyncio.get_running_loop()
        now = loop.time()
        watched, deadlines = self.watched, self.deadlines
        while watched or deadlines:
            in_order = bool(watched) and (not deadlines or watched[0] < deadlines[0])  # (deadline, order): unique
            deadline, _, (batch, dead_after, sent_at, late_until) = watched[0] if in_order else deadlines[0]
            if not batch.done():
                if deadline > now + _EARLY_S:
                    self.timer_at = deadline
                    self.timer = loop.call_at(deadline, self._deadlines_due)
                    return
                _expire(batch, self, dead_after, sent_at, late_until)
            if in_order:
                watched.popleft()
            else:
                heapq.heappop(deadlines)

    def judged_silent(self, now: float, dead_after: float) -> bool:
        """Whether the server has sent nothing for ``dead_after`` while something waited on
        it (1 ms of slack: the timer and the send read the clock microseconds apart)."""
        return self.closed or now - max(self.heard_at, self.waiting_since) + 0.001 >= dead_after

    def send(self, commands: Sequence[Sequence[Any]], waited: bool = True) -> "asyncio.Future[list[Any]]":
        """Queue the commands; they are written at once when Redis has nothing of ours
        to do or ``flush_bytes`` are queued, else with everything else queued in this
        loop tick, in one write at its end. Commands nobody waits for (``waited`` false:
        `PipelinedRedis.send_nowait`) are not worth a write of their own: while Redis has
        ours to do they are held, and leave with the next write or when Redis has answered
        everything written (`data_received`), whichever comes first; Redis would not have
        run them sooner (it runs a connection's commands in order), and each write is a
        system call that wakes it. The returned future gets the batch's
        replies, in order, once the last has come. A command is its arguments, or
        ``bytes``: the command already packed as Redis reads it (RESP)."""
        if self.closed:
            raise ConnectionFailed("redis connection closed")
        loop = asyncio.get_running_loop()
        batch: asyncio.Future[list[Any]] = loop.create_future()
        replies: list[Any] = []
        pending = self.pending
        if not pending:
            self.waiting_since = loop.time()
        out = self.out
        size = self.out_bytes
        idle = len(pending) == len(out)  # every command written has had its reply: Redis waits on us
        for command in commands[:-1]:
            pending.append((replies, None))
            packed = command if type(command) is bytes else hiredis.pack_command(tuple(command))
            out.append(packed)
            size += len(packed)
        pending.append((replies, batch))
        command = commands[-1]
        packed = command if type(command) is bytes else hiredis.pack_command(tuple(command))
        out.append(packed)
        size += len(packed)
        if idle or size >= self.flush_bytes:  # Redis starts on these now, not after the rest of the tick
            self.write_out()
        else:
            self.out_bytes = size
            if waited and not self.flush_scheduled:
                self.flush_scheduled = True
                loop.call_soon(self.flush)
        return batch

    def flush(self) -> None:
        """The end of a loop tick in which commands were queued: write what is left."""
        self.flush_scheduled = False
        if self.out:
            self.write_out()

    def write_out(self) -> None:
        out, self.out, self.out_bytes = self.out, [], 0
        if not self.closed and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.heard_at = asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        self.heard_at = self.replied_at = asyncio.get_running_loop().time()
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    if self.out and len(pending) == len(self.out):  # held commands: Redis has answered the rest
                        self.write_out()
                    return
                replies, batch = pending.popleft()
                replies.append(reply)
                if batch is not None and not batch.done():
                    batch.set_result(replies)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(ConnectionFailed(f"redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionFailed(f"redis connection lost: {exc or 'closed by server'}"))

    def close(self, exc: BaseException) -> None:
        """Close on the client's side: what `send` held is written first (the transport sends
        it before closing), then every command still waiting fails with ``exc``."""
        if self.out and not self.closed:
            self.write_out()
        self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        self.closed = True
        pending, self.pending = self.pending, deque()
        for _, batch in pending:
            if batch is not None and not batch.done():
                batch.set_exception(exc)
                batch.exception()  # seen: a caller whose budget ended is not there to see it
        if self.timer is not None:  # every batch is done: nothing left to judge
            self.timer.cancel()
        self.timer, self.timer_at, self.watched, self.deadlines = None, float("inf"), deque(), []
        if self.transport is not None:
            self.transport.close()


class PipelinedRedis:
    """Commands from many coroutines of one event loop, pipelined on one connection."""

    def __init__(self, url: str, *, connect_timeout_s: float = 1.0, dead_after_s: float | None = None,
                 late_wait_s: float = 0.0, flush_bytes: int = FLUSH_BYTES) -> None:
        if flush_bytes < 0:
            raise ValueError(f"flush_bytes: must be 0 or more, got {flush_bytes}")
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        #: silence that closes the connection; None: each call's own timeout
        self.dead_after_s = dead_after_s
        #: how long past its timeout a reply is still waited for while the server is not silent
        self.late_wait_s = late_wait_s
        #: queued bytes written at once instead of at the tick's end (0: every call's commands at once)
        self.flush_bytes = flush_bytes
        opts = parse_url(url)
        self._path: str | None = opts.get("path")
        self._host: str = opts.get("host") or "localhost"
        self._port: int = int(opts.get("port") or 6379)
        self._tls = url.startswith("rediss://")
        self._hello: list[tuple[Any, ...]] = []
        if opts.get("password"):
            user = opts.get("username")
            self._hello.append(("AUTH", user, opts["password"]) if user else ("AUTH", opts["password"]))
        if opts.get("db"):
            self._hello.append(("SELECT", int(opts["db"])))
        self._proto: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    # -- connection -------------------------------------------------------------------------
    async def _connection(self) -> _Protocol:
        """The live connection, or one being made. Connecting runs as its own task, so a
        caller whose budget ends while it waits does not leave the attempt half done."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (its old transport is not ours)
            self._loop, self._proto, self._connecting = loop, None, None
        proto = self._proto
        if proto is not None and not proto.closed:
            return proto
        task = self._connecting
        if task is None or task.done():  # none yet, or it failed, or its connection has closed since
            task = self._connecting = loop.create_task(self._open(loop))
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        def protocol() -> _Protocol:
            return _Protocol(self.flush_bytes)

        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self._path:
                    _, proto = await loop.create_unix_connection(protocol, self._path)
                else:
                    _, proto = await loop.create_connection(
                        protocol, self._host, self._port, ssl=ssl.create_default_context() if self._tls else None)
                    sock = proto.transport.get_extra_info("socket") if proto.transport else None
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for command in self._hello:
                    future: asyncio.Future[list[Any]] = loop.create_future()
                    proto.pending.append(([], future))
                    assert proto.transport is not None
                    proto.transport.write(hiredis.pack_command(command))
                    reply = (await future)[0]
                    if isinstance(reply, ReplyError):
                        proto.fail(ConnectionFailed(f"redis refused {command[0]}: {reply}"))
                        raise ConnectionFailed(f"redis refused {command[0]}: {reply}")
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(f"cannot connect to redis: {type(exc).__name__}: {exc}") from exc
        self._proto = proto  # before the task completes: a caller arriving in between must not reconnect
        return proto

    def close(self) -> None:
        """Close the connection from any thread (on its own loop, if that still runs)."""
        proto, self._proto = self._proto, None
        loop = self._loop
        if proto is None or proto.closed or loop is None or loop.is_closed():
            return
        closed = ConnectionFailed("closed")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            proto.close(closed)
        else:
            loop.call_soon_threadsafe(proto.close, closed)

    # -- commands ---------------------------------------------------------------------------
    async def execute(self, commands: Sequence[Sequence[Any]], timeout_s: float) -> list[Any]:
        """Send the commands (in order, pipelined with everyone else's) and return their
        replies; an error reply is a `ReplyError` in the list, not an exception. A command
        given as ``bytes`` is already packed (RESP) and is written as it is.

        Raises `ConnectionFailed` when the connection breaks, cannot be made, or the
        server said nothing for ``dead_after_s`` (else ``timeout_s``) while commands
        waited (the connection is then closed), and `ReplyLate` when these replies did
        not all come in time but the server is not judged silent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        proto = self._proto
        if proto is None or proto.closed or self._loop is not loop:
            try:
                proto = await asyncio.wait_for(self._connection(), timeout_s)
            except TimeoutError:
                raise ConnectionFailed(f"redis did not answer within {timeout_s * 1000:.0f} ms") from None
        # The connection's one timer judges the batch at its deadline (`_Protocol.watch`),
        # not `asyncio.timeout` around the await nor a timer per call: either costs the
        # worker more CPU (see docs/benchmarks.md). Replies come in order, so the batch is
        # done when its last is.
        batch = proto.send(commands)
        dead_after = timeout_s if self.dead_after_s is None else self.dead_after_s
        proto.watch(batch, deadline, dead_after, deadline - timeout_s, deadline + self.late_wait_s)
        try:
            replies = await batch
        except _Expired:
            message = f"redis did not answer within {timeout_s * 1000:.0f} ms"
            if not proto.judged_silent(loop.time(), dead_after):
                raise ReplyLate(message + " (the connection is answering others)") from None
            proto.fail(ConnectionFailed(message))
            raise ConnectionFailed(message) from None
        # replies come in order, so the batch answered is mostly the oldest watched: it leaves
        # now, with its replies, rather than staying until the timer comes to it
        watched = proto.watched
        if watched and watched[0][2][0] is batch:
            watched.popleft()
        return replies


    def is_open(self) -> bool:
        """Whether a connection is open on the running loop (`send_nowait` can use it)."""
        proto = self._proto
        return proto is not None and not proto.closed and self._loop is asyncio.get_running_loop()

    def send_nowait(self, commands: Sequence[Sequence[Any]]) -> "asyncio.Future[list[Any]]":
        """Queue the commands like `execute`, and return the future of their replies
        without waiting for it: for a write the caller does not wait for. They leave at
        once on an idle connection, else with its next write or once Redis has answered
        what was written (`_Protocol.send`); commands sent later on this connection run after them
        (Redis runs a connection's commands in order). Raises `ConnectionFailed` when
        no connection is open (`execute` makes one)."""
        proto = self._proto
        if proto is None or proto.closed or self._loop is not asyncio.get_running_loop():
            raise ConnectionFailed("no open redis connection")
        return proto.send(commands, waited=False)


def packed_args(command: bytes) -> list[bytes]:
    """The arguments of ONE command given packed (RESP ``bytes``, as `PipelinedRedis` takes
    it): what routing by key (`fengkong.features.cluster`) and keeping a command in a file
    (`fengkong.cases.intake.unpacked`) read back. hiredis reads that form as it reads a reply."""
    reader = hiredis.Reader()
    reader.feed(command)
    args = reader.gets()
    if not isinstance(args, list) or not args or reader.gets() is not False:
        raise ValueError("command: not one RESP command")
    return args


class Pipelined(Protocol):
    """What the decision path needs of its Redis connection: `PipelinedRedis` on one
    server, `fengkong.features.cluster.ClusterPipelined` on a Redis Cluster."""

    async def execute(self, commands: Sequence[Sequence[Any]], timeout_s: float) -> list[Any]: ...

    def send_nowait(self, commands: Sequence[Sequence[Any]]) -> "asyncio.Future[list[Any]]": ...

    def close(self) -> None: ...


class _Expired(Exception):
    """A batch's timer fired before its last reply (`execute` says which failure it was)."""


def _expire(batch: "asyncio.Future[Any]", proto: _Protocol, dead_after: float, sent_at: float, late_until: float,
            hops: int = 2) -> None:
    """The batch's timer. After ``hops`` more loop turns (each turn polls the sockets, and
    the replies' callbacks of a turn run after those already scheduled, so a reply that
    had arrived when the timer ran is read first): if the server has answered on this
    connection, is not judged silent and ``late_until`` has not come, wait on until
    then; else fail the batch with `_Expired`. (``sent_at``: when the batch was sent.)"""
    if batch.done():
        return
    loop = asyncio.get_running_loop()
    if hops:
        loop.call_soon(_expire, batch, proto, dead_after, sent_at, late_until, hops - 1)
        return
    now = loop.time()
    # the grace: the server has answered on this connection and is not judged silent (a
    # connection that never had a reply, e.g. one made to a frozen server, gets none)
    if now < late_until and now - proto.replied_at < dead_after and not proto.judged_silent(now, dead_after):
        loop.call_at(late_until, _expire, batch, proto, dead_after, sent_at, late_until)
        return
    batch.set_exception(_Expired())
