"""POST /v1/decisions and GET /v1/decisions/{decision_id}.

The POST body is read raw and parsed by the event contract (`parse_event`), not by
FastAPI's binding: FastAPI's 422 echoes input values, and a card number must never
be echoed. Its OpenAPI schema is attached by `fengkong.api.app` (``Event``). The
POST is `FAST`: the app's fast layer answers it (`fengkong.api.fastpath`), and the
route below, which documents it, gives the same answer through the same code.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from fengkong.api.body import parse_json_clear
from fengkong.api.config import Scope
from fengkong.api.deps import API_KEY_SECURITY, ReaderCaller, RuntimeDep
from fengkong.api.encoding import dumps
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.fastpath import FastRoute
from fengkong.api.schemas import DecisionOut, DecisionRecordOut
from fengkong.api.security import Caller
from fengkong.api.service import decisions
from fengkong.api.state import Runtime

router = APIRouter(prefix="/v1/decisions", tags=["decisions"])

EVENT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Event"}}}}}


async def decide_json(rt: Runtime, caller: Caller, body: bytes, t0: float) -> bytes:
    """The decision for a JSON body, as JSON."""
    data, text_clear = parse_json_clear(body)
    return dumps(await decisions.decide(rt=rt, data=data, caller=caller, t0=t0, text_clear=text_clear))


FAST = FastRoute("/v1/decisions", (Scope.DECIDE,), decide_json)


@router.post("", response_model=None, responses={200: {"model": DecisionOut}, **ERROR_RESPONSES},
             openapi_extra=EVENT_BODY | API_KEY_SECURITY,
             summary="Decide one payment, signup, login or card_bind event")
async def post_decision(request: Request) -> Response:
    """Returns allow / challenge / review / deny with the rules that fired. The same
    event_id again returns the stored decision (``duplicate: true``); with a different
    body it gets 409. Within the deadline whatever Redis or the models do."""
    t0 = time.perf_counter()
    payload = await FAST.answer(request.app.state.runtime, request.scope, request.receive, t0)
    return Response(payload, media_type="application/json")


@router.get("/{decision_id}", response_model=DecisionRecordOut, responses=ERROR_RESPONSES,
            summary="A stored decision with its explanation")
async def get_decision(decision_id: str, rt: RuntimeDep, caller: ReaderCaller) -> Response:
    """The event, the features the rule set read, enforced and shadow rules that fired,
    thresholds, version. Degraded decisions are not stored (see the audit file)."""
    record = await decisions.get_decision(rt=rt, decision_id=decision_id)
    return Response(dumps(record), media_type="application/json")
