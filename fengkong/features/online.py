"""The online feature store: one Lua call per event reads and updates everything.

Why one script and not a pipeline: a decision must see the counters as of just
before its own event, and a retried event_id must count nothing. A MULTI/EXEC
pipeline could not branch on the dedup check or on the merchant's limit, and
reading then writing in two trips would let a concurrent event slip between
them. The script does both atomically on the server in one round trip
(`lua/update_read.lua`; its header documents KEYS, ARGV and the reply).

Keys are ``{prefix}:v1:{<entity>:<id>}:<feature>``: the braces are a Redis
Cluster hash tag, so all keys of one entity share a slot. On a single server one
script touches all of them; on a cluster the same op list would be split per
entity and pipelined (not implemented: see README, Scale).
"""

from __future__ import annotations

import hashlib

import msgpack
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, NamedTuple

import redis

from fengkong.events import OUTCOME_TYPES, Event
from fengkong.features import definitions as d
from fengkong.features.errors import (
    DuplicateEventConflict,
    FeatureDefinitionError,
    FeatureStoreError,
    FeatureStoreUnavailable,
)
from fengkong.features.ipintel import IpIntel
from fengkong.features.pipelined import ConnectionFailed, PipelinedRedis, ReplyError
from fengkong.features.assemble import AMOUNT_FEATURES, assemble
from fengkong.features.lists import KIND_COLUMN, ListSpec
from fengkong.features.rows import event_row

_SCALE = d.MINOR_PER_MAJOR
_OUTCOMES = frozenset(t.value for t in OUTCOME_TYPES)


def load_script() -> str:
    return resources.files("fengkong.features").joinpath("lua/update_read.lua").read_text(encoding="utf-8")


@dataclass
class _Step:
    """One op of the script: how to build its args from an event row and read its reply."""

    entity_column: str
    key_suffix: str
    entity_name: str
    build: Callable[[dict[str, Any], str], list[Any] | None]  # (row, type) -> args after the key index
    width: int  # values the op returns
    outputs: list[str]
    read: Callable[[list[Any], dict[str, Any]], None]
    code: str
    writes_on: frozenset[str] = field(default_factory=frozenset)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _int(v: Any) -> int | None:
    return None if v is None else int(float(v))


class _Call(NamedTuple):
    """One event's script call: its row, KEYS, ARGV, and the ops whose replies come back."""

    row: dict[str, Any]
    keys: list[str]
    args: list[Any]
    used: list[_Step]
    layout: str


