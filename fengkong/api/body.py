"""Reading a request body under the size limit, and parsing it as JSON.

One implementation for every route: `limited` refuses a ``Content-Length`` over the
limit before anything is read, and counts a body without one as it streams;
`read_body` gathers it. The fast path (`fengkong.api.fastpath`) calls both for the
payment flow's two routes (and so do their FastAPI routes); `BodyLimit`, a pure
ASGI middleware (no per-request objects), applies `limited` to every other route.
A refusal is `BodyTooLarge` (413) or `MalformedBody` (400), answered by
`fengkong.api.errors.answer`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fengkong.api.encoding import loads
from fengkong.api.errors import BodyTooLarge, MalformedBody, answer
from fengkong.events import nesting_problem, scan_text


def limited(headers: list[tuple[bytes, bytes]], receive: Receive, limit: int) -> Receive:
    """`receive` for a request with these `headers`, held to `limit` bytes of body.

    Raises `BodyTooLarge` at once for a declared length over the limit (the HTTP
    parser ends the body at its ``Content-Length``, so such a body needs no count);
    a body without one is counted as it arrives."""
    for name, value in headers:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise MalformedBody("is not an integer", field="Content-Length") from None
            if declared > limit:
                raise BodyTooLarge(limit)
            return receive
    seen = 0

    async def counting() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counting


async def read_body(receive: Receive) -> bytes:
    """The whole body; `ClientDisconnect` if the caller leaves first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


def parse_json(body: bytes) -> Any:
    """`MalformedBody` (400) for an empty or malformed body; the message never quotes it."""
    if not body:
        raise MalformedBody("is empty; send one JSON object")
    return _parsed(body, nesting_problem(body))  # before the parser or any recursive walk


def parse_json_clear(body: bytes) -> tuple[Any, bool]:
    """`parse_json`, and whether the body's text shows no card number
    (`fengkong.events.text_shows_no_pan`): an event route passes that on to
    `fengkong.events.parse_event` as ``text_clear``, which then skips its walk of every
    value. The text is scanned once, in C, instead of the values one by one in Python,
    and the same pass serves the nesting check (`fengkong.pan.scan_text`)."""
    if not body:
        raise MalformedBody("is empty; send one JSON object")
    too_deep, text_clear = scan_text(body)
    return _parsed(body, too_deep), text_clear


def _parsed(body: bytes, too_deep: str | None) -> Any:
    """The JSON value of a non-empty `body` whose nesting check gave `too_deep`."""
    if too_deep is not None:
        raise MalformedBody(too_deep)
    try:
        return loads(body)
    except ValueError as exc:
        # orjson's message gives the position only (never the content)
        raise MalformedBody(f"is not valid JSON ({str(exc).split(':', 1)[-1].strip()})") from None


class BodyLimit:
    """`limited` on every HTTP request of the wrapped app (413/400 answered here when the
    declared length is refused; a streamed body's refusal is raised where it is read)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                receive = limited(scope["headers"], receive, self.limit)
            except (BodyTooLarge, MalformedBody) as exc:
                await send_response(send, answer(exc, getattr(scope["app"].state, "runtime", None)))
                return
        await self.app(scope, receive, send)


async def send_response(send: Send, response: Any) -> None:
    """Send a complete `Response` (headers and body already built) as two ASGI messages."""
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
