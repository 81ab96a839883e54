"""The online feature store: one Lua call per event reads and updates everything.

Why one script and not a pipeline: a decision must see the counters as of just
before its own event, and a retried event_id must count nothing. A MULTI/EXEC
pipeline could not branch on the dedup check or on the merchant's limit, and
reading then writing in two trips would let a concurrent event slip between
them. The script does both atomically on the server in one round trip
(`lua/update_read.lua`; its header documents KEYS, ARGV and the reply).

Keys are ``{prefix}:v1:{<entity>:<id>}:<feature>`` (`fengkong.features.keys`): the
braces are a Redis Cluster hash tag, so all keys of one entity share a slot. On a
single server one script touches all of them; on a Redis Cluster the same ops are
split per slot and pipelined (`fengkong.features.cluster_store`, docs/scale.md).

Who does what: `ops` declares each kind of op (its arguments, its reply values,
its Lua function), `plan` compiles them into one call per event type, this module
runs the call and turns the reply into features, and `profiles` holds the
merchant profile reads and writes the store delegates to.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple

import hiredis
import msgpack
import redis

from fengkong.events import Event
from fengkong.features import definitions as d
from fengkong.features import keys
from fengkong.features.assemble import derive_from
from fengkong.features.errors import DuplicateEventConflict, FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import ListSpec
from fengkong.features.ops import compile_ops
from fengkong.features.pipelined import ConnectionFailed, Pipelined, ReplyError
from fengkong.features.plan import Plan, Planner
from fengkong.features.profiles import MerchantProfiles
from fengkong.features.rows import event_row


_unpackb = msgpack.unpackb


def holds_features(value: bytes) -> bool:
    """Whether a claim's value is the reply blob of the script (a MessagePack array)
    rather than what the service stored over it (a record, or a cluster marker)."""
    head = value[0] if value else 0
    return 0x90 <= head <= 0x9F or head in (0xDC, 0xDD)


def load_script() -> str:
    """The text of the feature store's Lua script."""
    return resources.files("fengkong.features").joinpath("lua/update_read.lua").read_text(encoding="utf-8")


class _Call(NamedTuple):
    """One event's script call: its row, the EVALSHA command, and the plan its reply is read
    with; or, on the decision path, the command already packed (`OnlineStore._packed_call`)."""

    row: dict[str, Any]
    command: tuple[Any, ...]  # EVALSHA sha numkeys KEYS... ARGV...; () when packed
    plan: Plan
    packed: bytes = b""  # the command as Redis reads it (RESP), when so prepared

    @property
    def keys(self) -> list[str]:
        return list(self.command[3:3 + self.command[2]])

    @property
    def args(self) -> list[Any]:
        return list(self.command[3 + self.command[2]:])


@dataclass
class FeatureResult:
    """The features of one event as of just before it, and whether it was a replay of an event_id.

    `raw` (what the store returned, decoded op by op, before `assemble`: for tests and
    debugging) is built when first read, as the decision path never reads it.
    """

    features: dict[str, Any]
    duplicate: bool
    _reply: list[Any] = field(repr=False, compare=False)  # the script's values, decoded
    _plan: Plan = field(repr=False, compare=False)  # the ops they came from
    #: a duplicate's claim when it already holds what the service stored over the
    #: features (the decision or outcome record): then `features` is empty, and the
    #: service answers with that record without reading it again
    stored: bytes | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def raw(self) -> dict[str, Any]:
        """Every raw value by name, in reply order (`assemble` of them gives `features`)."""
        values: dict[str, Any] = {}
        at = 1
        for op in self._plan.ops:
            values.update(op.decode(self._reply[at:at + op.width]))
            at += op.width
        return values


