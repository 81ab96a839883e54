"""The online feature store on a Redis Cluster: the same ops, split so no script spans two slots.

On one server a decision is one script over every key of the event (`OnlineStore`).
A cluster runs a script on one slot only, and the keys carry one hash tag per entity
(`fengkong.features.keys`), so here a decision is:

1. **the claim** of the event id, on its own slot (``{evt:<id>}``): ``SET NX`` of a
   marker, then ``GET``, in one pipelined batch. Only the request whose ``SET`` took
   counts the event; every other one (a retry, a twin on another worker) counts
   nothing anywhere and reads the features the first delivery stored (waiting, within
   its budget, while they are being counted);
2. **one script call per slot** (card, user, device, IP, subnet, merchant,
   merchant x card, each list), all sent at once, each master's share pipelined on one
   connection: the *same* script (`lua/update_read.lua`) given only that entity's ops,
   with ARGV[1] ``"0"`` (no dedup inside: the claim did it). The ops are independent
   per entity: an op reads and writes only its own entity's keys (a distinct count of
   another entity's ids is a member written into this entity's set), and the one value
   an op passes to another, the merchant's limit that the near-limit counter tests, is
   read and used within the merchant's own call (profile and merchant state share the
   ``{merchant:<id>}`` slot);
3. the replies are joined, value for value, into the list the single-server script
   returns (same order, same reply tag), stored under the claim (write-behind) for the
   duplicates, and read into features by the same code (`OnlineStore._read`).

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
from fengkong.features.errors import FeatureStoreError, FeatureStoreUnavailable
from fengkong.features.online import FeatureResult, OnlineStore, _Call
from fengkong.features.ops import ListOp, Op
from fengkong.features.pipelined import ConnectionFailed, Pipelined, ReplyError, ReplyLate
from fengkong.features.plan import Pick, Plan, Planner, picker
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
    """How one plan's per-slot calls are made and read back: the groups that have ops for
    it, and the picker that orders their joined values as the single-server reply."""

    groups: tuple[int, ...]
    order: Pick


def _slot_identity(op: Op) -> tuple[str, str]:
    """What decides an op's slot: its list (a list's keys are ``{list:<name>}``), else
    its entity and the row column holding the entity's id."""
    return ("list", op.suffix) if isinstance(op, ListOp) else (op.entity, op.column)


