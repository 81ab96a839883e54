"""What the service does, without HTTP: keyword-only functions the routes call.

Decision flow (`decide`):

1. ``parse_event`` (the contract; refusals name the field and never echo a card
   number). Outcome types are refused here: they go to `report`.
2. The feature store's one Lua call (counts the event and reads its features) over
   the worker's pipelined connection (``OnlineStore.process_async``), then
   ``fengkong.pipeline.decide_on``: the models and the live rules, the same code
   replay runs.
3. Idempotency. The store's Lua call is the claim: it is atomic and counts an
   event_id once, so exactly one request -- across all workers -- gets
   ``duplicate=False`` from it and is the winner; it stores the decision. Any other
   request with that event_id (a retry, or a twin arriving at the same moment on
   another worker) is a loser: it counted nothing, and reads the winner's record at
   ``{evt:<id>}:request``, polling every 2 ms until the deadline if the winner is
   still in flight. The record holds the SHA-256 of the body (JSON with sorted keys:
   key order and whitespace do not matter, any changed value does): a different
   body is `Conflict` (409); the same body gets the stored decision
   (``duplicate: true``). If no record appears (the winner degraded or died after
   counting), the loser decides on the same replayed features and stores its
   answer with ``SET NX``. An earlier design claimed the key with ``SET NX`` before
   the Lua call; using the store's own dedup saves that round trip on every
   decision.
4. One pipelined write stores the decision record (with TTL), a pointer
   ``decision_id -> event_id``, the merchant's latest features (for GET
   /v1/merchants) and the audit stream entry; then the audit file line. The write
   is queued before the answer, which does not wait for Redis's acknowledgement
   (`_write_behind`: a refused or lost write is logged, counted and opens the
   breaker). GET /v1/decisions and GET /v1/merchants read over the same
   connection, so this worker reads its own writes.

Degraded mode: when the store call fails (Redis down, slow past the budget, or
refusing), nothing from Redis is evaluated and the failure policy answers
(a reply that was only late, while Redis kept answering the worker's other
requests, degrades that one decision and does not open the breaker):
``fail_open`` -> allow, ``fail_closed`` -> review, with ``degraded: true`` and the
reason. Such a decision cannot be stored in Redis (it goes to the audit file), so
a retry after recovery gets a full decision (on the features of the first
delivery, if that one was counted before the timeout). When only a model fails, the rules still decide without the
``model.*`` features; the decision is marked degraded and ``fail_closed`` raises it
to at least review.

``risk``: the fused fraud risk 0-1 (`ModelRuntime.fuse`, the review queue's
priority) that `pipeline.decide` returns as the feature ``model.risk``; it goes to
the response and the record at the top level (not among the record's features,
which are what the rules read), null without a fusion artifact, for non-payments,
in degraded mode, or when the models failed.

Outcomes (`report`) use the same winner/loser rule and body hash, and go (over
the same pipelined connection) to the store (which counts them once) and to the
capped labels stream ``{prefix}:v1:labels`` that
model training reads. An outcome cannot be answered by a policy: if Redis is down
the caller gets `Unavailable` (503, Retry-After) and retries.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson
import redis

from fengkong import pipeline
from fengkong.api.audit import stream_entry, utc_now_iso
from fengkong.api.encoding import dumps, loads
from fengkong.api.security import Caller
from fengkong.api.state import Runtime
from fengkong.engine import RuleSetError, load_ruleset
from fengkong.engine.decision import Decision
from fengkong.engine.testing import load_cases, run_cases
from fengkong.events import OUTCOME_TYPES, Event, EventRejected, looks_like_pan, parse_event
from fengkong.features import definitions as d
from fengkong.features.errors import DuplicateEventConflict, FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.lists import normalise_entry
from fengkong.features.pipelined import ReplyError, ReplyLate

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")
_RULE_FILE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\.yaml$")
RESPONSE_KEYS = ("decision_id", "event_id", "decision", "score", "reasons", "merchant_grade", "ruleset_version",
                 "degraded", "degraded_reason", "lane", "risk", "models")
_INTERNAL_KEYS = ("kind", "body_sha256")
_POLL_S = 0.002


# --- errors the routes map to statuses ----------------------------------------------------------
class ServiceError(Exception):
    """Root of the service's refusals; ``field`` names what is at fault."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class Conflict(ServiceError):
    """The event_id was used before with a different body (or for another kind of request)."""


