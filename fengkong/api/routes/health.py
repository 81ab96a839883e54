"""/healthz (the process answers), /readyz (Redis takes writes and rules are loaded), /metrics.

No key is needed: probes and scrapers call these. /metrics shows counts and rule
ids, no event data."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from fengkong.api.encoding import dumps
from fengkong.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness")
async def healthz() -> dict:
    return {"status": "ok", "checks": {}}


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": HealthOut}}, summary="Readiness")
async def readyz(request: Request) -> Response:
    rt = request.app.state.runtime
    problem = rt.redis_problem()  # None when Redis takes the decision's writes
    if problem is None:
        rt.breaker.succeeded()
    version = rt.rules.version
    checks = {"redis": problem or "ok", "rules": version or "not loaded",
              "models": rt.models.status, "failure_policy": rt.settings.failure_policy}
    ready = problem is None and version is not None
    return Response(dumps({"status": "ok" if ready else "unavailable", "checks": checks}),
                    status_code=200 if ready else 503, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    rt = request.app.state.runtime
    return Response(rt.metrics.render(), media_type=rt.metrics.content_type)
