"""The routes a payment flow calls on every payment, answered in front of the app.

POST /v1/decisions and POST /v1/events take a raw JSON body (the event contract
parses it, see routes/decisions) and answer JSON bytes. `ServiceApp` (the app
class, `fengkong.api.app`) hands their requests to a `HotRoute` before Starlette's
middleware stack and router: those layers were ~104k of ~1.88M instructions per
decision (callgrind, in-process), and all they did for these two routes is done
here directly: the body limit (413 before the body is read, or as a chunked
body passes it), the key check, and turning a refusal into its answer through the
app's own exception handlers (the error shape is the same everywhere). An exception
with no handler propagates to uvicorn, which answers 500, as Starlette's outermost
middleware did.

The same handlers stay registered on their FastAPI routes: that is where the
OpenAPI document of these routes comes from, and what serves them when the app is
built without hot routes (the test that holds both paths to the same answers).
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from fengkong.api.config import Scope as KeyScope
from fengkong.api.deps import identify
from fengkong.api.errors import BodyTooLarge, declared_length_refusal, send_response
from fengkong.api.security import Caller
from fengkong.api.state import Runtime

#: (runtime, caller, body, t0) -> the answer's JSON bytes
Handler = Callable[[Runtime, Caller, bytes, float], Awaitable[bytes]]

_JSON = (b"content-type", b"application/json")


class HotRoute:
    """Answers one POST route with `handler`, for keys with one of `scopes`."""

    def __init__(self, handler: Handler, scopes: tuple[KeyScope, ...]) -> None:
        self.handler = handler
        self.scopes = scopes

    async def __call__(self, app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request of `app` (a `ServiceApp`; ``scope["app"]`` is set)."""
        t0 = time.perf_counter()
        rt: Runtime = app.state.runtime
        try:
            api_key = authorization = length = None
            for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
                if name == b"x-api-key":
                    if api_key is None:
                        api_key = value.decode("latin-1")
                elif name == b"authorization":
                    if authorization is None:
                        authorization = value.decode("latin-1")
                elif name == b"content-length" and length is None:
                    length = value
            limit = rt.settings.max_body_bytes
            if length is not None and (refusal := declared_length_refusal(length, limit)) is not None:
                await send_response(send, refusal)
                return
            caller = identify(rt.keyring, api_key, None if api_key else authorization, self.scopes)
            payload = await self.handler(rt, caller, await _body(receive, limit), t0)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            handler = _exception_handler(app, exc)
            if handler is None:
                raise
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await send_response(send, response)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON, (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})


def _exception_handler(app: Any, exc: Exception) -> Callable[..., Any] | None:
    """The app's handler for `exc`, looked up along its class's MRO as Starlette does."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]  # type: ignore[no-any-return]
    return None


async def _body(receive: Receive, limit: int) -> bytes:
    """The whole body; `BodyTooLarge` as soon as it passes `limit` (a chunked body)."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge()
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)