class ClusterPlanner:
    """The single-server `Planner`'s ops, grouped by slot: one sub-`Planner` per entity
    (and per list), whose calls together do what the one script does."""

    def __init__(self, planner: Planner, prefix: str) -> None:
        self.planner = planner
        by_slot: dict[tuple[str, str], list[Op]] = {}
        for op in planner.ops:
            by_slot.setdefault(_slot_identity(op), []).append(op)
        self.groups = tuple(Planner(ops, prefix) for ops in by_slot.values())
        self._group_of = {id(op): g for g, group in enumerate(self.groups) for op in group.ops}
        self._joins: dict[str, Join] = {}

    def calls(self, row: dict[str, Any]) -> tuple[Plan, Join, list[tuple[Plan, list[str], bytes]]]:
        """The event's single-server plan, its join, and the per-slot calls (plan, KEYS,
        ARGV[3]) of the groups that have ops for it. KEYS[1] of a call is its first own key
        (the script ignores it: no dedup inside)."""
        plan = self.planner.plan_for(row)
        join = self._joins.get(plan.reply_tag)
        if join is None:
            join = self._joins[plan.reply_tag] = self._join(plan, row)
        out = []
        for g in join.groups:
            sub, keys, ops = self.groups[g].call(row)
            keys[0] = keys[1]
            out.append((sub, keys, ops))
        return plan, join, out

    def _join(self, plan: Plan, row: dict[str, Any]) -> Join:
        subs = {g: group.plan_for(row) for g, group in enumerate(self.groups)}
        active = tuple(g for g, sub in subs.items() if sub.ops)
        where: dict[int, tuple[int, int]] = {}  # id(op) -> (start in the joined values, width)
        at = 0
        for g in active:
            for op in subs[g].ops:
                where[id(op)] = (at, op.width)
                at += op.width
        positions: list[int] = []
        for op in plan.ops:
            start, width = where[id(op)]
            positions += range(start, start + width)
        if len(positions) != at:
            raise FeatureStoreError("cluster split does not cover the plan's ops")  # a bug, never the caller's
        return Join(active, picker(positions))


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

    def _evalsha(self, keys: list[str], ops: bytes, plan: Plan, amount: int) -> tuple[Any, ...]:
        """One slot's call: ARGV[1] "0" (no dedup inside), the amount (the merchant's
        near-limit counter tests it), its ops and its own reply tag."""
        return ("EVALSHA", self._script.sha, len(keys), *keys, 0, amount, ops, plan.reply_tag)

    def _joined(self, event: Event, call: _Call, join: Join, replies: Sequence[Any]) -> tuple[list[Any], bytes]:
        """The single-server reply's values from the per-slot replies, and their blob."""
        values: list[Any] = []
        for reply in replies:
            values += msgpack.unpackb(reply[1])[1:]
        stored = [call.plan.reply_tag, *join.order(values)]
        return stored, msgpack.packb(stored)

    # -- synchronous (redis-py's RedisCluster) ---------------------------------------------
    def process(self, event: Event) -> FeatureResult:
        """Count the event and return its features as of just before it (idempotent by event_id)."""
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan, join, calls = self.cluster.calls(row)
        call = _Call(row, (), plan)
        claim = self._claim_key(event)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(claim, CLAIMED, nx=True, ex=self.dedup_ttl_s)
            pipe.get(claim)
            took, value = pipe.execute()
            if not took:
                deadline = time.monotonic() + 1.0
                while value == CLAIMED and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    value = self.client.get(claim)
                return self._duplicate(event, call, value)
            commands = [self._evalsha(keys, ops, sub, row["amount"]) for sub, keys, ops in calls]
            replies = self._run_sync(commands)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._unsettle_sync(claim)
            raise FeatureStoreUnavailable(f"feature store unreachable: {type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            self._unsettle_sync(claim)
            raise FeatureStoreError(f"feature store refused the update: {exc}") from exc
        stored, blob = self._joined(event, call, join, replies)
        try:
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
        """A duplicate's features: those the first delivery stored under the claim."""
        if value is None or value in (CLAIMED, UNSETTLED):
            why = "is still being counted" if value == CLAIMED else "was counted while a shard failed"
            raise FeatureStoreError(f"event_id {event.event_id!r} {why}: this delivery counts nothing") \
                from ClaimUnsettled(why)
        return self._read(event, call, msgpack.unpackb(value), True)

    # -- the decision path (ClusterPipelined) ----------------------------------------------
    async def process_async(self, event: Event, conn: Pipelined, timeout_s: float) -> FeatureResult:
        """`process` over the cluster's pipelined connections: the claim, then every
        slot's call at once, then the joined reply stored under the claim (not waited for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan, join, calls = self.cluster.calls(row)
        call = _Call(row, (), plan)
        claim = self._claim_key(event)
        ttl = self.dedup_ttl_s
        try:
            took, value = await conn.execute((("SET", claim, CLAIMED, "NX", "EX", ttl), ("GET", claim)), timeout_s)
            if isinstance(took, ReplyError) or isinstance(value, ReplyError):
                raise FeatureStoreError(f"feature store refused the claim: {took if isinstance(took, ReplyError) else value}")
            if took is None:
                while value == CLAIMED and loop.time() + POLL_S < deadline:
                    await asyncio.sleep(POLL_S)
                    value = (await conn.execute((("GET", claim),), max(0.001, deadline - loop.time())))[0]
                return self._duplicate(event, call, value)
        except ConnectionFailed as exc:
            raise FeatureStoreUnavailable(f"feature store unreachable: {exc}") from exc
        commands = [self._evalsha(keys, ops, sub, row["amount"]) for sub, keys, ops in calls]
        try:
            replies = await self._run_async(conn, commands, max(0.001, deadline - loop.time()))
        except ConnectionFailed as exc:
            self._unsettle(conn, claim)
            raise FeatureStoreUnavailable(f"feature store unreachable: {exc}") from exc
        except FeatureStoreError:
            self._unsettle(conn, claim)
            raise
        stored, blob = self._joined(event, call, join, replies)
        self._send_quietly(conn, (("SET", claim, blob, "EX", ttl),))
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
