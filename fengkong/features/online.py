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

The Python side of a call runs once per decision, so what does not change from
one event to the next is worked out once: a `_Plan` per event type and set of
entities present holds the keys' fixed text, the constant ops already packed, the
layout tag, how the reply reads and the features' blank dict; an event only adds
its ids and a few dozen values (`OnlineStore._values`). Both ends handle the
values in bulk (one ``itemgetter`` lays out the packed pieces of the op list, one
converter per kind of reply value, one update of the features from them), never
one Python call per op or per value.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import operator
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple

import msgpack
import redis

from fengkong.events import OUTCOME_TYPES, Event
from fengkong.features import definitions as d
from fengkong.features import keys
from fengkong.features.assemble import AMOUNT_FEATURES, FIRST_SEEN_TIMES, INPUTS, blank_features, derive
from fengkong.features.errors import (
    DuplicateEventConflict,
    FeatureDefinitionError,
    FeatureStoreError,
    FeatureStoreUnavailable,
)
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import KIND_COLUMN, ListSpec
from fengkong.features.pipelined import ConnectionFailed, PipelinedRedis, ReplyError
from fengkong.features.rows import event_row

_SCALE = d.MINOR_PER_MAJOR
_OUTCOMES = frozenset(t.value for t in OUTCOME_TYPES)
_HOUR_TEXT = tuple(str(h) for h in range(24))
_NONES = itertools.repeat(None)
_DEDUP_TAIL = "}:dedup"


def load_script() -> str:
    return resources.files("fengkong.features").joinpath("lua/update_read.lua").read_text(encoding="utf-8")


class _Ref(NamedTuple):
    """An op argument that changes with every event: the key of one of `OnlineStore._values`
    (a name, or a tuple of a name and what it is of). Every other op argument is a constant
    for the event's type."""

    key: str | tuple[Any, ...]


# How one value of the reply becomes a raw value, per kind, for a whole group of values
# at once (one call per kind and event, not one per value). Lua's false is a missing
# value: None.
_INT_ONLY = {int}


def _ints(vals: Sequence[Any]) -> Sequence[Any]:
    # counts arrive as MessagePack integers, for which int() is the identity: checking the
    # types costs 0.8 us for the ~40 of an event, converting them 1.3 us
    return vals if set(map(type, vals)) == _INT_ONLY else list(map(int, vals))


# (map over an operator: no Python frame per call; the same divisions and comparisons)
_SCALES = itertools.repeat(_SCALE)
_ONES = itertools.repeat(1)


def _scaled(vals: Sequence[Any]) -> Iterable[Any]:
    return map(operator.truediv, vals, _SCALES)


def _optional(vals: Sequence[Any]) -> list[Any]:
    return [None if v is False else v for v in vals]


def _optional_ints(vals: Sequence[Any]) -> list[Any]:
    return [None if v is False else int(float(v)) for v in vals]


def _optional_floats(vals: Sequence[Any]) -> list[Any]:
    return [None if v is False else float(v) for v in vals]


def _optional_scaled(vals: Sequence[Any]) -> list[Any]:
    return [None if v is False else v / _SCALE for v in vals]


def _is_one(vals: Sequence[Any]) -> Iterable[Any]:
    return map(operator.eq, vals, _ONES)


def _optional_is_one(vals: Sequence[Any]) -> list[Any]:
    return [None if v is False else v == 1 for v in vals]


def _moments(vals: Sequence[Any]) -> list[Any]:
    it = iter(vals)
    return [(int(n), float(mean), float(m2)) for n, mean, m2 in zip(it, it, it)]


#: reader kind -> (converter, reply values one raw value takes)
_READERS: dict[str, tuple[Callable[[Sequence[Any]], Iterable[Any]], int]] = {
    "int": (_ints, 1),
    "scaled": (_scaled, 1),  # minor units to major
    "optional": (_optional, 1),
    "optional_int": (_optional_ints, 1),
    "optional_float": (_optional_floats, 1),
    "optional_scaled": (_optional_scaled, 1),
    "is_one": (_is_one, 1),
    "optional_is_one": (_optional_is_one, 1),
    "moments": (_moments, 3),  # (n, mean, m2)
}


