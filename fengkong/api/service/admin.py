"""The administration a risk team does on the running service: merchant profiles,
the analyst lists, and the live rule set (changes are audited with the key's name)."""

from __future__ import annotations

from typing import Any, Mapping

import redis

from fengkong.api.encoding import loads
from fengkong.api.errors import NotFound, Unavailable
from fengkong.api.security import Caller
from fengkong.api.service.idempotency import execute, get
from fengkong.api.service.ids import ID_RE, check_id
from fengkong.api.state import Runtime, rules_reloaded
from fengkong.events import EventRejected, looks_like_pan
from fengkong.features import definitions as d
from fengkong.features import promotions
from fengkong.features.errors import FeatureStoreError
from fengkong.features.lists import normalise_entry


async def get_merchant(*, rt: Runtime, merchant_id: str) -> dict[str, Any]:
    """The merchant's profile, grade, and merchant.* features as its latest decision read
    them (the snapshot over the pipelined connection, where this worker writes it; this
    worker's snapshot still pending is written first, `merchant_snapshots`)."""
    check_id("merchant_id", merchant_id)
    key = rt.keys.merchant_snapshot(merchant_id)
    pending = rt.merchant_snapshots.take(merchant_id)  # this worker's latest, not written yet: it goes first
    try:
        profile = rt.store.get_merchant_profile(merchant_id)
        if pending is None:
            snap_raw = await get(rt, key)
        else:
            snap_raw = (await execute(rt, (pending, ("GET", key)), rt.store_budget_s))[1]
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None
    snap = loads(snap_raw) if snap_raw else None
    if not profile and snap is None:
        raise NotFound("merchant_id", "no profile and no decision for this merchant")
    return {
        "merchant_id": merchant_id, "grade": profile.get("grade") or d.DEFAULT_GRADE, "profile": profile,
        "features": snap["features"] if snap else None, "features_as_of": snap["occurred_at"] if snap else None,
        "features_event_id": snap["event_id"] if snap else None,
    }


async def put_merchant(*, rt: Runtime, merchant_id: str, changes: Mapping[str, Any],
                       caller: Caller) -> dict[str, Any]:
    """Set fields of the merchant's profile (audited); the next decision reads them."""
    check_id("merchant_id", merchant_id)
    fields = {k: v for k, v in changes.items() if v is not None}
    if not fields:
        raise EventRejected("<body>", "give at least one profile field")
    onboarded = fields.get("onboarded_at")
    try:
        before = rt.store.get_merchant_profile(merchant_id).get("grade") if "grade" in fields else None
        profile = rt.store.set_merchant_profile(
            merchant_id, grade=fields.get("grade"), single_limit_minor=fields.get("single_limit_minor"),
            daily_cap_minor=fields.get("daily_cap_minor"),
            onboarded_at=onboarded.isoformat() if onboarded is not None else None,
            mcc=fields.get("mcc"), reason=fields.get("reason"))
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    rt.snapshot.profile_changed(merchant_id, profile)  # degraded decisions read it at once
    rt.audit.change(rt.client, actor=caller.name, action="merchant.profile", version=rt.rules.version,
                    detail={"merchant_id": merchant_id, "fields": {k: str(v) for k, v in fields.items()}})
    if "grade" in fields and str(fields["grade"]) != (before or d.DEFAULT_GRADE):
        rt.hooks.publish("merchant.grade_changed", {
            "merchant_id": merchant_id, "grade": str(fields["grade"]), "previous_grade": before or d.DEFAULT_GRADE,
            "reason": fields.get("reason"), "source": "api", "actor": caller.name})
    return await get_merchant(rt=rt, merchant_id=merchant_id)


async def get_promotions(*, rt: Runtime, merchant_id: str) -> dict[str, Any]:
    """The merchant's planned campaigns (times in UTC)."""
    check_id("merchant_id", merchant_id)
    try:
        items = rt.store.profiles.get_promotions(merchant_id)
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    return {"merchant_id": merchant_id, "promotions": promotions.to_items(items)}


