"""GET / PUT /v1/merchants/{merchant_id}: the merchant's grade, profile and features."""

from __future__ import annotations

from fastapi import APIRouter

from fengkong.api.service import admin
from fengkong.api.deps import AdminCaller, ReaderCaller, RuntimeDep
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.schemas import MerchantOut, MerchantProfileIn, PromotionsIn, PromotionsOut

router = APIRouter(prefix="/v1/merchants", tags=["merchants"])


@router.get("/{merchant_id}", response_model=MerchantOut, responses=ERROR_RESPONSES,
            summary="Grade, profile and current merchant features")
async def get_merchant(merchant_id: str, rt: RuntimeDep, caller: ReaderCaller) -> dict:
    """Features are those the merchant's latest decision read (windows run on event
    time, so "current" means as of the latest event)."""
    return await admin.get_merchant(rt=rt, merchant_id=merchant_id)


@router.put("/{merchant_id}", response_model=MerchantOut, responses=ERROR_RESPONSES,
            summary="Set the merchant's profile (admin)")
async def put_merchant(merchant_id: str, body: MerchantProfileIn, rt: RuntimeDep, caller: AdminCaller) -> dict:
    """Grade, limits, onboarding date, category; omitted fields stay. Effective on the
    next decision; audited with the key's name."""
    return await admin.put_merchant(rt=rt, merchant_id=merchant_id, changes=body.model_dump(), caller=caller)


@router.get("/{merchant_id}/promotions", response_model=PromotionsOut, responses=ERROR_RESPONSES,
            summary="The merchant's planned promotions")
async def get_promotions(merchant_id: str, rt: RuntimeDep, caller: ReaderCaller) -> dict:
    """Campaigns the merchant declared (window and expected volume multiple), times in UTC."""
    return await admin.get_promotions(rt=rt, merchant_id=merchant_id)


@router.put("/{merchant_id}/promotions", response_model=PromotionsOut, responses=ERROR_RESPONSES,
            summary="Replace the merchant's planned promotions (admin)")
async def put_promotions(merchant_id: str, body: PromotionsIn, rt: RuntimeDep, caller: AdminCaller) -> dict:
    """Each campaign: start, end (after start, at most 31 days later), expected_multiple (1-100);
    at most 50. The spike rules read ``merchant.in_promotion`` from the next decision; audited."""
    items = [p.model_dump() for p in body.promotions]
    return await admin.put_promotions(rt=rt, merchant_id=merchant_id, items=items, caller=caller)
