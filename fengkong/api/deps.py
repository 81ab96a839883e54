"""Dependencies as `Annotated` aliases, so a route's signature says what it needs.

``RuntimeDep`` is the process's `Runtime` (built by the app's lifespan).
``AdminCaller`` authenticates the API key and checks its scope: 401 for a missing
or unknown key, 403 for a key without the scope (``admin`` implies every scope).
``ReaderCaller`` accepts ``decide`` or ``report``; ``AnalystCaller`` ``analyst`` (the review queue). Every key check, the fast path's
included (`fengkong.api.fastpath`), is `identify` on the request's raw headers.
"""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Callable, Iterable

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from fengkong.api.config import Scope
from fengkong.api.errors import AuthError
from fengkong.api.security import Caller, KeyRing
from fengkong.api.state import Runtime

__all__ = ["AdminCaller", "AnalystCaller", "API_KEY_SECURITY", "AuthError", "ReaderCaller", "RuntimeDep", "authorize", "identify",
           "require_scope"]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="API key; `Authorization: Bearer <key>` is accepted too")


def get_runtime(request: Request) -> Runtime:
    """The process's runtime, built by the app's lifespan."""
    return request.app.state.runtime  # type: ignore[no-any-return]


def identify(keyring: KeyRing, headers: Iterable[tuple[bytes, bytes]], scopes: tuple[Scope, ...]) -> Caller:
    """The caller presenting ``X-API-Key`` (or ``Authorization: Bearer <key>``) among the
    raw ASGI `headers` if its key has one of `scopes`; `AuthError` (401/403) otherwise.
    The first of each header counts, as with Starlette's ``Headers.get``."""
    api_key = authorization = None
    for name, value in headers:
        if name == b"x-api-key":
            if api_key is None:
                api_key = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    if not api_key and authorization and authorization[:7].lower() == "bearer ":
        api_key = authorization[7:].strip()
    caller = keyring.identify(api_key or None)
    if caller is None:
        raise AuthError(401, "missing or unknown API key (send it in the X-API-Key header)")
    for scope in scopes:
        if caller.allows(scope):
            return caller
    raise AuthError(403, f"the key {caller.name!r} lacks the scope {' or '.join(s.value for s in scopes)}")


def authorize(request: Request, scopes: tuple[Scope, ...]) -> Caller:
    """`identify` for a Starlette request."""
    return identify(request.app.state.runtime.keyring, request.scope["headers"], scopes)


def require_scope(*scopes: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that returns the caller if its key has one of `scopes`.

    The ``Security`` parameter only documents the header in OpenAPI; `identify` reads it."""

    async def dependency(request: Request, key: Annotated[str | None, Security(api_key_header)] = None) -> Caller:
        return authorize(request, scopes)

    return dependency


#: The OpenAPI security of the payment flow's two routes, which check the key without
#: a dependency (their answer is `fengkong.api.fastpath.FastRoute.answer`).
API_KEY_SECURITY: dict[str, Any] = {"security": [{"APIKeyHeader": []}]}


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AdminCaller = Annotated[Caller, Depends(require_scope(Scope.ADMIN))]
ReaderCaller = Annotated[Caller, Depends(require_scope(Scope.DECIDE, Scope.REPORT))]
AnalystCaller = Annotated[Caller, Depends(require_scope(Scope.ANALYST))]