async def put_promotions(*, rt: Runtime, merchant_id: str, items: list[Any], caller: Caller) -> dict[str, Any]:
    """Replace the merchant's planned campaigns (checked, audited); the next decision reads them
    (`merchant.in_promotion`, `merchant.promotion_multiple`). An empty list removes them."""
    check_id("merchant_id", merchant_id)
    bad = promotions.problems(items)
    if bad:
        field, reason = bad[0]
        raise EventRejected(field, reason)
    try:
        saved = rt.store.profiles.set_promotions(merchant_id, promotions.parse(items))
        profile = rt.store.get_merchant_profile(merchant_id)
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    rt.snapshot.profile_changed(merchant_id, profile)
    out = promotions.to_items(saved)
    rt.audit.change(rt.client, actor=caller.name, action="merchant.promotions", version=rt.rules.version,
                    detail={"merchant_id": merchant_id, "promotions": out})
    return {"merchant_id": merchant_id, "promotions": out}


def _spec_info(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "kind": spec.kind, "description": spec.description, "feature": spec.feature}


def list_lists(*, rt: Runtime) -> list[dict[str, Any]]:
    """The declared lists (name, kind, description, the feature that reads them)."""
    return [_spec_info(s) for s in rt.list_specs.values()]


def _spec(rt: Runtime, name: str) -> Any:
    spec = rt.list_specs.get(name)
    if spec is None:
        raise NotFound("name", f"no list of this name; known: {', '.join(sorted(rt.list_specs))}")
    return spec


def list_entries(*, rt: Runtime, name: str) -> dict[str, Any]:
    """One list's declaration and its entries."""
    spec = _spec(rt, name)
    try:
        entries = rt.lists.members(name)
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    return _spec_info(spec) | {"entries": entries}


def change_list(*, rt: Runtime, name: str, action: str, entries: list[str], reason: str | None,
                caller: Caller) -> dict[str, Any]:
    """Add or remove entries (effective on the next decision: the store reads lists in its
    Lua call; this worker's degraded-mode snapshot at once, the other workers' on their
    next refresh)."""
    spec = _spec(rt, name)
    if looks_like_pan(reason):  # the console's forms come here without the API's schema
        raise EventRejected("reason", "looks like a full card number (PAN); send a card fingerprint instead")
    clean: list[str] = []
    for i, entry in enumerate(entries):
        if looks_like_pan(entry):
            raise EventRejected(f"entries[{i}]", "looks like a full card number (PAN); lists hold card fingerprints")
        try:
            clean.append(normalise_entry(spec.kind, entry))
        except ValueError:
            what = "an IP address or CIDR" if spec.kind == "ip" else "a non-empty id"
            raise EventRejected(f"entries[{i}]", f"is not {what}") from None
        if spec.kind != "ip" and not ID_RE.match(clean[-1]):
            raise EventRejected(f"entries[{i}]", "must be 1-128 letters, digits or _.:@-")
    try:
        changed = rt.lists.add(name, clean) if action == "add" else rt.lists.remove(name, clean)
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    rt.snapshot.list_changed(name, clean, add=action == "add")  # degraded decisions read it at once
    rt.audit.change(rt.client, actor=caller.name, action=f"list.{action}", version=rt.rules.version,
                    detail={"list": name, "entries": clean, "changed": changed, "reason": reason})
    return {"name": name, "action": action, "changed": changed, "entries": clean}


def rules_info(*, rt: Runtime) -> dict[str, Any]:
    """The live rule set: version, content hash, size, and the last reload's result."""
    current = rt.rules.current
    last = rt.rules.last_result
    return {
        "version": rt.rules.version, "content_hash": current.content_hash if current else None,
        "rules": len(current.rules) if current else 0, "rules_dir": str(rt.rules.rules_dir),
        "loaded_at": current.loaded_at.isoformat() if current else None,
        "watch_interval_s": rt.settings.rules_watch_s, "last_reload": last.to_dict() if last else None,
    }


def reload_rules(*, rt: Runtime, caller: Caller) -> dict[str, Any]:
    """Reload from the rules directory: swapped only if the set compiles and its cases pass (audited)."""
    result = rt.rules.reload()
    rt.audit.change(rt.client, actor=caller.name, action="rules.reload", version=result.version,
                    detail={"result": result.to_dict()})
    if result.changed:
        rt.hooks.publish("rules.reloaded", rules_reloaded(result.to_dict(), actor=caller.name))
    return result.to_dict() | {"changed": result.changed}