@dataclass
class FeatureResult:
    """The features of one event as of just before it, and whether it was a replay of an event_id."""

    features: dict[str, Any]
    duplicate: bool
    raw: dict[str, Any]


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
    ) -> None:
        self.client = client
        self.ipintel = ipintel
        self.lists = lists or {}
        self.prefix = prefix
        self.grade_limits = dict(grade_limits or d.DEFAULT_GRADE_LIMITS)
        if default_limit is None:
            default_limit = self.grade_limits.get(d.DEFAULT_GRADE, 500_000)
        self.default_limit = default_limit
        self.biz_offset_min = business_utc_offset_min
        self.dedup_ttl_s = dedup_ttl_s
        self._script = client.register_script(load_script())
        self._steps = self._compile()
        self._layouts: dict[tuple[int, ...], str] = {}
        self._key_pre = f"{prefix}:v1:{{"
        self._plan = [(step, *self._key_parts(step)) for step in self._steps]
        self._profile_args = [len(self.grade_limits)]
        for g, lim in self.grade_limits.items():
            self._profile_args += [g, lim]
        self._profile_args.append(self.default_limit)

    # -- keys ---------------------------------------------------------------------------------
    def key(self, entity: str, entity_id: str, suffix: str) -> str:
        return f"{self.prefix}:v1:{{{entity}:{entity_id}}}:{suffix}"

    def profile_key(self, merchant_id: str) -> str:
        return self.key("merchant", merchant_id, "profile")

    # -- plan -----------------------------------------------------------------------------------
    def _compile(self) -> list[_Step]:
        steps: list[_Step] = []
        steps.append(self._profile_step())
        entities: list[d.Entity] = []
        for decl in (*d.ROLLING, *d.FIRST_SEEN, *d.MOMENTS, *d.HOUR_HABITS):
            if decl.entity not in entities:
                entities.append(decl.entity)
        steps += [self._entity_step(entity) for entity in entities]
        steps += [self._distinct_step(x) for x in d.DISTINCT]
        steps += [self._seen_step(s) for s in d.SEEN]
        steps.append(self._volume_step())
        steps.append(self._top_step())
        steps += [self._list_step(spec) for spec in self.lists.values()]
        seen: set[tuple[str, str]] = set()
        for step in steps:
            ident = (step.entity_name, step.key_suffix)
            if ident in seen:
                raise FeatureDefinitionError(f"two features share the key {ident}: give them distinct names")
            seen.add(ident)
        return steps

    def _profile_step(self) -> _Step:
        def build(row: dict[str, Any], typ: str) -> list[Any]:
            return self._profile_args

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            raw["merchant.grade"] = vals[0]
            raw["merchant.single_limit_minor"] = _int(vals[1])
            raw["merchant.onboarded_day"] = _int(vals[2])
            raw["merchant.daily_cap_minor"] = _int(vals[3])
            raw["merchant.anomaly"] = _num(vals[4])

        return _Step("merchant_id", "profile", "merchant", build, 5, [], read, "P", frozenset())

    def _entity_step(self, entity: d.Entity) -> _Step:
        """Everything one entity keeps as numbers, in one value: its rolling windows, and
        its first-seen time, amount moments and hour habit where declared. One GET and
        at most one SET per event, however many windows."""
        rollings = [r for r in d.ROLLING if r.entity == entity]
        firsts = [f for f in d.FIRST_SEEN if f.entity == entity]
        moments = [m for m in d.MOMENTS if m.entity == entity]
        hours = [h for h in d.HOUR_HABITS if h.entity == entity]
        parts = [(r.window.buckets, r.window.resolution * 1_000_000, r.counters) for r in rollings]
        ttl = max([r.window.seconds + r.window.resolution for r in rollings]
                  + [x.ttl.seconds for x in (*firsts, *moments, *hours)])
        names = [name for r in rollings for name in r.outputs()]
        ns = entity.name
        first_events = frozenset(firsts[0].events) if firsts else frozenset()
        moment_events = frozenset(moments[0].events) if moments else frozenset()
        hour_events = frozenset(hours[0].events) if hours else frozenset()
        writes_on = frozenset(t for r in rollings for c in r.counters for t in c.events)
        writes_on |= first_events | moment_events | hour_events
        layout = ";".join(f"{r.window.name}:{','.join(c.name for c in r.counters)}" for r in rollings)
        layout += "|" + "".join(code for code, on in (("F", firsts), ("M", moments), ("H", hours)) if on)
        suffix = f"state.{hashlib.sha1(layout.encode()).hexdigest()[:8]}"  # a new layout, a new key
        ttl_s = str(ttl)
        width = len(names) + (1 if firsts else 0) + (3 if moments else 0) + (2 if hours else 0)
        size = sum(1 + len(counters) + n * (1 + len(counters)) for n, _, counters in parts)
        size += (1 if firsts else 0) + (3 if moments else 0) + (25 if hours else 0)

        def build(row: dict[str, Any], typ: str) -> list[Any]:
            args: list[Any] = [size, len(parts)]
            t = row["ts_us"]
            for n, res_us, counters in parts:
                args += [n, t // res_us, len(counters)]
                for c in counters:
                    if typ not in c.events:
                        args.append(0)
                    elif c.where == "near_limit":
                        args.append("N")
                    elif c.where is not None and not row[c.where]:
                        args.append(0)
                    else:
                        args.append(row["amount"] if c.value == "amount" else 1)
            extras: list[Any] = []
            if firsts:
                extras += ["F", 2 if typ in first_events else 1, t]
            if moments:
                extras += ["M", 2 if typ in moment_events and row["has_amount"] else 1, row["amount"]]
            if hours:
                extras += ["H", 2 if typ in hour_events else 1, row["hour"]]
            args.append(len(extras) // 3)
            args += extras
            args.append(ttl_s)
            return args

        scaled = [name in AMOUNT_FEATURES for name in names]

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            for name, amount, v in zip(names, scaled, vals):
                raw[name] = v / _SCALE if amount else int(v)
            i = len(names)
            if firsts:
                raw[f"{ns}.first_seen_us"] = _int(vals[i])
                i += 1
            if moments:
                raw[f"{ns}.moments"] = (int(vals[i]), float(vals[i + 1]), float(vals[i + 2]))
                i += 3
            if hours:
                raw[f"{ns}.hour_count"] = int(vals[i])
                raw[f"{ns}.hour_total"] = int(vals[i + 1])

        return _Step(entity.column, suffix, ns, build, width, names, read, "R", writes_on)

    def _distinct_step(self, x: d.Distinct) -> _Step:
        windows = x.windows
        longest = max(windows, key=lambda w: w.seconds)
        ttl = longest.seconds + longest.resolution
        names = x.outputs()
        events = frozenset(x.events)
        of = x.of

        spans = tuple((w.resolution * 1_000_000, w.buckets - 1) for w in windows)
        ttl_s = str(ttl)

        # times as the decimal strings Redis is given (a Lua number would be formatted per
        # call); the sets of one event share their windows, so the row keeps them once
        def build(row: dict[str, Any], typ: str) -> list[Any]:
            times = row.get(spans)
            if times is None:
                t = row["ts_us"]
                thrs = [(t // res - back) * res for res, back in spans]
                times = row[spans] = (str(t), f"({min(thrs)}", len(thrs), *map(str, thrs))  # type: ignore[index]
            member = row[of] if typ in events and row[of] is not None else ""
            return [member, times[0], times[1], ttl_s, *times[2:]]

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            for name, v in zip(names, vals):
                raw[name] = int(v)

        return _Step(x.entity.column, f"d:{x.of}", x.entity.name, build, len(windows), names, read, "D", events)

    def _seen_step(self, s: d.SeenBefore) -> _Step:
        w = s.horizon
        ttl = w.seconds + w.resolution
        new_name, seen_name = s.outputs()
        events = frozenset(s.events)
        of = s.of

        ttl_s = str(ttl)

        def build(row: dict[str, Any], typ: str) -> list[Any]:
            t = row["ts_us"]
            horizon = str((t // (w.resolution * 1_000_000) - w.buckets + 1) * w.resolution * 1_000_000)
            member = row[of] if row[of] is not None else ""
            return [member, str(t), horizon, f"({horizon}", ttl_s, 1 if typ in events else 0]

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            raw[new_name] = None if vals[0] is None else vals[0] == 1
            raw[seen_name] = int(vals[1])

        return _Step(s.entity.column, f"s:{s.of}", s.entity.name, build, 2, [new_name, seen_name], read, "S", events)

    def _volume_step(self) -> _Step:
        pv = d.PERIOD_VOLUME
        events = frozenset(pv.events)
        ttl = 31 * 86400
        names = pv.outputs()
        order = ["merchant.volume_today", "merchant.count_today", "merchant.volume_hour", "merchant.count_hour",
                 "merchant.baseline_today_7d", "merchant.baseline_hour_7d", "merchant.baseline_count_today_7d",
                 "merchant.baseline_today_28d", "merchant.baseline_hour_28d", "merchant.baseline_count_today_28d"]

        ttl_s = str(ttl)
        hours = [str(h) for h in range(24)]

        def build(row: dict[str, Any], typ: str) -> list[Any]:
            return [row["biz_day"], hours[row["biz_hour"]], row["amount"], ttl_s, 1 if typ in events else 0]

        scaled = [name in AMOUNT_FEATURES for name in order]

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            for name, amount, v in zip(order, scaled, vals):
                raw[name] = None if v is None else (v / _SCALE if amount else v)

        return _Step("merchant_id", "volume", "merchant", build, 10, names, read, "V", events)

    def _top_step(self) -> _Step:
        ts = d.TOP_SHARE
        events = frozenset(ts.events)
        of = ts.of

        ttl_s = str(2 * 86400)

        def build(row: dict[str, Any], typ: str) -> list[Any]:
            member = row[of] if typ in events and row[of] is not None else ""
            return [member, str(row["amount"]), ttl_s, 1 if typ in events else 0]

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            raw["merchant.top_card_volume_today"] = vals[0] / _SCALE

        # the key carries the business day: see _keys_for
        return _Step("merchant_id", "top", "merchant", build, 1, ts.outputs(), read, "T", events)

    def _list_step(self, spec: ListSpec) -> _Step:
        column = KIND_COLUMN[spec.kind]
        feature = spec.feature
        is_ip = spec.kind == "ip"

        def build(row: dict[str, Any], typ: str) -> list[Any]:
            ipint = ""
            if is_ip:
                info = row.get("ip_info")
                if info is not None and ":" not in row[column]:
                    ipint = str(_ipv4_int(row[column]))
            return ["RANGES" if is_ip else 0, row[column], ipint]  # ipint: decimal, or "" if not IPv4

        def read(vals: list[Any], raw: dict[str, Any]) -> None:
            raw[feature] = vals[0] == 1

        return _Step(column, spec.name, "list", build, 1, [feature], read, "L", frozenset())

    # -- the call -------------------------------------------------------------------------------
    def _key_parts(self, step: _Step) -> tuple[str, str]:
        """The fixed text around a step's entity id in its key (`_args_for` joins them):
        for a list, its members key and its ranges key."""
        pre = self._key_pre
        if step.code == "L":
            return f"{pre}list:{step.key_suffix}}}:members", f"{pre}list:{step.key_suffix}}}:ranges"
        tail = "}:top:" if step.code == "T" else f"}}:{step.key_suffix}"
        return f"{pre}{step.entity_name}:", tail

    def _layout_tag(self, used: list[_Step]) -> str:
        """Which ops ran (the reply's shape), e.g. 'PRRDDSFV...' plus a short hash of their keys."""
        ident = tuple(map(id, used))
        tag = self._layouts.get(ident)
        if tag is None:
            text = "|".join(f"{s.code}:{s.entity_name}:{s.key_suffix}" for s in used)
            tag = hashlib.sha1(text.encode()).hexdigest()[:12]
            self._layouts[ident] = tag
        return tag

    def _args_for(self, row: dict[str, Any]) -> tuple[list[str], list[Any], list[_Step]]:
        typ = row["type"]
        outcome = typ in _OUTCOMES
        pre = self._key_pre
        keys = [f"{pre}evt:{row['event_id']}}}:dedup"]
        args: list[Any] = []
        used: list[_Step] = []
        for step, head, tail in self._plan:
            entity_id = row[step.entity_column]
            if entity_id is None or (outcome and typ not in step.writes_on):
                continue
            code = step.code
            if code == "L":
                keys.append(head)
                op = step.build(row, typ)
                if op[0] == "RANGES":
                    keys.append(tail)
                    op[0] = len(keys)
                    args += ["L", len(keys) - 1, *op]
                else:
                    args += ["L", len(keys), *op]
            else:
                # the top-card set is per business day; everything else has a fixed suffix
                keys.append(head + entity_id + (f"{tail}{row['biz_day']}" if code == "T" else tail))
                args += [code, len(keys), *step.build(row, typ)]
            used.append(step)
        return keys, args, used

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

    async def process_async(self, event: Event, conn: PipelinedRedis, timeout_s: float) -> FeatureResult:
        """`process` over a pipelined asyncio connection: the event loop serves other
        requests while Redis runs the script. After a Redis restart (the script cache is
        empty) the script is loaded and the call repeated, once."""
        call = self._prepare(event)
        evalsha = ("EVALSHA", self._script.sha, len(call.keys), *call.keys, *call.args)
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
        row = event_row(event, self.ipintel, self.biz_offset_min)
        keys, args, used = self._args_for(row)
        layout = self._layout_tag(used)
        return _Call(row, keys, [self.dedup_ttl_s, row["amount"], msgpack.packb(args), layout], used, layout)

    def _finish(self, event: Event, call: _Call, reply: Any) -> FeatureResult:
        duplicate = reply[0] == b"dup"
        stored = msgpack.unpackb(reply[1])
        if stored[0] != call.layout:
            raise DuplicateEventConflict(
                f"event_id {event.event_id!r} was first delivered with other entities or another type"
            )
        values = [None if v is False else v for v in stored[1:]]
        raw: dict[str, Any] = {}
        at = 0
        for step in call.used:
            step.read(values[at : at + step.width], raw)
            at += step.width
        row = call.row
        if row["type"] in _OUTCOMES:
            return FeatureResult({}, duplicate, raw)
        return FeatureResult(assemble(row, raw, self.default_limit, self.lists), duplicate, raw)

    # -- merchant profiles ----------------------------------------------------------------------
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
        fields: dict[str, Any] = {}
        if grade is not None:
            fields["grade"] = grade
        if single_limit_minor is not None:
            fields["single_limit"] = int(single_limit_minor)
        if daily_cap_minor is not None:
            fields["daily_cap"] = int(daily_cap_minor)
        if onboarded_at is not None:
            from datetime import date

            day = date.fromisoformat(onboarded_at[:10])
            fields["onboarded_at"] = day.isoformat()
            fields["onboarded_day"] = (day - date(1970, 1, 1)).days
        if mcc is not None:
            fields["mcc"] = mcc
        if reason is not None:
            fields["grade_reason"] = reason
        try:
            if fields:
                self.client.hset(self.profile_key(merchant_id), mapping=fields)
            return self.get_merchant_profile(merchant_id)
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"merchant profile: {exc}") from exc

    def get_merchant_profile(self, merchant_id: str) -> dict[str, str]:
        try:
            raw = self.client.hgetall(self.profile_key(merchant_id))
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"merchant profile: {exc}") from exc
        return {k.decode(): v.decode() for k, v in raw.items()}

    def set_grades(self, grades: dict[str, tuple[str, str]]) -> int:
        """Write many merchants' grades (merchant_id -> (grade, reason)) in one pipeline."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for merchant_id, (grade, reason) in grades.items():
                pipe.hset(self.profile_key(merchant_id), mapping={"grade": grade, "grade_reason": reason})
            pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"grades: {exc}") from exc
        return len(grades)


def _ipv4_int(ip: str) -> int | str:
    try:
        parts = ip.split(".")
        return (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
    except (ValueError, IndexError):
        return ""

