"""Webhook subscriptions as the admin routes see them: create (the secret is shown
once, in that answer), list, read with delivery stats, pause, delete, and the dead
letters with their redrive. Every change is audited with the key's name (never the
secret). The mechanics are `fengkong.webhooks`; docs/webhooks.md is the reference."""

from __future__ import annotations

import re
from typing import Any, Callable, TypeVar

import redis

from fengkong.api.errors import NotFound, Unavailable
from fengkong.api.security import Caller
from fengkong.api.state import Runtime
from fengkong.events import EventRejected

SUB_ID_RE = re.compile(r"^wh_[0-9a-f]{20}$")
ENTRY_ID_RE = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")

T = TypeVar("T")


def _redis(call: Callable[[], T]) -> T:
    try:
        return call()
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None


def _check(sub_id: str) -> str:
    if not SUB_ID_RE.match(sub_id):
        raise NotFound("subscription_id", "no subscription has this id")
    return sub_id


def create(*, rt: Runtime, url: str, kinds: list[str], active: bool, description: str | None,
           caller: Caller) -> dict[str, Any]:
    """A new subscription, with its secret (shown this once)."""
    try:
        sub = _redis(lambda: rt.hooks.subscriptions.create(url=url, kinds=kinds, active=active,
                                                           description=description))
    except ValueError as exc:  # the subscription cap (url and kinds were checked by the route's model)
        raise EventRejected("url", str(exc)) from None
    rt.hooks.refresh_wanted()
    rt.audit.change(rt.client, actor=caller.name, action="webhook.create", version=rt.rules.version,
                    detail={"subscription_id": sub["id"], "url": sub["url"], "kinds": sub["kinds"]})
    return sub


def list_all(*, rt: Runtime) -> list[dict[str, Any]]:
    """Every subscription with its stats (no secrets)."""
    return _redis(rt.hooks.subscriptions.list_all)


def get(*, rt: Runtime, sub_id: str) -> dict[str, Any]:
    """One subscription with its delivery stats."""
    sub = _redis(lambda: rt.hooks.subscriptions.get(_check(sub_id)))
    if sub is None:
        raise NotFound("subscription_id", "no subscription has this id")
    return sub


def set_active(*, rt: Runtime, sub_id: str, active: bool, caller: Caller) -> dict[str, Any]:
    """Pause or resume a subscription (audited)."""
    sub = _redis(lambda: rt.hooks.subscriptions.set_active(_check(sub_id), active))
    if sub is None:
        raise NotFound("subscription_id", "no subscription has this id")
    rt.hooks.refresh_wanted()
    rt.audit.change(rt.client, actor=caller.name, action="webhook.update", version=rt.rules.version,
                    detail={"subscription_id": sub_id, "active": active})
    return sub


def delete(*, rt: Runtime, sub_id: str, caller: Caller) -> None:
    """Delete a subscription with its stats and dead letters (audited)."""
    if not _redis(lambda: rt.hooks.subscriptions.delete(_check(sub_id))):
        raise NotFound("subscription_id", "no subscription has this id")
    rt.hooks.refresh_wanted()
    rt.audit.change(rt.client, actor=caller.name, action="webhook.delete", version=rt.rules.version,
                    detail={"subscription_id": sub_id})


def dead_letters(*, rt: Runtime, sub_id: str, limit: int) -> list[dict[str, Any]]:
    """The subscription's dead letters, oldest first."""
    get(rt=rt, sub_id=sub_id)
    return _redis(lambda: rt.hooks.subscriptions.dead_letters(sub_id, count=limit))


def redrive(*, rt: Runtime, sub_id: str, ids: list[str] | None, caller: Caller) -> dict[str, Any]:
    """Queue dead letters again (all, or the entry ids given), attempts reset (audited)."""
    get(rt=rt, sub_id=sub_id)
    for i, entry_id in enumerate(ids or ()):
        if not ENTRY_ID_RE.match(entry_id):
            raise EventRejected(f"ids[{i}]", "is not a dead-letter id (as GET .../dead-letters lists them)")
    n = _redis(lambda: rt.hooks.subscriptions.redrive(sub_id, ids))
    rt.audit.change(rt.client, actor=caller.name, action="webhook.redrive", version=rt.rules.version,
                    detail={"subscription_id": sub_id, "redriven": n})
    return {"subscription_id": sub_id, "redriven": n}
