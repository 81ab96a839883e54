"""The service's side of webhooks (`fengkong.webhooks`): its subscriptions, its
worker's delivery loop, and the events the service itself publishes.

Why a separate object: the decision path, the admin routes and the rules watch all
publish, and each should do it in one line. A publish outside the decision path is
one small round trip, and a Redis that refuses it is logged and counted
(``fengkong_webhook_publish_failures_total``) without failing the change that caused
it: the change is done and audited either way. The decision path queues its event
with the decision's other writes (`decision_command`), so it adds no round trip, and only when an active subscription wants the kind (the
worker's delivery loop keeps that set current): with no subscriber a decision does
nothing more than a set lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from fengkong.api.config import Settings
from fengkong.api.metrics import Metrics
from fengkong.webhooks import Deliverer, DeliveryConfig, Subscriptions, publish, publish_command, publish_many
from fengkong.webhooks.store import outbox_command, wanted_kinds

log = logging.getLogger(__name__)

#: decisions that are published, and the event kind of each
DECISION_KINDS = {"deny": "decision.deny", "review": "decision.review"}


class Hooks:
    """Subscriptions (admin routes), this worker's `Deliverer`, and publishing."""

    def __init__(self, settings: Settings, client: redis.Redis, redis_url: str, metrics: Metrics) -> None:
        self.prefix = settings.key_prefix
        self.client = client
        self.metrics = metrics
        self.outbox_maxlen = settings.webhook_outbox_maxlen
        self.subscriptions = Subscriptions(client, settings.key_prefix, dead_maxlen=settings.webhook_dead_maxlen)
        config = DeliveryConfig(
            prefix=settings.key_prefix, max_attempts=settings.webhook_max_attempts,
            retry_base_s=settings.webhook_retry_base_s, retry_max_s=settings.webhook_retry_max_s,
            timeout_s=settings.webhook_timeout_s, lease_s=settings.webhook_lease_s, poll_s=settings.webhook_poll_s,
            concurrency=settings.webhook_concurrency, dead_maxlen=settings.webhook_dead_maxlen,
            outbox_maxlen=settings.webhook_outbox_maxlen)
        self.deliverer = Deliverer(redis_url, config, on_result=metrics.webhook_result,
                                   on_dropped=metrics.webhook_dropped.inc) \
            if settings.webhook_deliver else None
        self.refresh_wanted()

    def start(self) -> None:
        """Start the delivery loop in the running event loop (the app's lifespan)."""
        if self.deliverer is not None:
            self.deliverer.start()

    async def stop(self) -> None:
        if self.deliverer is not None:
            await self.deliverer.stop()

    def refresh_wanted(self) -> None:
        """Read which kinds are wanted now (at start, and after this worker changed a
        subscription; the delivery loop re-reads it about every second). Redis away at
        start: nothing is wanted until the loop reads it."""
        if self.deliverer is None:
            return
        try:
            self.deliverer.wanted = wanted_kinds(self.client, self.prefix)
        except (redis.RedisError, OSError) as exc:
            log.warning("webhook subscriptions not read: %s", type(exc).__name__)

    def publish(self, kind: str, payload: Mapping[str, Any]) -> str | None:
        """Queue an event (a no-op when nobody subscribed to `kind`); a Redis fault is
        logged and counted, never raised."""
        try:
            return publish(self.client, kind, payload, prefix=self.prefix, maxlen=self.outbox_maxlen)
        except (redis.RedisError, OSError) as exc:
            self.metrics.webhook_unqueued.inc()
            log.warning("webhook event %s not queued: %s: %s", kind, type(exc).__name__, exc)
            return None

    def publish_many(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Queue a batch of events in one pipeline (the case consumer's opened cases, a
        resolution): only the kinds an active subscription wants, when this worker's
        delivery loop knows them (as `decision_command`), so with no subscriber it costs
        nothing. Returns how many were queued; a Redis fault is logged and counted, never
        raised."""
        if self.deliverer is not None:
            events = [e for e in events if e[0] in self.deliverer.wanted]
        if not events:
            return 0
        try:
            return publish_many(self.client, events, prefix=self.prefix, maxlen=self.outbox_maxlen)
        except (redis.RedisError, OSError) as exc:
            self.metrics.webhook_unqueued.inc(len(events))
            log.warning("%d webhook events not queued: %s: %s", len(events), type(exc).__name__, exc)
            return 0

    def decision_command(self, record: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The command that queues a deny or review decision's event, for the decision's
        write-behind batch; None for other decisions."""
        kind = DECISION_KINDS.get(record["decision"])
        if kind is None or (self.deliverer is not None and kind not in self.deliverer.wanted):
            return None  # nobody subscribed (as of this worker's last look): nothing to queue
        event = record.get("event") or {}
        payload = {
            "decision_id": record["decision_id"], "event_id": record["event_id"], "decision": record["decision"],
            "score": record.get("score"), "reasons": [r.get("id") if isinstance(r, Mapping) else r.id for r in record.get("reasons") or ()],
            "event_type": event.get("type"), "merchant_id": event.get("merchant_id"),
            "user_id": event.get("user_id"), "risk": record.get("risk"),
            "ruleset_version": record.get("ruleset_version"), "decided_at": record.get("decided_at"),
        }
        if self.deliverer is None:  # no delivery loop here to keep `wanted` current: let Redis check
            return publish_command(kind, payload, prefix=self.prefix, maxlen=self.outbox_maxlen)
        return outbox_command(kind, payload, prefix=self.prefix, maxlen=self.outbox_maxlen)
