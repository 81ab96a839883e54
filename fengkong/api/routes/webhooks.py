"""/v1/webhooks: subscriptions to the service's events, their delivery stats and dead
letters (``admin`` scope). docs/webhooks.md says what a receiver gets and how it
checks the signature."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fengkong.api.deps import AdminCaller, RuntimeDep
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.schemas import refuse_pan
from fengkong.api.service import webhooks as service
from fengkong.webhooks import KINDS, check_kinds, check_url

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class SubscriptionIn(BaseModel):
    """A new subscription: where to POST, and which events."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http or https URL the events are POSTed to", max_length=2048)
    kinds: list[str] = Field(description=f"Event kinds: {', '.join(KINDS)}", min_length=1, max_length=len(KINDS))
    active: bool = Field(default=True, description="Inactive subscriptions get no new events")
    description: str | None = Field(default=None, max_length=200)

    _url = field_validator("url")(lambda v: check_url(v))
    _no_pan = field_validator("description")(lambda v: refuse_pan(v))
    _kinds = field_validator("kinds")(lambda v: check_kinds(v))


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool = Field(description="false pauses the subscription (queued deliveries go on), true resumes it")


class StatsOut(BaseModel):
    delivered: int = Field(description="Deliveries a receiver answered with 2xx")
    failed: int = Field(description="Failed attempts (non-2xx, refused, timed out), the last ones included")
    dead_lettered: int = Field(description="Deliveries that ran out of attempts")
    dead_letters: int = Field(description="Dead letters held now (redrive empties them)")
    last_status: int | None = Field(description="HTTP status of the last attempt (0: no answer)")
    last_error: str | None
    last_attempt_at: float | None = Field(description="Unix time of the last attempt")


class SubscriptionOut(BaseModel):
    id: str
    url: str
    kinds: list[str]
    active: bool
    description: str | None = None
    created_at: str
    stats: StatsOut
    secret: str | None = Field(default=None, description="Only in the answer to the creation: keep it, it signs "
                               "every delivery (X-Fengkong-Signature)")


class DeadLetterOut(BaseModel):
    id: str = Field(description="The dead letter's id (for a redrive of some)")
    delivery_id: str = Field(description="X-Fengkong-Delivery of its attempts")
    event_id: str
    kind: str
    attempts: int
    last_status: int | None
    last_error: str | None
    dead_at: float
    body: dict[str, Any]


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=10_000, description="Dead-letter ids; omitted = all")


class RedriveOut(BaseModel):
    subscription_id: str
    redriven: int


@router.post("", status_code=201, response_model=SubscriptionOut, responses=ERROR_RESPONSES,
             summary="Subscribe a URL to events (the answer shows the signing secret once)")
async def create(body: SubscriptionIn, rt: RuntimeDep, caller: AdminCaller) -> dict:
    return service.create(rt=rt, url=body.url, kinds=body.kinds, active=body.active, description=body.description,
                          caller=caller)


@router.get("", response_model=list[SubscriptionOut], responses=ERROR_RESPONSES, summary="Every subscription")
async def list_subscriptions(rt: RuntimeDep, caller: AdminCaller) -> list[dict]:
    return service.list_all(rt=rt)


@router.get("/{subscription_id}", response_model=SubscriptionOut, responses=ERROR_RESPONSES,
            summary="One subscription with its delivery stats")
async def get_subscription(subscription_id: str, rt: RuntimeDep, caller: AdminCaller) -> dict:
    return service.get(rt=rt, sub_id=subscription_id)


@router.patch("/{subscription_id}", response_model=SubscriptionOut, responses=ERROR_RESPONSES,
              summary="Pause or resume a subscription")
async def patch_subscription(subscription_id: str, body: SubscriptionPatch, rt: RuntimeDep,
                             caller: AdminCaller) -> dict:
    return service.set_active(rt=rt, sub_id=subscription_id, active=body.active, caller=caller)


@router.delete("/{subscription_id}", status_code=204, responses=ERROR_RESPONSES, summary="Delete a subscription")
async def delete_subscription(subscription_id: str, rt: RuntimeDep, caller: AdminCaller) -> Response:
    service.delete(rt=rt, sub_id=subscription_id, caller=caller)
    return Response(status_code=204)


@router.get("/{subscription_id}/dead-letters", response_model=list[DeadLetterOut], responses=ERROR_RESPONSES,
            summary="Deliveries that ran out of attempts, oldest first")
async def dead_letters(subscription_id: str, rt: RuntimeDep, caller: AdminCaller,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    return service.dead_letters(rt=rt, sub_id=subscription_id, limit=limit)


@router.post("/{subscription_id}/dead-letters/redrive", response_model=RedriveOut, responses=ERROR_RESPONSES,
             summary="Send dead letters again (all, or the ids given), attempts reset")
async def redrive(subscription_id: str, rt: RuntimeDep, caller: AdminCaller, body: RedriveIn | None = None) -> dict:
    return service.redrive(rt=rt, sub_id=subscription_id, ids=body.ids if body else None, caller=caller)
