"""Prometheus metrics of the decision service.

Each app gets its own `CollectorRegistry`, so tests can build many apps in one
process. With several uvicorn workers `fengkong serve` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start; prometheus_client then keeps
values in per-process files and ``/metrics`` aggregates them with
`MultiProcessCollector`, so a scrape sees the whole service, not one worker.

Label children are cached in dicts: ``.labels()`` costs a lock and a tuple
lookup, which adds up on the hot path.
"""

from __future__ import annotations

import os
from typing import Iterable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)

from fengkong.features.embedded_redis import RestartsCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """The service's counters and histogram."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double the scrape for nothing we use
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter("fengkong_decisions_total", "Decisions made, by outcome",
                                 ["decision", "degraded"], registry=r)
        self.rule_fires = Counter("fengkong_rule_fires_total", "Rules that fired, by rule and mode",
                                  ["rule", "mode"], registry=r)
        self.latency = Histogram("fengkong_decision_latency_seconds",
                                 "Time to decide, from the request body read to the answer",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.degraded = Counter("fengkong_degraded_total", "Decisions made in degraded mode, by reason",
                                ["reason"], registry=r)
        self.duplicates = Counter("fengkong_duplicate_requests_total",
                                  "Requests answered from a stored result (same event_id)", ["endpoint"], registry=r)
        self.events = Counter("fengkong_outcome_events_total", "Outcome events recorded, by type", ["type"], registry=r)
        self.unstored = Counter("fengkong_decision_records_unstored_total",
                                "Decisions answered whose record, pointer, snapshot or audit entry Redis did not "
                                "take (logged)", registry=r)
        self.rejected = Counter("fengkong_rejected_requests_total",
                                "Requests refused before any feature was touched, by status", ["status"], registry=r)
        self.webhook_deliveries = Counter("fengkong_webhook_deliveries_total",
                                          "Webhook delivery attempts, by result (delivered, failed, dead_lettered)",
                                          ["result"], registry=r)
        self.webhook_unqueued = Counter("fengkong_webhook_publish_failures_total",
                                         "Webhook events this process could not queue (Redis refused; logged)",
                                         registry=r)
        r.register(RestartsCollector())
        self._decision_children: dict[tuple[str, bool], object] = {}
        self._fire_children: dict[tuple[str, str], object] = {}

    def decided(self, decision: str, degraded: bool, fired: Iterable[tuple[str, str]], latency_s: float) -> None:
        key = (decision, degraded)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(decision, "true" if degraded else "false")
        child.inc()  # type: ignore[attr-defined]
        for rule_mode in fired:
            fc = self._fire_children.get(rule_mode)
            if fc is None:
                fc = self._fire_children[rule_mode] = self.rule_fires.labels(*rule_mode)
            fc.inc()  # type: ignore[attr-defined]
        self.latency.observe(latency_s)

    def webhook_result(self, result: str) -> None:
        """Count one webhook delivery attempt (the delivery loop calls it)."""
        self.webhook_deliveries.labels(result).inc()

    def render(self) -> bytes:
        """The text exposition; aggregated over workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(RestartsCollector())
            return generate_latest(registry)
        return generate_latest(self.registry)
