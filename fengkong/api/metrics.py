"""Prometheus metrics of the decision service.

Each app gets its own `CollectorRegistry`, so tests can build many apps in one
process. With several uvicorn workers `fengkong serve` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start; prometheus_client then keeps
values in per-process files and ``/metrics`` aggregates them with
`MultiProcessCollector`, so a scrape sees the whole service, not one worker.

Label children are cached in dicts: ``.labels()`` costs a lock and a tuple
lookup, which adds up on the hot path. The decision and rule-fire counters are counted
in plain dicts and added to the Prometheus counters once per event-loop tick (and before
every render), not once per decision: a counter's ``inc`` is a lock and a few Python
calls, and a worker's tick holds many decisions (docs/benchmarks.md). The latency
histogram of a single process is a `LatencyHistogram` (plain numbers, read at scrape
time); with ``PROMETHEUS_MULTIPROC_DIR`` it is prometheus_client's, whose values other
processes' scrapes read.
"""

from __future__ import annotations

import asyncio
import os
from typing import Iterable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)

from fengkong.api.latency import LatencyHistogram
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
        latency_doc = "Time to decide, from the request body read to the answer"
        self.latency: Histogram | LatencyHistogram
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # values in files, read by every worker's scrape
            self.latency = Histogram("fengkong_decision_latency_seconds", latency_doc, buckets=_LATENCY_BUCKETS,
                                     registry=r)
        else:
            self.latency = LatencyHistogram("fengkong_decision_latency_seconds", latency_doc, _LATENCY_BUCKETS)
            r.register(self.latency)  # type: ignore[arg-type]
        self.degraded = Counter("fengkong_degraded_total", "Decisions made in degraded mode, by reason",
                                ["reason"], registry=r)
        self.duplicates = Counter("fengkong_duplicate_requests_total",
                                  "Requests answered from a stored result (same event_id)", ["endpoint"], registry=r)
        self.events = Counter("fengkong_outcome_events_total", "Outcome events recorded, by type", ["type"], registry=r)
        self.unstored = Counter("fengkong_decision_records_unstored_total",
                                "Decisions answered whose record, pointer or audit entry Redis did not "
                                "take (logged)", registry=r)
        self.rejected = Counter("fengkong_rejected_requests_total",
                                "Requests refused before any feature was touched, by status", ["status"], registry=r)
        self.webhook_deliveries = Counter("fengkong_webhook_deliveries_total",
                                          "Webhook delivery attempts, by result (delivered, failed, dead_lettered)",
                                          ["result"], registry=r)
        self.webhook_unqueued = Counter("fengkong_webhook_publish_failures_total",
                                         "Webhook events this process could not queue (Redis refused; logged)",
                                         registry=r)
        self.webhook_dropped = Counter("fengkong_webhook_outbox_dropped_total",
                                       "Webhook events this worker dropped at the outbox's cap, never delivered",
                                       registry=r)
        self.case_items_lost = Counter("fengkong_case_items_lost_total",
                                       "Review decisions whose case item was dropped (Redis away and the "
                                       "worker's hold full, or no cases database; logged)", registry=r)
        r.register(RestartsCollector())
        self._decision_children: dict[tuple[str, bool], object] = {}
        self._fire_children: dict[tuple[str, str], object] = {}
        # counted since the last `flush`: (decision, degraded) and (rule, mode) -> count
        self._pending_decisions: dict[tuple[str, bool], int] = {}
        self._pending_fires: dict[tuple[str, str], int] = {}
        self._flush_scheduled = False

    def decided(self, decision: str, degraded: bool, fired: Iterable[tuple[str, str]], latency_s: float) -> None:
        """Count one decision and the rules it fired, and observe its latency. The counts
        reach the counters at the end of this loop tick (`flush`); outside a running
        event loop, at once."""
        pending = self._pending_decisions
        key = (decision, degraded)
        pending[key] = pending.get(key, 0) + 1
        fires = self._pending_fires
        for rule_mode in fired:
            fires[rule_mode] = fires.get(rule_mode, 0) + 1
        self.latency.observe(latency_s)
        if not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: nothing would run the flush
                self.flush()
                return
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Add the decisions and rule fires counted since the last flush to the counters."""
        self._flush_scheduled = False
        pending, self._pending_decisions = self._pending_decisions, {}
        fires, self._pending_fires = self._pending_fires, {}
        for (decision, degraded), n in pending.items():
            child = self._decision_children.get((decision, degraded))
            if child is None:
                child = self._decision_children[(decision, degraded)] = self.decisions.labels(
                    decision, "true" if degraded else "false")
            child.inc(n)  # type: ignore[attr-defined]
        for rule_mode, n in fires.items():
            fc = self._fire_children.get(rule_mode)
            if fc is None:
                fc = self._fire_children[rule_mode] = self.rule_fires.labels(*rule_mode)
            fc.inc(n)  # type: ignore[attr-defined]

    def webhook_result(self, result: str) -> None:
        """Count one webhook delivery attempt (the delivery loop calls it)."""
        self.webhook_deliveries.labels(result).inc()

    def render(self) -> bytes:
        """The text exposition; aggregated over workers in multiprocess mode."""
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(RestartsCollector())
            return generate_latest(registry)
        return generate_latest(self.registry)
