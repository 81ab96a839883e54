"""The HTTP contract: pydantic models that OpenAPI documents.

The event itself is `fengkong.events.Event` (one contract for API, files and
tests). Requests that carry an event are parsed by `parse_event` from the raw
body, never by FastAPI's body binding, because FastAPI's 422 echoes the input
value and a card number must never be echoed; the routes attach the Event schema
to OpenAPI by hand (see `fengkong.api.app`).

Responses on the payment flow's routes are built as dicts and serialised with
orjson (a pydantic round trip would cost more than the rest of the answer); the tests validate
real responses against these models, so code and documentation cannot drift.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fengkong.events import looks_like_pan
from fengkong.features import definitions as d

Action = Literal["allow", "challenge", "review", "deny"]
GRADES: tuple[str, ...] = tuple(d.DEFAULT_GRADE_LIMITS)


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: the field at fault (dotted path, or a header/parameter name) and why."""

    detail: str = Field(description="'<field>: <reason>'; never repeats the refused value")
    field: str | None = Field(default=None, description="Dotted path of the field at fault, e.g. card.bin")


class ReasonOut(BaseModel):
    """A rule that fired, with the feature values it read (null = missing)."""

    id: str
    description: str
    action: Action
    score: float
    mode: Literal["enforce", "shadow"]
    tags: list[str]
    values: dict[str, Any]


class DecisionOut(BaseModel):
    """The answer to POST /v1/decisions."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "decision_id": "d_5f0c2a7e9b3d4c1e8a6b2f0d", "event_id": "evt-1001", "decision": "challenge",
        "score": 45.0, "reasons": [{"id": "card_new_device_new_country", "description": "...", "action": "challenge",
                                    "score": 45.0, "mode": "enforce", "tags": ["card_theft"],
                                    "values": {"user.is_new_device": True}}],
        "merchant_grade": "NEW", "ruleset_version": "675013852d1f@2026-11-25T20:37:04.916687Z",
        "degraded": False, "degraded_reason": None, "latency_ms": 1.2, "duplicate": False, "lane": None,
        "risk": 0.0412, "models": "transactions 20261125T101500Z-3f2a1c, merchants 20261125T101200Z-9b7e44"}})

    decision_id: str = Field(description="Id of the stored decision (GET /v1/decisions/{decision_id})")
    event_id: str
    decision: Action = Field(description="allow | challenge (step-up, e.g. SMS OTP) | review | deny")
    score: float = Field(description="Sum of the scores of the enforced rules that fired")
    reasons: list[ReasonOut] = Field(description="Enforced rules that fired, with the values they read")
    merchant_grade: str | None = Field(description="The merchant's grade the policy used (NEW when none)")
    ruleset_version: str | None = Field(description="Content hash @ load time of the rule set that decided")
    degraded: bool = Field(description="True when a dependency failed and the failure policy answered")
    degraded_reason: str | None = Field(description="Why (feature store down/slow, model failure, ...)")
    latency_ms: float = Field(description="Time spent deciding inside the service")
    duplicate: bool = Field(default=False, description="True when this is the stored answer to an earlier request")
    lane: str | None = Field(default=None, description="Allow-list lane that decided (e.g. trusted), if any")
    risk: float | None = Field(
        default=None, ge=0, le=1,
        description="Fused fraud risk 0-1 (transaction model + the rules' own score; fengkong.models.fusion): the "
                    "review queue's priority. Null without a fusion artifact, for non-payments, or when degraded")
    models: str | None = Field(
        default=None,
        description="The model artifacts that scored this decision, or 'rules-only: ...' when none were loaded")
    missing_features: list[str] | None = Field(
        default=None,
        description="Degraded answers only: the features some rule needed but the store could not give (those "
                    "rules were skipped; lists, merchant profiles and the event's own features still decided)")


class DecisionRecordOut(DecisionOut):
    """A stored decision with its full explanation (GET /v1/decisions/{decision_id})."""

    decided_at: str
    caller: str = Field(description="Name of the API key that asked (never the key)")
    event: dict[str, Any] = Field(description="The event as accepted (the contract holds no card number)")
    features: dict[str, Any] = Field(description="Values of the features the rule set reads, as the decision saw them")
    shadow: list[ReasonOut] = Field(description="Shadow-mode rules that fired (reported, never counted)")
    missing_features: list[str]
    score_action: Action | None = Field(description="What the score thresholds alone said")
    thresholds: dict[str, float]


class OutcomeOut(BaseModel):
    """The answer to POST /v1/events."""

    event_id: str
    type: str
    recorded: bool = Field(description="The outcome updated the features (false only for a duplicate)")
    duplicate: bool = Field(description="This event_id was recorded before; nothing was counted again")


class MerchantProfileIn(BaseModel):
    """Fields of a merchant's profile; those omitted are left as they are."""

    model_config = ConfigDict(extra="forbid")

    grade: Literal[GRADES] | None = Field(default=None, description="Merchant grade")  # type: ignore[valid-type]
    single_limit_minor: int | None = Field(default=None, ge=0, le=10**15, description="Single-payment limit, minor units")
    daily_cap_minor: int | None = Field(default=None, ge=0, le=10**15, description="Daily volume cap, minor units")
    onboarded_at: date | None = Field(default=None, description="Onboarding date (new-merchant rules read its age)")
    mcc: str | None = Field(default=None, pattern=r"^[0-9]{4}$", description="Merchant category code")
    reason: str | None = Field(default=None, max_length=500, description="Why (kept with the grade)")

    _no_pan = field_validator("reason")(lambda v: refuse_pan(v))