_Pick = Callable[[Any], Sequence[Any]]  # the items at fixed positions, as one sequence
_Convert = Callable[[Sequence[Any]], Iterable[Any]]  # reply values to raw values, one kind


def _picker(positions: Sequence[Any]) -> _Pick:
    """The items at ``positions`` of a sequence (or at these keys of a dict), as one
    sequence: one C call for many."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if len(positions) == 1:
        at = positions[0]
        return lambda seq: (seq[at],)
    return lambda seq: ()


@dataclass
class _Step:
    """One op of the script: the key it works on, its arguments for an event of a given
    type, and what its reply values are named and how they read."""

    entity_column: str
    key_suffix: str
    entity_name: str
    op: Callable[[str], list[Any]]  # type -> args after the key index: constants and `_Ref`s
    outputs: list[tuple[str, str]]  # (raw name, reader kind) per value of the reply, in order
    code: str
    writes_on: frozenset[str] = field(default_factory=frozenset)
    ranges: bool = False  # a list op that also looks up IPv4 ranges (a second key)


class _Reading(NamedTuple):
    """Raw values of one reader kind, read from the reply in one call each: the picker of
    their values, the kind's converter, and their raw names in that order."""

    pick: _Pick
    convert: _Convert
    names: tuple[str, ...]


def _reply_outputs(used: Sequence[_Step]) -> list[tuple[str, str, int]]:
    """(raw name, reader kind, position of its first value in the reply) of every raw value
    of these ops, in reply order (its first value is the layout tag)."""
    outputs: list[tuple[str, str, int]] = []
    at = 1
    for step in used:
        for name, kind in step.outputs:
            outputs.append((sys.intern(name), kind, at))  # the very keys of `blank_features`: faster to find
            at += _READERS[kind][1]
    names = [name for name, _, _ in outputs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise FeatureDefinitionError(f"two ops return the same raw values: {twice}")
    return outputs


def _readings(outputs: Sequence[tuple[str, str, int]]) -> tuple[_Reading, ...]:
    """How these raw values read: one `_Reading` per kind, so that one call converts all
    the values of a kind (not one call per value)."""
    groups: dict[str, tuple[list[int], list[str]]] = {}
    for name, kind, at in outputs:
        positions, names = groups.setdefault(kind, ([], []))
        positions.extend(range(at, at + _READERS[kind][1]))
        names.append(name)
    return tuple(_Reading(_picker(positions), _READERS[kind][0], tuple(names))
                 for kind, (positions, names) in groups.items())


def _features_then_inputs(outputs: Sequence[tuple[str, str, int]]) -> tuple[tuple[_Reading, ...], int]:
    """`_readings` of these raw values such that the values read, one reading after another,
    are the features' (raw values that are features as they are) then the inputs' (those
    `assemble.derive` makes other features of); and how many values the features take.
    A kind that both have (the counts) is read once, across the boundary."""
    features = [out for out in outputs if out[0] not in INPUTS]
    inputs = [out for out in outputs if out[0] in INPUTS]
    shared = next((kind for _, kind, _ in features if any(kind == k for _, k, _ in inputs)), None)
    ordered = [out for out in features if out[1] != shared] + [out for out in features if out[1] == shared]
    ordered += [out for out in inputs if out[1] == shared] + [out for out in inputs if out[1] != shared]
    return _readings(ordered), len(features)


class _Plan(NamedTuple):
    """Everything about the script call that is the same for all events of one type with
    the same entities present: built once (`OnlineStore._plan_for`), then each event only
    fills in its own values."""

    used: tuple[_Step, ...]
    layout: str
    key_parts: tuple[tuple[str, str, str], ...]  # (head, row column of the id, tail) of each entity key
    top_at: int  # index in KEYS of the top-card key, whose tail takes the business day; 0 if none
    list_keys: tuple[str, ...]  # the lists' keys, after the entity keys
    ops: tuple[Any, ...]  # the op list, constants and `_Ref`s (what ARGV[3] packs; tests read it)
    runs: list[bytes]  # ARGV[3]'s array header and its runs of constant ops, packed
    lay_out: _Pick  # ARGV[3]'s pieces from `_values` packed, `_time_values` packed, then `runs`
    outcome: bool  # an outcome event: it gets no features
    blank: dict[str, Any]  # every feature, missing, in order (`assemble.blank_features`)
    reads: tuple[_Reading, ...]  # the raw values, kind by kind: the features' first (_features_then_inputs)
    feature_names: tuple[str, ...]  # raw values that are features as they are, in read order
    input_names: tuple[str, ...]  # then those that `assemble.derive` makes other features of
    raw_reads: tuple[_Reading, ...]  # what `FeatureResult.raw` holds...
    raw_names: tuple[str, ...]  # ...in this order (the reply's)


class _Call(NamedTuple):
    """One event's script call: its row, the EVALSHA command, and the plan its reply is read with."""

    row: dict[str, Any]
    command: tuple[Any, ...]  # EVALSHA sha numkeys KEYS... ARGV...
    plan: _Plan

    @property
    def keys(self) -> list[str]:
        return list(self.command[3:3 + self.command[2]])

    @property
    def args(self) -> list[Any]:
        return list(self.command[3 + self.command[2]:])


@dataclass
class FeatureResult:
    """The features of one event as of just before it, and whether it was a replay of an event_id.

    `raw` (what the store returned, converted, before `assemble`: for tests and debugging)
    is built when first read: the decision path never reads it, and building it with
    every event (a dict of ~80 values in reply order) cost 2.5 us.
    """

    features: dict[str, Any]
    duplicate: bool
    _reply: list[Any] = field(repr=False, compare=False)  # the script's values, decoded
    _plan: _Plan = field(repr=False, compare=False)  # how they read

    @functools.cached_property
    def raw(self) -> dict[str, Any]:
        """Raw values by name, in reply order; a decision's lacks the first-seen times
        (`assemble` made ages of them)."""
        values: dict[str, Any] = {}
        for pick, convert, names in self._plan.raw_reads:
            values.update(zip(names, convert(pick(self._reply))))
        return {name: values[name] for name in self._plan.raw_names}


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
        self._profile_args: list[Any] = [len(self.grade_limits)]
        for g, lim in self.grade_limits.items():
            self._profile_args += [g, lim]
        self._profile_args.append(self.default_limit)
        self._steps = self._compile()
        self._key_pre = keys.tag_prefix(prefix)
        self._dedup_pre = keys.event_tag_prefix(prefix)
        self._key_text = {id(step): self._key_parts(step) for step in self._steps}
        self._init_values()
        # a plan per event type and which of these columns are missing: at most 10 x 2^8 plans
        self._plan_columns = tuple(dict.fromkeys([step.entity_column for step in self._steps] + list(self._members)))
        self._plan_values = _picker(self._plan_columns)
        self._plans: dict[tuple[Any, ...], _Plan] = {}

    # -- keys ---------------------------------------------------------------------------------
    def key(self, entity: str, entity_id: str, suffix: str) -> str:
        return keys.entity_key(self.prefix, entity, entity_id, suffix)

    def profile_key(self, merchant_id: str) -> str:
        return keys.merchant_profile_key(self.prefix, merchant_id)

    # -- steps ----------------------------------------------------------------------------------
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
        def op(typ: str) -> list[Any]:
            return list(self._profile_args)

        outputs = [("merchant.grade", "optional"), ("merchant.single_limit_minor", "optional_int"),
                   ("merchant.onboarded_day", "optional_int"), ("merchant.daily_cap_minor", "optional_int"),
                   ("merchant.anomaly", "optional_float")]
        return _Step("merchant_id", "profile", "merchant", op, outputs, "P", frozenset())

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
        size = sum(1 + len(counters) + n * (1 + len(counters)) for n, _, counters in parts)
        size += (1 if firsts else 0) + (3 if moments else 0) + (25 if hours else 0)

        def op(typ: str) -> list[Any]:
            args: list[Any] = [size, len(parts)]
            for n, res_us, counters in parts:
                args += [n, _Ref(("bucket", res_us)), len(counters)]
                for c in counters:
                    if typ not in c.events:
                        args.append(0)
                    elif c.where == "near_limit":
                        args.append("N")
                    elif c.where is not None:
                        args.append(_Ref(("where", c.where, c.value == "amount")))
                    else:
                        args.append(_Ref("amount") if c.value == "amount" else 1)
            extras: list[Any] = []
            if firsts:
                extras += ["F", 2 if typ in first_events else 1, _Ref("ts")]
            if moments:
                extras += ["M", _Ref("moment_mode") if typ in moment_events else 1, _Ref("amount")]
            if hours:
                extras += ["H", 2 if typ in hour_events else 1, _Ref("hour")]
            args.append(len(extras) // 3)
            args += extras
            args.append(ttl_s)
            return args

        outputs = [(name, "scaled" if name in AMOUNT_FEATURES else "int") for name in names]
        if firsts:
            outputs.append((f"{ns}.first_seen_us", "optional_int"))
        if moments:
            outputs.append((f"{ns}.moments", "moments"))
        if hours:
            outputs += [(f"{ns}.hour_count", "int"), (f"{ns}.hour_total", "int")]
        return _Step(entity.column, suffix, ns, op, outputs, "R", writes_on)

    def _distinct_step(self, x: d.Distinct) -> _Step:
        windows = x.windows
        longest = max(windows, key=lambda w: w.seconds)
        ttl_s = str(longest.seconds + longest.resolution)
        events = frozenset(x.events)
        spans = tuple((w.resolution * 1_000_000, w.buckets - 1) for w in windows)
        # the prune bound is the earliest threshold: with one window, its own "(thr" text
        prune = _Ref(("prune", *spans[0])) if len(spans) == 1 else _Ref(("prune_min", spans))

        def op(typ: str) -> list[Any]:
            member = _Ref(("member", x.of)) if typ in events else ""
            return [member, _Ref("ts_text"), prune, ttl_s, len(spans), *[_Ref(("thr", *s)) for s in spans]]

        outputs = [(name, "int") for name in x.outputs()]
        return _Step(x.entity.column, f"d:{x.of}", x.entity.name, op, outputs, "D", events)

    def _seen_step(self, s: d.SeenBefore) -> _Step:
        w = s.horizon
        ttl_s = str(w.seconds + w.resolution)
        new_name, seen_name = s.outputs()
        events = frozenset(s.events)
        span = (w.resolution * 1_000_000, w.buckets - 1)  # the horizon is the window's threshold

        def op(typ: str) -> list[Any]:
            return [_Ref(("member", s.of)), _Ref("ts_text"), _Ref(("thr", *span)), _Ref(("prune", *span)), ttl_s,
                    1 if typ in events else 0]

        outputs = [(new_name, "optional_is_one"), (seen_name, "int")]
        return _Step(s.entity.column, f"s:{s.of}", s.entity.name, op, outputs, "S", events)

    def _volume_step(self) -> _Step:
        pv = d.PERIOD_VOLUME
        events = frozenset(pv.events)
        ttl_s = str(31 * 86400)
        order = ["merchant.volume_today", "merchant.count_today", "merchant.volume_hour", "merchant.count_hour",
                 "merchant.baseline_today_7d", "merchant.baseline_hour_7d", "merchant.baseline_count_today_7d",
                 "merchant.baseline_today_28d", "merchant.baseline_hour_28d", "merchant.baseline_count_today_28d"]

        def op(typ: str) -> list[Any]:
            return [_Ref("biz_day"), _Ref("biz_hour_text"), _Ref("amount"), ttl_s, 1 if typ in events else 0]

        outputs = [(name, "optional_scaled" if name in AMOUNT_FEATURES else "optional") for name in order]
        return _Step("merchant_id", "volume", "merchant", op, outputs, "V", events)

    def _top_step(self) -> _Step:
        ts = d.TOP_SHARE
        events = frozenset(ts.events)
        ttl_s = str(2 * 86400)

        def op(typ: str) -> list[Any]:
            member = _Ref(("member", ts.of)) if typ in events else ""
            return [member, _Ref("amount_text"), ttl_s, 1 if typ in events else 0]

        # the key carries the business day: see _prepare
        return _Step("merchant_id", "top", "merchant", op, [("merchant.top_card_volume_today", "scaled")], "T", events)

    def _list_step(self, spec: ListSpec) -> _Step:
        column = KIND_COLUMN[spec.kind]
        is_ip = spec.kind == "ip"

        def op(typ: str) -> list[Any]:
            return [_Ref(("member", column)), _Ref("ipint") if is_ip else ""]  # ipint: decimal, or "" if not IPv4

        return _Step(column, spec.name, "list", op, [(spec.feature, "is_one")], "L", frozenset(), ranges=is_ip)

    # -- per-event values -----------------------------------------------------------------------
    def _init_values(self) -> None:
        """Which values `_values` computes from a row, and where each lands (`_value_at`)."""
        self._buckets = tuple(dict.fromkeys(r.window.resolution * 1_000_000 for r in d.ROLLING))
        windows = [w for x in d.DISTINCT for w in x.windows] + [s.horizon for s in d.SEEN]
        self._horizons = tuple(dict.fromkeys((w.resolution * 1_000_000, w.buckets - 1) for w in windows))
        spans = [tuple((w.resolution * 1_000_000, w.buckets - 1) for w in x.windows) for x in d.DISTINCT]
        self._prune_mins = tuple(dict.fromkeys(s for s in spans if len(s) > 1))
        self._wheres = tuple(dict.fromkeys(
            (c.where, c.value == "amount") for r in d.ROLLING for c in r.counters
            if c.where is not None and c.where != "near_limit"
        ))
        self._members = tuple(dict.fromkeys(
            [x.of for x in d.DISTINCT] + [s.of for s in d.SEEN] + [d.TOP_SHARE.of]
            + [KIND_COLUMN[spec.kind] for spec in self.lists.values()]
        ))
        keys: list[str | tuple[Any, ...]] = [
            "amount", "amount_text", "ts", "ts_text", "hour", "biz_day", "biz_hour_text", "moment_mode", "ipint",
        ]
        keys += [("where", *w) for w in self._wheres]
        keys += [("member", c) for c in self._members]
        self._value_at = {key: i for i, key in enumerate(keys)}
        times: list[str | tuple[Any, ...]] = [("bucket", r) for r in self._buckets]
        times += [("thr", *h) for h in self._horizons]
        times += [("prune", *h) for h in self._horizons]
        times += [("prune_min", s) for s in self._prune_mins]
        self._time_at = {key: i for i, key in enumerate(times)}
        self._prune_min_at = tuple(tuple(self._horizons.index(h) for h in s) for s in self._prune_mins)
        self._member_values = _picker(self._members)  # itemgetter works on a dict's keys too
        # every resolution is a whole number of slots, so buckets and thresholds only change
        # from one slot (a minute) to the next: `_time_values` of the last slot is kept, packed
        self._slot_us = math.gcd(*self._buckets, *(res for res, _ in self._horizons))
        self._last_slot: tuple[int, list[bytes]] = (-1, [])

    def _values(self, row: dict[str, Any]) -> list[Any]:
        """The op arguments that change with each event (those that change with its minute:
        `_time_values`), in `_value_at`'s order. Values Redis is given come as decimal
        strings (see the script's header): the Lua side would format a number on every call."""
        t = row["ts_us"]
        amount = row["amount"]
        ip = row["ip"]
        vals = [amount, str(amount), t, str(t), row["hour"], row["biz_day"], _HOUR_TEXT[row["biz_hour"]],
                2 if row["has_amount"] else 1,
                _ipv4_text(ip) if row["ip_info"] is not None and ":" not in ip else ""]
        for column, is_amount in self._wheres:
            vals.append((amount if is_amount else 1) if row[column] else 0)
        vals += self._member_values(row)  # a missing one is never picked: the plan sends "" instead
        return vals

    def _time_pieces(self, t: int) -> list[bytes]:
        """`_time_values` at time ``t``, each packed. Events come about in time order: those of
        the last slot are kept (computing them, big-integer text, costs 2.4 us)."""
        slot = t // self._slot_us
        last = self._last_slot
        if last[0] != slot:
            last = self._last_slot = (slot, list(map(msgpack.Packer().pack, self._time_values(t))))
        return last[1]

    def _time_values(self, t: int) -> list[Any]:
        """The ring bucket ids, window thresholds and prune bounds at time ``t``, in
        `_time_at`'s order; the same for every ``t`` of one slot."""
        vals: list[Any] = [t // res for res in self._buckets]
        thrs = [(t // res - back) * res for res, back in self._horizons]
        texts = [str(thr) for thr in thrs]
        vals += texts
        vals += ["(" + text for text in texts]  # exclusive bounds: members last seen before them are pruned
        vals += ["(" + str(min(thrs[i] for i in at)) for at in self._prune_min_at]
        return vals

    # -- the call -------------------------------------------------------------------------------
    def _key_parts(self, step: _Step) -> tuple[str, str]:
        """The fixed text around a step's entity id in its key (`_prepare` joins them):
        for a list, its members key and its ranges key."""
        pre = self._key_pre
        if step.code == "L":
            return f"{pre}list:{step.key_suffix}}}:members", f"{pre}list:{step.key_suffix}}}:ranges"
        tail = "}:top:" if step.code == "T" else f"}}:{step.key_suffix}"
        return f"{pre}{step.entity_name}:", tail

    def _layout_tag(self, used: Sequence[_Step]) -> str:
        """Which ops ran (the reply's shape), e.g. 'PRRDDSFV...' plus a short hash of their keys."""
        text = "|".join(f"{s.code}:{s.entity_name}:{s.key_suffix}" for s in used)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def _plan_for(self, plan_key: tuple[Any, ...]) -> _Plan:
        """The plan of events of type ``plan_key[0]`` whose columns are missing where
        ``plan_key[1:]`` says (in `_plan_columns`' order); built on first use."""
        typ, missing = plan_key[0], dict(zip(self._plan_columns, plan_key[1:]))
        outcome = typ in _OUTCOMES
        used = tuple(step for step in self._steps
                     if not missing[step.entity_column] and not (outcome and typ not in step.writes_on))
        key_parts: list[tuple[str, str, str]] = []
        list_keys: list[str] = []
        top_at = 0
        ops: list[Any] = []
        nkeys = 1  # KEYS[1] is the dedup key
        for step in used:
            head, tail = self._key_text[id(step)]
            if step.code == "L":
                list_keys.append(head)
                nkeys += 1
                if step.ranges:
                    list_keys.append(tail)
                    nkeys += 1
                    ops += ["L", nkeys - 1, nkeys, *step.op(typ)]
                else:
                    ops += ["L", nkeys, 0, *step.op(typ)]
            else:
                if list_keys:  # `_prepare` puts the lists' keys last
                    raise FeatureDefinitionError("list ops must come after every entity op")
                key_parts.append((head, step.entity_column, tail))
                nkeys += 1
                if step.code == "T":
                    top_at = nkeys - 1
                ops += [step.code, nkeys, *step.op(typ)]
        ops = [_missing_as_empty(item, missing) for item in ops]
        runs, lay_out = self._ops_layout(ops)
        outputs = _reply_outputs(used)
        # a decision's raw values lack the first-seen times, as they did when `assemble` popped them
        raw = [out for out in outputs if outcome or out[0] not in FIRST_SEEN_TIMES]
        reads, nfeatures = _features_then_inputs(outputs)
        names = [name for reading in reads for name in reading.names]
        return _Plan(used=used, layout=self._layout_tag(used), key_parts=tuple(key_parts), top_at=top_at,
                     list_keys=tuple(list_keys), ops=tuple(ops), runs=runs, lay_out=lay_out, outcome=outcome,
                     blank=blank_features(name for name, _, _ in outputs),
                     reads=reads, feature_names=tuple(names[:nfeatures]), input_names=tuple(names[nfeatures:]),
                     raw_reads=_readings(raw), raw_names=tuple(name for name, _, _ in raw))

    def _ops_layout(self, ops: list[Any]) -> tuple[list[bytes], _Pick]:
        """ARGV[3], the ops as one MessagePack array, in pieces: a MessagePack array is its
        header then its items packed one after another, so the header and each run of
        constant ops are packed here once, the values of a minute once a minute
        (`_time_pieces`), and an event packs only its own ~20 values, once each however
        many ops use them (the amount: 13). Returns the packed runs and the picker that
        lays out the pieces of an event from its `_values` packed, then `_time_values`
        packed, then the runs (`_prepare` joins them).

        (Runs that took in the minute's values as well, packed once a minute for each
        plan, would save 0.8 us an event at the service's load, but cost 15 us a plan
        whenever the minute changes: a replay of a sparse history would pay that for most
        events.)"""
        pack = msgpack.Packer().pack
        first_run = len(self._value_at) + len(self._time_at)
        runs: list[bytes] = []
        positions: list[int] = []
        run = [msgpack.Packer().pack_array_header(len(ops))]
        for item in ops:
            if not isinstance(item, _Ref):
                run.append(pack(item))
                continue
            if run:
                positions.append(first_run + len(runs))
                runs.append(b"".join(run))
                run = []
            at = self._value_at.get(item.key)
            positions.append(at if at is not None else len(self._value_at) + self._time_at[item.key])
        if run:
            positions.append(first_run + len(runs))
            runs.append(b"".join(run))
        return runs, _picker(positions)

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
        evalsha = call.command
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
        """The event's KEYS and ARGV. Its plan (per type and columns present) holds all that
        is constant; this fills in the ids and the per-event values: 6.5 us per event after
        the row, against 9.8 us with the op list packed whole and 30 us for building every
        op afresh (bench mix, CPU time)."""
        row = event_row(event, self.ipintel, self.biz_offset_min)
        plan_key = (row["type"], *map(operator.is_, self._plan_values(row), _NONES))
        plan = self._plans.get(plan_key)
        if plan is None:
            plan = self._plans[plan_key] = self._plan_for(plan_key)
        # (an f-string allocates a key once; head + id + tail, twice)
        keys = [f"{self._dedup_pre}{row['event_id']}{_DEDUP_TAIL}"]
        keys += [f"{head}{row[column]}{tail}" for head, column, tail in plan.key_parts]
        if plan.top_at:  # the top-card set is per business day
            keys[plan.top_at] += str(row["biz_day"])
        keys += plan.list_keys
        # ARGV[3] joined from its pieces (see _ops_layout): 4.5 us per event with `_values`,
        # against 7.6 us for laying out and packing its ~300 ops (bench mix, CPU time). A
        # packer per call (0.05 us), so that no two threads ever share one.
        pieces = list(map(msgpack.Packer().pack, self._values(row)))
        pieces += self._time_pieces(row["ts_us"])
        pieces += plan.runs
        ops = b"".join(plan.lay_out(pieces))
        command = ("EVALSHA", self._script.sha, len(keys), *keys, self.dedup_ttl_s, row["amount"], ops, plan.layout)
        return _Call(row, command, plan)

    def _finish(self, event: Event, call: _Call, reply: Any) -> FeatureResult:
        duplicate = reply[0] == b"dup"
        stored = msgpack.unpackb(reply[1])
        plan = call.plan
        if stored[0] != plan.layout:
            raise DuplicateEventConflict(
                f"event_id {event.event_id!r} was first delivered with other entities or another type"
            )
        if plan.outcome:  # counted; an outcome gets no decision, so no features
            return FeatureResult({}, duplicate, stored, plan)
        # the features go straight into a copy of the plan's blank dict, the values other
        # features derive from into their own: no dict of every raw value to build, merge
        # and remove keys from (see FeatureResult.raw). 11.5 us per event against 12.0 us;
        # and with no key removed, the features copy at once (dict(): 0.3 us, was 2.0 us)
        values: list[Any] = []
        for pick, convert, _ in plan.reads:
            values += convert(pick(stored))
        f = plan.blank.copy()
        f.update(zip(plan.feature_names, values))
        inputs = dict(zip(plan.input_names, values[len(plan.feature_names):]))
        return FeatureResult(derive(f, call.row, inputs, self.default_limit), duplicate, stored, plan)

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


def _missing_as_empty(item: Any, missing: dict[str, bool]) -> Any:
    """An op argument as a plan sends it: a member of a column the event lacks is ""."""
    if isinstance(item, _Ref) and isinstance(item.key, tuple) and item.key[0] == "member" and missing[item.key[1]]:
        return ""
    return item


def _ipv4_text(ip: str) -> str:
    """`_ipv4_int` as decimal text; inet_pton reads the dotted quads the event contract
    lets through (0.2 us against 0.6 us), and leaves anything else to `_ipv4_int`."""
    try:
        return str(int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big"))
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return str(_ipv4_int(ip))


def _ipv4_int(ip: str) -> int | str:
    try:
        parts = ip.split(".")
        return (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
    except (ValueError, IndexError):
        return ""

