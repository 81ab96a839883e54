"""From a decision to a case's queue: the item the decision path queues, and the command
that queues it.

The decision path only queues. `Intake.command` gives one ``XADD`` (RESP bytes) to the stream
``{prefix}:v1:cases:intake`` that the decision service appends to the decision's own
pipelined write (the record, its pointer, the audit entry), so opening a case costs a
decision no round trip; decisions the configuration does not send to a case cost a set
lookup. A failed step-up is queued the same way from the outcome path
(`Intake.challenge_command`: a ``challenge_result`` with ``passed: false`` for a payment
answered ``challenge``), with the payment's stored decision. The consumer
(`fengkong.cases.consumer`) files the items later, a batch at a time
(`fengkong.cases.filing`, which says how decisions group into cases) and deletes each
item once its case is committed.

A decision whose item Redis cannot take (degraded: the failure path, which writes nothing
to Redis; or a decision whose write-behind batch Redis refused) is still a review an
analyst must see: `Intake.hold` keeps its item (`fengkong.cases.held`: in memory and in a
file of the worker's own in the data directory, so that it outlives a killed worker; at
most `HOLD_MAX` per worker, beyond which a new item is dropped, logged and counted in
``lost`` and by `on_lost`), and `Intake.release`, called by the worker's case runtime about once a second,
queues what it holds once Redis answers, and the items of workers that died.

The stream is not trimmed by length: a bank expects every review to become a case, and a
length cap would drop the oldest unfiled items while the consumer is away. Since filed
items are deleted, the stream holds only the backlog; its memory is bounded by Redis'
``maxmemory`` (policy ``noeviction``, so nothing queued is evicted either), and
docs/cases.md says how to watch it.
"""

from __future__ import annotations

import logging
from collections import abc
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson
import redis

from fengkong.cases.config import CasesConfig
from fengkong.cases.held import HeldItems
from fengkong.db.engine import json_text
from fengkong.engine.decision import FiredRule
from fengkong.events import Event, EventRejected, EventType, iso_text, parse_event
from fengkong.features.pipelined import packed_args

log = logging.getLogger(__name__)

#: Case items a worker holds while Redis is away (a bound, so a long outage cannot exhaust it).
HOLD_MAX = 10_000


def stream_key(prefix: str) -> str:
    """The capped stream the decision path queues case items on."""
    return f"{prefix}:v1:cases:intake"


def item_for(record: Mapping[str, Any], event: Event, occurred_at: str | None = None) -> dict[str, Any]:
    """The compact item a case needs from a decision and its event. `occurred_at`: the
    event's time as ``isoformat`` writes it, when the caller knows it already (the decision
    path: the text it received, when that is the form ``isoformat`` gives back). Its ``type``
    is the event's `EventType`, a `StrEnum`: a text whose JSON is its value (no ``.value``
    property read per review)."""
    card = event.card
    return {
        "decision_id": record["decision_id"], "event_id": event.event_id, "type": event.type,
        "decision": record["decision"], "score": record.get("score") or 0, "risk": record.get("risk"),
        "reasons": [_reason(r) for r in record.get("reasons") or ()],
        "occurred_at": iso_text(event.occurred_at) if occurred_at is None else occurred_at,
        "amount_minor": event.amount_minor, "currency": event.currency, "card": card.fingerprint if card else None,
        "user_id": event.user_id, "merchant_id": event.merchant_id,
    }


def _reason(reason: Any) -> dict[str, Any]:
    """What an item keeps of a fired rule (the description is in the stored decision): of the
    engine's `FiredRule` (the decision path's record; orjson writes its tags, a tuple, as a list)
    or of its dict (a record read back, a degraded decision's). A `FiredRule`'s dict holds its
    fields in their order (`fengkong.engine.decision`): tests/test_write_behind.py holds the two
    items equal."""
    if type(reason) is FiredRule or (type(reason) is not dict and not isinstance(reason, abc.Mapping)):
        # its fields as its dict holds them (a copy: the rule keeps its own); the engine's own class
        # first: `abc.Mapping`'s isinstance of a class it does not know costs more than the copy
        item: dict[str, Any] = reason.__dict__.copy()
        del item["description"]
        return item
    get = reason.get
    return {"id": get("id"), "action": get("action"), "score": get("score"), "mode": get("mode"),
            "tags": get("tags"), "values": get("values")}