class PromotionIn(BaseModel):
    """One planned campaign (checked by `fengkong.features.promotions.problems`: end after start,
    at most 31 days, multiple from 1 to 100)."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(description="Start, ISO 8601 with offset, e.g. 2026-11-11T00:00:00+08:00")
    end: str = Field(description="End (exclusive), ISO 8601 with offset")
    expected_multiple: float = Field(description="Expected multiple of the merchant's usual daily volume (1-100)")


class PromotionsIn(BaseModel):
    """The merchant's planned campaigns, replacing the stored ones ([] removes them)."""

    model_config = ConfigDict(extra="forbid")

    promotions: list[PromotionIn] = Field(max_length=50, description="At most 50 campaigns")


class PromotionsOut(BaseModel):
    merchant_id: str
    promotions: list[dict[str, Any]] = Field(description="Stored campaigns, times in UTC")


class MerchantOut(BaseModel):
    merchant_id: str
    grade: str = Field(description="The grade rules use (NEW when the profile has none)")
    profile: dict[str, str] = Field(description="The stored profile (grade, limits, onboarding, mcc, reason)")
    features: dict[str, Any] | None = Field(
        description="merchant.* features as read by this merchant's latest decision (null when none yet)")
    features_as_of: str | None = Field(description="Event time of that decision: windows run on event time")
    features_event_id: str | None = None


class ListInfoOut(BaseModel):
    name: str
    kind: Literal["card", "user", "device", "ip", "merchant"]
    description: str
    feature: str = Field(description="The rule feature that tests membership, e.g. lists.blocked_cards")


class ListEntriesOut(ListInfoOut):
    entries: list[str]


class ListChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[str] = Field(min_length=1, max_length=10_000,
                               description="Card fingerprints, user/device/merchant ids, IPs or IPv4 CIDRs")
    reason: str | None = Field(default=None, max_length=500)

    _no_pan = field_validator("entries", "reason")(lambda v: refuse_pan(v))


class ListChangeOut(BaseModel):
    name: str
    action: Literal["add", "remove"]
    changed: int = Field(description="Entries actually added or removed (already present/absent ones do not count)")
    entries: list[str] = Field(description="The entries as normalised (e.g. CIDR network form)")


class RulesOut(BaseModel):
    version: str | None
    content_hash: str | None
    rules: int
    rules_dir: str
    loaded_at: str | None
    watch_interval_s: float
    last_reload: dict[str, Any] | None


