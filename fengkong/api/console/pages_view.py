"""Pages every logged-in user reads: overview, decision detail, merchants."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from fengkong.api.console import data, plots
from fengkong.api.console.app import Page, viewer
from fengkong.api.errors import NotFound
from fengkong.api.service import admin, decisions

router = APIRouter()
Viewer = Annotated[Page, Depends(viewer)]

#: the merchant features drawn against the baseline (1.0 = the merchant's own usual)
VOLUME_RATIOS = ("merchant.volume_ratio_today", "merchant.volume_ratio_today_28d", "merchant.volume_ratio_hour",
                 "merchant.count_ratio_today")


@router.get("/", response_class=HTMLResponse)
async def overview(page: Viewer) -> HTMLResponse:
    """Decisions per minute by outcome (stored decisions of the last hour), degraded
    share, latency and top rules (the service's own metrics)."""
    rt = page.rt
    summary = data.metrics_summary(rt)
    recent = data.recent_decisions(rt, minutes=60)
    starts, counts = data.per_minute(recent, minutes=60)
    plot = plots.decisions_per_minute(starts, counts, "")
    return page.render("overview.html", summary=summary, plot=plot, recent=len(recent),
                       last_hour={o: sum(c) for o, c in counts.items()})


@router.get("/decisions/{decision_id}", response_class=HTMLResponse)
async def decision(decision_id: str, page: Viewer) -> HTMLResponse:
    """A stored decision: the event, every rule that fired with the values it read,
    shadow rules, model scores, the merchant's grade and the card's recent decisions."""
    rt = page.rt
    record = await decisions.get_decision(rt=rt, decision_id=decision_id)
    features = record.get("features") or {}
    models = {k: v for k, v in features.items() if k.startswith("model.")}
    card = ((record.get("event") or {}).get("card") or {}).get("fingerprint")
    history = [r for r in data.card_history(rt, card) if r.get("decision_id") != decision_id] if card else []
    return page.render("decision.html", record=record, models=models, history=history, card=card,
                       features={k: v for k, v in sorted(features.items()) if not k.startswith("model.")})


@router.get("/merchants", response_class=HTMLResponse)
async def merchants(page: Viewer, merchant_id: str = "") -> HTMLResponse:
    """A merchant's grade, profile, grade history with reasons and volume against baseline."""
    merchant_id = merchant_id.strip()
    if not merchant_id:
        return page.render("merchants.html", merchant_id="", merchant=None)
    rt = page.rt
    try:
        merchant: dict[str, Any] | None = await admin.get_merchant(rt=rt, merchant_id=merchant_id)
    except NotFound:
        merchant = None
    history = data.changes(rt, prefix="merchant.", where={"merchant_id": merchant_id}, count=2000)
    plot = None
    features = (merchant or {}).get("features") or {}
    ratios = {name.removeprefix("merchant."): features.get(name) for name in VOLUME_RATIOS if name in features}
    if ratios:
        plot = plots.volume_against_baseline(ratios, "")
    return page.render("merchants.html", merchant_id=merchant_id, merchant=merchant, history=history, plot=plot,
                       features=features)
