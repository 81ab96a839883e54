"""uvicorn's httptools protocol, with each connection's writes of one loop tick sent together.

uvicorn writes a response's status line and headers in one ``send`` and its body in
another. Over TCP with ``TCP_NODELAY`` (asyncio's default) each becomes its own
segment: two system calls for the worker and two arrivals for the caller, on
every decision. `CoalescingHttpToolsProtocol` hands uvicorn a transport whose
``write`` queues the bytes and sends everything queued on that connection at the
end of the loop tick in one ``write``, so a decision's answer leaves as one segment.
The same idea as the Redis connection's write (`fengkong.features.pipelined`); what
it saves is in docs/benchmarks.md.

`fengkong serve` runs uvicorn with it (``http=``); the API tests serve the app with
it too. Nothing else changes: flow control (pause/resume) is still the real
transport's, and closing sends what is queued first.

It relies on uvicorn's private `HttpToolsProtocol`: its ``connection_made(transport)``
sets ``self.transport`` (which every later write goes through) and its event loop is
``self.loop``; the transport it hands uvicorn has every method of `asyncio.Transport`
written out (no ``__getattr__``). pyproject.toml pins uvicorn to the minor series this
was tested with, and tests/test_api_http.py fails if an upgrade changes that interface,
calls a transport method the transport lacks, or changes the effect on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes leave together at the end of the loop tick.

    Every public method of `asyncio.Transport` is written out (tests/test_api_http.py
    holds that): no ``__getattr__`` fallback, which would make each of the several
    attribute reads an answer makes on it (its own included) go through Python's
    slower lookup, and one of them through a failed lookup and its exception."""

    __slots__ = ("transport", "loop", "queued")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.queued: list[bytes] = []

    def write(self, data: bytes) -> None:
        queued = self.queued
        if not queued:
            self.loop.call_soon(self.flush)
        queued.append(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def flush(self) -> None:
        queued = self.queued
        if queued:
            self.queued = []
            if not self.transport.is_closing():
                self.transport.write(queued[0] if len(queued) == 1 else b"".join(queued))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self.queued = []
        self.transport.abort()

    # the rest is the real transport's
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)


#: when the app's runtime (its settings) is not there yet
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 5.0
_TIMEOUT_BODY = b'{"detail":"body: did not arrive within the read timeout","field":"body"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport`, with a read timeout.

    Slow clients are cut off: a request whose headers and body have not all arrived
    ``body_timeout_s`` after its first byte is answered 408 and its connection closed
    (the app, if it was reading the body, sees a disconnect); a new connection that
    sends nothing is closed after ``keep_alive_s``, and so is an idle keep-alive one
    (by this protocol's timer, not uvicorn's). Both come from the app's settings
    (``app.state.runtime``) when the connection is made.

    The connection's one timer is lazy, and serves the keep-alive timeout too: a request
    notes its read deadline, an answered one its idle deadline (instead of uvicorn's
    ``call_later`` and ``cancel`` per answer, `on_response_complete`), and the timer is
    set again only when it would fire after that deadline; when it fires before, it looks
    at the deadline of the moment and waits on for what is left. So a keep-alive
    connection's requests do not each set and cancel a timer."""

    _read_timer: asyncio.TimerHandle | None = None
    _timer_at = 0.0  # when `_read_timer` fires (loop time)
    _read_by = 0.0  # the deadline of the request being read (loop time)
    _read_timeout_s = DEFAULT_READ_TIMEOUT_S
    _reading = False  # a request has begun and not all of it has arrived
    _began = False  # a request has begun on this connection
    _idle_by = 0.0  # when an answered connection with no request since is closed (loop time)
    _idle = False  # answered, and no request has begun since

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        rt = getattr(getattr(self.app, "state", None), "runtime", None)
        if rt is not None:
            self._read_timeout_s = rt.settings.body_timeout_s
            self.timeout_keep_alive = rt.settings.keep_alive_s
        self._arm(self.loop.time() + self.timeout_keep_alive)

    def _arm(self, at: float) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._timer_at = at
        self._read_timer = self.loop.call_at(at, self._read_timed_out)

    # the base's callbacks are called by name, not through super(): once per request each
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._reading = self._began = True
        self._idle = False
        self._read_by = self.loop.time() + self._read_timeout_s
        if self._read_timer is None or self._timer_at > self._read_by:
            self._arm(self._read_by)

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._reading = False  # the timer, if it fires, finds nothing to time out

    def on_response_complete(self) -> None:
        """uvicorn's, but for its keep-alive timer: the idle deadline is noted and the
        connection's timer moved only when it would fire later (tests/test_api_http.py
        holds the base's method to what this one repeats)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle = True
        self._idle_by = self.loop.time() + self.timeout_keep_alive
        if self._read_timer is None or self._timer_at > self._idle_by:
            self._arm(self._idle_by)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._reading:
            if self.loop.time() < self._read_by:  # a later request's deadline: wait for what is left
                self._arm(self._read_by)
                return
        elif self._idle:  # answered, and nothing since: closed once idle for the keep-alive timeout
            if self.loop.time() < self._idle_by:
                self._arm(self._idle_by)
                return
        elif self._began:  # a request read whole and not answered yet: its answer arms the timer
            return
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        answered = False
        if cycle is not None and not cycle.response_complete:  # this request's: its headers had arrived
            answered = cycle.response_started
            cycle.disconnected = True  # the app reading the body gets a disconnect, and its answer goes nowhere
            cycle.message_event.set()
        if self._reading and not answered:
            transport.write(_408)
        transport.close()


#: how `fengkong serve` (and the API tests) run uvicorn. No access log and no
#: proxy-header rewriting either: nothing in the service reads the peer's address or
#: scheme (a payment's IP travels in its event), and both ran on every request. No
#: ``server: uvicorn`` header: a header less to check and write on every answer, and
#: the server's name is nobody's business.
UVICORN_OPTIONS: dict[str, Any] = {"http": CoalescingHttpToolsProtocol, "access_log": False, "proxy_headers": False,
                                   "server_header": False}
