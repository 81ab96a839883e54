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
``self.loop``. pyproject.toml pins uvicorn to the minor series this was tested with,
and tests/test_api_http.py fails if an upgrade changes that interface or its effect
on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes leave together at the end of the loop tick."""

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

    def flush(self) -> None:
        queued = self.queued
        if queued:
            self.queued = []
            if not self.transport.is_closing():
                self.transport.write(queued[0] if len(queued) == 1 else b"".join(queued))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self.transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]


#: how `fengkong serve` (and the API tests) run uvicorn. No access log and no
#: proxy-header rewriting either: nothing in the service reads the peer's address or
#: scheme (a payment's IP travels in its event), and both ran on every request.
UVICORN_OPTIONS: dict[str, Any] = {"http": CoalescingHttpToolsProtocol, "access_log": False, "proxy_headers": False}