class OnlineStore:
    """Real-time features in Redis, driven by `fengkong.features.definitions`."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ipintel: IpIntel,
        lists: dict[str, ListSpec] | None = None,
        prefix: str = "fk",
        grade_limits: dict[str, int] | None = None,
        default_limit: int | None = None,
        business_utc_offset_min: int = d.DEFAULT_BUSINESS_UTC_OFFSET_MIN,
        dedup_ttl_s: int = d.DEDUP_TTL_S,
        history_start_us: int | None = None,
    ) -> None:
        self.client = client
        #: when the store's history began, if known: younger ages are missing (`features.young`)
        self.history_start_us = history_start_us
        self.ipintel = ipintel
        self.lists = lists or {}
        self.prefix = prefix
        self.grade_limits = dict(grade_limits or d.DEFAULT_GRADE_LIMITS)
        if default_limit is None:
            default_limit = self.grade_limits.get(d.DEFAULT_GRADE, 500_000)
        self.default_limit = default_limit
        self.biz_offset_min = business_utc_offset_min
        self.dedup_ttl_s = dedup_ttl_s
        self.profiles = MerchantProfiles(client, prefix)
        self._script = client.register_script(load_script())
        self.planner = Planner(compile_ops(self.lists, self.grade_limits, self.default_limit), prefix)

    # -- keys ---------------------------------------------------------------------------------
    def key(self, entity: str, entity_id: str, suffix: str) -> str:
        """One feature key of an entity under this store's prefix."""
        return keys.entity_key(self.prefix, entity, entity_id, suffix)

    def profile_key(self, merchant_id: str) -> str:
        """The merchant's profile hash under this store's prefix."""
        return self.profiles.key(merchant_id)

    # -- the call -------------------------------------------------------------------------------
    def process(self, event: Event) -> FeatureResult:
        """Count the event and return its features as of just before it (idempotent by event_id)."""
        call = self._prepare(event)
        try:
            reply = self._script(keys=call.keys, args=call.args)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise FeatureStoreUnavailable(f"feature store unreachable: {type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            raise FeatureStoreError(f"feature store refused the update: {exc}") from exc
        return self._finish(event, call, reply)

    async def process_async(self, event: Event, conn: Pipelined, timeout_s: float) -> FeatureResult:
        """`process` over a pipelined asyncio connection: the event loop serves other
        requests while Redis runs the script. After a Redis restart (the script cache is
        empty) the script is loaded and the call repeated, once."""
        call = self._packed_call(event)
        evalsha = call.packed
        try:
            reply = (await conn.execute((evalsha,), timeout_s))[0]
            if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
                reply = (await conn.execute((("SCRIPT", "LOAD", self._script.script), evalsha), timeout_s))[1]
        except ConnectionFailed as exc:
            raise FeatureStoreUnavailable(f"feature store unreachable: {exc}") from exc
        if isinstance(reply, ReplyError):
            raise FeatureStoreError(f"feature store refused the update: {reply}")
        return self._finish(event, call, reply)

    def _prepare(self, event: Event) -> _Call:
        """The event's row and its EVALSHA command (KEYS, then ARGV as the script's header says)."""
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan, keys, ops = self.planner.call(row)
        head, tail = self.planner.legacy_dedup_key
        command = ("EVALSHA", self._script.sha, len(keys), *keys, self.dedup_ttl_s, row["amount"], ops,
                   plan.reply_tag, f"{head}{row['event_id']}{tail}")
        return _Call(row, command, plan)

    def _packed_call(self, event: Event) -> _Call:
        """`_prepare`'s call with the command packed as the connection writes it (and no
        command tuple): the plan's writer lays the command out in one step (`plan_code`)."""
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan, packed = self.planner.command(row, self._script.sha, self.dedup_ttl_s)
        if packed is None:  # a key with other than ASCII text: packed the general way
            packed = hiredis.pack_command(self._prepare(event).command)
        return _Call(row, (), plan, packed)

    def _finish(self, event: Event, call: _Call, reply: Any) -> FeatureResult:
        """The features from the script's reply: the raw values read by the plan's reader
        (`plan_code`) into a copy of the plan's blank dict (those other features derive
        from into their own), then `assemble.derive_from` (the inputs in order)."""
        duplicate = reply[0] == b"dup"
        if duplicate and not holds_features(reply[1]):
            return FeatureResult({}, True, [], call.plan, stored=reply[1])
        stored = _unpackb(reply[1])
        plan = call.plan
        if stored[0] != plan.reply_tag or plan.outcome or len(stored) != plan.width:
            return self._read(event, call, stored, duplicate)  # refused, or no features to read
        # `_read`'s common case, inline: one Python call less per decision
        f, inputs = plan.read(stored)
        features = derive_from(f, call.row, inputs, self.default_limit, self.history_start_us, True)
        return FeatureResult(features, duplicate, stored, plan)

    def _read(self, event: Event, call: _Call, stored: list[Any], duplicate: bool) -> FeatureResult:
        """`_finish` of the reply's values, decoded ([reply tag, values...]; the cluster
        store joins its per-slot replies into the same list)."""
        plan = call.plan
        if stored[0] != plan.reply_tag:
            raise DuplicateEventConflict(
                f"event_id {event.event_id!r} was first delivered with other entities or another type"
            )
        if plan.outcome:  # counted; an outcome gets no decision, so no features
            return FeatureResult({}, duplicate, stored, plan)
        try:
            f, inputs = plan.read(stored)
        except ValueError:
            if len(stored) != plan.width:
                raise FeatureStoreError(f"the store's reply holds {len(stored)} values, "
                                        f"its ops return {plan.width}") from None
            raise
        features = derive_from(f, call.row, inputs, self.default_limit, self.history_start_us, True)
        return FeatureResult(features, duplicate, stored, plan)

    # -- merchant profiles (see `MerchantProfiles`) ---------------------------------------------
    def set_merchant_profile(
        self,
        merchant_id: str,
        *,
        grade: str | None = None,
        single_limit_minor: int | None = None,
        daily_cap_minor: int | None = None,
        onboarded_at: str | None = None,
        mcc: str | None = None,
        reason: str | None = None,
    ) -> dict[str, str]:
        """Write the fields given (others untouched); the next decision reads them."""
        return self.profiles.set(merchant_id, grade=grade, single_limit_minor=single_limit_minor,
                                 daily_cap_minor=daily_cap_minor, onboarded_at=onboarded_at, mcc=mcc, reason=reason)

    def get_merchant_profile(self, merchant_id: str) -> dict[str, str]:
        """The merchant's profile fields as text."""
        return self.profiles.get(merchant_id)

    def set_grades(self, grades: dict[str, tuple[str, str]]) -> int:
        """Write many merchants' grades (merchant_id -> (grade, reason)) in one pipeline."""
        return self.profiles.set_grades(grades)
