"""Recording an outcome event (refund, chargeback, withdrawal, fraud_report, settlement, decline,
legit_confirmed, challenge_result).

Outcomes use the same winner/loser rule and body hash as decisions
(`idempotency`), and go (over the pipelined connection) to the store, which counts
them once, and to the capped labels stream ``{prefix}:v1:labels`` that model
training reads. An outcome cannot be answered by a policy: if Redis is down the
caller gets `Unavailable` (503, Retry-After) and retries. Any other exception is
not the dependency's fault and goes to the error answer (4xx or 500).

A failed ``challenge_result`` that ``cases.yaml`` sends to a case (`Intake.wants_challenge`)
also reads the challenged payment's decision record (``refers_to``), concurrently with the
store's call on the same pipelined connection, so it adds no round trip; its case item
(`Intake.challenge_command`) joins the outcome's own write. A retry that finds no record
of the first delivery queues it again: filing is idempotent by decision id.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from fengkong.api.audit import stream_entry, utc_now_iso
from fengkong.api.encoding import dumps
from fengkong.api.errors import Conflict, Unavailable
from fengkong.api.security import Caller
from fengkong.api.service import records
from fengkong.api.service.idempotency import (body_hash, conflict_check, execute, get, load, record_ttl, set_record,
                                              stored)
from fengkong.api.state import Runtime
from fengkong.events import OUTCOME_TYPES, Event, EventRejected, parse_event
from fengkong.features.online import FeatureResult
from fengkong.features.errors import DuplicateEventConflict, FeatureStoreError


async def report(*, rt: Runtime, data: Any, caller: Caller, t0: float, text_clear: bool = False) -> dict[str, Any]:
    """Record one outcome event (refund, chargeback, withdrawal, fraud_report, settlement, decline,
    legit_confirmed, challenge_result); ``text_clear`` as `parse_event` takes it."""
    event = parse_event(data, text_clear=text_clear)
    if event.type not in OUTCOME_TYPES:
        raise EventRejected("type", f"{event.type.value} needs a decision: send it to POST /v1/decisions "
                                    f"(outcome types: {', '.join(sorted(t.value for t in OUTCOME_TYPES))})")
    digest = body_hash(data)
    key = rt.keys.request(event.event_id)
    payment: dict[str, Any] | None = None
    try:
        try:
            if rt.intake.wants_challenge(event):
                result, payment = await _with_payment(rt, event)
            else:
                result = await rt.store.process_async(event, rt.conn, rt.store_budget_s)
        except DuplicateEventConflict:
            raise Conflict("event_id", "was already used with a different body") from None
        except FeatureStoreError:
            raise
        except Exception:
            await conflict_check(rt, key=key, digest=digest)
            raise
        if result.duplicate:  # counted before: the same body is a retry, another is a conflict
            deadline = time.perf_counter() + max(rt.deadline_s, 0.5)
            record = await stored(rt, key=key, digest=digest, kind="outcome", deadline=deadline,
                                  value=result.stored)
            if record is not None:
                rt.breaker.succeeded()
                rt.metrics.duplicates.labels("events").inc()
                return {"event_id": event.event_id, "type": event.type.value, "recorded": False, "duplicate": True}
        entry = {"kind": "outcome", "body_sha256": digest.decode(), "event_id": event.event_id,
                  "type": event.type.value, "recorded_at": utc_now_iso(), "caller": caller.name, "event": data}
        blob = dumps(entry)
        commands = [set_record(key, blob, record_ttl(rt), only_if_absent=result.duplicate)]
        if not result.duplicate:
            commands.append(stream_entry(rt.keys.labels, rt.settings.audit_stream_maxlen, blob))
        case_item = rt.intake.challenge_command(payment, event) if payment is not None else None
        if case_item is not None:  # a failed step-up of a `challenge` payment: queue its case
            commands.append(case_item)
        await execute(rt, commands, rt.store_budget_s)
    except FeatureStoreError as exc:
        rt.breaker.failed(exc)
        raise Unavailable(None, f"feature store unavailable: {type(exc.__cause__ or exc).__name__}; "
                                "the outcome was not recorded, retry") from None
    except (redis.RedisError, OSError) as exc:
        rt.breaker.failed(exc)
        raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}; retry") from None
    rt.breaker.succeeded()
    if not result.duplicate:
        rt.metrics.events.labels(event.type.value).inc()
    return {"event_id": event.event_id, "type": event.type.value, "recorded": not result.duplicate,
            "duplicate": result.duplicate}


async def _with_payment(rt: Runtime, event: Event) -> tuple[FeatureResult, dict[str, Any] | None]:
    """The store's call and the challenged payment's decision record (None if there is none),
    sent together on the pipelined connection: one round trip for both."""
    store_call = rt.store.process_async(event, rt.conn, rt.store_budget_s)
    read = get(rt, rt.keys.request(str(event.refers_to)))
    # both awaited to the end (no stray exception left unread); the store's fault comes first
    outcome, fetched = await asyncio.gather(store_call, read, return_exceptions=True)
    if isinstance(outcome, BaseException):
        raise outcome
    if isinstance(fetched, BaseException):
        raise fetched
    result, value = outcome, fetched
    if value is None or not records.is_record(value) or records.header(value)[0] != "decision":
        return result, None
    return result, await load(rt, value)
