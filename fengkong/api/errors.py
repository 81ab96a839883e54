"""Refusals: how every 4xx is shaped, the body-size limit, and JSON parsing.

Every error body is ``{"detail": "<field>: <reason>", "field": "<field>"}``. Values
are never repeated back: FastAPI's own 422 includes the offending ``input``, which
could be a card number, so its handler is replaced by one that keeps only the
location and the message.

The size limit is a pure ASGI middleware (cheap: no per-request objects): a
``Content-Length`` over the limit gets 413 before the body is read; a chunked body
is counted as it arrives and refused when it passes the limit.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fengkong.api.deps import AuthError
from fengkong.api.encoding import dumps, loads
from fengkong.api.schemas import ErrorOut
from fengkong.api.service import Conflict, Invalid, NotFound, ServiceError, Unavailable
from fengkong.events import EventRejected, nesting_problem

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed JSON"},
    401: {"model": ErrorOut, "description": "Missing or unknown API key"},
    403: {"model": ErrorOut, "description": "The key lacks the scope"},
    409: {"model": ErrorOut, "description": "event_id already used with a different body"},
    413: {"model": ErrorOut, "description": "Body larger than the configured limit"},
    422: {"model": ErrorOut, "description": "A field is invalid; `field` names it"},
}


class BodyTooLarge(Exception):
    pass


class MalformedBody(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_response(status: int, field: str | None, reason: str, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"detail": f"{field}: {reason}" if field else reason, "field": field}
    if extra:
        body.update(extra)
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


async def read_json(request: Request) -> Any:
    """The body as JSON; `MalformedBody` (400) when it is not JSON."""
    return parse_json(await request.body())


def parse_json(body: bytes) -> Any:
    """`MalformedBody` (400) for an empty or malformed body; the message never quotes it."""
    if not body:
        raise MalformedBody("is empty; send one JSON object")
    if (too_deep := nesting_problem(body)) is not None:  # before the parser or any recursive walk
        raise MalformedBody(too_deep)
    try:
        return loads(body)
    except ValueError as exc:
        # orjson's message gives the position only (never the content)
        raise MalformedBody(f"is not valid JSON ({str(exc).split(':', 1)[-1].strip()})") from None


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                refusal = declared_length_refusal(value, limit)
                if refusal is not None:
                    await send_response(send, refusal)
                    return
                await self.app(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_response(send, _too_large(limit))


def declared_length_refusal(value: bytes, limit: int) -> Response | None:
    """The answer to a request whose ``Content-Length`` is `value`, when it is refused."""
    try:
        too_big = int(value) > limit
    except ValueError:
        return error_response(400, "Content-Length", "is not an integer")
    return _too_large(limit) if too_big else None


def _too_large(limit: int) -> Response:
    return error_response(413, "body", f"is larger than the limit of {limit} bytes")


async def send_response(send: Send, response: Response) -> None:
    """Send a complete `Response` (headers and body already built) as two ASGI messages."""
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def install(app: FastAPI) -> None:
    """Map the service's refusals to statuses, on this app."""

    def rejected_count(request: Request, status: int) -> None:
        rt = getattr(request.app.state, "runtime", None)
        if rt is not None:
            rt.metrics.rejected.labels(str(status)).inc()

    @app.exception_handler(EventRejected)
    async def _rejected(request: Request, exc: EventRejected) -> Response:
        rejected_count(request, 422)
        return error_response(422, exc.field, exc.reason)

    @app.exception_handler(MalformedBody)
    async def _malformed(request: Request, exc: MalformedBody) -> Response:
        rejected_count(request, 400)
        return error_response(400, "body", exc.reason)

    @app.exception_handler(BodyTooLarge)
    async def _large(request: Request, exc: BodyTooLarge) -> Response:
        return _too_large(request.app.state.settings.max_body_bytes)

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> Response:
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
        return error_response(exc.status, "X-API-Key", exc.reason, headers=headers)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> Response:
        if isinstance(exc, Conflict):
            return error_response(409, exc.field, exc.reason)
        if isinstance(exc, NotFound):
            return error_response(404, exc.field, exc.reason)
        if isinstance(exc, Invalid):
            return error_response(422, exc.field, exc.reason, extra={"problems": exc.problems})
        if isinstance(exc, Unavailable):
            return error_response(503, exc.field, exc.reason, headers={"Retry-After": "1"})
        return error_response(400, exc.field, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        rejected_count(request, 422)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] in ("body", "path", "query", "header"):
            where, loc = loc[0], loc[1:]
        else:
            where = "body"
        field = ".".join(loc) or where
        message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = "is not a field of this request"
        elif first.get("type") == "missing":
            message = "is required"
        elif first.get("type") == "json_invalid":
            return error_response(400, "body", "is not valid JSON")
        return error_response(422, field, message)