class Intake:
    """Builds the decision path's queue command; holds the configuration it checks.

    ``config`` may be swapped (a changed cases.yaml) while requests run: each call reads
    the attribute once."""

    def __init__(self, config: CasesConfig, *, prefix: str, hold_max: int = HOLD_MAX,
                 hold_dir: Path | None = None) -> None:
        self.config = config
        self.key = stream_key(prefix)
        key = self.key.encode()
        #: `command`'s RESP up to the item's JSON: ``XADD <key> * item``
        self._head = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$1\r\n*\r\n$4\r\nitem\r\n" % (len(key), key)
        self.held = HeldItems(hold_dir, max_items=hold_max)
        self.lost = 0
        #: told of each item lost (the service counts them in /metrics)
        self.on_lost: Callable[[], None] | None = None

    def command(self, record: Mapping[str, Any], event: Event, occurred_at: str | None = None) -> bytes | None:
        """``XADD`` of this decision's case item as Redis reads it (RESP: the decision path's
        pipelined write takes it as it is; `unpacked` gives its arguments back), or None when
        it opens no case (`occurred_at` as `item_for` takes it). Packed here, since the item's
        JSON is bytes already: no text to decode and encode again, no argument packing."""
        config, decision = self.config, record["decision"]
        if not config.opens_case(decision, record.get("reasons") or ()):
            return None
        data = item_json(item_for(record, event, occurred_at))
        return b"".join((self._head, f"${len(data)}\r\n".encode(), data, b"\r\n"))

    def hold(self, record: Mapping[str, Any], event: Event) -> None:
        """Keep this decision's case item, if it opens one, until `release` can queue it
        (Redis is away: see the module doc). Cheap: one small file write, no fsync."""
        if self.config.opens_case(record["decision"], record.get("reasons") or []):
            self.hold_command(self._xadd(item_for(record, event)), record.get("decision_id"))

    def hold_command(self, command: tuple[Any, ...] | bytes, decision_id: Any) -> None:
        """Keep an ``XADD`` built by `command` (its RESP bytes, or its arguments) that Redis
        did not take (see `hold`)."""
        args = unpacked(command) if isinstance(command, bytes) else command
        if self.held.max_items <= 0:  # nobody here would release it (see `fengkong.api.state`)
            self._lose()
            log.error("case intake: decision %s opens a case but Redis is away and this worker holds none",
                      decision_id)
            return
        if not self.held.add(args):
            self._lose()
            log.error("case intake: %d case items held while Redis is away; the case item of decision %s was "
                      "dropped (%d so far)", self.held.max_items, decision_id, self.lost)

    def _lose(self) -> None:
        self.lost += 1
        if self.on_lost is not None:
            self.on_lost()

    def release(self, client: redis.Redis) -> int:
        """Queue the held items on ``client`` (and those a worker that died left in the data
        directory); how many were queued. On a Redis fault they stay held (and the fault is
        raised) for the next call."""
        return self.held.release(client)

    def close(self) -> None:
        """fsync what is held; it stays on disk for the next `release` of any worker."""
        self.held.close()

    def wants_challenge(self, outcome: Event) -> bool:
        """Whether this outcome is a failed challenge the configuration sends to a case: only
        then does the outcome path read the challenged payment's decision record."""
        challenge = outcome.challenge
        return (outcome.type is EventType.CHALLENGE_RESULT and challenge is not None and not challenge.passed
                and self.config.challenge_failed)

    def challenge_command(self, record: Mapping[str, Any] | None, outcome: Event) -> tuple[Any, ...] | None:
        """``XADD`` of the case item of a failed challenge: the challenged payment's stored
        decision (``record``), so the case shows its decision, reasons and values, plus the
        challenge. None unless `wants_challenge` and the payment was answered ``challenge``
        (a review already opened its case; a payment with no stored record, expired or
        decided degraded, has nothing to show)."""
        if record is None or record.get("kind") != "decision" or record.get("decision") != "challenge":
            return None
        if not self.wants_challenge(outcome):
            return None
        try:
            payment = parse_event(record["event"])
        except (EventRejected, KeyError, TypeError):
            return None
        item = item_for(record, payment)
        challenge = outcome.challenge
        item["challenge"] = {"event_id": outcome.event_id, "passed": False,
                             "occurred_at": outcome.occurred_at.isoformat(),
                             "method": challenge.method.value if challenge and challenge.method else None}
        return self._xadd(item)

    def _xadd(self, item: Mapping[str, Any]) -> tuple[Any, ...]:
        return ("XADD", self.key, "*", "item", item_text(item))  # never trimmed: see the module doc


def item_json(item: Mapping[str, Any]) -> bytes:
    """`item_text` as UTF-8 bytes (orjson's own output on the decision path)."""
    try:
        return orjson.dumps(item, default=str)
    except TypeError:  # orjson.JSONEncodeError is one: what orjson refuses, the standard library's
        return item_text(item).encode()


def unpacked(command: bytes) -> tuple[str, ...]:
    """The arguments of a command `Intake.command` packed (RESP), as texts: what
    `fengkong.cases.held` writes and queues again."""
    return tuple(a.decode() for a in packed_args(command))


def item_text(item: Mapping[str, Any]) -> str:
    """An item as the compact JSON the consumer parses (`json_text`: orjson on the decision
    path, the standard library's for what orjson refuses). A text, not bytes, so the held
    file (`fengkong.cases.held`) can write the command as JSON."""
    return json_text(item, default=str)
