"""The delivery loop: one asyncio task per service worker that sends queued events.

What happens to an event (`Deliverer.step` runs one round: lease and send what is
due, then wait up to ``poll_s`` for new outbox entries and fan them out):

1. Fan out. New outbox entries are read through the consumer group ``deliver``
   (XREADGROUP, so each entry goes to one worker) and turned into one delivery per
   subscription that wants the kind (fanout.lua, which also acknowledges and deletes
   the entry). Entries a worker read but never fanned out (it died) are taken over by
   another with XAUTOCLAIM once they have been pending ``lease_s``.
2. Lease what is due. Deliveries wait in the retry schedule (a sorted set by due
   time); claim.lua moves each due one to ``now + lease_s`` and hands it to this
   worker. A worker that dies mid-send leaves its leases to expire: another worker
   sends them then. Hence at least once, never exactly once: receivers dedupe on
   ``X-Fengkong-Delivery``.
3. Send. A POST of the event's JSON body, signed (`fengkong.webhooks.signing`), with
   a timeout; a 2xx is delivered; anything else (another status, a refused
   connection, a timeout) is a failed attempt, retried after `retry_delay` (exponential
   backoff with jitter) until ``max_attempts``, then dead-lettered (settle.lua keeps
   the stats). Redirects are not followed.

The decision path never waits for any of this: it only queues (`store.outbox_command`,
for the kinds in `Deliverer.wanted`), and the loop waits on Redis when there is nothing
to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from fengkong.features.cluster import async_client_for_url
from fengkong.webhooks import signing
from fengkong.webhooks.store import DEAD_MAXLEN, GROUP, OUTBOX_MAXLEN, WebhookKeys, script_source

log = logging.getLogger(__name__)

#: how often a worker re-reads which kinds are wanted (a subscription made on another
#: worker gets that worker's decisions from at most this long after its creation)
WANTED_REFRESH_S = 1.0
#: how long stopping waits for the loop's tasks and connections to close
STOP_WAIT_S = 5.0
#: a receiver's answer body is read up to this much (then the connection is dropped)
MAX_ANSWER_BYTES = 65_536


@dataclass(frozen=True)
class DeliveryConfig:
    """How a worker delivers: retry schedule, timeouts, lease, concurrency."""

    prefix: str
    max_attempts: int = 8
    retry_base_s: float = 5.0
    retry_max_s: float = 3600.0
    timeout_s: float = 10.0
    lease_s: float = 60.0
    poll_s: float = 0.5
    concurrency: int = 16
    dead_maxlen: int = DEAD_MAXLEN
    outbox_maxlen: int = OUTBOX_MAXLEN


def retry_delay(attempts: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: ``base * 2**(attempts-1)``
    capped at `max_s`, with equal jitter (a random point in its upper half), so that
    many failed deliveries do not all come back at the same moment."""
    full = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return full / 2 + rand() * full / 2


@dataclass(frozen=True)
class Leased:
    """One delivery this worker holds the lease of."""

    delivery_id: str
    url: str
    secret: str
    sub_id: str
    attempts: int  # made before this one
    body: bytes
    kind: str


