"""The online feature store on a Redis Cluster: the same ops, split so no script spans two slots.

On one server a decision is one script over every key of the event (`OnlineStore`).
A cluster runs a script on one slot only, and the keys carry one hash tag per entity
(`fengkong.features.keys`), so here a decision is:

1. **the claim** of the event id, on its own slot (``{evt:<id>}:request``, the key the
   service then stores the decision record in): ``SET NX`` of a marker, then ``GET``,
   in one pipelined batch (with a ``GET`` of the claim's key of the format before,
   ``:dedup``, so an event counted before an upgrade counts nothing). Only the request
   whose ``SET`` took counts the event; every other one (a retry, a twin on another
   worker) counts nothing anywhere and reads what the first delivery stored there: its
   features (waiting, within its budget, while they are being counted) or the record
   that replaced them;
2. **one script call per slot** (card, user, device, IP, subnet, merchant,
   merchant x card) and a plain lookup per analyst list (SISMEMBER, and the IP
   ranges: what the script's ``op_list`` does, without a script call for one set
   read), all sent at once, each master's share pipelined on one connection: the *same* script (`lua/update_read.lua`) given only that entity's ops,
   with ARGV[1] ``"0"`` (no dedup inside: the claim did it). The ops are independent
   per entity: an op reads and writes only its own entity's keys (a distinct count of
   another entity's ids is a member written into this entity's set), and the one value
   an op passes to another, the merchant's limit that the near-limit counter tests, is
   read and used within the merchant's own call (profile and merchant state share the
   ``{merchant:<id>}`` slot);
3. the replies are joined, value for value, into the list the single-server script
   returns (same order, same reply tag), stored under the claim (write-behind) for the
   duplicates, and read into features by the same code (`OnlineStore._read`);
4. the one count that needs values of other slots, today's make-up of the merchant's
   payments (`definitions.TodayMakeup`: is the card, the account new, has the card paid
   here before), is decided from the joined reply (`makeup.makeup_flags`, what the
   single-server script decides inside its call) and counted on the merchant's slot
   with the claim's write-behind: the merchant's call of step 2 only reads it. A later
   event sent after it on the same connection sees it; if that write is lost, the
   make-up misses one payment (never counts one twice: the claim ran first).

If a shard fails during step 2 the event may be counted on some entities and not on
others; the claim is then marked *unsettled* and a retry of that event id counts
nothing and is answered by the failure policy (docs/scale.md says why that is the
safe side). `ClusterPlanner` works out, once per plan, which ops go to which call and
how the replies join.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack
import redis

from fengkong.events import Event
from fengkong.features.cluster import is_cluster_url
from fengkong.features.errors import FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.online import FeatureResult, OnlineStore, _Call, holds_features
from fengkong.features import keys
from fengkong.features.makeup import FIELDS, TODAY_MAKEUP, makeup_flags
from fengkong.features.ops import ListOp, MakeupOp, Op
from fengkong.features.pipelined import ConnectionFailed, Pipelined, ReplyError, ReplyLate
from fengkong.features.plan import Pick, Plan, Planner, ipv4_text, picker, reply_outputs
from fengkong.features.rows import event_row

#: the claim's value while the first delivery counts the event (a stored reply is a
#: MessagePack array, whose first byte is never "~")
CLAIMED = b"~claimed"
#: the claim's value after a shard failed while the event was being counted
UNSETTLED = b"~unsettled"
POLL_S = 0.002


class ClaimUnsettled(ReplyLate):
    """This event id was claimed by a delivery whose counting did not complete (a shard
    failed meanwhile) or has not completed within this call's budget: it counts nothing
    now. A `ReplyLate` for the service: it degrades this one decision and does not open
    the breaker (the cluster is answering)."""


class Join(NamedTuple):
    """How one plan's per-slot calls are made and read back: the script groups that have
    ops for it, its list lookups, and the picker that orders the joined values (the
    scripts' values, then one per list) as the single-server reply."""

    groups: tuple[int, ...]
    lists: tuple[ListOp, ...]
    order: Pick
    makeup: MakeupOp | None  # the merchant's make-up op, if the plan has it (joins are shared by event types)
    sources: tuple[int | None, ...]  # where its sources are in the joined reply (None: absent)
    counts: tuple[int, ...]  # where its counts are in the joined reply, in `makeup.FIELDS` order (none without it)


class Lookup(NamedTuple):
    """One analyst list's membership test for an event, as plain commands (a list is a
    slot of its own, and a script call costs Redis more than a set lookup): SISMEMBER,
    then for an IP list with an IPv4 address its range (ZREVRANGEBYSCORE ... LIMIT 0 1),
    exactly what ``op_list`` of the script does."""

    commands: tuple[tuple[Any, ...], ...]
    ipint: str

    def hit(self, replies: Sequence[Any]) -> int:
        if replies[0]:
            return 1
        if len(replies) > 1 and replies[1]:
            end = replies[1][0].split(b":", 1)[1]
            return 1 if int(end) >= int(self.ipint) else 0
        return 0


class ClusterPlanner:
    """The single-server `Planner`'s ops, grouped by slot: one sub-`Planner` per entity,
    whose script calls together with the lists' lookups do what the one script does."""

    def __init__(self, planner: Planner, prefix: str) -> None:
        self.planner = planner
        self.prefix = prefix
        by_slot: dict[str, list[Op]] = {}
        for op in planner.ops:
            if not isinstance(op, ListOp):
                by_slot.setdefault(op.entity + "\0" + op.column, []).append(op)
        # one `EventArgs` for all: an event's values are computed and packed once
        self.groups = tuple(Planner(ops, prefix, planner.args, split=True) for ops in by_slot.values())
        self._keys = {id(op): op.fixed_keys(prefix) for op in planner.ops if isinstance(op, ListOp)}
        self._joins: dict[str, Join] = {}

    def calls(self, row: dict[str, Any]) -> tuple[Plan, Join, list[tuple[Plan, list[str], bytes]], list[Lookup]]:
        """The event's single-server plan, its join, the per-slot script calls (plan, KEYS,
        ARGV[3]) of the groups that have ops for it, and its list lookups. KEYS[1] of a
        call is its first own key (the script ignores it: no dedup inside)."""
        plan = self.planner.plan_for(row)
        join = self._joins.get(plan.reply_tag)
        if join is None:
            join = self._joins[plan.reply_tag] = self._join(plan, row)
        out = []
        pieces = self.planner.packed_values(row) if join.groups else []
        for g in join.groups:
            sub, keys, ops = self.groups[g].call(row, pieces)
            keys[0] = keys[1]
            out.append((sub, keys, ops))
        lookups = []
        if join.lists:
            ip = row["ip"]
            ipint = ipv4_text(ip) if row["ip_info"] is not None and ":" not in ip else ""
            for op in join.lists:
                fixed = self._keys[id(op)]
                commands: tuple[tuple[Any, ...], ...] = (("SISMEMBER", fixed[0], row[op.column]),)
                if op.ranges and ipint:
                    commands += (("ZREVRANGEBYSCORE", fixed[1], ipint, "-inf", "LIMIT", 0, 1),)
                lookups.append(Lookup(commands, ipint))
        return plan, join, out, lookups

    def _join(self, plan: Plan, row: dict[str, Any]) -> Join:
        subs = {g: group.plan_for(row) for g, group in enumerate(self.groups)}
        active = tuple(g for g, sub in subs.items() if sub.ops)
        lists = tuple(op for op in plan.ops if isinstance(op, ListOp))
        where: dict[int, tuple[int, int]] = {}  # id(op) -> (start in the joined values, width)
        at = 0
        for g in active:
            for op in subs[g].ops:
                where[id(op)] = (at, op.width)
                at += op.width
        for op in lists:
            where[id(op)] = (at, op.width)
            at += op.width
        positions: list[int] = []
        for op in plan.ops:
            start, width = where[id(op)]
            positions += range(start, start + width)
        if len(positions) != at:
            raise FeatureStoreError("cluster split does not cover the plan's ops")  # a bug, never the caller's
        makeup = next((op for op in plan.ops if isinstance(op, MakeupOp)), None)
        at_reply = {name: at for name, _, at in reply_outputs(plan.ops)}
        counts = tuple(at_reply[name] for name in TODAY_MAKEUP.counts()) if makeup is not None else ()
        return Join(active, lists, picker(positions), makeup, tuple(at_reply.get(name) for name in MakeupOp.SOURCES),
                    counts)

    def makeup_commands(self, row: dict[str, Any], join: Join, stored: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The commands that count the event in its merchant's make-up of today, from the
        joined reply ``stored`` (none when it counts in no kind, or is no payment)."""
        op = join.makeup
        if op is None or row["type"] not in op.writes_on:
            return []
        card, user, pair = (stored[at] if at is not None else None for at in join.sources)
        flags = makeup_flags(card, user, pair, row["ts_us"], row["biz_day"], join.sources[0] is not None,
                             join.sources[1] is not None)
        fields = [field for field, on in zip(FIELDS, flags) if on]
        if not fields:
            return []
        key = keys.entity_key(self.prefix, op.entity, row[op.column], f"{op.suffix}:{row['biz_day']}")
        commands: list[tuple[Any, ...]] = [("HINCRBY", key, field, 1) for field in fields]
        if not any(stored[at] for at in join.counts):  # the day's hash is made now: its TTL, as the script sets it
            commands.append(("EXPIRE", key, op.ttl))
        return commands


class ClusterOnlineStore(OnlineStore):
    """`OnlineStore` on a Redis Cluster (see the module docstring). ``client`` is redis-py's
    `RedisCluster` (for `process`, profiles and grades); the decision path's connection
    is a `fengkong.features.cluster.ClusterPipelined`."""

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.cluster = ClusterPlanner(self.planner, self.prefix)

    def _claim_key(self, event: Event) -> str:
        head, tail = self.planner.dedup_key
        return f"{head}{event.event_id}{tail}"

    def _legacy_claim_key(self, event: Event) -> str:
        head, tail = self.planner.legacy_dedup_key
        return f"{head}{event.event_id}{tail}"

    @staticmethod
    def _commands(calls: list[tuple[Plan, list[str], bytes]], lookups: list[Lookup], sha: str,
                  amount: int) -> list[tuple[Any, ...]]:
        """Every command of the event's round: one EVALSHA per slot (ARGV[1] "0": no dedup
        inside; the amount, which the merchant's near-limit counter tests; its ops and its
        own reply tag), then the lists' lookups."""
        commands: list[tuple[Any, ...]] = [("EVALSHA", sha, len(keys), *keys, 0, amount, ops, sub.reply_tag)
                                           for sub, keys, ops in calls]
        for lookup in lookups:
            commands += lookup.commands
        return commands

    def _joined(self, call: _Call, join: Join, nscripts: int, lookups: list[Lookup],
                replies: Sequence[Any]) -> tuple[list[Any], bytes]:
        """The single-server reply's values from the round's replies, and their blob."""
        values: list[Any] = []
        for reply in replies[:nscripts]:
            values += msgpack.unpackb(reply[1])[1:]
        at = nscripts
        for lookup in lookups:
            n = len(lookup.commands)
            values.append(lookup.hit(replies[at:at + n]))
            at += n
        stored = [call.plan.reply_tag, *join.order(values)]
        return stored, msgpack.packb(stored)

    # -- synchronous (redis-py's RedisCluster) ---------------------------------------------
    def process(self, event: Event) -> FeatureResult:
        """Count the event and return its features as of just before it (idempotent by event_id)."""
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan, join, calls, lookups = self.cluster.calls(row)
        call = _Call(row, (), plan)
        claim = self._claim_key(event)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(claim, CLAIMED, nx=True, ex=self.dedup_ttl_s)
            pipe.get(claim)
            pipe.get(self._legacy_claim_key(event))
            took, value, legacy = pipe.execute()
            if took and legacy is not None:  # counted before an upgrade: the claim takes its value
                self.client.set(claim, legacy, ex=self.dedup_ttl_s)
                return self._duplicate(event, call, legacy)
            if not took:
                deadline = time.monotonic() + 1.0
                while value == CLAIMED and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    value = self.client.get(claim)
                return self._duplicate(event, call, value)
            replies = self._run_sync(self._commands(calls, lookups, self._script.sha, row["amount"]))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._unsettle_sync(claim)
            raise FeatureStoreUnavailable(f"feature store unreachable: {type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            self._unsettle_sync(claim)
            raise FeatureStoreError(f"feature store refused the update: {exc}") from exc
        stored, blob = self._joined(call, join, len(calls), lookups, replies)
        try:
            self._run_sync(self.cluster.makeup_commands(row, join, stored))
            self.client.set(claim, blob, ex=self.dedup_ttl_s)
        except (redis.RedisError, OSError):
            pass  # the event is counted; a retry meets the claim marker and counts nothing
        return self._read(event, call, stored, False)

    def _run_sync(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if not commands:
            return []
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies = pipe.execute(raise_on_error=False)
        again = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if again:  # a node restarted (or was added) since the script was loaded there
            self.client.script_load(self._script.script)
            pipe = self.client.pipeline(transaction=False)
            for i in again:
                pipe.execute_command(*commands[i])
            for i, reply in zip(again, pipe.execute(raise_on_error=False)):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return list(replies)

    def _unsettle_sync(self, claim: str) -> None:
        try:
            self.client.set(claim, UNSETTLED, ex=self.dedup_ttl_s, xx=True)
        except (redis.RedisError, OSError):
            pass

    def _duplicate(self, event: Event, call: _Call, value: Any) -> FeatureResult:
        """A duplicate's features: those the first delivery stored under the claim (or,
        once the service stored the record over them, that record, in `stored`)."""
        if value is None or value in (CLAIMED, UNSETTLED):
            why = "is still being counted" if value == CLAIMED else "was counted while a shard failed"
            raise FeatureStoreError(f"event_id {event.event_id!r} {why}: this delivery counts nothing") \
                from ClaimUnsettled(why)
        if not holds_features(value):
            return FeatureResult({}, True, [], call.plan, stored=value)
        return self._read(event, call, msgpack.unpackb(value), True)

    # -- the decision path (ClusterPipelined) ----------------------------------------------
    async def process_async(self, event: Event, conn: Pipelined, timeout_s: float) -> FeatureResult:
        """`process` over the cluster's pipelined connections: the claim, then every
        slot's call at once, then the joined reply stored under the claim (not waited for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan, join, calls, lookups = self.cluster.calls(row)
        call = _Call(row, (), plan)
        claim = self._claim_key(event)
        ttl = self.dedup_ttl_s
        try:
            took, value, legacy = await conn.execute((("SET", claim, CLAIMED, "NX", "EX", ttl), ("GET", claim),
                                                      ("GET", self._legacy_claim_key(event))), timeout_s)
            refused = next((r for r in (took, value, legacy) if isinstance(r, ReplyError)), None)
            if refused is not None:
                raise FeatureStoreError(f"feature store refused the claim: {refused}")
            if took is not None and legacy is not None:  # counted before an upgrade: the claim takes its value
                await conn.execute((("SET", claim, legacy, "EX", ttl),), max(0.001, deadline - loop.time()))
                return self._duplicate(event, call, legacy)
            if took is None:
                while value == CLAIMED and loop.time() + POLL_S < deadline:
                    await asyncio.sleep(POLL_S)
                    value = (await conn.execute((("GET", claim),), max(0.001, deadline - loop.time())))[0]
                return self._duplicate(event, call, value)
        except ConnectionFailed as exc:
            raise FeatureStoreUnavailable(f"feature store unreachable: {exc}") from exc
        commands = self._commands(calls, lookups, self._script.sha, row["amount"])
        try:
            replies = await self._run_async(conn, commands, max(0.001, deadline - loop.time()))
        except ConnectionFailed as exc:
            self._unsettle(conn, claim)
            raise FeatureStoreUnavailable(f"feature store unreachable: {exc}") from exc
        except FeatureStoreError:
            self._unsettle(conn, claim)
            raise
        stored, blob = self._joined(call, join, len(calls), lookups, replies)
        self._send_quietly(conn, (("SET", claim, blob, "EX", ttl), *self.cluster.makeup_commands(row, join, stored)))
        return self._read(event, call, stored, False)

    async def _run_async(self, conn: Pipelined, commands: list[tuple[Any, ...]], timeout_s: float) -> list[Any]:
        if not commands:
            return []
        replies = await conn.execute(commands, timeout_s)
        again = [i for i, r in enumerate(replies) if isinstance(r, ReplyError) and str(r).startswith("NOSCRIPT")]
        if again:  # SCRIPT LOAD goes with the command after it: to the node that lacked the script
            batch: list[tuple[Any, ...]] = []
            for i in again:
                batch += [("SCRIPT", "LOAD", self._script.script), commands[i]]
            got = await conn.execute(batch, timeout_s)
            for n, i in enumerate(again):
                replies[i] = got[2 * n + 1]
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise FeatureStoreError(f"feature store refused the update: {reply}")
        return replies

    def _unsettle(self, conn: Pipelined, claim: str) -> None:
        """Mark the claim: the event may be counted on some entities only (a retry counts nothing)."""
        self._send_quietly(conn, (("SET", claim, UNSETTLED, "XX", "EX", self.dedup_ttl_s),))

    @staticmethod
    def _send_quietly(conn: Pipelined, commands: Sequence[tuple[Any, ...]]) -> None:
        """A write not waited for; its failure is seen here, not logged by asyncio."""
        try:
            future = conn.send_nowait(commands)
        except OSError:
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception())


def store_class_for(url: str) -> type[OnlineStore]:
    """The feature store for a Redis URL: one script per slot on a Redis Cluster
    (docs/scale.md), the single script on one server."""
    return ClusterOnlineStore if is_cluster_url(url) else OnlineStore
