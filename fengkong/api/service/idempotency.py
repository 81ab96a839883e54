"""The record each event_id leaves in Redis, and the requests that share an event_id.

The feature store's Lua call is the claim: it is atomic and counts an event_id
once, so exactly one request -- across all workers -- gets ``duplicate=False`` from
it and is the winner. The claim is the key ``{evt:<id>}:request``, holding the
features the event got; the winner stores its record over them, in the same key
(one key per event id, not a claim and a record: `record_ttl` keeps it as long as
either needed). Any other request with that event_id (a retry, or a twin arriving at
the same moment on another worker) counted nothing and gets what the key holds from
the store's call: the winner's record, answered without another read, or the
features while the winner is still in flight, then it polls the key (`stored`) every
2 ms until its deadline. The record holds the SHA-256 of the body (`body_hash`: JSON
with sorted keys, so key order and whitespace do not matter, any changed value does):
a different body is `Conflict` (409), the same body gets the stored answer. If no
record appears (the winner degraded or died after counting), the request decides
again on the features the claim holds and adopts the key unless a record arrived
meanwhile (`set_record`, ``lua/settle_claim.lua``).

The pipelined connection's helpers (`execute`, `get`) live here too: the records are
read and written over it, so a worker reads its own writes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from importlib import resources
from typing import Any, Mapping, Sequence

import orjson
import redis

from fengkong.api.errors import Conflict
from fengkong.api.service import records
from fengkong.api.service.resp import set_ex
from fengkong.api.state import Runtime
from fengkong.features.pipelined import ReplyError

POLL_S = 0.002


def body_hash(data: Mapping[str, Any]) -> bytes:
    """SHA-256 of the body as canonical JSON (sorted keys, no whitespace), hex."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest().encode()


async def execute(rt: Runtime, commands: Sequence[Any], timeout_s: float) -> list[Any]:
    """The commands' replies over the pipelined connection (a command: its arguments, or its
    RESP bytes); a refused one raises `redis.ResponseError` (and a connection fault
    `ConnectionFailed`, an OSError)."""
    replies = await rt.conn.execute(commands, timeout_s)
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise redis.ResponseError(str(reply))
    return replies


async def load(rt: Runtime, value: bytes) -> dict[str, Any]:
    """A stored record (`records`: compact or JSON), with its schema from the worker's
    cache or, the first time, from Redis over the pipelined connection."""
    sid = records.schema_id(value)
    if sid is None:
        return records.decode(value, None)
    schema = rt.records.known(sid)
    if schema is None:
        schema = rt.records.learn(await get(rt, rt.records.schema_key(sid)))
    return records.decode(value, schema)


async def get(rt: Runtime, key: str) -> bytes | None:
    """GET over the pipelined connection, within the store's budget."""
    return (await execute(rt, (("GET", key),), rt.store_budget_s))[0]  # type: ignore[no-any-return]


def record_ttl(rt: Runtime) -> int:
    """The TTL of an event id's record: `decision_ttl_s`, or the store's dedup TTL when
    that is longer, since the record is the event id's claim too (a retry within the
    dedup TTL must count nothing). GET /v1/decisions/{id} still ends with
    `decision_ttl_s`: the decision id's pointer has that TTL."""
    return max(rt.settings.decision_ttl_s, rt.store.dedup_ttl_s)


@functools.cache
def _settle_script() -> str:
    return resources.files("fengkong.features").joinpath("lua/settle_claim.lua").read_text(encoding="utf-8")


def set_record(key: str, blob: bytes, ttl: int, *, only_if_absent: bool) -> tuple[Any, ...] | bytes:
    """The command that stores an event_id's record over its claim. A request that did
    not count the event (``only_if_absent``) adopts the key only if no record is there:
    its reply is then None when stored, or the record found (``lua/settle_claim.lua``).
    The plain ``SET ... EX`` (every decision's) comes packed as Redis reads it (`set_ex`)."""
    if only_if_absent:
        return ("EVAL", _settle_script(), 1, key, blob, ttl)
    return set_ex(key, blob, ttl) if type(blob) is bytes and type(ttl) is int else ("SET", key, blob, "EX", ttl)


def check_stored(value: bytes, *, digest: bytes, kind: str) -> None:
    """`Conflict` unless a stored record is of this body (`digest`) and kind."""
    stored_kind, sha = records.header(value)
    if not records.same_body(sha, digest):
        raise Conflict("event_id", "was already used with a different body")
    if stored_kind != kind:
        raise Conflict("event_id", f"was already used by a {stored_kind} request")


async def stored(rt: Runtime, *, key: str, digest: bytes, kind: str, deadline: float,
                 value: bytes | None = None) -> dict[str, Any] | None:
    """The record stored for an event_id by the request that counted it, waiting (polling
    every `POLL_S`) until `deadline` for an in-flight winner; None if none appeared.
    ``value``: what the key held a moment ago (the store's call returned it), read
    before polling. Raises `Conflict` when the stored body differs (or the event_id was
    another kind)."""
    while True:
        if value is None:
            value = await get(rt, key)
        if value is not None and records.is_record(value):
            check_stored(value, digest=digest, kind=kind)
            return await load(rt, value)
        if time.perf_counter() >= deadline:
            return None
        await asyncio.sleep(POLL_S)
        value = None


async def conflict_check(rt: Runtime, *, key: str, digest: bytes) -> None:
    """After an unexpected fault of the store's call: `Conflict` if the event_id already
    holds a different body. (The store's replay of a first delivery's features can fail
    when the second body has other entities or another type; the body hash settles it.)"""
    try:
        value = await get(rt, key)
    except (redis.RedisError, OSError):
        return
    if value is not None and records.is_record(value) and not records.same_body(records.header(value)[1],
                                                                                 digest):
        raise Conflict("event_id", "was already used with a different body")