class ReloadOut(BaseModel):
    ok: bool
    changed: bool
    message: str
    version: str | None
    previous_version: str | None
    problems: list[dict[str, Any]]
    failed_cases: list[str]
    files_hash: str | None
    refused_earlier: bool
    unchanged: bool = False
    at: str


class DryRunIn(BaseModel):
    """A candidate rule set and an event (or features) to try it on. Nothing is deployed or counted."""

    model_config = ConfigDict(extra="forbid")

    event: dict[str, Any] | None = Field(
        default=None, description="An event already decided (same event_id and body): its stored features are replayed")
    features: dict[str, Any] | None = Field(
        default=None, description="Feature values (dotted names) to evaluate instead of, or over, the event's")
    files: dict[str, str | None] | None = Field(
        default=None, description="Rule files overlaid on a copy of rules/: name -> YAML text, null deletes the file")


class DryRunOut(BaseModel):
    candidate_version: str
    live_version: str | None
    candidate: dict[str, Any] = Field(description="The candidate's decision (Decision.to_dict)")
    live: dict[str, Any] = Field(description="The live rule set's decision on the same features")
    changed: bool = Field(description="The decision differs between candidate and live")
    failed_cases: list[str] = Field(description="The candidate's own *_test.yaml cases that fail (reload would refuse)")
    features_source: Literal["stored", "posted", "stored+posted"]


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Any] = Field(default_factory=dict)


def refuse_pan(value: Any) -> Any:
    """Free text and list entries are stored and audited: a card number in them is refused
    (without repeating it), as everywhere else in the service."""
    values = value if isinstance(value, list) else [value]
    if any(looks_like_pan(v) for v in values if v is not None):
        raise ValueError("looks like a full card number (PAN); send a card fingerprint instead")
    return value


# -- cases (the review queue; fengkong.cases) ---------------------------------------------------
Disposition = Literal["fraud", "legit", "needs_info"]


class CaseResolveIn(BaseModel):
    """How an analyst concluded a case."""

    model_config = ConfigDict(extra="forbid")

    disposition: Disposition = Field(description="fraud (sends a fraud_report), legit (sends legit_confirmed), "
                                                 "needs_info (no label)")
    note: str | None = Field(default=None, max_length=4000, description="Why; never a card number")


class CaseReopenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=4000, description="Why it is reopened")


class CaseBulkResolveIn(CaseResolveIn):
    case_ids: list[int] = Field(min_length=1, max_length=500, description="Cases to resolve the same way")


class EntityOut(BaseModel):
    kind: Literal["card", "user", "merchant"]
    id: str


class CaseOut(BaseModel):
    """A case as the queue lists it."""

    id: int
    entity: EntityOut
    status: Literal["open", "claimed", "resolved"]
    queue: str
    priority: float | None = Field(description="The highest fused risk of the grouped decisions (null: none)")
    max_score: float
    assignee: str | None
    disposition: Disposition | None
    note: str | None
    opened_at: str
    claimed_at: str | None
    resolved_at: str | None
    first_occurred_at: str
    last_occurred_at: str
    merchant_id: str | None
    rule_ids: list[str]
    decision_count: int
    age_s: float = Field(description="Seconds since the case opened")
    sla_hours: float
    sla_breached: bool


class CaseDetailOut(CaseOut):
    """A case with the decisions grouped into it and its history (who, when, what)."""

    decisions: list[dict[str, Any]]
    history: list[dict[str, Any]]


class CaseListOut(BaseModel):
    total: int
    cases: list[CaseOut]


class QueueOut(BaseModel):
    queue: str
    sla_hours: float
    open: int
    claimed: int
    oldest_age_s: float | None = Field(description="Age of the oldest unresolved case (null: none)")
    breached: int = Field(description="Unresolved cases older than the SLA")


class BulkResolveOut(BaseModel):
    resolved: list[int]
    refused: list[dict[str, Any]] = Field(description="{id, status (404/409), detail} per case not resolved")
