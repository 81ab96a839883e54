"""The FastAPI application: `create_app(settings) -> FastAPI`.

Nothing is created at import. The lifespan builds the process's `Runtime` (Redis
client, feature and list stores, live rules, models, metrics, audit) and closes it
on shutdown; `fengkong serve` runs one app per uvicorn worker process through
`create_app_from_env` (a factory), each reading the same ``FENGKONG_*`` environment.

docs/api.md is the reference: endpoints, scopes, error shape, degraded mode,
idempotency, configuration.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from fengkong.api import errors, fastpath
from fengkong.api.body import BodyLimit
from fengkong.api.console import create_console
from fengkong.api.config import Settings, get_settings
from fengkong.api.fastpath import FastLayer, FastRoute
from fengkong.api.routes import cases, decisions, events, health, lists, merchants, rules, webhooks
from fengkong.api.state import build_runtime, describe
from fengkong.events import Event

log = logging.getLogger("fengkong.api")

#: The collector's youngest-generation threshold in a serving process (Python's default
#: is 700). With 32 decisions in flight, each holding its features, record and commands
#: until answered, a young collection at 700 ran every few dozen decisions and walked what
#: they all held; at this threshold it runs a few times per thousand, each run costing a
#: few times more (docs/benchmarks.md, s8-edge). The older generations keep Python's.
YOUNG_GC_THRESHOLD = 10_000

DESCRIPTION = """\
fengkong (风控) decision service: a payment event in, allow / challenge / review / deny out,
with the rules that fired and the values they read.

Authenticate with `X-API-Key` (scopes: `decide`, `report`, `analyst`, `admin`). Webhooks: docs/webhooks.md. Errors are
`{"detail": "<field>: <reason>", "field": "<field>"}` and never repeat the refused value.
"""


class ServiceApp(FastAPI):
    """FastAPI, with `FastLayer` (the payment flow's two routes) as the outermost layer
    of its middleware stack when it is built with `fast_routes`.

    Starlette builds the stack on the first ASGI call, the lifespan's. If the fast
    layer would skip anything registered on the app (`fastpath.skipped`), the stack is
    built without it (nothing is skipped, ever) and the lifespan refuses to start,
    naming what it found."""

    def __init__(self, *, fast_routes: Sequence[FastRoute] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_routes = tuple(fast_routes)
        self.fast_refusal: str | None = None
        #: the lifespan's runtime, also ``state.runtime``: the fast layer reads it here, where
        #: Starlette's `State` finds an attribute only after a failed lookup (an AttributeError
        #: raised and caught on every request)
        self.runtime: Any = None
        telemetry = kwargs.get("telemetry") or {}
        #: no FastAPI telemetry to run: an HTTP request may go straight to the fast layer
        self.untraced = all(telemetry.get(k) is False for k in ("tracing", "metrics", "logs"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request goes straight to the fast layer when the stack is one and nothing
        FastAPI's and Starlette's ``__call__`` do for it is needed (a root path, telemetry):
        what they would do then is the one line ``scope["app"] = self``, and their two
        coroutines ran on every decision. Anything else goes through them."""
        stack = self.middleware_stack
        if type(stack) is FastLayer and scope["type"] == "http" and self.untraced and not self.root_path:
            scope["app"] = self
            await stack(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.fast_routes:
            return stack
        found = fastpath.skipped(self)
        if found:
            paths = " and ".join(f"POST {r.path}" for r in self.fast_routes)
            self.fast_refusal = (f"{paths} are answered before the app's middleware (fengkong.api.fastpath), "
                                 f"which would skip: {'; '.join(found)}. Build the app with "
                                 "create_app(..., fast_path=False) to serve them through the middleware.")
            return stack
        return FastLayer(stack, self, self.fast_routes)


def create_app(settings: Settings | None = None, *, fast_path: bool = True) -> ServiceApp:
    """Build the app; its clients are created when it starts (lifespan), not here.

    `fast_path` answers POST /v1/decisions and /v1/events in `FastLayer`; it is off with
    telemetry on (FastAPI's spans live in its stack), and should be turned off by a
    deployment that adds middleware of its own."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        refusal = getattr(app, "fast_refusal", None)
        if refusal:
            raise RuntimeError(refusal)
        rt = build_runtime(settings)
        app.state.runtime = rt
        if isinstance(app, ServiceApp):
            app.runtime = rt
        rt.hooks.start()  # this worker's webhook delivery loop (docs/webhooks.md)
        # What start-up built (rules, models, IP data) lives as long as the process:
        # frozen, the collector stops re-scanning it (see docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
        log.info("fengkong service ready: %s", describe(rt))
        try:
            yield
        finally:
            try:
                app.state.console.close()
                await rt.hooks.stop()
            finally:
                rt.close()

    # FastAPI's native OpenTelemetry asks the global OTel providers on every request
    # whether anyone listens: off unless the deployment turns it on (FENGKONG_OTEL).
    otel = settings.otel
    fast_routes = (decisions.FAST, events.FAST) if fast_path and not otel else ()
    app = ServiceApp(fast_routes=fast_routes, title="fengkong decision service", version="1",
                     description=DESCRIPTION, lifespan=lifespan,
                     telemetry={"tracing": otel, "metrics": otel, "logs": otel})
    app.state.settings = settings
    for module in (decisions, events, merchants, lists, rules, cases, webhooks, health):
        app.include_router(module.router)
    errors.install(app)
    # The console is a sub-application with its own middleware (sessions): the fast
    # layer never sees it, and refuses nothing on its account (see fengkong.api.console).
    console = create_console(app, settings)
    app.mount("/console", console)
    app.state.console = console.state.console
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _document_event(app)
    return app


def create_app_from_env() -> ServiceApp:
    """uvicorn factory for `fengkong serve` workers: settings from ``FENGKONG_*``."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app(settings)


def _document_event(app: FastAPI) -> None:
    """Add the event contract (`fengkong.events.Event`) to the OpenAPI components:
    the routes that take an event parse the raw body themselves (see routes/decisions)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event_schema.pop("$defs", {}))
        components["Event"] = event_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
