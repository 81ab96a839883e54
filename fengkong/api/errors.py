"""Refusals and how each is answered: the one mapping from an exception to its error answer.

Every error body is ``{"detail": "<field>: <reason>", "field": "<field>"}``. Values
are never repeated back: FastAPI's own 422 includes the offending ``input``, which
could be a card number, so its handler is replaced by one that keeps only the
location and the message.

`answer` is the mapping. The FastAPI routes reach it through the handlers `install`
registers (all of them are `handle`), the fast path (`fengkong.api.fastpath`) calls
it directly: both give the same answer to the same exception. Caller errors get a
4xx; anything else is a 500 with no detail of the fault (it is logged with its
traceback). The failure policy (degraded answers) is not here: only a dependency's
fault reaches it, inside the decision service (`fengkong.api.service.decisions`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from fengkong.api.encoding import dumps
from fengkong.api.schemas import ErrorOut
from fengkong.events import EventRejected

if TYPE_CHECKING:
    from fengkong.api.state import Runtime

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed JSON"},
    401: {"model": ErrorOut, "description": "Missing or unknown API key"},
    403: {"model": ErrorOut, "description": "The key lacks the scope"},
    409: {"model": ErrorOut, "description": "event_id already used with a different body"},
    413: {"model": ErrorOut, "description": "Body larger than the configured limit"},
    422: {"model": ErrorOut, "description": "A field is invalid; `field` names it"},
    500: {"model": ErrorOut, "description": "A fault of the service (logged); not the caller's error"},
}


# --- the service's refusals ---------------------------------------------------------------------
class ServiceError(Exception):
    """Root of the service's refusals; ``field`` names what is at fault."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class Conflict(ServiceError):
    """The event_id was used before with a different body (or for another kind of request)."""


class NotFound(ServiceError):
    """No such decision, list or merchant record."""


class Invalid(ServiceError):
    """A well-formed request the service cannot act on (e.g. a candidate rule set that does not load)."""

    def __init__(self, field: str | None, reason: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(field, reason)
        self.problems = problems or []


class Unavailable(ServiceError):
    """A dependency is down and the request cannot be answered by a policy (retry later)."""


class AuthError(Exception):
    """401 (no or unknown key) or 403 (key lacks the scope)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyTooLarge(HTTPException):
    """The body passed the configured limit (413), by its Content-Length or as it streamed.

    An `HTTPException` because FastAPI turns any other exception raised while it reads
    a body for a route's model into a 400; this one it lets through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"larger than {limit} bytes")
        self.limit = limit


class MalformedBody(Exception):
    """The body (or its Content-Length) cannot be read as what the route takes (400)."""

    def __init__(self, reason: str, field: str = "body") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# --- the mapping --------------------------------------------------------------------------------
def error_response(status: int, field: str | None, reason: str, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> Response:
    """An error answer in the service's one shape."""
    body: dict[str, Any] = {"detail": f"{field}: {reason}" if field else reason, "field": field}
    if extra:
        body.update(extra)
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def answer(exc: Exception, rt: Runtime | None) -> Response:
    """The answer to `exc`: its 4xx when it is the caller's error, else a 500 (logged).

    `rt` (absent before start-up) counts the refusals that reach no feature."""
    if isinstance(exc, EventRejected):
        _rejected(rt, 422)
        return error_response(422, exc.field, exc.reason)
    if isinstance(exc, MalformedBody):
        _rejected(rt, 400)
        return error_response(400, exc.field, exc.reason)
    if isinstance(exc, BodyTooLarge):
        return error_response(413, "body", f"is larger than the limit of {exc.limit} bytes")
    if isinstance(exc, AuthError):
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
        return error_response(exc.status, "X-API-Key", exc.reason, headers=headers)
    if isinstance(exc, ServiceError):
        if isinstance(exc, Conflict):
            return error_response(409, exc.field, exc.reason)
        if isinstance(exc, NotFound):
            return error_response(404, exc.field, exc.reason)
        if isinstance(exc, Invalid):
            return error_response(422, exc.field, exc.reason, extra={"problems": exc.problems})
        if isinstance(exc, Unavailable):
            return error_response(503, exc.field, exc.reason, headers={"Retry-After": "1"})
        return error_response(400, exc.field, exc.reason)
    if isinstance(exc, RequestValidationError):
        _rejected(rt, 422)
        return _validation(exc)
    log.error("request failed: %s", type(exc).__name__, exc_info=exc)
    return error_response(500, None, "internal error (logged); not an error of the request")


def _rejected(rt: Runtime | None, status: int) -> None:
    if rt is not None:
        rt.metrics.rejected.labels(str(status)).inc()


def _validation(exc: RequestValidationError) -> Response:
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


#: the exceptions `answer` maps (Exception last: Starlette gives it to its outermost middleware)
HANDLED: tuple[type[Exception], ...] = (EventRejected, MalformedBody, BodyTooLarge, AuthError, ServiceError,
                                        RequestValidationError, Exception)


async def handle(request: Request, exc: Exception) -> Response:
    """The app's exception handler for every class in `HANDLED`: `answer`."""
    return answer(exc, getattr(request.app.state, "runtime", None))


def install(app: FastAPI) -> None:
    """Answer the service's refusals (and any other fault, as a 500) on this app through `answer`."""
    for cls in HANDLED:
        app.add_exception_handler(cls, handle)
