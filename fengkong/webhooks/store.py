"""Webhook state in Redis: subscriptions, the outbox, and the publishing side.

Keys (`fengkong.features.keys.webhook_key`, all under the hash tag ``{webhooks}``):

| suffix | type | what |
| --- | --- | --- |
| ``subscriptions`` | hash | subscription id -> JSON (url, kinds, active, secret, created_at) |
| ``wanted`` | hash | kind -> number of active subscriptions that want it (publish reads it) |
| ``outbox`` | stream | events waiting to be fanned out, capped (below) |
| ``outbox_dropped`` | string | events dropped at the outbox's cap, ever |
| ``schedule`` | sorted set | delivery id -> unix time it is due (retries and leases) |
| ``delivery:<event id>.<sub id>`` | hash | one event for one subscription, until settled |
| ``stats:<sub id>`` | hash | delivered, failed, dead_lettered, last_status, last_error |
| ``dead:<sub id>`` | stream | dead letters of one subscription, capped |

Publishing is one script call (publish.lua): it appends to the outbox only when an
active subscription wants the kind, so a service with no subscriber stores nothing.
`publish` is the call for code outside the decision path (rules reloads, rescoring,
cases); the decision path sends `outbox_command` (a plain XADD, for the kinds its
worker's delivery loop last saw wanted) or `publish_command` (the script, in a
process without a delivery loop) in its write-behind batch instead, so it adds no
round trip. Delivery is `fengkong.webhooks.delivery`.

The cap (``maxlen``, `OUTBOX_MAXLEN` by default): about once a second each delivery loop
trims the outbox to it (trim.lua), dropping the oldest events not yet fanned out, and
counts, logs and adds to ``outbox_dropped`` what it dropped. A publish trims only at
`BACKSTOP` times the cap (``MAXLEN ~``), silently: a bound on memory for a service
where no delivery loop runs.
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import orjson
import redis
from redis.commands.core import Script

from fengkong.features import keys
from fengkong.pan import looks_like_pan

#: every kind of event a subscription can ask for
KINDS = ("decision.deny", "decision.review", "case.opened", "case.resolved", "merchant.grade_changed",
         "rules.reloaded")
#: how many subscriptions one service keeps (the fan-out reads them all per batch)
MAX_SUBSCRIPTIONS = 100
#: default cap of the outbox stream (entries waiting to be fanned out)
OUTBOX_MAXLEN = 100_000
#: how far past its cap a publish lets the outbox grow before it trims it itself, silently
BACKSTOP = 2
#: default cap of each subscription's dead-letter stream
DEAD_MAXLEN = 10_000
#: the outbox's consumer group (every worker reads through it)
GROUP = "deliver"


@lru_cache(maxsize=None)
def script_source(name: str) -> str:
    """The text of one of this package's Lua scripts (``lua/<name>.lua``)."""
    return resources.files("fengkong.webhooks").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


def script(client: Any, name: str) -> Script:
    """One of the scripts as a redis-py `Script` of `client` (a client or a pipeline;
    reloaded on NOSCRIPT)."""
    return client.register_script(script_source(name))  # type: ignore[no-any-return]


