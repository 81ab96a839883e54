"""The console sub-application: its state, sessions, CSRF, roles, rendering, login.

`create_console(parent)` builds a FastAPI app that `fengkong.api.app.create_app`
mounts at ``/console``. The parent's runtime (Redis, rules, metrics, audit) is read
through `ConsoleState.runtime`; the accounts database is opened on first use.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fengkong.accounts import AccountError, Accounts, Role, UserInfo
from fengkong.api import errors
from fengkong.api.config import Settings
from fengkong.api.console.i18n import DEFAULT_LANGUAGE, LANGUAGES, translator
from fengkong.api.state import Runtime

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "fk_console"
SESSION_HOURS = 12
SECRET_FILE = "console-secret"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

#: what every console page may load: only itself (the SVG plots are inline, their styles too)
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 b"script-src 'self'; frame-src 'self'; frame-ancestors 'self'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class ConsoleError(Exception):
    """A refusal shown as an error page: `status`, and the `field` at fault."""

    def __init__(self, status: int, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status, self.field, self.reason = status, field, reason


class LoginRequired(Exception):
    """No valid session: a page redirects to the login form, an action gets 401."""


def secret_key(settings: Settings) -> str:
    """The key that signs session cookies: ``FENGKONG_CONSOLE_SECRET``, else a random
    key kept in ``<data_dir>/console-secret`` (mode 0600, created once; every worker
    and every restart reads the same one, so sessions survive a restart)."""
    explicit = os.environ.get("FENGKONG_CONSOLE_SECRET")
    if explicit:
        if len(explicit) < 32:
            raise ValueError("FENGKONG_CONSOLE_SECRET: shorter than 32 characters")
        return explicit
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # written whole to a private temporary file, then linked into place: several
        # workers may race here, one link wins and nobody ever reads a half-written key
        tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: the console's session key is shorter than 32 characters (delete the file "
                         "to make a new one)")
    return key


class LoginThrottle:
    """Refuses logins to a username after `limit` failures within `window_s` (per worker
    process), so a password cannot be guessed at the speed of the network. A success
    clears the count; the refusal answers before any hash is checked."""

    def __init__(self, limit: int = 5, window_s: float = 900.0) -> None:
        self.limit, self.window_s = limit, window_s
        self.failures: dict[str, list[float]] = {}

    def _recent(self, username: str, now: float) -> list[float]:
        kept = [t for t in self.failures.get(username, ()) if now - t < self.window_s]
        if kept:
            self.failures[username] = kept
        else:
            self.failures.pop(username, None)
        return kept

    def blocked_for(self, username: str) -> float:
        """Seconds until `username` may try again (0: now)."""
        now = time.monotonic()
        recent = self._recent(username, now)
        return self.window_s - (now - recent[0]) if len(recent) >= self.limit else 0.0

    def failed(self, username: str) -> None:
        if len(self.failures) > 10_000:  # bounded: forget the oldest names first
            self.failures.pop(next(iter(self.failures)))
        self.failures.setdefault(username, []).append(time.monotonic())

    def succeeded(self, username: str) -> None:
        self.failures.pop(username, None)


@dataclass
class ConsoleState:
    """What the console's handlers share: the parent app (its runtime), templates, accounts."""

    parent: FastAPI
    settings: Settings
    env: Environment
    _accounts: Accounts | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    @property
    def runtime(self) -> Runtime:
        return self.parent.state.runtime  # type: ignore[no-any-return]

    @property
    def accounts(self) -> Accounts:
        """The accounts of the service's database (migrated on first use)."""
        if self._accounts is None:
            from fengkong.db import migrate
            from fengkong.db.engine import make_engine
            from fengkong.db.url import database_url

            engine = make_engine(database_url(self.settings.database_url, Path(self.settings.data_dir)))
            migrate.upgrade(engine)
            self._accounts = Accounts(engine)
        return self._accounts

    def cases_engine(self) -> Any:
        """The engine of the cases tables (the same database), or None in a build without
        `fengkong.cases`."""
        own = getattr(self.runtime, "cases", None)
        if own is not None:
            return own.engine
        try:
            import fengkong.cases.models  # noqa: F401
        except ImportError:
            return None
        return self.accounts.engine

    def close(self) -> None:
        if self._accounts is not None:
            self._accounts.engine.dispose()