class Deliverer:
    """A worker's delivery loop (`start` in the worker's event loop, `stop` on shutdown).

    `on_result` is called with ``delivered``, ``failed`` or ``dead_lettered`` after
    each attempt (the service counts them in Prometheus); `on_dropped` with the number of
    events this loop dropped at the outbox's cap (`trim_outbox`)."""

    def __init__(self, redis_url: str, config: DeliveryConfig, *,
                 on_result: Callable[[str], None] | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self.redis_url = redis_url
        self.config = config
        self.keys = WebhookKeys(config.prefix)
        self.on_result = on_result
        self.on_dropped = on_dropped
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._redis: aioredis.Redis | None = None
        self._http: httpx.AsyncClient | None = None
        self._scripts: dict[str, Any] = {}
        self._next_autoclaim = 0.0
        self._group_ready = False
        #: the kinds some active subscription wants, refreshed about every second (`step`):
        #: the decision path queues an event only for these, without asking Redis
        self.wanted: frozenset[str] = frozenset()
        self._next_wanted = 0.0

    # -- lifecycle ----------------------------------------------------------------------------
    def _open(self) -> None:
        cfg = self.config
        self._redis = async_client_for_url(self.redis_url, timeout_s=max(5.0, cfg.poll_s * 4))
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s, connect=min(5.0, cfg.timeout_s)),
                                       follow_redirects=False, headers={"user-agent": "fengkong-webhooks/1"})
        self._scripts = {name: self._redis.register_script(script_source(name))
                         for name in ("fanout", "claim", "settle", "trim")}

    def start(self) -> "asyncio.Task[None]":
        """Run the loop as a task of the running event loop."""
        self._open()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="fengkong-webhooks")
        return self._task

    async def stop(self) -> None:
        """Stop the loop. Sends in flight are cancelled: their leases expire and another
        worker (or this service after a restart) sends them again."""
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        for t in tasks:
            t.cancel()
        # bounded, and never raising: a service's shutdown must not hang or fail on webhooks
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        for closer in (self._http, self._redis):
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer.aclose(), STOP_WAIT_S)
            except Exception as exc:
                log.warning("webhook delivery: closing %s failed: %s", type(closer).__name__, type(exc).__name__)

    async def run(self) -> None:
        """Rounds until cancelled; a fault of Redis is logged and the round retried."""
        failing = False
        while True:
            try:
                await self.step()
                if failing:
                    log.warning("webhook delivery works again")
                    failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep delivering whatever happens (Redis away, a bug in one round)
                # said once per outage, not every round
                (log.debug if failing else log.warning)("webhook delivery round failed: %s: %s",
                                                        type(exc).__name__, exc)
                failing = True
                self._group_ready = False
                await asyncio.sleep(self.config.poll_s)

    # -- one round ----------------------------------------------------------------------------
    async def step(self) -> None:
        """Lease and send what is due, then wait up to a poll for new outbox entries and
        fan them out (abandoned ones too, every half lease)."""
        if self._redis is None:
            self._open()
        assert self._redis is not None
        if not self._group_ready:
            await self._ensure_group()
        now = time.time()
        if now >= self._next_wanted:
            self._next_wanted = now + WANTED_REFRESH_S
            raw: Any = await self._redis.hkeys(self.keys.wanted)
            self.wanted = frozenset(k.decode() for k in raw)
            await self.trim_outbox()
        if now >= self._next_autoclaim and self._group_ready:
            self._next_autoclaim = now + max(1.0, self.config.lease_s / 2)
            await self._take_over()
        free = self.config.concurrency - len(self._sending)
        if free <= 0:  # every slot is sending: go on as soon as one is free
            await asyncio.wait(set(self._sending), timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED)
            return
        leased = await self._claim(free)
        for delivery in leased:
            task = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        if len(leased) == free:
            return  # more may be due: the next round waits for a free slot, not for new events
        # nothing else is due: wait up to a poll for new events (a retry coming due meanwhile waits at most that)
        if not self._group_ready:  # no outbox yet: nothing to read
            await asyncio.sleep(self.config.poll_s)
            return
        read: Any = await self._redis.xreadgroup(GROUP, self.consumer, {self.keys.outbox: ">"}, count=100,
                                                 block=max(1, int(self.config.poll_s * 1000)))
        ids = [entry_id for _, entries in read or () for entry_id, _ in entries]
        if ids:
            await self._fanout(ids)  # due now: the next round leases them

    async def trim_outbox(self) -> int:
        """Hold the outbox to its cap (about every second, from `step`): the oldest events
        not yet fanned out are dropped, counted in Redis (``outbox_dropped``), logged and
        reported to `on_dropped`. How many were dropped."""
        if not self._scripts:
            self._open()
        dropped = int(await self._scripts["trim"](keys=[self.keys.outbox, self.keys.outbox_dropped],
                                                  args=[self.config.outbox_maxlen]))
        if dropped:
            log.error("webhook outbox over its cap of %d events: the %d oldest events not yet fanned out were "
                      "dropped; no subscriber will receive them", self.config.outbox_maxlen, dropped)
            if self.on_dropped is not None:
                self.on_dropped(dropped)
        return dropped

    async def _ensure_group(self) -> None:
        """Create the outbox's consumer group once the outbox exists (the first publish
        makes it): a service nobody subscribed to writes no webhook key at all."""
        assert self._redis is not None
        if not await self._redis.exists(self.keys.outbox):
            return
        try:  # from the start of the stream: entries published before any worker ran are delivered
            await self._redis.xgroup_create(self.keys.outbox, GROUP, id="0")
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _take_over(self) -> None:
        """Fan out entries another worker read and never acknowledged (it died), and drop
        the group's consumers that hold nothing and have been idle a day."""
        assert self._redis is not None
        idle_ms = int(self.config.lease_s * 1000)
        for _ in range(1000):  # fanout acknowledges what it takes, so each scan from the start finds less
            ids = await self._redis.xautoclaim(self.keys.outbox, GROUP, self.consumer, idle_ms, start_id="0-0",
                                               count=100, justid=True)
            if not ids:
                break
            await self._fanout(list(ids))
        for c in await self._redis.xinfo_consumers(self.keys.outbox, GROUP):
            if c["pending"] == 0 and c["idle"] > 86_400_000 and c["name"] != self.consumer.encode():
                await self._redis.xgroup_delconsumer(self.keys.outbox, GROUP, c["name"])

    async def _fanout(self, ids: list[Any]) -> None:
        k = self.keys
        await self._scripts["fanout"](keys=[k.outbox, k.subscriptions, k.schedule],
                                      args=[GROUP, f"{time.time():.3f}", k.delivery_prefix, *ids])

    async def _claim(self, limit: int) -> list[Leased]:
        k = self.keys
        rows: Any = await self._scripts["claim"](keys=[k.schedule, k.subscriptions],
                                            args=[f"{time.time():.3f}", self.config.lease_s, limit,
                                                  k.delivery_prefix])
        out = []
        for did, sub_raw, attempts, body, kind in rows:
            sub = orjson.loads(sub_raw)
            out.append(Leased(delivery_id=did.decode(), url=sub["url"], secret=sub["secret"], sub_id=sub["id"],
                              attempts=int(attempts or 0), body=body, kind=kind.decode()))
        return out

    # -- one delivery -------------------------------------------------------------------------
    async def _deliver(self, d: Leased) -> None:
        try:
            status, error = await self._post(d)
            await self._settle(d, status, error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away while settling: the lease expires and it is sent again
            log.warning("webhook %s not settled: %s: %s", d.delivery_id, type(exc).__name__, exc)

    async def _post(self, d: Leased) -> tuple[int, str]:
        assert self._http is not None
        headers = {
            "content-type": "application/json",
            signing.SIGNATURE_HEADER: signing.signature_header(d.secret, d.body),
            signing.DELIVERY_HEADER: d.delivery_id,
            signing.EVENT_HEADER: d.kind,
            signing.ATTEMPT_HEADER: str(d.attempts + 1),
        }
        try:
            async with self._http.stream("POST", d.url, content=d.body, headers=headers) as response:
                status = response.status_code  # a receiver's answer is its status
                read = 0  # read a short body, so the connection can be kept alive; stop on a long one
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:300]
        return status, "" if 200 <= status < 300 else f"HTTP {status}"

    async def _settle(self, d: Leased, status: int, error: str) -> None:
        cfg = self.config
        now = time.time()
        if not error:
            outcome, next_at = "ok", now
        elif d.attempts + 1 >= cfg.max_attempts:
            outcome, next_at = "dead", now
        else:
            outcome, next_at = "retry", now + retry_delay(d.attempts + 1, cfg.retry_base_s, cfg.retry_max_s)
        k = self.keys
        counted = await self._scripts["settle"](
            keys=[k.schedule, k.delivery(d.delivery_id), k.stats(d.sub_id), k.dead(d.sub_id)],
            args=[d.delivery_id, outcome, status, error, f"{now:.3f}", f"{next_at:.3f}", cfg.dead_maxlen])
        if counted and self.on_result is not None:
            self.on_result({"ok": "delivered", "retry": "failed", "dead": "dead_lettered"}[outcome])
