"""What the console's pages read from the running service: its Prometheus metrics,
the audit streams (stored decisions, changes) and report files in the data directory.

Everything is bounded: the streams are read newest first with a COUNT, so a page
never loads more than `SCAN_LIMIT` records however busy the service is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import redis
from prometheus_client.parser import text_string_to_metric_families

from fengkong.api.audit import read_entry
from fengkong.api.state import Runtime

SCAN_LIMIT = 5000
OUTCOMES = ("allow", "challenge", "review", "deny")
REPORT_SUFFIXES = (".html", ".csv", ".md")


@dataclass
class MetricsSummary:
    """The service's own counters since this worker (or, multi-worker, the service) started."""

    decisions: dict[str, int] = field(default_factory=dict)  # outcome -> count
    degraded: int = 0
    total: int = 0
    fires: dict[tuple[str, str], int] = field(default_factory=dict)  # (rule, mode) -> count
    p99_ms: float | None = None
    p50_ms: float | None = None

    @property
    def degraded_share(self) -> float | None:
        return self.degraded / self.total if self.total else None

    def top_rules(self, n: int = 10) -> list[tuple[str, str, int]]:
        return [(r, m, c) for (r, m), c in sorted(self.fires.items(), key=lambda kv: -kv[1])[:n]]


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile `q` (seconds)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for bound, cumulative in buckets:
        if cumulative >= target:
            return bound
    return None


def metrics_summary(rt: Runtime) -> MetricsSummary:
    """Decisions by outcome, degraded count, rule fires and latency quantiles from /metrics's registry."""
    out = MetricsSummary()
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(rt.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "fengkong_decisions_total":
                d = sample.labels["decision"]
                out.decisions[d] = out.decisions.get(d, 0) + int(sample.value)
                out.total += int(sample.value)
                if sample.labels.get("degraded") == "true":
                    out.degraded += int(sample.value)
            elif sample.name == "fengkong_rule_fires_total":
                key = (sample.labels["rule"], sample.labels["mode"])
                out.fires[key] = out.fires.get(key, 0) + int(sample.value)
            elif sample.name == "fengkong_decision_latency_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    buckets.sort()
    p99, p50 = _quantile(buckets, 0.99), _quantile(buckets, 0.5)
    out.p99_ms = None if p99 is None else p99 * 1000
    out.p50_ms = None if p50 is None else p50 * 1000
    return out


def _stream(rt: Runtime, key: str, *, since_ms: int | None, count: int) -> list[tuple[int, dict[str, Any]]]:
    """Newest first: (entry time in ms, record) of a capped audit stream."""
    low = f"{since_ms}-0" if since_ms is not None else "-"
    try:
        entries = rt.client.xrevrange(key, max="+", min=low, count=count)
    except (redis.RedisError, OSError):
        return []
    out = []
    for entry_id, fields in entries or ():
        if entry_id is None:
            continue
        record = read_entry(entry_id, fields or {})
        if record is None:
            continue
        stamp = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        out.append((int(stamp.split("-")[0]), record))
    return out


def recent_decisions(rt: Runtime, *, minutes: int = 60, count: int = SCAN_LIMIT) -> list[tuple[int, dict[str, Any]]]:
    """Stored decisions of the last `minutes` (newest first, at most `count`)."""
    since = int(time.time() * 1000) - minutes * 60_000
    return _stream(rt, rt.audit.decisions_key, since_ms=since, count=count)


def per_minute(entries: Iterable[tuple[int, dict[str, Any]]], *, minutes: int = 60,
               now_ms: int | None = None) -> tuple[list[int], dict[str, list[int]]]:
    """Counts per minute (oldest first) by outcome: (minute starts in ms, outcome -> counts)."""
    now = (now_ms if now_ms is not None else int(time.time() * 1000)) // 60_000
    starts = [(now - minutes + 1 + i) * 60_000 for i in range(minutes)]
    counts = {o: [0] * minutes for o in OUTCOMES}
    for ts, record in entries:
        i = ts // 60_000 - (now - minutes + 1)
        outcome = record.get("decision")
        if 0 <= i < minutes and outcome in counts:
            counts[outcome][i] += 1
    return starts, counts


def changes(rt: Runtime, *, prefix: str = "", count: int = 500, where: dict[str, Any] | None = None) -> list[
        dict[str, Any]]:
    """Change-audit records (newest first) whose action starts with `prefix` and whose
    fields equal `where`'s."""
    out = []
    for _, record in _stream(rt, rt.audit.changes_key, since_ms=None, count=count):
        if str(record.get("action", "")).startswith(prefix) and all(
                record.get(k) == v for k, v in (where or {}).items()):
            out.append(record)
    return out


def card_history(rt: Runtime, fingerprint: str, *, limit: int = 20, scan: int = SCAN_LIMIT) -> list[str]:
    """Ids of the card's most recent decisions (newest first), among the last `scan`
    entries of the decision audit stream (each entry names its card)."""
    out = []
    for _, entry in _stream(rt, rt.audit.decisions_key, since_ms=None, count=scan):
        card = entry.get("card")
        if card is None:  # an entry written before references named the card: a whole record
            card = ((entry.get("event") or {}).get("card") or {}).get("fingerprint")
        if card == fingerprint and entry.get("decision_id"):
            out.append(str(entry["decision_id"]))
            if len(out) >= limit:
                break
    return out


def reports_dir(rt: Runtime) -> Path:
    """Where the console looks for reports: ``<data_dir>/reports`` (give `fengkong
    replay`, `fengkong rescore` or `fengkong rules backtest` an ``--out`` under it)."""
    return Path(rt.settings.data_dir) / "reports"


def reports(rt: Runtime, limit: int = 200) -> list[dict[str, Any]]:
    """Report files under `reports_dir` (HTML, CSV, Markdown), newest first."""
    root = reports_dir(rt)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix in REPORT_SUFFIXES]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [{"path": str(p.relative_to(root)), "size": p.stat().st_size,
             "modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime))} for p in found[:limit]]


def report_file(rt: Runtime, relative: str) -> Path | None:
    """The report at `relative` if it is a report file inside `reports_dir` (no escape by ``..`` or links)."""
    root = reports_dir(rt).resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, ValueError):
        return None
    if not path.is_relative_to(root) or not path.is_file() or path.suffix not in REPORT_SUFFIXES:
        return None
    return path
