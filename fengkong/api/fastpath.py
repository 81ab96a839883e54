"""The payment flow's two routes, answered by the outermost ASGI layer of the app.

POST /v1/decisions and POST /v1/events are called on every payment. `FastLayer` is
the outermost layer of the app's middleware stack (`fengkong.api.app.ServiceApp`
builds it there) and answers them without Starlette's middleware, router and
FastAPI's request handling, which cost a decision more CPU than anything these two
routes need from them (see docs/benchmarks.md). Every other request goes down the
stack as usual.

Nothing is implemented twice. A `FastRoute` is the route: `FastRoute.answer` reads
the body under the limit (`fengkong.api.body`), checks the key (`deps.identify`)
and calls the service; its FastAPI route (OpenAPI, and the path served when the
fast layer is off) calls the same `answer`. Exceptions go to the one mapping,
`fengkong.api.errors.answer`, that the app's exception handlers call.

What the layer would skip is refused at start-up: `skipped` names any middleware
registered on the app (CORS, request ids, rate limits...) and any exception handler
other than the service's own; the app then serves these routes through its stack
and its lifespan fails with that message (`ServiceApp`), unless the app was built
with the fast layer off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from fastapi.exceptions import WebSocketRequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from fengkong.api import errors
from fengkong.api.body import BodyLimit, limited, read_body, send_response
from fengkong.api.config import Scope as KeyScope
from fengkong.api.deps import identify
from fengkong.api.security import Caller
from fengkong.api.state import Runtime

#: (runtime, caller, body, t0) -> the answer's JSON bytes
Handler = Callable[[Runtime, Caller, bytes, float], Awaitable[bytes]]

_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class FastRoute:
    """POST `path`, for keys with one of `scopes`, answered with `handler`'s JSON."""

    path: str
    scopes: tuple[KeyScope, ...]
    handler: Handler

    async def answer(self, rt: Runtime, scope: Scope, receive: Receive, t0: float) -> bytes:
        """The answer's JSON bytes. Raises what `errors.answer` maps: a body over the
        limit (by its Content-Length before the key check), a refused key, the service's
        refusals; `ClientDisconnect` if the caller leaves."""
        headers = scope["headers"]
        receive = limited(headers, receive, rt.settings.max_body_bytes)
        caller = identify(rt.keyring, headers, self.scopes)
        return await self.handler(rt, caller, await read_body(receive), t0)


class FastLayer:
    """Answers POST to its routes' paths; everything else goes to `app` (the stack below)."""

    def __init__(self, app: ASGIApp, service: Any, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.service = service  # the ServiceApp: its state holds the runtime once started
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.routes.get(scope["path"])
            if route is not None:
                await self.serve(route, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def serve(self, route: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """One request of `route`: its answer, or the error answer of what it raised."""
        t0 = time.perf_counter()
        found: Runtime | None = getattr(self.service, "runtime", None)  # (`ServiceApp.runtime`: no failed lookup)
        rt: Runtime = self.service.state.runtime if found is None else found
        try:
            payload = await route.answer(rt, scope, receive, t0)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            await send_response(send, errors.answer(exc, rt))
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON, (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})


#: handlers the fast layer does not need: it raises no other HTTPException than
#: `BodyTooLarge` (which has its own) and serves no websocket
_NOT_ON_THE_FAST_PATH = (HTTPException, WebSocketRequestValidationError)


def skipped(app: Any) -> list[str]:
    """What `FastLayer` would skip on `app` (a Starlette app): its middleware other than
    `BodyLimit` (which the layer applies itself), a body limit of Starlette's own, and
    exception handlers other than `errors.handle`. Empty when nothing is skipped."""
    out = [f"middleware {getattr(m.cls, '__name__', repr(m.cls))}" for m in app.user_middleware
           if m.cls is not BodyLimit]
    if getattr(app, "max_body_size", None) is not None:
        out.append("max_body_size (Starlette's body limit)")
    for key, handler in app.exception_handlers.items():
        if handler is errors.handle or key in _NOT_ON_THE_FAST_PATH or (isinstance(key, int) and key != 500):
            continue
        out.append(f"exception handler {getattr(handler, '__qualname__', repr(handler))} "
                   f"for {getattr(key, '__name__', key)}")
    return out
