"""The fast layer never skips what a deployment registers on the app. A middleware
(here Starlette's CORSMiddleware) or an exception handler of its own makes start-up
fail, naming it, as any ASGI server sees it (the lifespan reports the failure, and
uvicorn does not serve); with the fast layer off (or telemetry on), the same
middleware runs for the payment flow's routes."""

from __future__ import annotations

import asyncio

import pytest
from api_fixtures import DECIDE_KEY, Served, payment, settings
from starlette.middleware.cors import CORSMiddleware

from fengkong.api.app import create_app
from fengkong.api.fastpath import FastLayer
from fengkong.events import EventRejected

CORS = (CORSMiddleware, {"allow_origins": ["https://shop.example"]})


def _startup(app) -> dict:
    """Run the app's lifespan start-up as a server would; the message it answers with."""
    sent: list[dict] = []
    queue = [{"type": "lifespan.startup"}]

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
        while not sent:
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except BaseException:
            pass

    asyncio.run(run())
    return sent[0]


def test_a_middleware_the_fast_layer_would_skip_fails_start_up_naming_it(redis_server):
    app = create_app(settings(redis_server.url, "tmw"))
    app.add_middleware(*CORS[:1], **CORS[1])
    message = _startup(app)
    assert message["type"] == "lifespan.startup.failed"
    assert "CORSMiddleware" in message["message"] and "fast_path=False" in message["message"]
    with pytest.raises(RuntimeError, match=r"did not start \(exit code 3\)"):  # uvicorn does not serve it
        with Served(settings(redis_server.url, "tmw"), middleware=(CORS,)):
            pass


def test_an_exception_handler_the_fast_layer_would_skip_fails_start_up_naming_it(redis_server):
    app = create_app(settings(redis_server.url, "tmw"))

    async def own(request, exc):  # pragma: no cover - never called
        raise AssertionError

    app.add_exception_handler(EventRejected, own)
    message = _startup(app)
    assert message["type"] == "lifespan.startup.failed"
    assert "own" in message["message"] and "EventRejected" in message["message"]


def test_the_service_as_built_starts_with_the_fast_layer_outermost(redis_server):
    app = create_app(settings(redis_server.url, "tmw"))
    assert _startup(app)["type"] == "lifespan.startup.complete"
    assert isinstance(app.middleware_stack, FastLayer)
    assert sorted(app.middleware_stack.routes) == ["/v1/decisions", "/v1/events"]
    assert app.runtime is app.state.runtime is not None  # what the fast layer reads (no failed lookup)
    app.state.runtime.close()


@pytest.mark.parametrize("fast_path, otel", [(False, False), (True, True)], ids=["fast-layer-off", "telemetry-on"])
def test_with_the_fast_layer_off_the_middleware_runs_for_the_payment_routes(redis_server, fast_path, otel):
    """Off by choice, or because telemetry is on (FastAPI's spans live in its stack)."""
    with Served(settings(redis_server.url, "tmwoff", otel=otel), fast_path=fast_path, middleware=(CORS,)) as api, \
            api.client(DECIDE_KEY) as c:
        c.headers["Origin"] = "https://shop.example"
        r = c.post("/v1/decisions", json=payment())
        assert r.status_code == 200 and r.json()["decision"] == "allow"
        assert r.headers["access-control-allow-origin"] == "https://shop.example"
        refused = c.post("/v1/events", json=payment())  # the decide key lacks report: refused, CORS still on
        assert refused.status_code == 403 and refused.headers["access-control-allow-origin"] == "https://shop.example"


@pytest.mark.parametrize("otel", [False, True], ids=["untraced", "telemetry-on"])
def test_an_http_request_skips_fastapis_call_only_when_it_has_nothing_to_do(redis_server, monkeypatch, otel):
    """`ServiceApp.__call__` hands an HTTP request straight to the fast layer; with telemetry
    on (no fast layer) FastAPI's ``__call__`` runs for it, spans and all."""
    import json

    from fastapi import FastAPI

    calls: list[str] = []
    original = FastAPI.__call__

    async def counting(self, scope, receive, send):  # FastAPI's own, counted
        calls.append(scope["type"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    app = create_app(settings(redis_server.url, "tmwcall", otel=otel))
    body = json.dumps(payment()).encode()
    sent: list[dict] = []

    async def run() -> None:
        async with app.router.lifespan_context(app):
            app.middleware_stack = app.build_middleware_stack()
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict:
                return messages.pop() if messages else {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/v1/decisions", "query_string": b"",
                     "root_path": "", "headers": [(b"x-api-key", DECIDE_KEY.encode()),
                                                  (b"content-type", b"application/json")]}
            await app(scope, receive, send)
            assert scope["app"] is app

    asyncio.run(run())
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["decision"] == "allow"
    assert calls == (["http"] if otel else [])
