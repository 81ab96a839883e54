"""Dependencies as `Annotated` aliases, so a route's signature says what it needs.

``RuntimeDep`` is the process's `Runtime` (built by the app's lifespan).
``AdminCaller`` authenticates the API key and checks its scope: 401 for a missing
or unknown key, 403 for a key without the scope (``admin`` implies every scope).
``ReaderCaller`` accepts ``decide`` or ``report``. The two hot routes (decisions,
events) call `authorize` directly: see `API_KEY_SECURITY`.
"""

from __future__ import annotations

from typing import Annotated, Awaitable, Callable

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from fengkong.api.config import Scope
from fengkong.api.security import Caller, KeyRing
from fengkong.api.state import Runtime

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="API key; `Authorization: Bearer <key>` is accepted too")


class AuthError(Exception):
    """401 (no or unknown key) or 403 (key lacks the scope); mapped by the app."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def authorize(request: Request, scopes: tuple[Scope, ...], header_key: str | None = None) -> Caller:
    """The caller if its key has one of `scopes`; `AuthError` (401/403) otherwise."""
    if header_key is None:
        header_key = request.headers.get("x-api-key")
    authorization = None if header_key else request.headers.get("authorization")
    return identify(request.app.state.runtime.keyring, header_key, authorization, scopes)


def identify(keyring: KeyRing, api_key: str | None, authorization: str | None, scopes: tuple[Scope, ...]) -> Caller:
    """The caller presenting `api_key` (or ``Authorization: Bearer <key>``) if its key has
    one of `scopes`; `AuthError` (401/403) otherwise."""
    if not api_key and authorization and authorization[:7].lower() == "bearer ":
        api_key = authorization[7:].strip()
    caller = keyring.identify(api_key or None)
    if caller is None:
        raise AuthError(401, "missing or unknown API key (send it in the X-API-Key header)")
    if not any(caller.allows(s) for s in scopes):
        raise AuthError(403, f"the key {caller.name!r} lacks the scope {' or '.join(s.value for s in scopes)}")
    return caller


def require_scope(*scopes: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that returns the caller if its key has one of `scopes`."""

    async def dependency(request: Request, key: Annotated[str | None, Security(api_key_header)] = None) -> Caller:
        return authorize(request, scopes, key)

    return dependency


#: For the two routes the payment flow calls on every payment (decisions, events):
#: they call `authorize` themselves instead of taking a dependency. Profiled here,
#: FastAPI's dependency resolution (the caller, and the header scheme under it)
#: took roughly 10% of a decision's worker CPU; this keeps their OpenAPI
#: security the same as the dependency would declare.
API_KEY_SECURITY = {"security": [{"APIKeyHeader": []}]}


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AdminCaller = Annotated[Caller, Depends(require_scope(Scope.ADMIN))]
ReaderCaller = Annotated[Caller, Depends(require_scope(Scope.DECIDE, Scope.REPORT))]
