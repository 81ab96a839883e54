"""Where a decision id finds its event id (whose key holds the decision record).

Why: GET /v1/decisions/{id} needs the event id, and one key per decision for it cost
Redis about 126 bytes per decision (key name, value, the key's own tables and its
expiry). A decision id now names the hour it was made and a shard of that hour (its
first hex digits, `fengkong.api.service.ids`), and the pointer is a field of that
bucket's hash (``{dp:<hour><shard>}``, field: the rest of the id): a few dozen bytes
when the hash's fields stay in one listpack (docs/operations.md, "Memory sizing").
The bucket's TTL is renewed with each write to `decision_ttl_s` plus an hour, so a
pointer lives from `decision_ttl_s` to an hour longer. Pointers of the format before
(``{decision:<id>}:event``) are still read, in the same round trip.
"""

from __future__ import annotations

from typing import Any

from fengkong.api.service.idempotency import execute
from fengkong.api.service.renewals import Renewals
from fengkong.api.state import Runtime
from fengkong.features import keys
from fengkong.features.plan_code import LENGTHS, ascii_resp

#: how much longer than `decision_ttl_s` a bucket lives after its last write (a bucket
#: is written for an hour: its last pointer must live its full TTL)
BUCKET_GRACE_S = 3600


def commands(prefix: str, *, decision_id: str, event_id: str, ttl_s: int,
             renewals: Renewals | None = None, faults: int = 0) -> list[tuple[Any, ...] | bytes]:
    """The writes that let `decision_id` find `event_id` for at least `ttl_s` seconds
    (with `renewals`: the bucket's EXPIRE only when it is due), packed as Redis reads them
    (`packed`)."""
    bucket = _BUCKETS.get(decision_id[2:_FIELD_AT])
    if bucket is None or bucket[0] is not prefix:
        bucket = _bucket(prefix, decision_id)
    key, head = bucket[1], bucket[2]
    field = decision_id[_FIELD_AT:]
    hset = packed(f"{head}${_len(field)}\r\n{field}\r\n${_len(event_id)}\r\n{event_id}\r\n",
                  ("HSET", key, field, event_id))
    if renewals is not None and not renewals.due(key, faults):
        return [hset]
    expiry = str(ttl_s + BUCKET_GRACE_S)
    return [hset, packed(f"*3\r\n$6\r\nEXPIRE\r\n${_len(key)}\r\n{key}\r\n${len(expiry)}\r\n{expiry}\r\n",
                         ("EXPIRE", key, ttl_s + BUCKET_GRACE_S))]


#: where a decision id's field in its bucket starts (`keys.decision_bucket`: ``d_``, then the bucket's digits)
_FIELD_AT = 2 + keys.BUCKET_DIGITS
#: a bucket's digits -> (the key prefix, the bucket's key, the HSET's RESP text up to the field):
#: made once per bucket (a worker writes an hour's 4,096 buckets), not per decision
_BUCKETS: dict[str, tuple[str, str, str]] = {}


def _bucket(prefix: str, decision_id: str) -> tuple[str, str, str]:
    """The bucket of `decision_id` as `_BUCKETS` keeps it (`keys.decision_bucket` names it by
    the id's digits after ``d_`` and before `_FIELD_AT`: tests/test_decision_pointers.py)."""
    key, _ = keys.decision_bucket(prefix, decision_id)
    if len(_BUCKETS) >= 3 * 4096:  # three hours' buckets (`renewals.MAX_BUCKETS`)
        _BUCKETS.clear()
    found = _BUCKETS[decision_id[2:_FIELD_AT]] = (prefix, key, f"*4\r\n$4\r\nHSET\r\n${_len(key)}\r\n{key}\r\n")
    return found


def packed(text: str, args: tuple[Any, ...]) -> tuple[Any, ...] | bytes:
    """A command's RESP `text` as bytes, byte for byte what ``hiredis.pack_command`` makes of
    `args` (tests/test_decision_pointers.py), where it is ASCII: its lengths then count its
    bytes. Else the arguments, for the connection to pack. Written here since hiredis formats
    each argument's length with ``sprintf``, which cost more than the rest of its packing."""
    data = ascii_resp(text)
    return args if data is None else data


def _len(text: str) -> str:
    """A text's length as decimal text (`LENGTHS`, looked up rather than formatted)."""
    n = len(text)
    return LENGTHS[n] if n < len(LENGTHS) else str(n)


async def event_id_of(rt: Runtime, decision_id: str) -> str | None:
    """The event id a decision id points to (its bucket, else a pointer of the format
    before), or None; one round trip over the worker's pipelined connection."""
    key, field = keys.decision_bucket(rt.keys.prefix, decision_id)
    bucketed, before = await execute(rt, (("HGET", key, field), ("GET", rt.keys.decision(decision_id))),
                                     rt.store_budget_s)
    found = bucketed if bucketed is not None else before
    return found.decode() if found is not None else None