class NotFound(ServiceError):
    """No such decision, list or merchant record."""


class Invalid(ServiceError):
    """A well-formed request the service cannot act on (e.g. a candidate rule set that does not load)."""

    def __init__(self, field: str | None, reason: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(field, reason)
        self.problems = problems or []


class Unavailable(ServiceError):
    """A dependency is down and the request cannot be answered by a policy (retry later)."""


# --- helpers ------------------------------------------------------------------------------------
def body_hash(data: Mapping[str, Any]) -> bytes:
    """SHA-256 of the body as canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest().encode()


_decision_ids: list[str] = []
os.register_at_fork(after_in_child=_decision_ids.clear)  # a forked worker must not reuse its parent's ids


def new_decision_id() -> str:
    """``d_`` and 24 hex digits from the OS's CSPRNG, drawn 256 ids per system call
    (one ``getrandom`` per decision cost ~5 us of the worker's CPU under load)."""
    if not _decision_ids:
        raw = os.urandom(12 * 256).hex()
        _decision_ids.extend("d_" + raw[i:i + 24] for i in range(0, len(raw), 24))
    return _decision_ids.pop()


def accept(data: Any) -> Event:
    """`parse_event`: the contract refuses, naming the field (amounts are capped there)."""
    return parse_event(data)


def check_id(field: str, value: str) -> str:
    if not _ID_RE.match(value):
        raise EventRejected(field, "must be 1-128 letters, digits or _.:@-")
    return value


class _GuardedModels:
    """Runs the models for one decision; a failure is recorded, not raised.

    ``fuse`` (the fused risk, after the rules decided) failing only costs the
    ``risk`` field (null, logged): the decision does not depend on it, so it is not
    degraded."""

    __slots__ = ("runtime", "failure")

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.failure: str | None = None

    def score(self, features: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            return self.runtime.score(features)
        except Exception as exc:  # any model fault degrades; it never fails the payment
            self.failure = f"model failed: {type(exc).__name__}"
            log.warning("model scoring failed: %s", type(exc).__name__)
            return {}

    def fuse(self, model_outputs: Mapping[str, Any], decision: Decision) -> float | None:
        fuse = getattr(self.runtime, "fuse", None)
        if fuse is None or self.failure is not None:
            return None
        try:
            risk = fuse(model_outputs, decision)
        except Exception as exc:
            log.warning("fused risk failed: %s", type(exc).__name__)
            return None
        return None if risk is None else float(risk)


def _response(record: Mapping[str, Any], latency_ms: float, duplicate: bool) -> dict[str, Any]:
    out = {k: record.get(k) for k in RESPONSE_KEYS}
    out["latency_ms"] = round(latency_ms, 3)
    out["duplicate"] = duplicate
    return out


def _degraded(rt: Runtime, *, event: Event | None, data: Any, caller: Caller, reason: str,
              metric_reason: str, t0: float) -> dict[str, Any]:
    """The failure policy's answer; audited to the file (Redis is the thing that failed)."""
    decision = rt.settings.degraded_decision
    event_id = event.event_id if event is not None else (data.get("event_id") if isinstance(data, dict) else None)
    record = {
        "decision_id": new_decision_id(), "event_id": str(event_id), "decision": decision, "score": 0.0,
        "reasons": [], "merchant_grade": None, "ruleset_version": rt.rules.version, "degraded": True,
        "degraded_reason": reason, "lane": None, "risk": None, "models": rt.models.status,
        "decided_at": utc_now_iso(), "caller": caller.name,
        "event": data, "features": {}, "shadow": [], "missing_features": [], "score_action": None,
        "thresholds": {}, "policy": rt.settings.failure_policy,
    }
    latency = time.perf_counter() - t0
    record["latency_ms"] = round(latency * 1000, 3)
    rt.audit.to_file(dumps(record))
    rt.metrics.degraded.labels(metric_reason).inc()
    rt.metrics.decided(decision, True, (), latency)
    return _response(record, latency * 1000, False)


async def _execute(rt: Runtime, commands: Sequence[tuple[Any, ...]], timeout_s: float) -> list[Any]:
    """The commands' replies over the pipelined connection; a refused one raises
    `redis.ResponseError` (and a connection fault `ConnectionFailed`, an OSError)."""
    replies = await rt.conn.execute(commands, timeout_s)
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise redis.ResponseError(str(reply))
    return replies


async def _get(rt: Runtime, key: str) -> bytes | None:
    return (await _execute(rt, (("GET", key),), rt.store_budget_s))[0]  # type: ignore[no-any-return]


def _set_record(key: str, blob: bytes, ttl: int, *, only_if_absent: bool) -> tuple[Any, ...]:
    """SET of an event_id's record; a request that did not count the event only adopts
    the key if the first delivery left nothing there."""
    return ("SET", key, blob, "EX", ttl, "NX") if only_if_absent else ("SET", key, blob, "EX", ttl)


async def _stored(rt: Runtime, *, key: str, digest: bytes, kind: str, deadline: float) -> dict[str, Any] | None:
    """The record stored for an event_id by the request that counted it, waiting (polling
    every 2 ms) until `deadline` for an in-flight winner; None if none appeared.
    Raises Conflict when the stored body differs (or the event_id was another kind)."""
    while True:
        value = await _get(rt, key)
        if value is not None:
            record = loads(value)
            if record.get("body_sha256", "").encode() != digest:
                raise Conflict("event_id", "was already used with a different body")
            if record.get("kind") != kind:
                raise Conflict("event_id", f"was already used by a {record.get('kind')} request")
            return record
        if time.perf_counter() >= deadline:
            return None
        await asyncio.sleep(_POLL_S)


async def _conflict_check(rt: Runtime, *, key: str, digest: bytes) -> None:
    """After an unexpected store fault: if the event_id already holds a different body,
    the answer is 409. (The store's replay of a first delivery's features can fail when
    the second body has other entities or another type; the body hash settles it.)"""
    try:
        value = await _get(rt, key)
    except (redis.RedisError, OSError):
        return
    if value is not None and loads(value).get("body_sha256", "").encode() != digest:
        raise Conflict("event_id", "was already used with a different body")


# --- decisions ----------------------------------------------------------------------------------
def fallback(*, rt: Runtime, data: Any, caller: Caller, t0: float, error: BaseException) -> dict[str, Any]:
    """The failure policy's answer to an unexpected fault: the payment flow never sees a 500."""
    log.error("decision failed unexpectedly; answered by the failure policy", exc_info=error)
    return _degraded(rt, event=None, data=data, caller=caller, t0=t0, metric_reason="internal_error",
                     reason=f"internal error: {type(error).__name__}")


async def decide(*, rt: Runtime, data: Any, caller: Caller, t0: float) -> dict[str, Any]:
    """Decide one payment/signup/login/card_bind event (see the module docstring)."""
    event = accept(data)
    if event.type in OUTCOME_TYPES:
        raise EventRejected("type", f"{event.type.value} is an outcome event: send it to POST /v1/events")
    digest = body_hash(data)
    deadline = t0 + rt.deadline_s
    breaker = rt.breaker
    if not breaker.allow():
        return _degraded(rt, event=event, data=data, caller=caller, t0=t0, metric_reason="store_unavailable",
                         reason=f"feature store unavailable (recent fault: {breaker.last_error})")
    key = rt.keys.request(event.event_id)
    models = _GuardedModels(rt.models) if rt.models.available else None
    try:
        result = await rt.store.process_async(event, rt.conn, max(0.001, t0 + rt.store_budget_s - time.perf_counter()))
        decision, features = pipeline.decide_on(result.features, rules=rt.rules, models=models)  # type: ignore[arg-type]
    except DuplicateEventConflict:
        raise Conflict("event_id", "was already used with a different body") from None
    except FeatureStoreError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ReplyLate):  # Redis answers others: only this decision ran out of time
            return _degraded(rt, event=event, data=data, caller=caller, t0=t0, metric_reason="store_late",
                             reason="feature store slower than the deadline: ReplyLate")
        unreachable = isinstance(exc, FeatureStoreUnavailable)
        breaker.failed(exc)
        what = "unavailable or slower than the deadline" if unreachable else "refused the update"
        return _degraded(rt, event=event, data=data, caller=caller, t0=t0,
                         metric_reason="store_unavailable" if unreachable else "store_error",
                         reason=f"feature store {what}: {type(cause).__name__}")
    except Exception:
        await _conflict_check(rt, key=key, digest=digest)
        raise
    if result.duplicate:
        # Another request counted this event_id first (a retry, or a twin on another
        # worker right now): answer with its stored decision once it is there.
        try:
            record = await _stored(rt, key=key, digest=digest, kind="decision", deadline=deadline)
        except (redis.RedisError, OSError) as exc:
            breaker.failed(exc)
            return _degraded(rt, event=event, data=data, caller=caller, t0=t0, metric_reason="store_unavailable",
                             reason=f"feature store unavailable: {type(exc).__name__}")
        if record is not None:
            breaker.succeeded()
            rt.metrics.duplicates.labels("decisions").inc()
            return _response(record, (time.perf_counter() - t0) * 1000, True)
        # The first delivery left no record (it degraded or died after counting): this
        # request decides on the same features (the store replays them) and stores its
        # answer unless a record appears meanwhile (SET NX below).
    breaker.succeeded()

    final = decision.decision
    degraded_reason = models.failure if models is not None else None
    if degraded_reason and rt.settings.failure_policy == "fail_closed":
        final = rt.rules.current.policy.most_severe([final, "review"])
    decision_id = new_decision_id()
    record = _decision_record(rt, event=event, data=data, caller=caller, decision=decision, final=final,
                              features=features, decision_id=decision_id, digest=digest,
                              degraded_reason=degraded_reason)
    latency = time.perf_counter() - t0
    record["latency_ms"] = round(latency * 1000, 3)
    blob = dumps(record)
    ttl = rt.settings.decision_ttl_s
    adopt = result.duplicate
    commands: list[tuple[Any, ...]] = [
        _set_record(key, blob, ttl, only_if_absent=adopt),
        ("SET", rt.keys.decision(decision_id), event.event_id, "EX", ttl),
        rt.audit.decision_command(blob),
    ]
    if event.merchant_id:
        snap = {"event_id": event.event_id, "occurred_at": event.occurred_at.isoformat(),
                "decision_id": decision_id,
                "features": {k: features[k] for k in _merchant_names(tuple(features))}}
        commands.append(("SET", rt.keys.merchant_snapshot(event.merchant_id), dumps(snap), "EX", ttl))
    if adopt:  # SET NX: this request answers with the first delivery's record if it arrived after all
        try:
            replies = await _execute(rt, commands, max(0.001, deadline - time.perf_counter()))
            if replies[0] is None:
                stored = await _stored(rt, key=key, digest=digest, kind="decision", deadline=time.perf_counter())
                if stored is not None:
                    return _response(stored, (time.perf_counter() - t0) * 1000, True)
        except (redis.RedisError, OSError) as exc:
            _unstored(rt, decision_id, exc)
    else:
        _write_behind(rt, commands, decision_id)
    rt.audit.to_file(blob)
    if degraded_reason:
        rt.metrics.degraded.labels("model_failed").inc()
    rt.metrics.decided(final, bool(degraded_reason),
                       [(r.id, r.mode) for r in decision.reasons] + [(r.id, r.mode) for r in decision.shadow],
                       latency)
    return _response(record, latency * 1000, False)


def _write_behind(rt: Runtime, commands: list[tuple[Any, ...]], decision_id: str) -> None:
    """Queue the decision's record, pointer, merchant snapshot and audit entry on the
    pipelined connection, and answer without waiting for Redis to acknowledge them.

    Why: that wait was a second trip through the worker's queue of ready requests, on
    every decision (~3 ms of a p50 of 8 ms under the bench load). What holds: the
    commands leave in this loop tick's write to Redis (with the other requests'; a
    write of their own, before the answer, cost a system call and a wake-up of Redis
    per decision); this worker's later reads of the record (GET /v1/decisions, a
    retry of the event_id) go over the same connection, where Redis runs them after
    the write; a retry on another worker polls for the record until its deadline. A
    write Redis refuses or loses is logged and counted
    (``fengkong_decision_records_unstored_total``) and opens the breaker, as a failed
    awaited write did: the decision stands, it was made on real features."""
    try:
        batch = rt.conn.send_nowait(commands)
    except OSError as exc:
        _unstored(rt, decision_id, exc)
        return
    batch.add_done_callback(functools.partial(_written, rt, decision_id))


def _written(rt: Runtime, decision_id: str, batch: "asyncio.Future[list[Any]]") -> None:
    exc = batch.exception() if not batch.cancelled() else asyncio.CancelledError()
    if exc is None:
        exc = next((redis.ResponseError(str(r)) for r in batch.result() if isinstance(r, ReplyError)), None)
    if exc is not None:
        _unstored(rt, decision_id, exc)


def _unstored(rt: Runtime, decision_id: str, exc: BaseException) -> None:
    rt.breaker.failed(exc)
    rt.metrics.unstored.inc()
    log.warning("decision %s not stored: %s: %s", decision_id, type(exc).__name__, exc)


def _decision_record(rt: Runtime, *, event: Event, data: Mapping[str, Any], caller: Caller, decision: Decision,
                     final: str, features: Mapping[str, Any], decision_id: str, digest: bytes,
                     degraded_reason: str | None) -> dict[str, Any]:
    ruleset = rt.rules.current
    read = _plain(ruleset.features_read if ruleset.version == decision.ruleset_version else frozenset(features))
    recorded = {name: features.get(name) for name in read}
    if rt.models.available:
        recorded.update((k, v) for k, v in features.items() if k.startswith("model.") and k != pipeline.RISK_FEATURE)
    return {
        "kind": "decision", "body_sha256": digest.decode(),
        "decision_id": decision_id, "event_id": event.event_id, "decision": final, "score": decision.score,
        "reasons": [r.to_dict() for r in decision.reasons],
        "merchant_grade": features.get("merchant.grade"), "ruleset_version": decision.ruleset_version,
        "degraded": degraded_reason is not None, "degraded_reason": degraded_reason, "lane": decision.lane,
        "risk": features.get(pipeline.RISK_FEATURE), "models": rt.models.status,
        "decided_at": utc_now_iso(), "caller": caller.name, "event": data,
        "features": recorded,
        "shadow": [r.to_dict() for r in decision.shadow], "missing_features": decision.missing_features,
        "score_action": decision.score_action, "thresholds": decision.thresholds,
    }


@functools.lru_cache(maxsize=64)
def _merchant_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The merchant.* names among a features mapping's keys (cached: the store gives
    the same keys in the same order for every event of a kind)."""
    return tuple(n for n in names if n.startswith("merchant."))


@functools.lru_cache(maxsize=16)
def _plain(names: frozenset[str]) -> tuple[str, ...]:
    """The non-model features of a set of names (cached per rule set: frozensets keep their hash)."""
    return tuple(sorted(n for n in names if not n.startswith("model.")))


async def get_decision(*, rt: Runtime, decision_id: str) -> dict[str, Any]:
    """The stored decision with its explanation. Read over the worker's pipelined
    connection: a decision this worker just answered was written there first."""
    check_id("decision_id", decision_id)
    try:
        event_id = await _get(rt, rt.keys.decision(decision_id))
        value = await _get(rt, rt.keys.request(event_id.decode())) if event_id else None
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None
    if not value or value[:1] == b"P":
        raise NotFound("decision_id", "no stored decision has this id (unknown, expired, or made in degraded mode)")
    record = loads(value)
    if record.get("decision_id") != decision_id:
        raise NotFound("decision_id", "no stored decision has this id")
    for k in _INTERNAL_KEYS:
        record.pop(k, None)
    record.setdefault("duplicate", False)
    return record


# --- outcomes -----------------------------------------------------------------------------------
async def report(*, rt: Runtime, data: Any, caller: Caller, t0: float) -> dict[str, Any]:
    """Record one outcome event (refund, chargeback, withdrawal, fraud_report, settlement, decline)."""
    event = accept(data)
    if event.type not in OUTCOME_TYPES:
        raise EventRejected("type", f"{event.type.value} needs a decision: send it to POST /v1/decisions "
                                    f"(outcome types: {', '.join(sorted(t.value for t in OUTCOME_TYPES))})")
    digest = body_hash(data)
    key = rt.keys.request(event.event_id)
    try:
        try:
            result = await rt.store.process_async(event, rt.conn, rt.store_budget_s)
        except DuplicateEventConflict:
            raise Conflict("event_id", "was already used with a different body") from None
        except FeatureStoreError:
            raise
        except Exception:
            await _conflict_check(rt, key=key, digest=digest)
            raise
        if result.duplicate:  # counted before: the same body is a retry, another is a conflict
            deadline = time.perf_counter() + max(rt.deadline_s, 0.5)
            record = await _stored(rt, key=key, digest=digest, kind="outcome", deadline=deadline)
            if record is not None:
                rt.breaker.succeeded()
                rt.metrics.duplicates.labels("events").inc()
                return {"event_id": event.event_id, "type": event.type.value, "recorded": False, "duplicate": True}
        record = {"kind": "outcome", "body_sha256": digest.decode(), "event_id": event.event_id,
                  "type": event.type.value, "recorded_at": utc_now_iso(), "caller": caller.name, "event": data}
        blob = dumps(record)
        commands = [_set_record(key, blob, rt.settings.decision_ttl_s, only_if_absent=result.duplicate)]
        if not result.duplicate:
            commands.append(stream_entry(rt.keys.labels, rt.settings.audit_stream_maxlen, blob))
        await _execute(rt, commands, rt.store_budget_s)
    except FeatureStoreError as exc:
        rt.breaker.failed(exc)
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}; "
                                "the outcome was not recorded, retry") from None
    except (redis.RedisError, OSError) as exc:
        rt.breaker.failed(exc)
        raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}; retry") from None
    except (EventRejected, ServiceError):
        raise
    except Exception as exc:  # never a 500 to the payment flow; logged with its traceback
        log.error("outcome %s failed unexpectedly", event.event_id, exc_info=exc)
        raise Unavailable(None, f"internal error: {type(exc).__name__}; the outcome may not be recorded") from None
    rt.breaker.succeeded()
    if not result.duplicate:
        rt.metrics.events.labels(event.type.value).inc()
    return {"event_id": event.event_id, "type": event.type.value, "recorded": not result.duplicate,
            "duplicate": result.duplicate}


# --- merchants ----------------------------------------------------------------------------------
async def get_merchant(*, rt: Runtime, merchant_id: str) -> dict[str, Any]:
    """The merchant's profile, grade, and merchant.* features as its latest decision read
    them (the snapshot over the pipelined connection, where this worker wrote it)."""
    check_id("merchant_id", merchant_id)
    try:
        profile = rt.store.get_merchant_profile(merchant_id)
        snap_raw = await _get(rt, rt.keys.merchant_snapshot(merchant_id))
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
        rt.store.set_merchant_profile(
            merchant_id, grade=fields.get("grade"), single_limit_minor=fields.get("single_limit_minor"),
            daily_cap_minor=fields.get("daily_cap_minor"),
            onboarded_at=onboarded.isoformat() if onboarded is not None else None,
            mcc=fields.get("mcc"), reason=fields.get("reason"))
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    rt.audit.change(rt.client, actor=caller.name, action="merchant.profile", version=rt.rules.version,
                    detail={"merchant_id": merchant_id, "fields": {k: str(v) for k, v in fields.items()}})
    return await get_merchant(rt=rt, merchant_id=merchant_id)


# --- lists --------------------------------------------------------------------------------------
def _spec_info(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "kind": spec.kind, "description": spec.description, "feature": spec.feature}


def list_lists(*, rt: Runtime) -> list[dict[str, Any]]:
    return [_spec_info(s) for s in rt.list_specs.values()]


def _spec(rt: Runtime, name: str) -> Any:
    spec = rt.list_specs.get(name)
    if spec is None:
        raise NotFound("name", f"no list of this name; known: {', '.join(sorted(rt.list_specs))}")
    return spec


def list_entries(*, rt: Runtime, name: str) -> dict[str, Any]:
    spec = _spec(rt, name)
    try:
        entries = rt.lists.members(name)
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    return _spec_info(spec) | {"entries": entries}


def change_list(*, rt: Runtime, name: str, action: str, entries: list[str], reason: str | None,
                caller: Caller) -> dict[str, Any]:
    """Add or remove entries (effective on the next decision: the store reads lists in its Lua call)."""
    spec = _spec(rt, name)
    clean: list[str] = []
    for i, entry in enumerate(entries):
        if looks_like_pan(entry):
            raise EventRejected(f"entries[{i}]", "looks like a full card number (PAN); lists hold card fingerprints")
        try:
            clean.append(normalise_entry(spec.kind, entry))
        except ValueError:
            what = "an IP address or CIDR" if spec.kind == "ip" else "a non-empty id"
            raise EventRejected(f"entries[{i}]", f"is not {what}") from None
        if spec.kind != "ip" and not _ID_RE.match(clean[-1]):
            raise EventRejected(f"entries[{i}]", "must be 1-128 letters, digits or _.:@-")
    try:
        changed = rt.lists.add(name, clean) if action == "add" else rt.lists.remove(name, clean)
    except FeatureStoreError as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}") from None
    rt.audit.change(rt.client, actor=caller.name, action=f"list.{action}", version=rt.rules.version,
                    detail={"list": name, "entries": clean, "changed": changed, "reason": reason})
    return {"name": name, "action": action, "changed": changed, "entries": clean}


# --- rules --------------------------------------------------------------------------------------
def rules_info(*, rt: Runtime) -> dict[str, Any]:
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
    return result.to_dict() | {"changed": result.changed}


def dry_run(*, rt: Runtime, event: Mapping[str, Any] | None, features: Mapping[str, Any] | None,
            files: Mapping[str, str | None] | None) -> dict[str, Any]:
    """Evaluate a candidate rule set (rules/ with `files` overlaid) next to the live one; deploy nothing.

    Features come from the stored decision of `event` (same event_id and body), so
    nothing is counted; `features` are laid over them (or used alone)."""
    base: dict[str, Any] = {}
    source = "posted"
    if event is not None:
        parsed = accept(event)
        try:
            value = rt.client.get(rt.keys.request(parsed.event_id))
        except (redis.RedisError, OSError) as exc:
            raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None
        if not value or value[:1] == b"P":
            raise NotFound("event.event_id", "no stored decision for this event: decide it first, or post `features`")
        record = loads(value)
        if record.get("kind") != "decision" or record.get("body_sha256", "").encode() != body_hash(event):
            raise Conflict("event", "differs from the event stored under this event_id")
        base = dict(record.get("features") or {})
        source = "stored"
    if features:
        base.update(features)
        source = "stored+posted" if event is not None else "posted"
    if event is None and not features:
        raise EventRejected("event", "give an event that was decided, or `features`, or both")
    with tempfile.TemporaryDirectory(prefix="fengkong-dryrun-") as tmp:
        cand_dir = Path(tmp) / "rules"
        shutil.copytree(rt.rules.rules_dir, cand_dir)
        for name, text in (files or {}).items():
            if not _RULE_FILE_RE.match(name):
                raise EventRejected(f"files.{name}", "must be a plain file name ending in .yaml (no folders)")
            target = cand_dir / name
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(text, encoding="utf-8")
        try:
            candidate = load_ruleset(cand_dir)
        except RuleSetError as exc:
            problems = [p.to_dict() for p in exc.problems]
            raise Invalid("files", f"the candidate rule set does not load ({len(problems)} problem(s))",
                          problems) from None
        try:
            cases, _problems = load_cases(cand_dir)
            failed = [f"{r.case.file}:{r.case.line} {r.case.name}: {'; '.join(r.failures)}"
                      for r in run_cases(candidate, cases) if not r.passed]
            cand = candidate.evaluate(base)
            live = rt.rules.evaluate(base)
        finally:
            candidate.close()
    cand_d, live_d = cand.to_dict(), live.to_dict()
    return {"candidate_version": cand.ruleset_version, "live_version": live.ruleset_version, "candidate": cand_d,
            "live": live_d, "changed": cand.decision != live.decision, "failed_cases": failed,
            "features_source": source}
