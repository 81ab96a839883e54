"""Pages every logged-in user reads: overview, decision detail, merchants."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from fengkong.api.console import data, plots
from fengkong.api.console.app import Page, viewer
from fengkong.api.console.i18n import translator
from fengkong.api.errors import NotFound
from fengkong.api.service import admin, decisions

router = APIRouter()
Viewer = Annotated[Page, Depends(viewer)]

#: the merchant's volume against its own baseline: period label -> bar label -> feature (labels: i18n keys)
VOLUME_GROUPS: dict[str, dict[str, str]] = {
    "p_volume_today": {"b_today": "merchant.volume_today", "b_7d": "merchant.baseline_today_7d",
                       "b_28d": "merchant.baseline_today_28d"},
    "p_volume_hour": {"b_hour": "merchant.volume_hour", "b_7d": "merchant.baseline_hour_7d",
                      "b_28d": "merchant.baseline_hour_28d"},
    "p_count_today": {"b_today": "merchant.count_today", "b_7d": "merchant.baseline_count_today_7d",
                      "b_28d": "merchant.baseline_count_today_28d"},
}


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
    history = []
    for other in data.card_history(rt, card) if card else []:
        if other != decision_id:
            try:
                history.append(await decisions.get_decision(rt=rt, decision_id=other))
            except NotFound:  # expired since the stream entry was written
                continue
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
    t = translator(page.lang)
    groups = {t(period): {t(label): features.get(name) for label, name in bars.items()}
              for period, bars in VOLUME_GROUPS.items() if any(name in features for name in bars.values())}
    if groups:
        plot = plots.volume_against_baseline(groups, "")
    return page.render("merchants.html", merchant_id=merchant_id, merchant=merchant, history=history, plot=plot,
                       features=features)
