"""POST /v1/events: outcome events (refund, chargeback, withdrawal, fraud_report,
settlement, decline) that update features and labels without a decision.

`FAST`, like POST /v1/decisions: the app's fast layer answers it, and the route
below documents it and gives the same answer through the same code."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from fengkong.api.body import parse_json_clear
from fengkong.api.config import Scope
from fengkong.api.deps import API_KEY_SECURITY
from fengkong.api.encoding import dumps
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.fastpath import FastRoute
from fengkong.api.routes.decisions import EVENT_BODY
from fengkong.api.schemas import ErrorOut, OutcomeOut
from fengkong.api.security import Caller
from fengkong.api.service import outcomes
from fengkong.api.state import Runtime

router = APIRouter(prefix="/v1/events", tags=["events"])


async def report_json(rt: Runtime, caller: Caller, body: bytes, t0: float) -> bytes:
    """The outcome's receipt for a JSON body, as JSON."""
    data, text_clear = parse_json_clear(body)
    return dumps(await outcomes.report(rt=rt, data=data, caller=caller, t0=t0, text_clear=text_clear))


FAST = FastRoute("/v1/events", (Scope.REPORT,), report_json)


@router.post("", response_model=None, openapi_extra=EVENT_BODY | API_KEY_SECURITY, summary="Report an outcome event",
             responses={200: {"model": OutcomeOut}, **ERROR_RESPONSES,
                        503: {"model": ErrorOut, "description": "Feature store down: not recorded, retry"}})
async def post_event(request: Request) -> Response:
    """Counted once per event_id (a retry reports ``duplicate: true``); chargebacks and
    fraud reports are also appended to the labels stream that model training reads."""
    t0 = time.perf_counter()
    payload = await FAST.answer(request.app.state.runtime, request.scope, request.receive, t0)
    return Response(payload, media_type="application/json")