class WebhookKeys:
    """The webhook keys under one prefix (table in the module docstring)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.subscriptions = keys.webhook_key(prefix, "subscriptions")
        self.wanted = keys.webhook_key(prefix, "wanted")
        self.outbox = keys.webhook_key(prefix, "outbox")
        self.outbox_dropped = keys.webhook_key(prefix, "outbox_dropped")
        self.schedule = keys.webhook_key(prefix, "schedule")
        self.delivery_prefix = keys.webhook_key(prefix, "delivery:")

    def delivery(self, delivery_id: str) -> str:
        return self.delivery_prefix + delivery_id

    def stats(self, sub_id: str) -> str:
        return keys.webhook_key(self.prefix, f"stats:{sub_id}")

    def dead(self, sub_id: str) -> str:
        return keys.webhook_key(self.prefix, f"dead:{sub_id}")


# -- publishing -----------------------------------------------------------------------------------
def envelope(kind: str, payload: Mapping[str, Any]) -> tuple[str, bytes]:
    """A new event's id and the JSON body every subscriber receives:
    ``{"id", "kind", "created_at", "data"}``."""
    if kind not in KINDS:
        raise ValueError(f"unknown webhook event kind {kind!r}; known: {', '.join(KINDS)}")
    event_id = "evt_" + uuid.uuid4().hex
    created = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = orjson.dumps({"id": event_id, "kind": kind, "created_at": created, "data": payload},
                        option=orjson.OPT_NON_STR_KEYS)
    return event_id, body


def publish_command(kind: str, payload: Mapping[str, Any], *, prefix: str,
                    maxlen: int = OUTBOX_MAXLEN) -> tuple[Any, ...]:
    """The one command that queues an event, for a caller that sends its own batch (the
    decision path's write-behind on the pipelined connection). An EVAL, not an EVALSHA:
    a batch whose script Redis forgot would otherwise get NOSCRIPT."""
    k = WebhookKeys(prefix)
    event_id, body = envelope(kind, payload)
    return ("EVAL", script_source("publish"), 2, k.wanted, k.outbox, kind, event_id, body, BACKSTOP * maxlen)


def outbox_command(kind: str, payload: Mapping[str, Any], *, prefix: str,
                   maxlen: int = OUTBOX_MAXLEN) -> tuple[Any, ...]:
    """A plain XADD of the event to the outbox, for a caller that already knows (from
    `wanted_kinds`, refreshed by its delivery loop) that a subscription wants `kind`.
    Cheaper for Redis than `publish_command`; an entry nobody wants after all (the
    subscription was deleted meanwhile) is dropped at fan-out."""
    event_id, body = envelope(kind, payload)
    return ("XADD", WebhookKeys(prefix).outbox, "MAXLEN", "~", BACKSTOP * maxlen, "*", "id", event_id, "kind", kind,
            "body", body)


def wanted_kinds(client: Any, prefix: str) -> frozenset[str]:
    """The kinds some active subscription wants now (the wanted-kinds hash)."""
    return frozenset(k.decode() if isinstance(k, bytes) else k for k in client.hkeys(WebhookKeys(prefix).wanted))


def publish(client: redis.Redis, kind: str, payload: Mapping[str, Any], *, prefix: str,
            maxlen: int = OUTBOX_MAXLEN) -> str | None:
    """Queue one event for the subscriptions that want `kind`; returns its id, or None
    when no active subscription wants it (nothing stored).

    The call for everything outside the decision path: rules reloads, merchant grade
    changes, and the cases package (``case.opened`` / ``case.resolved``, with a payload
    such as ``{"case_id", "decision_id", "entity", "priority", "disposition"}``). It is
    one round trip; delivery happens later, in the service's workers. Raises
    `redis.RedisError` if Redis does not take it (the caller decides whether that fails
    its own work)."""
    k = WebhookKeys(prefix)
    event_id, body = envelope(kind, payload)
    entry = script(client, "publish")(keys=[k.wanted, k.outbox], args=[kind, event_id, body, BACKSTOP * maxlen])
    return event_id if entry is not None else None


def publish_many(client: redis.Redis, events: Iterable[tuple[str, Mapping[str, Any]]], *, prefix: str,
                 maxlen: int = OUTBOX_MAXLEN) -> int:
    """`publish` for many events in one pipeline (rescoring's grade changes); returns how many were queued."""
    k = WebhookKeys(prefix)
    pipe = client.pipeline(transaction=False)
    # EVAL, not a Script's EVALSHA: redis-py's cluster pipeline does not load scripts first,
    # so a shard that never saw the script would answer NOSCRIPT
    source = script_source("publish")
    n = 0
    for kind, payload in events:
        event_id, body = envelope(kind, payload)
        pipe.execute_command("EVAL", source, 2, k.wanted, k.outbox, kind, event_id, body, BACKSTOP * maxlen)
        n += 1
    if not n:
        return 0
    return sum(1 for r in pipe.execute() if r is not None)


# -- subscriptions --------------------------------------------------------------------------------
def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host; ValueError saying why not."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise ValueError("must be an http or https URL of at most 2048 characters")
    if any(c.isspace() for c in url):
        raise ValueError("must not contain spaces")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must use http or https")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (the signature authenticates the sender)")
    if looks_like_pan(url):  # stored, listed and logged like any field: no card number in it
        raise ValueError("looks like it holds a full card number (PAN)")
    return url


def check_kinds(kinds: Iterable[str]) -> list[str]:
    """The kinds, each known and given once; ValueError naming the first unknown one."""
    out: list[str] = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
        if kind not in out:
            out.append(kind)
    if not out:
        raise ValueError("give at least one event kind")
    return out


def new_secret() -> str:
    """A subscription's signing secret (shown once, when the subscription is created)."""
    return "whsec_" + secrets.token_urlsafe(32)


_STAT_FIELDS = ("delivered", "failed", "dead_lettered")


class Subscriptions:
    """Create, read, change and delete subscriptions, read their delivery stats and
    dead letters, and redrive dead letters (the admin routes' service functions)."""

    def __init__(self, client: redis.Redis, prefix: str, *, dead_maxlen: int = DEAD_MAXLEN) -> None:
        self.client: Any = client  # redis-py's reply types are unions of bytes and str; ours are bytes
        self.keys = WebhookKeys(prefix)
        self.dead_maxlen = dead_maxlen

    # -- reading ------------------------------------------------------------------------------
    def _all(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.keys.subscriptions)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    def _public(self, sub: Mapping[str, Any], stats: Mapping[bytes, bytes]) -> dict[str, Any]:
        out = {k: v for k, v in sub.items() if k != "secret"}
        s = {k.decode(): v.decode() for k, v in stats.items()}
        out["stats"] = {
            **{f: int(s.get(f, 0)) for f in _STAT_FIELDS},
            "last_status": int(s["last_status"]) if s.get("last_status") else None,
            "last_error": s.get("last_error") or None,
            "last_attempt_at": float(s["last_attempt_at"]) if s.get("last_attempt_at") else None,
            "dead_letters": 0,
        }
        return out

    def list_all(self) -> list[dict[str, Any]]:
        """Every subscription with its stats (never the secret), oldest first."""
        subs = sorted(self._all().values(), key=lambda s: (s["created_at"], s["id"]))
        pipe = self.client.pipeline(transaction=False)
        for s in subs:
            pipe.hgetall(self.keys.stats(s["id"]))
            pipe.xlen(self.keys.dead(s["id"]))
        replies = pipe.execute()
        out = []
        for i, s in enumerate(subs):
            item = self._public(s, replies[2 * i])
            item["stats"]["dead_letters"] = int(replies[2 * i + 1])
            out.append(item)
        return out

    def get(self, sub_id: str) -> dict[str, Any] | None:
        """One subscription with its stats, or None."""
        raw = self.client.hget(self.keys.subscriptions, sub_id)
        if raw is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.stats(sub_id))
        pipe.xlen(self.keys.dead(sub_id))
        stats, dead = pipe.execute()
        out = self._public(orjson.loads(raw), stats)
        out["stats"]["dead_letters"] = int(dead)
        return out

    # -- changing -----------------------------------------------------------------------------
    def create(self, *, url: str, kinds: Iterable[str], active: bool = True,
               description: str | None = None) -> dict[str, Any]:
        """A new subscription; the answer is the only one that carries its ``secret``.
        ValueError when the service already has `MAX_SUBSCRIPTIONS`."""
        sub: dict[str, Any] = {"id": "wh_" + uuid.uuid4().hex[:20], "url": check_url(url), "kinds": check_kinds(kinds),
               "active": bool(active), "description": description, "secret": new_secret(),
               "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")}
        if self.client.hlen(self.keys.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ValueError(f"a service keeps at most {MAX_SUBSCRIPTIONS} subscriptions; delete one first")
        self.client.hset(self.keys.subscriptions, sub["id"], orjson.dumps(sub))
        self._refresh_wanted()
        out = self.get(sub["id"]) or {}
        out["secret"] = sub["secret"]
        return out

    def set_active(self, sub_id: str, active: bool) -> dict[str, Any] | None:
        """Pause (no new events are fanned out to it; deliveries already queued go on)
        or resume a subscription; None if there is no such subscription."""
        raw = self.client.hget(self.keys.subscriptions, sub_id)
        if raw is None:
            return None
        sub = orjson.loads(raw)
        sub["active"] = bool(active)
        self.client.hset(self.keys.subscriptions, sub_id, orjson.dumps(sub))
        self._refresh_wanted()
        return self.get(sub_id)

    def delete(self, sub_id: str) -> bool:
        """Delete a subscription, its stats and dead letters; its queued deliveries are
        dropped when they come due. False if there was none."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.subscriptions, sub_id)
        pipe.delete(self.keys.stats(sub_id), self.keys.dead(sub_id))
        removed = pipe.execute()[0]
        self._refresh_wanted()
        return bool(removed)

    def _refresh_wanted(self) -> None:
        """Rewrite the wanted-kinds hash from the subscriptions (WATCHed, so two admins
        changing subscriptions at once cannot leave it stale)."""
        k = self.keys

        def rewrite(pipe: Any) -> None:
            counts: dict[str, int] = {}
            for raw in pipe.hvals(k.subscriptions):
                sub = orjson.loads(raw)
                if sub.get("active"):
                    for kind in sub["kinds"]:
                        counts[kind] = counts.get(kind, 0) + 1
            pipe.multi()
            pipe.delete(k.wanted)
            if counts:
                pipe.hset(k.wanted, mapping=counts)

        self.client.transaction(rewrite, k.subscriptions)

    # -- dead letters -------------------------------------------------------------------------
    def dead_letters(self, sub_id: str, *, count: int = 100) -> list[dict[str, Any]]:
        """The subscription's dead letters, oldest first: each with its ``id`` (for a
        redrive), the delivery id, kind, attempts, last status and error, and the body."""
        out = []
        for entry_id, fields in self.client.xrange(self.keys.dead(sub_id), count=count):
            f = {k.decode(): v for k, v in fields.items()}
            out.append({
                "id": entry_id.decode(), "delivery_id": f["delivery"].decode(), "event_id": f["event"].decode(),
                "kind": f["kind"].decode(), "attempts": int(f["attempts"]),
                "last_status": int(f["last_status"]) if f.get("last_status") else None,
                "last_error": f["last_error"].decode() or None, "dead_at": float(f["dead_at"]),
                "body": orjson.loads(f["body"]),
            })
        return out

    def redrive(self, sub_id: str, entry_ids: list[str] | None = None) -> int:
        """Queue dead letters again (all of the subscription's, or those `entry_ids`) as
        fresh deliveries with their attempts reset, due now; returns how many."""
        dead = self.keys.dead(sub_id)
        if entry_ids is None:
            entries = self.client.xrange(dead)
        else:
            entries = []
            for entry_id in entry_ids:
                entries += self.client.xrange(dead, entry_id, entry_id)
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        for entry_id, fields in entries:
            f = {k.decode(): v for k, v in fields.items()}
            delivery_id = f["delivery"].decode()
            pipe.hset(self.keys.delivery(delivery_id), mapping={
                "sub": f["sub"], "event": f["event"], "kind": f["kind"], "body": f["body"], "attempts": 0,
                "created_at": f["created_at"]})
            pipe.zadd(self.keys.schedule, {delivery_id: now})
            pipe.xdel(dead, entry_id)
        if entries:
            pipe.execute()
        return len(entries)

    def pending(self) -> int:
        """Deliveries queued or in flight (all subscriptions): the schedule's size."""
        return int(self.client.zcard(self.keys.schedule))