def state(request: Request) -> ConsoleState:
    return request.app.state.console  # type: ignore[no-any-return]


@dataclass
class Page:
    """Who asks, in which language: what every handler gets from `viewer`, `acting`..."""

    request: Request
    user: UserInfo
    lang: str
    form: dict[str, str] = field(default_factory=dict)

    @property
    def console(self) -> ConsoleState:
        return state(self.request)

    @property
    def rt(self) -> Runtime:
        return self.console.runtime

    @property
    def actor(self) -> str:
        """The name audits carry: ``user:<username>`` (API keys are audited by their name)."""
        return f"user:{self.user.username}"

    def audit(self, action: str, detail: dict[str, Any]) -> None:
        """One change-audit record with this user as the actor."""
        rt = self.rt
        rt.audit.change(rt.client, actor=self.actor, action=action, version=rt.rules.version,
                        detail={"via": "console", **detail})

    def render(self, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        return render(self.request, template, http_status=http_status, user=self.user, **context)


def base_url(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def language(request: Request) -> str:
    lang = request.session.get("lang")
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first need; the login form gets one too)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def render(request: Request, template: str, *, http_status: int = 200, user: UserInfo | None = None,
           **context: Any) -> HTMLResponse:
    """A page of the console, in the session's language, with its CSRF token."""
    lang = language(request)
    html = state(request).env.get_template(template).render(
        t=translator(lang), lang=lang, base=base_url(request), user=user, csrf=csrf_token(request),
        path=request.url.path, Role=Role, **context)
    return HTMLResponse(html, status_code=http_status)


def current_user(request: Request) -> UserInfo | None:
    """The logged-in user: the session's user id, still active, with the password it logged in with."""
    uid, stamp = request.session.get("uid"), request.session.get("stamp")
    if not isinstance(uid, int) or not stamp:
        return None
    user = state(request).accounts.get(uid)
    if user is None or not user.active or not hmac.compare_digest(user.stamp, str(stamp)):
        request.session.clear()
        return None
    return user


def viewer(request: Request) -> Page:
    """A dependency for pages: any logged-in user (LoginRequired otherwise)."""
    user = current_user(request)
    if user is None:
        raise LoginRequired()
    return Page(request, user, language(request))


def acting(role: Role) -> Callable[[Request], Awaitable[Page]]:
    """A dependency for actions (POST): a logged-in user, the session's CSRF token in the
    form (or the X-CSRF-Token header), and a role that includes `role`; 401 / 403 otherwise."""

    async def dependency(request: Request) -> Page:
        user = current_user(request)
        if user is None:
            raise ConsoleError(401, "session", "not logged in (or the session ended)")
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        check_csrf(request, form.get(CSRF_FIELD))
        if not user.can(role):
            raise ConsoleError(403, "role", f"{user.role.value} may not do this (needs {role.value})")
        return Page(request, user, language(request), form)

    return dependency


def check_csrf(request: Request, sent: str | None) -> None:
    expected = request.session.get("csrf")
    sent = sent or request.headers.get(CSRF_HEADER)
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise ConsoleError(403, CSRF_FIELD, "missing or wrong CSRF token (reload the page and try again)")


class LazySessions:
    """Starlette's `SessionMiddleware` (cookies signed with itsdangerous), built on the
    first request: its key may have to be created in the data directory, which building
    the app must not do (nothing is created before the service starts)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.inner: SessionMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inner is None:
            self.inner = SessionMiddleware(self.app, secret_key=secret_key(self.settings),
                                           session_cookie=SESSION_COOKIE, max_age=SESSION_HOURS * 3600,
                                           path="/console", same_site="strict")
        await self.inner(scope, receive, send)


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every console answer (static files included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in SECURITY_HEADERS if h[0] not in names]
            await send(message)

        await self.app(scope, receive, wrapped)


async def _error(request: Request, exc: Exception) -> Response:
    """Refusals as a page naming the field (htmx requests get the fragment alone)."""
    if isinstance(exc, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{base_url(request)}/login?next={quote(target)}", status_code=303)
    if isinstance(exc, ConsoleError):
        status, field_, reason = exc.status, exc.field, exc.reason
    elif isinstance(exc, AccountError):
        status, field_, reason = exc.status, exc.field, exc.message
    else:
        answered = errors.answer(exc, None)
        import json

        body = json.loads(bytes(answered.body))
        status, field_, reason = answered.status_code, body.get("field"), body.get("detail", "")
        if field_ and reason.startswith(f"{field_}: "):
            reason = reason[len(field_) + 2:]
    user = None
    try:
        user = current_user(request)
    except Exception:  # the accounts database itself may be what failed
        log.exception("console: no user for the error page")
    if request.headers.get("hx-request"):  # htmx: the message alone, into the page's #flash
        answer = render(request, "error_fragment.html", http_status=status, user=user, status_code=status,
                        field=field_, reason=reason)
        answer.headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML", "HX-Reselect": ".error"})
        return answer
    return render(request, "error.html", http_status=status, user=user, status_code=status, field=field_,
                  reason=reason)


def create_console(parent: FastAPI, settings: Settings) -> FastAPI:
    """The console app, to mount at ``/console`` on `parent` (the service)."""
    from fengkong.api.console import pages_admin, pages_cases, pages_rules, pages_view

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    app = FastAPI(title="fengkong console", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = ConsoleState(parent=parent, settings=settings, env=env)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(login_router())
    for module in (pages_view, pages_cases, pages_rules, pages_admin):
        app.include_router(module.router)
    own: tuple[type[Exception], ...] = (LoginRequired, ConsoleError, AccountError)
    for exc_class in own:
        app.add_exception_handler(exc_class, _error)
    for exc_class in errors.HANDLED:  # not Exception: a fault goes up to the service's 500 (logged)
        if exc_class is not Exception:
            app.add_exception_handler(exc_class, _error)
    app.add_middleware(LazySessions, settings=settings)
    app.add_middleware(SecurityHeaders)
    return app


def login_router() -> Any:
    """GET/POST /login, POST /logout, GET /lang/{code}."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "") -> HTMLResponse:
        return render(request, "login.html", next=next)

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        check_csrf(request, form.get(CSRF_FIELD))
        username, password = form.get("username", "").strip(), form.get("password", "")
        console = state(request)
        wait = console.throttle.blocked_for(username)
        if wait > 0:
            raise ConsoleError(429, "username", f"too many failed logins: try again in {wait / 60:.0f} minutes")
        user = await run_in_threadpool(lambda: console.accounts.verify(username=username, password=password))
        rt = console.runtime
        if user is None:
            console.throttle.failed(username)
            rt.audit.change(rt.client, actor=f"user:{username[:64]}", action="console.login_failed",
                            version=rt.rules.version, detail={"via": "console"})
            return render(request, "login.html", http_status=401, failed=True, next=form.get("next", ""))
        console.throttle.succeeded(username)
        lang = request.session.get("lang")
        request.session.clear()  # a new session (and CSRF token) on login: no fixation
        request.session.update({"uid": user.id, "stamp": user.stamp, "csrf": secrets.token_urlsafe(24)})
        if lang:
            request.session["lang"] = lang
        rt.audit.change(rt.client, actor=f"user:{user.username}", action="console.login",
                        version=rt.rules.version, detail={"via": "console", "role": user.role.value})
        target = form.get("next", "")
        if not target.startswith(base_url(request) + "/") or target.startswith("//"):
            target = f"{base_url(request)}/"
        return RedirectResponse(target, status_code=303)

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        check_csrf(request, form.get(CSRF_FIELD))
        user = current_user(request)
        if user is not None:
            rt = state(request).runtime
            rt.audit.change(rt.client, actor=f"user:{user.username}", action="console.logout",
                            version=rt.rules.version, detail={"via": "console"})
        request.session.clear()
        return RedirectResponse(f"{base_url(request)}/login", status_code=303)

    @router.get("/lang/{code}")
    async def set_language(request: Request, code: str, next: str = "") -> Response:
        if code not in LANGUAGES:
            raise ConsoleError(404, "lang", f"must be one of {', '.join(LANGUAGES)}")
        request.session["lang"] = code
        target = next if next.startswith(base_url(request) + "/") and not next.startswith("//") \
            else f"{base_url(request)}/"
        return RedirectResponse(target, status_code=303)

    return router
