"""POST /v1/events: outcome events (refund, chargeback, withdrawal, fraud_report,
settlement, decline) that update features and labels without a decision."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from fengkong.api import service
from fengkong.api.config import Scope
from fengkong.api.deps import API_KEY_SECURITY, authorize
from fengkong.api.encoding import dumps
from fengkong.api.errors import ERROR_RESPONSES, read_json
from fengkong.api.routes.decisions import EVENT_BODY
from fengkong.api.schemas import ErrorOut, OutcomeOut

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", response_model=None, openapi_extra=EVENT_BODY | API_KEY_SECURITY, summary="Report an outcome event",
             responses={200: {"model": OutcomeOut}, **ERROR_RESPONSES,
                        503: {"model": ErrorOut, "description": "Feature store down: not recorded, retry"}})
async def post_event(request: Request) -> Response:
    """Counted once per event_id (a retry reports ``duplicate: true``); chargebacks and
    fraud reports are also appended to the labels stream that model training reads."""
    t0 = time.perf_counter()
    caller = authorize(request, (Scope.REPORT,))
    data = await read_json(request)
    out = await service.report(rt=request.app.state.runtime, data=data, caller=caller, t0=t0)
    return Response(dumps(out), media_type="application/json")
