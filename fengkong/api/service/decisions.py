"""Deciding one payment-flow event, and reading a stored decision back.

Decision flow (`decide`):

1. ``parse_event`` (the contract; refusals name the field and never echo a card
   number). Outcome types are refused here: they go to `outcomes.report`.
2. The feature store's one Lua call (counts the event and reads its features) over
   the worker's pipelined connection (``OnlineStore.process_async``), then
   ``fengkong.pipeline.decide_on``: the models and the live rules, the same code
   replay runs.
3. Idempotency (`idempotency`): the request whose store call counted the event_id
   stores the decision; any other gets that stored decision (``duplicate: true``) or
   409 for a different body.
4. One pipelined write stores the decision record (with TTL; compact, `records`,
   preceded by its schema's SET when this worker has not written it lately), a
   pointer ``decision_id -> event_id``, the audit stream entry (a reference to the
   decision) and, for a decision that opens a case, its intake item (`fengkong.cases.intake`); then the
   audit file line (the whole record). The answer does not wait for Redis's
   acknowledgement (`_write_behind`). The merchant's latest features (for GET
   /v1/merchants) are noted, and written with the other merchants' of the interval
   (`merchant_snapshots`).

Degraded mode answers a fault of the feature store only (`FeatureStoreError`:
Redis down, slow past the budget, or refusing; and a Redis fault while a duplicate
waits for its twin's record). The store's budget (80% of the deadline) runs from
the store call, so a request that waited for the worker's CPU is not degraded for
it. Degraded, the live rules still run on what needs no stored state (the event,
the IP's intelligence, the worker's snapshot of the lists and merchant profiles,
`fengkong.api.snapshot`); the answer is the more severe of theirs and the failure
policy's (``fail_open`` -> allow, ``fail_closed`` -> review), with ``degraded:
true``, the reason and ``missing_features``. A reply that was only late while Redis
kept answering the worker's other requests degrades that one decision and does not
open the breaker. Such a decision cannot be stored in Redis (it goes to the audit file),
so a retry after recovery gets a full decision. When only a model fails, the rules
still decide without the ``model.*`` features; the decision is marked degraded and
``fail_closed`` raises it to at least review. Any other exception (a bug, a caller
error) is not the dependency's fault: it propagates to the error answer
(`fengkong.api.errors.answer`: 4xx for the caller's errors, 500 otherwise).

``risk``: the fused fraud risk 0-1 (`ModelRuntime.fuse`, the review queue's
priority) that `pipeline.decide` returns as the feature ``model.risk``; it goes to
the response and the record at the top level (not among the record's features,
which are what the rules read), null without a fusion artifact, for non-payments,
in degraded mode, or when the models failed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import sys
import time
from typing import Any, Mapping

import redis

from fengkong import pipeline
from fengkong.api.audit import utc_now_iso
from fengkong.api.encoding import dumps
from fengkong.api.errors import Conflict, NotFound, Unavailable
from fengkong.api.security import Caller
from fengkong.api.service.idempotency import (body_hash, conflict_check, execute, get, load, record_ttl, set_record,
                                              stored)
from fengkong.api.service import pointers
from fengkong.api.service.record_values import decided_now, when_code
from fengkong.api.service.records import is_record, with_features
from fengkong.api.service.ids import check_id, new_decision_id
from fengkong.api.state import Runtime
from fengkong.engine.decision import Decision
from fengkong.events import OUTCOME_TYPES, Event, EventRejected, parse_event
from fengkong.features.model_outputs import MODEL_OUTPUTS
from fengkong.features.errors import DuplicateEventConflict, FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.pipelined import ReplyError, ReplyLate

log = logging.getLogger(__name__)

RESPONSE_KEYS = ("decision_id", "event_id", "decision", "score", "reasons", "merchant_grade", "ruleset_version",
                 "degraded", "degraded_reason", "lane", "risk", "models")
_response_of = eval("lambda r: {" + ", ".join(f"{k!r}: r[{k!r}]" for k in RESPONSE_KEYS) + "}")  # one dict display
_INTERNAL_KEYS = ("kind", "body_sha256")


class _GuardedModels:
    """Runs the models for one decision; a failure is recorded, not raised.

    ``prepare`` scores the payment with the others that reach the models in the same few
    turns of the event loop (`ModelRuntime.submit`); the ``score`` that `pipeline.decide_on`
    then calls answers what it prepared. ``fuse`` (the fused risk, after the rules decided)
    failing only costs the ``risk`` field (null, logged): the decision does not depend on
    it, so it is not degraded."""

    __slots__ = ("runtime", "failure", "prepared")

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.failure: str | None = None
        self.prepared: Mapping[str, Any] | None = None

    async def prepare(self, features: Mapping[str, Any]) -> None:
        submit = getattr(self.runtime, "submit", None)
        if submit is None:  # a runtime that scores one event at a time: `score` does
            return
        try:
            future = submit(features)  # None: nothing to batch, `score` answers
            if future is not None:
                self.prepared = await future
        except Exception as exc:  # any model fault degrades; it never fails the payment
            self._failed(exc)

    def score(self, features: Mapping[str, Any]) -> Mapping[str, Any]:
        prepared = self.prepared
        if prepared is not None:
            self.prepared = None
            return prepared
        if self.failure is not None:
            return {}
        try:
            return self.runtime.score(features)
        except Exception as exc:  # any model fault degrades; it never fails the payment
            self._failed(exc)
            return {}

    def _failed(self, exc: Exception) -> None:
        self.failure = f"model failed: {type(exc).__name__}"
        log.warning("model scoring failed: %s", type(exc).__name__)

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
    """The answer's fields of `record`, with `latency_ms` (already rounded: `_ms_since`, or
    the record's own, which ``round`` made once) and whether it is a duplicate's."""
    try:
        out = _response_of(record)  # where every key is there (a display: no zip, no pairs)
    except KeyError:
        out = {k: record.get(k) for k in RESPONSE_KEYS}
    out["latency_ms"] = latency_ms
    out["duplicate"] = duplicate
    return out


def _ms_since(t0: float) -> float:
    """Milliseconds since `t0` (a ``perf_counter`` reading), rounded to the microsecond as
    the answer and the record give them."""
    return round((time.perf_counter() - t0) * 1000, 3)


def _degraded(rt: Runtime, *, event: Event, data: Any, caller: Caller, reason: str,
              metric_reason: str, t0: float) -> dict[str, Any]:
    """The answer to a fault of the feature store; audited to the file (Redis is the
    thing that failed).

    The live rules run on what needs no stored state (`SnapshotKeeper.features`: the
    event, the IP's intelligence, the lists and merchant profiles of the worker's
    snapshot); rules that need a counted feature do not fire and the features are named
    in ``missing_features``. The answer is the more severe of what those rules decided
    and the failure policy's: a blacklist deny stays a deny, and the policy answers for
    what could not be evaluated."""
    features = rt.snapshot.features(event)
    ruled = rt.rules.evaluate(features)
    policy = rt.rules.current.policy
    decision = policy.most_severe([ruled.decision, rt.settings.degraded_decision])
    ruleset = rt.rules.current
    read = ruleset.features_read if ruleset.version == ruled.ruleset_version else frozenset(features)
    record = {
        "decision_id": new_decision_id(), "event_id": event.event_id, "decision": decision, "score": ruled.score,
        "reasons": [r.to_dict() for r in ruled.reasons], "merchant_grade": features.get("merchant.grade"),
        "ruleset_version": ruled.ruleset_version, "degraded": True,
        "degraded_reason": reason, "lane": ruled.lane, "risk": None, "models": rt.models.status,
        "decided_at": utc_now_iso(), "caller": caller.name,
        "event": data, "features": {name: features.get(name) for name in _plain(read)},
        "shadow": [r.to_dict() for r in ruled.shadow], "missing_features": ruled.missing_features,
        "score_action": ruled.score_action, "thresholds": ruled.thresholds, "policy": rt.settings.failure_policy,
    }
    latency = time.perf_counter() - t0
    record["latency_ms"] = round(latency * 1000, 3)
    rt.audit.to_file(dumps(record))
    rt.intake.hold(record, event)  # a review must still become a case: queued once Redis is back
    rt.metrics.degraded.labels(metric_reason).inc()
    rt.metrics.decided(decision, True, [(r.id, r.mode) for r in ruled.reasons] + [(r.id, r.mode) for r in ruled.shadow],
                       latency)
    out = _response(record, record["latency_ms"], False)
    out["missing_features"] = record["missing_features"]
    return out


async def decide(*, rt: Runtime, data: Any, caller: Caller, t0: float, text_clear: bool = False) -> dict[str, Any]:
    """Decide one payment/signup/login/card_bind event (see the module docstring);
    ``text_clear`` as `parse_event` takes it."""
    event = parse_event(data, text_clear=text_clear)
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
        # Redis's budget runs from the call, not from the request's arrival: time the
        # request waited for this worker's CPU is not Redis's fault (busy is not dead)
        result = await rt.store.process_async(event, rt.conn, rt.store_budget_s)
        if result.stored is None:  # else a duplicate whose claim holds the record: nothing to decide
            if models is not None:
                await models.prepare(result.features)
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
    except Exception:  # not the dependency's fault: the error answer (500), unless the body conflicts
        await conflict_check(rt, key=key, digest=digest)
        raise
    if result.duplicate:
        # Another request counted this event_id first (a retry, or a twin on another
        # worker right now): answer with its stored decision once it is there.
        try:
            record = await stored(rt, key=key, digest=digest, kind="decision", deadline=deadline, value=result.stored)
        except (redis.RedisError, OSError) as exc:
            breaker.failed(exc)
            return _degraded(rt, event=event, data=data, caller=caller, t0=t0, metric_reason="store_unavailable",
                             reason=f"feature store unavailable: {type(exc).__name__}")
        if record is not None:
            breaker.succeeded()
            rt.metrics.duplicates.labels("decisions").inc()
            return _response(record, _ms_since(t0), True)
        if result.stored is not None:  # neither features nor a record: not a claim this code wrote
            raise RuntimeError(f"event_id {event.event_id!r}: its key holds neither features nor a record")
        # The first delivery left no record (it degraded or died after counting): this
        # request decides on the same features (the store replays them) and stores its
        # answer unless a record appears meanwhile (`set_record` below).
    breaker.succeeded()

    final = decision.decision
    degraded_reason = models.failure if models is not None else None
    if degraded_reason and rt.settings.failure_policy == "fail_closed":
        final = rt.rules.current.policy.most_severe([final, "review"])
    decision_id = new_decision_id()
    ruleset = rt.rules.current
    live = ruleset.version == decision.ruleset_version
    # the model outputs are kept when this decision ran the models (`models`: one look at `available`)
    recorded = _recorded(ruleset.features_read if live else None, features, models=models is not None)
    record, fields = _decision_record(rt, event=event, data=data, caller=caller, decision=decision, final=final,
                                      features=features, decision_id=decision_id, digest=digest,
                                      degraded_reason=degraded_reason)
    latency = time.perf_counter() - t0
    record["latency_ms"] = latency_ms = round(latency * 1_000_000) / 1000  # whole microseconds: no decimal rounding
    blob, commands = rt.records.encode(record, faults=rt.breaker.faults, ruleset=ruleset if live else None,
                                       features=recorded, fields=(*fields, latency_ms))
    ttl = rt.settings.decision_ttl_s
    adopt = result.duplicate
    first = len(commands)  # the record's SET (after its schema's, when that is sent)
    commands += [
        set_record(key, blob, record_ttl(rt), only_if_absent=adopt),
        *pointers.commands(rt.keys.prefix, decision_id=decision_id, event_id=event.event_id, ttl_s=ttl,
                           renewals=rt.renewals, faults=rt.breaker.faults),
        rt.audit.decision_command(record),
    ]
    # a review (or what cases.yaml names): queue it for a case
    iso_at = _iso_occurred_at(data)
    case_item = rt.intake.command(record, event, iso_at)
    case_at = len(commands) if case_item is not None else None
    if case_item is not None:
        commands.append(case_item)
    if event.merchant_id:  # the merchant's snapshot: written with the interval's others (`merchant_snapshots`)
        snap = rt.merchant_snapshots.note(event.merchant_id, event_id=event.event_id,
                                          occurred_at=event.occurred_at if iso_at is None else iso_at,
                                          decision_id=decision_id, features=features)
        if snap is not None:
            commands.append(snap)
    hook = rt.hooks.decision_command(record)  # deny/review: queue the webhook event in this same write
    if hook is not None:
        commands.append(hook)
    if adopt:  # this request answers with the first delivery's record if it arrived after all
        try:
            replies = await execute(rt, commands, max(0.001, deadline - time.perf_counter()))
            if replies[first] is not None:  # the record found over the claim (not replaced)
                earlier = await stored(rt, key=key, digest=digest, kind="decision", deadline=time.perf_counter(),
                                       value=replies[first])
                if earlier is not None:
                    return _response(earlier, _ms_since(t0), True)
        except (redis.RedisError, OSError) as exc:
            _unstored(rt, decision_id, exc)
            _hold(rt, commands, case_at, decision_id)
    else:
        _write_behind(rt, commands, decision_id, case_at)
    if rt.audit.to_a_file:
        rt.audit.decision_to_file(with_features(record, *recorded))
    if degraded_reason:
        rt.metrics.degraded.labels("model_failed").inc()
    fired = [(r.id, r.mode) for r in decision.reasons]
    if decision.shadow:
        fired += [(r.id, r.mode) for r in decision.shadow]
    rt.metrics.decided(final, bool(degraded_reason), fired, latency)
    return _response(record, latency_ms, False)


def _write_behind(rt: Runtime, commands: list[Any], decision_id: str, case_at: int | None) -> None:
    """Queue the decision's record, pointer and audit entry on the
    pipelined connection, and answer without waiting for Redis to acknowledge them.

    Why: waiting would be a second trip through the worker's queue of ready requests
    on every decision (see docs/benchmarks.md). What holds: the commands leave with the
    connection's next write to Redis (`PipelinedRedis.send_nowait`); this worker's later reads of
    the record (GET /v1/decisions, a retry of the event_id) go over the same
    connection, where Redis runs them after the write; a retry on another worker polls
    for the record until its deadline. A write Redis refuses or loses is logged and
    counted (``fengkong_decision_records_unstored_total``) and opens the breaker: the
    decision stands, it was made on real features. The case item (``commands[case_at]``)
    is not given up with it: refused, or lost with the connection, it is held as a
    degraded decision's is (`fengkong.cases.intake`), so the review still becomes a case."""
    try:
        batch = rt.conn.send_nowait(commands)
    except OSError as exc:
        _unstored(rt, decision_id, exc)
        _hold(rt, commands, case_at, decision_id)
        return
    batch.add_done_callback(functools.partial(_written, rt, decision_id, commands, case_at))


