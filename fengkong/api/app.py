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
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from fengkong.api import errors
from fengkong.api.config import Settings, get_settings
from fengkong.api.hot import HotRoute
from fengkong.api.routes import decisions, events, health, lists, merchants, rules
from fengkong.api.state import build_runtime, describe
from fengkong.events import Event

log = logging.getLogger("fengkong.api")

DESCRIPTION = """\
fengkong (风控) decision service: a payment event in, allow / challenge / review / deny out,
with the rules that fired and the values they read.

Authenticate with `X-API-Key` (scopes: `decide`, `report`, `admin`). Errors are
`{"detail": "<field>: <reason>", "field": "<field>"}` and never repeat the refused value.
"""


class ServiceApp(FastAPI):
    """FastAPI, with the payment flow's two routes answered before its middleware
    stack (`fengkong.api.hot`); everything else goes through FastAPI as usual."""

    def __init__(self, *, hot_routes: dict[str, HotRoute], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot_routes = hot_routes  # path -> route, POST only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.hot_routes.get(scope["path"])
            if route is not None:
                scope["app"] = self
                await route(self, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Build the app; its clients are created when it starts (lifespan), not here."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = build_runtime(settings)
        app.state.runtime = rt
        # What start-up built (rules, models, IP data: ~10^5 objects) lives as long as
        # the process; frozen, the collector stops re-scanning it. Measured: a full
        # collection took ~60 ms before the freeze (the service's p99 under load
        # went from 112 to 22 ms) and ~0 after.
        gc.collect()
        gc.freeze()
        log.info("fengkong service ready: %s", describe(rt))
        try:
            yield
        finally:
            rt.close()

    # FastAPI's native OpenTelemetry asks the global OTel providers on every request
    # whether anyone listens (~3 us of a decision's worker CPU with none configured):
    # off unless the deployment turns it on (FENGKONG_OTEL).
    otel = settings.otel
    # With telemetry on, every request goes through FastAPI's instrumented stack (the
    # hot routes skip it, and their spans would be missing).
    hot_routes = {} if otel else {"/v1/decisions": decisions.HOT, "/v1/events": events.HOT}
    app = ServiceApp(hot_routes=hot_routes, title="fengkong decision service", version="1", description=DESCRIPTION,
                     lifespan=lifespan, telemetry={"tracing": otel, "metrics": otel, "logs": otel})
    app.state.settings = settings
    for module in (decisions, events, merchants, lists, rules, health):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, limit=settings.max_body_bytes)
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
