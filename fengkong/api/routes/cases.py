"""/v1/cases: the review queue. List with filters, read, claim, resolve (one or many),
reopen, and the queues' SLA ages. Scope ``analyst`` (``admin`` has it too); the acting
analyst is the key's name. docs/cases.md describes the life cycle and the labels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fengkong.api.deps import AnalystCaller, RuntimeDep
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.schemas import (
    BulkResolveOut,
    CaseBulkResolveIn,
    CaseDetailOut,
    CaseListOut,
    CaseReopenIn,
    CaseResolveIn,
    QueueOut,
)
from fengkong.api.service.cases import call, service

router = APIRouter(prefix="/v1/cases", tags=["cases"])
CaseId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The case's id")]
RESPONSES = {**ERROR_RESPONSES, 404: {"model": ERROR_RESPONSES[422]["model"], "description": "No such case"},
             409: {"model": ERROR_RESPONSES[422]["model"], "description": "The change does not apply to the "
                   "case's status (the message says why)"},
             503: {"model": ERROR_RESPONSES[422]["model"], "description": "Cases database or feature store "
                   "unavailable; nothing changed, retry"}}


@router.get("", response_model=CaseListOut, responses=RESPONSES, summary="Cases, highest priority first")
async def list_cases(
    rt: RuntimeDep, caller: AnalystCaller,
    status: Annotated[str | None, Query(description="open, claimed or resolved")] = None,
    queue: str | None = None,
    merchant: Annotated[str | None, Query(description="a decision of the case was at this merchant")] = None,
    rule: Annotated[str | None, Query(description="this rule fired in a decision of the case")] = None,
    min_age_minutes: Annotated[float | None, Query(ge=0, description="opened at least this long ago")] = None,
    max_age_minutes: Annotated[float | None, Query(ge=0, description="opened at most this long ago")] = None,
    assignee: str | None = None,
    entity_kind: Annotated[str | None, Query(description="card, user or merchant")] = None,
    entity_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    return await call(rt, service.list_cases, status=status, queue=queue, merchant=merchant, rule=rule,
                      min_age_minutes=min_age_minutes, max_age_minutes=max_age_minutes, assignee=assignee,
                      entity_kind=entity_kind, entity_id=entity_id, limit=limit, offset=offset)


@router.get("/queues", response_model=list[QueueOut], responses=RESPONSES, summary="Open counts and SLA ages")
async def queues(rt: RuntimeDep, caller: AnalystCaller) -> list[dict]:
    return await call(rt, service.queues)


@router.post("/resolve", response_model=BulkResolveOut, responses=RESPONSES, summary="Resolve many cases")
async def bulk_resolve(body: CaseBulkResolveIn, rt: RuntimeDep, caller: AnalystCaller) -> dict:
    """Each case is resolved on its own; the ones that cannot be (claimed by another
    analyst, resolved already, unknown) are listed in ``refused``."""
    return await call(rt, service.bulk_resolve, case_ids=body.case_ids, actor=caller.name,
                      disposition=body.disposition, note=body.note)


@router.get("/{case_id}", response_model=CaseDetailOut, responses=RESPONSES, summary="A case, its decisions "
            "and history")
async def get_case(case_id: CaseId, rt: RuntimeDep, caller: AnalystCaller) -> dict:
    return await call(rt, service.get_case, case_id=case_id)


@router.post("/{case_id}/claim", response_model=CaseDetailOut, responses=RESPONSES, summary="Claim an open case")
async def claim(case_id: CaseId, rt: RuntimeDep, caller: AnalystCaller) -> dict:
    return await call(rt, service.claim, case_id=case_id, actor=caller.name)


@router.post("/{case_id}/resolve", response_model=CaseDetailOut, responses=RESPONSES,
             summary="Resolve as fraud, legit or needs_info")
async def resolve(case_id: CaseId, body: CaseResolveIn, rt: RuntimeDep, caller: AnalystCaller) -> dict:
    """``fraud`` records a fraud_report for each payment of the case (the features count
    it at once), ``legit`` a legit_confirmed label; both go to the labels stream."""
    return await call(rt, service.resolve, case_id=case_id, actor=caller.name, disposition=body.disposition,
                      note=body.note)


@router.post("/{case_id}/reopen", response_model=CaseDetailOut, responses=RESPONSES, summary="Reopen a resolved case")
async def reopen(case_id: CaseId, rt: RuntimeDep, caller: AnalystCaller, body: CaseReopenIn | None = None) -> dict:
    return await call(rt, service.reopen, case_id=case_id, actor=caller.name, note=body.note if body else None)