def _written(rt: Runtime, decision_id: str, commands: list[Any], case_at: int | None,
             batch: "asyncio.Future[list[Any]]") -> None:
    exc = batch.exception() if not batch.cancelled() else asyncio.CancelledError()
    if exc is None:
        replies = batch.result()
        for reply in replies:  # (a loop, not a generator: this runs for every decision)
            if isinstance(reply, ReplyError):
                exc = redis.ResponseError(str(reply))
                break
        else:
            return  # every command taken: the common case
        if case_at is not None and not isinstance(replies[case_at], ReplyError):
            case_at = None  # the case item was queued: only another command was refused
    if exc is not None:
        _unstored(rt, decision_id, exc)
        _hold(rt, commands, case_at, decision_id)


def _hold(rt: Runtime, commands: list[Any], case_at: int | None, decision_id: str) -> None:
    """Hold the case item Redis did not take (a fault that may have taken it after all, such
    as a connection lost after sending, queues it twice at worst: filing takes a decision once)."""
    if case_at is not None:
        rt.intake.hold_command(commands[case_at], decision_id)


def _unstored(rt: Runtime, decision_id: str, exc: BaseException) -> None:
    rt.breaker.failed(exc)
    rt.metrics.unstored.inc()
    log.warning("decision %s not stored: %s: %s", decision_id, type(exc).__name__, exc)


