"""The routes a payment flow calls on every payment, served as plain ASGI apps.

POST /v1/decisions and POST /v1/events take a raw JSON body (the event contract
parses it, see routes/decisions) and answer JSON bytes. Starlette's per-request
objects buy them nothing: `HotRoute` reads the key header and the body straight
from the ASGI messages and sends the answer as two messages. It is mounted at the
head of the app's routes (`fengkong.api.app`), inside the app's middleware, so the
body limit and the exception handlers (the error shape) are the same as
everywhere. The same handlers also stay registered on their FastAPI routers, which
is where the OpenAPI document of these routes comes from.

Measured (callgrind, instructions per decision, in-process): FastAPI's route for
an endpoint taking a `Request` cost ~210k of ~2.9M (matching through the included
routers, resolving an empty dependency set, parsing the query string); a plain
Starlette route with its Request/Response pair ~60k more than this adapter
(1.94M against 1.88M).
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from fengkong.api.config import Scope as KeyScope
from fengkong.api.deps import identify
from fengkong.api.security import Caller
from fengkong.api.state import Runtime

#: (runtime, caller, body, t0) -> the answer's JSON bytes
Handler = Callable[[Runtime, Caller, bytes, float], Awaitable[bytes]]


class HotRoute:
    """An ASGI app answering one POST route with `handler`, for keys with one of `scopes`."""

    def __init__(self, handler: Handler, scopes: tuple[KeyScope, ...]) -> None:
        self.handler = handler
        self.scopes = scopes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        rt: Runtime = scope["app"].state.runtime
        api_key = authorization = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"x-api-key":
                if api_key is None:
                    api_key = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        caller = identify(rt.keyring, api_key, None if api_key else authorization, self.scopes)
        payload = await self.handler(rt, caller, await _body(receive), t0)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})


async def _body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