def _decision_record(rt: Runtime, *, event: Event, data: Mapping[str, Any], caller: Caller, decision: Decision,
                     final: str, features: Mapping[str, Any], decision_id: str, digest: bytes,
                     degraded_reason: str | None) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The decision's record but its features (`_recorded`: the record's encoder takes
    them as names and values, and `records.with_features` makes the whole record for the audit file),
    and its values of `records.READ` but the latency, in that order (the encoder's `fields`: the
    record's own objects, not looked up again). Its fired rules are the engine's `FiredRule`
    objects, not their ``to_dict``: orjson writes a dataclass as that dict, and the record's
    readers here take either. Its first 15 fields are one display and the rest set after it, in
    order: CPython builds a display of more items one item at a time into a second dict and
    merges the two."""
    fields = (digest.decode(), decision_id, event.event_id, final, decision.score, decision.reasons,
              features.get("merchant.grade"), degraded_reason is not None, degraded_reason, decision.lane,
              features.get(pipeline.RISK_FEATURE), decided_now(), caller.name, data, decision.shadow,
              decision.missing_features, decision.score_action, decision.thresholds)
    (sha, _, event_id, _, score, reasons, grade, degraded, _, lane, risk, decided_at, name, _, shadow, missing,
     score_action, thresholds) = fields
    record = {
        "kind": "decision", "body_sha256": sha,
        "decision_id": decision_id, "event_id": event_id, "decision": final, "score": score, "reasons": reasons,
        "merchant_grade": grade, "ruleset_version": decision.ruleset_version,
        "degraded": degraded, "degraded_reason": degraded_reason, "lane": lane,
        "risk": risk, "models": rt.models.status, "decided_at": decided_at,
    }
    record["caller"] = name
    record["event"] = data
    record["shadow"] = shadow
    record["missing_features"] = missing
    record["score_action"] = score_action
    record["thresholds"] = thresholds
    return record, fields


def _iso_occurred_at(data: Any) -> str | None:
    """The event's ``occurred_at`` as received when it is what ``isoformat`` gives of it
    (`when_code` codes it then, and has just been asked by the record's encoder), else None:
    the case item and the merchant's snapshot take it instead of formatting the time."""
    text = data.get("occurred_at") if isinstance(data, dict) else None
    return text if type(text) is str and type(when_code(text)) is int else None


def _recorded(read: frozenset[str] | None, features: Mapping[str, Any], *,
              models: bool) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The names and values of the features a decision's record keeps: those the live rule
    set reads (`read`; every feature when the rule set that decided is no longer live), but
    the model outputs, which follow by name when `models` are served. A name the features lack
    has the value None. The names are one tuple object per rule set and model outputs (the
    record encoder's schema is found by it without hashing them); one call reads them all."""
    names, getter = _reader(read := read if read is not None else frozenset(features), models)
    try:
        return names, getter(features)
    except KeyError:
        names, getter = _reader(read, False)
    try:
        values = getter(features)
    except KeyError:
        values = tuple(map(features.get, names))
    if models:
        outputs = tuple(k for k in _MODEL_NAMES if k in features)
        if outputs:
            names = _joined(names, outputs)
            values += tuple(map(features.__getitem__, outputs))
    return names, values


@functools.lru_cache(maxsize=64)
def _joined(names: tuple[str, ...], outputs: tuple[str, ...]) -> tuple[str, ...]:
    return names + outputs


#: the model outputs a record keeps (`fengkong.features.model_outputs`; the fused risk has its own field)
_MODEL_NAMES = tuple(name for name, _, _ in MODEL_OUTPUTS if name != pipeline.RISK_FEATURE)


@functools.lru_cache(maxsize=16)
def _reader(read: frozenset[str], models: bool) -> tuple[tuple[str, ...], Any]:
    """The names a record keeps of a rule set's (`_plain`), then every model output when
    `models`, and a getter of their values (one ``itemgetter`` call when every name is there:
    cheaper than a ``get`` per name); cached per rule set (its frozenset keeps its hash)."""
    return (names := _joined(_plain(read), _MODEL_NAMES) if models else _plain(read)), _getter(names)


@functools.lru_cache(maxsize=64)
def _getter(names: tuple[str, ...]) -> Any:
    """A getter of `names`' values as a tuple (also for zero or one name, unlike a bare
    ``itemgetter``); cached per names tuple (the rule set's, `_plain`'s cached object)."""
    if len(names) == 1:
        one = names[0]
        return lambda mapping: (mapping[one],)
    return operator.itemgetter(*names) if names else (lambda mapping: ())


@functools.lru_cache(maxsize=16)
def _plain(names: frozenset[str]) -> tuple[str, ...]:
    """The non-model features of a set of names (cached per rule set: frozensets keep their hash),
    interned as the store's are (`fengkong.features.assemble`): a lookup then matches by identity."""
    return tuple(sorted(sys.intern(n) for n in names if not n.startswith("model.")))


async def get_decision(*, rt: Runtime, decision_id: str) -> dict[str, Any]:
    """The stored decision with its explanation. Read over the worker's pipelined
    connection: a decision this worker just answered was written there first."""
    check_id("decision_id", decision_id)
    try:
        event_id = await pointers.event_id_of(rt, decision_id)
        value = await get(rt, rt.keys.request(event_id)) if event_id else None
        if value is None or not is_record(value):  # none, or the claim of a decision never stored
            raise NotFound("decision_id",
                           "no stored decision has this id (unknown, expired, or made in degraded mode)")
        record = await load(rt, value)
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None
    if record.get("decision_id") != decision_id:
        raise NotFound("decision_id", "no stored decision has this id")
    for k in _INTERNAL_KEYS:
        record.pop(k, None)
    record.setdefault("duplicate", False)
    return record
