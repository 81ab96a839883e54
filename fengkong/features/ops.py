"""The feature store's wire protocol: one class per kind of op the Lua script runs.

An op is what the script does to one key for one event: read the values the
event's features need as of just before it, then count the event. Each op kind is
one `Op` subclass that says, side by side:

* ``code``: its `Opcode`, the first item of the op in ARGV[3];
* ``lua_function``: the function of `lua/update_read.lua` that runs it (the
  script's ``OPS`` dispatch table maps the opcode to it; a test holds the two equal);
* ``args(event_type)``: encode, the op's arguments after its key index, as
  constants and `Ref`s (values that change with every event, filled in by
  `fengkong.features.plan.EventArgs`);
* ``outputs`` and ``decode``: the reply values the op returns, in order, each with
  the `DECODERS` entry (`fengkong.features.decoders`) that turns it into a raw value;
* ``compile``: the ops of its kind that the definitions declare.

Adding a kind of feature means one subclass here (listed in `OP_KINDS`) and one Lua
function (with its opcode in `Opcode` and in the script's ``OPS`` table). The plan (`fengkong.features.plan`) turns ops into
one packed op list per event type; it never looks inside an op's arguments.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

from fengkong.features import definitions as d
from fengkong.features import keys
from fengkong.features.assemble import AMOUNT_FEATURES
from fengkong.features.decoders import DECODERS
from fengkong.features.errors import FeatureDefinitionError
from fengkong.features.lists import KIND_COLUMN, ListSpec


class Opcode(enum.StrEnum):
    """The one-letter code an op starts with in ARGV[3] (the script dispatches on it).
    The letters are part of the reply tag stored with every event id: keep them."""

    PROFILE = "P"
    STATE = "R"
    DISTINCT = "D"
    VOLUME = "V"
    TOP = "T"
    LIST = "L"
    MAKEUP = "C"
    # ("S" and "N", seen and first use, were ops of their own before they moved into
    # the entity's state value: not to be reused)


class Ref(NamedTuple):
    """An op argument that changes with every event: the name of one of the values
    `EventArgs` computes from the event row (a name, or a tuple of a name and what it is
    of). Every other op argument is a constant for the event's type."""

    key: str | tuple[Any, ...]


class Source(NamedTuple):
    """An op argument that is where another op's raw value ``name`` lands in the same
    call's reply (the script's ``out``), so that one op can use what an earlier one read:
    the plan resolves it to that index, to 0 when no op of the call returns it because the
    event lacks the entity, or to -1 when it is read by another call (a cluster slot's
    share, `fengkong.features.cluster_store`)."""

    name: str


# -- the ops --------------------------------------------------------------------------------
class StoreConfig(NamedTuple):
    """What a store adds to the definitions: its analyst lists and its merchant limits."""

    lists: dict[str, ListSpec]
    grade_limits: dict[str, int]
    default_limit: int


class Op:
    """One op of the script: the entity key it works on, how its arguments encode for an
    event of a given type, and how its reply values decode.

    ``column`` is the event-row column holding the entity's id: an event that lacks it
    runs no op on that entity. ``writes_on`` are the outcome types (refund, chargeback...)
    the op counts; an outcome runs only the ops that count it."""

    code: ClassVar[Opcode]
    lua_function: ClassVar[str]
    #: the key ends with the event's business day (one key per day)
    per_day: ClassVar[bool] = False

    def __init__(self, *, entity: str, column: str, suffix: str, outputs: Sequence[tuple[str, str]],
                 writes_on: Iterable[str] = ()) -> None:
        self.entity = entity
        self.column = column
        self.suffix = suffix
        self.outputs = tuple(outputs)  # (raw name, DECODERS entry) per value of the reply, in order
        self.writes_on = frozenset(writes_on)
        self.width = sum(DECODERS[kind].width for _, kind in self.outputs)
        self.nkeys = 1  # keys the op takes: its entity key, then fixed ones (a list's ranges)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.entity}:{self.suffix})"

    @property
    def ident(self) -> str:
        """What tells this op from every other in the reply tag (`fengkong.features.plan`)."""
        return f"{self.code.value}:{self.entity}:{self.suffix}"

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        """The ops of this kind that the definitions (`fengkong.features.definitions`) declare."""
        raise NotImplementedError

    def args(self, event_type: str) -> list[Any]:
        """The op's arguments after its key index(es) for an event of this type."""
        raise NotImplementedError

    def fixed_keys(self, prefix: str) -> tuple[str, ...]:
        """The op's keys if they are the same for every event (else its key is the entity's)."""
        return ()

    def encode(self, event_type: str, key_index: int) -> list[Any]:
        """The op as it stands in ARGV[3]: opcode, index of its key in KEYS, arguments."""
        return [self.code.value, key_index, *self.args(event_type)]

    def decode(self, values: Sequence[Any]) -> dict[str, Any]:
        """This op's raw values by name, from its ``width`` values of the reply."""
        raw: dict[str, Any] = {}
        at = 0
        for name, kind in self.outputs:
            convert, width = DECODERS[kind]
            (raw[name],) = convert(values[at:at + width])
            at += width
        return raw


class ProfileOp(Op):
    """The merchant's profile hash: grade, limit (its own, else its grade's), opening day,
    daily cap, anomaly score. Runs first: the near-limit counters read the limit."""

    code = Opcode.PROFILE
    lua_function = "op_profile"

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        return [cls(config.grade_limits, config.default_limit)]

    def __init__(self, grade_limits: dict[str, int], default_limit: int) -> None:
        super().__init__(entity="merchant", column="merchant_id", suffix="profile", outputs=[
            ("merchant.grade", "optional"), ("merchant.single_limit_minor", "optional_int"),
            ("merchant.onboarded_day", "optional_int"), ("merchant.daily_cap_minor", "optional_int"),
            ("merchant.anomaly", "optional_float"), ("merchant.promotions", "optional_text")])
        self._args: list[Any] = [len(grade_limits)]
        for grade, limit in grade_limits.items():
            self._args += [grade, limit]
        self._args.append(default_limit)

    def args(self, event_type: str) -> list[Any]:
        return list(self._args)


#: the entities whose distinct-count sets live in their state value (`StateOp`) rather
#: than in a sorted set each: theirs hold a few members (a card's IPs of a day), where a
#: key of its own cost ~110 bytes of Redis overhead and three commands per event. A
#: merchant's day of cards (hundreds) stays a sorted set: a value is rewritten whole.
FOLDED_DISTINCT = frozenset({"card", "device", "ip", "subnet"})


class StateOp(Op):
    """Everything one entity keeps, in one value: its rolling windows (a ring of buckets
    each), and its first-seen time, amount moments, hour habit and last amounts
    (`d.RecentAmounts`, a ring) where declared, then its sets, members with when each was
    last seen: those of its distinct counts (`FOLDED_DISTINCT`), then its seen-before
    sets (`d.SeenBefore`) and first uses (`d.MemberFirstSeen`, one set per member
    column). One GET and at most one SET per event, however many windows and sets."""

    code = Opcode.STATE
    lua_function = "op_state"

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        entities: list[d.Entity] = []
        for entity in [x.entity for kind in (d.ROLLING, d.FIRST_SEEN, d.MOMENTS, d.HOUR_HABITS, d.RECENT_AMOUNTS,
                                             d.DISTINCT, d.SEEN, d.MEMBER_FIRST_SEEN) for x in kind
                       if kind is not d.DISTINCT or x.entity.name in FOLDED_DISTINCT]:
            if entity not in entities:
                entities.append(entity)
        return [cls(entity) for entity in entities]

    def __init__(self, entity: d.Entity) -> None:
        self.rollings = [r for r in d.ROLLING if r.entity == entity]
        firsts = [f for f in d.FIRST_SEEN if f.entity == entity]
        moments = [m for m in d.MOMENTS if m.entity == entity]
        hours = [h for h in d.HOUR_HABITS if h.entity == entity]
        recents = [r for r in d.RECENT_AMOUNTS if r.entity == entity]
        # the card's first business day at this merchant (`d.TodayMakeup`'s "returning"),
        # an F section whose value is the business day, not the time
        first_day = entity.name == d.FIRST_DAY_AT_MERCHANT and not firsts
        self._first_day_events = frozenset(d.TODAY_MAKEUP.events) if first_day else None
        if any(r.size != d.RECENT_AMOUNTS_SIZE for r in recents):
            raise FeatureDefinitionError("RecentAmounts.size is RECENT_AMOUNTS_SIZE (the reply decodes that many)")
        self._recent_events = frozenset(recents[0].events) if recents else None
        self._first_events = frozenset(firsts[0].events) if firsts else None
        self._moment_events = frozenset(moments[0].events) if moments else None
        self._hour_events = frozenset(hours[0].events) if hours else None
        self.distincts = [x for x in d.DISTINCT if x.entity == entity and entity.name in FOLDED_DISTINCT]
        self.seens = [s for s in d.SEEN if s.entity == entity]
        self.first_uses = [x for x in d.MEMBER_FIRST_SEEN if x.entity == entity]
        writes_on = {t for r in self.rollings for c in r.counters for t in c.events}
        writes_on |= {t for x in self.distincts for t in x.events}
        horizons: list[d.SeenBefore | d.MemberFirstSeen] = [*self.seens, *self.first_uses]
        writes_on |= {t for y in horizons for t in y.events}
        for events in (self._first_events, self._first_day_events, self._moment_events, self._hour_events,
                       self._recent_events):
            writes_on |= events or set()
        # the value's layout names its key: a new layout, a new key (never an old value misread)
        layout = ";".join(f"{r.window.name}:{','.join(c.name for c in r.counters)}" for r in self.rollings)
        layout += "|" + "".join(code for code, on in (("F", firsts), ("M", moments), ("H", hours)) if on)
        layout += f"K{d.RECENT_AMOUNTS_SIZE}" if recents else ""
        layout += "Fd" if first_day else ""
        ttl = max([r.window.seconds + r.window.resolution for r in self.rollings]
                  + [f.ttl.seconds for f in firsts] + [m.ttl.seconds for m in moments]
                  + [h.ttl.seconds for h in hours] + [r.ttl.seconds for r in recents]
                  + [w.seconds + w.resolution for x in self.distincts for w in x.windows]
                  + [y.horizon.seconds + y.horizon.resolution for y in horizons])
        self._ttl = str(ttl)
        self._size = sum(1 + len(r.counters) + r.window.buckets * (1 + len(r.counters)) for r in self.rollings)
        self._size += (1 if firsts or first_day else 0) + (3 if moments else 0) + (25 if hours else 0)
        self._size += (1 + d.RECENT_AMOUNTS_SIZE) if recents else 0
        ns = entity.name
        outputs = [(name, "scaled" if name in AMOUNT_FEATURES else "int")
                   for r in self.rollings for name in r.outputs()]
        if firsts:
            outputs.append((f"{ns}.first_seen_us", "optional_int"))
        if first_day:
            outputs.append((f"{ns}.first_day", "optional_int"))
        if moments:
            outputs.append((f"{ns}.moments", "moments"))
        if hours:
            outputs += [(f"{ns}.hour_count", "int"), (f"{ns}.hour_total", "int")]
        if recents:
            outputs.append((f"{ns}.recent_amounts", "recent"))
        outputs += [(name, "int") for x in self.distincts for name in x.outputs()]
        for s in self.seens:
            new_name, seen_name = s.outputs()
            outputs += [(new_name, "optional_is_one"), (seen_name, "int")]
        outputs += [(name, "optional_int") for x in self.first_uses for name in x.raw_names()]
        # the sets' layout is not in the key's name (adding them kept every counter): each
        # group of sets (those folded in at one time) starts with a tag of its layout, so
        # sets of another layout read as none and a new group keeps the ones before
        self._groups = [g for g in (self._distinct_sets(), self._other_sets()) if g[1]]
        super().__init__(entity=ns, column=entity.column, suffix=f"state.{hashlib.sha1(layout.encode()).hexdigest()[:8]}",
                         outputs=outputs, writes_on=writes_on)

    def _distinct_sets(self) -> tuple[int, list[tuple[Any, ...]]]:
        """The group of the distinct counts: its tag, then (kind, member column, events,
        key of before, spans) per set."""
        layout = ";".join(f"{x.of}:{','.join(w.name for w in x.windows)}" for x in self.distincts)
        return _tag(layout), [(0, x.of, x.events, f"d:{x.of}", [_span(w) for w in x.windows])
                              for x in self.distincts]

    def _other_sets(self) -> tuple[int, list[tuple[Any, ...]]]:
        """The group of the seen-before sets and first uses (kinds 2 and 4)."""
        sets: list[tuple[Any, ...]] = [(2, s.of, s.events, f"s:{s.of}", [_span(s.horizon)]) for s in self.seens]
        for x in self.first_uses:
            hash_name = "n:" + ",".join(column for column, _ in x.members)
            sets += [(4, column, x.events, f"{hash_name}#{i}:", [_span(x.horizon)])
                     for i, (column, _) in enumerate(x.members, 1)]
        layout = "g2;" + ";".join(f"{kind}:{of}:{spans}" for kind, of, _, _, spans in sets)
        return _tag(layout), sets

    def args(self, event_type: str) -> list[Any]:
        """size, nrings, (buckets, bucket id, ncounters, increment per counter) per ring,
        nextra, (code, mode, value) per extra section, ttl. An increment is 0 (the type
        does not count), 1, the amount, a row flag's 0/1 or amount, or "N" (the script
        tests the amount against the merchant's limit). An extra section's code is F, M,
        H or "K<size>" (the last amounts); an F section holds the first time, or for the
        merchant x card pair the first business day. Then ngroups and, when there are
        sets, ts and per group: its tag, nsets, and per set: kind (0 distinct, 2 seen, 4
        first use; + 1: the type counts in it), member ("" when a distinct count's type
        does not count), the key it was kept in before (read once, when the value has no
        group yet), nthr, thresholds (numbers: the script only compares them, where a
        distinct count of its own key (`DistinctOp`) passes its thresholds on to Redis as
        text). Then the ttl."""
        args: list[Any] = [self._size, len(self.rollings)]
        for r in self.rollings:
            args += [r.window.buckets, Ref(("bucket", r.window.resolution * 1_000_000)), len(r.counters)]
            for c in r.counters:
                if event_type not in c.events:
                    args.append(0)
                elif c.where == "near_limit":
                    args.append("N")
                elif c.where is not None:
                    args.append(Ref(("where", c.where, c.value == "amount")))
                else:
                    args.append(Ref("amount") if c.value == "amount" else 1)
        extras: list[Any] = []  # mode: 1 read, 2 read and write
        if self._first_events is not None:
            extras += ["F", 2 if event_type in self._first_events else 1, Ref("ts")]
        if self._first_day_events is not None:
            extras += ["F", 2 if event_type in self._first_day_events else 1, Ref("biz_day")]
        if self._moment_events is not None:
            extras += ["M", Ref("moment_mode") if event_type in self._moment_events else 1, Ref("amount")]
        if self._hour_events is not None:
            extras += ["H", 2 if event_type in self._hour_events else 1, Ref("hour")]
        if self._recent_events is not None:  # "K<size>": the ring of the last amounts
            extras += [f"K{d.RECENT_AMOUNTS_SIZE}", Ref("moment_mode") if event_type in self._recent_events else 1,
                       Ref("amount")]
        sets: list[Any] = [Ref("ts")] if self._groups else []
        for tag, group in self._groups:
            sets += [tag, len(group)]
            for kind, of, events, legacy, spans in group:
                counts = event_type in events
                member = Ref(("member", of)) if counts or kind > 0 else ""
                sets += [kind + counts, member, legacy, len(spans), *[Ref(("thr_num", *span)) for span in spans]]
        return [*args, len(extras) // 3, *extras, len(self._groups), *sets, self._ttl]


def _tag(layout: str) -> int:
    """A group of sets' tag: 16 bits of its layout's hash."""
    return int(hashlib.sha1(layout.encode()).hexdigest()[:4], 16)


def _span(w: d.Window) -> tuple[int, int]:
    """A window as (bucket resolution in us, buckets before the event's): its threshold."""
    return (w.resolution * 1_000_000, w.buckets - 1)


class DistinctOp(Op):
    """How many distinct members the entity saw in each window: a sorted set of members
    scored by when each was last seen, pruned past the longest window."""

    code = Opcode.DISTINCT
    lua_function = "op_distinct"

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        return [cls(x) for x in d.DISTINCT if x.entity.name not in FOLDED_DISTINCT]

    def __init__(self, x: d.Distinct) -> None:
        super().__init__(entity=x.entity.name, column=x.entity.column, suffix=f"d:{x.of}",
                         outputs=[(name, "int") for name in x.outputs()], writes_on=x.events)
        longest = max(x.windows, key=lambda w: w.seconds)
        self._ttl = str(longest.seconds + longest.resolution)
        self._of = x.of
        self._spans = tuple(_span(w) for w in x.windows)
        # the prune bound is the earliest threshold: with one window, its own "(thr" text
        self._prune = Ref(("prune", *self._spans[0])) if len(self._spans) == 1 else Ref(("prune_min", self._spans))

    def args(self, event_type: str) -> list[Any]:
        """member ("" when the type does not count), ts, prune bound, ttl, nthr, thresholds."""
        member = Ref(("member", self._of)) if event_type in self.writes_on else ""
        return [member, Ref("ts_text"), self._prune, self._ttl, len(self._spans),
                *[Ref(("thr", *s)) for s in self._spans]]


class VolumeOp(Op):
    """A merchant's volume and count today and this business hour, and their 7- and
    28-day baselines (medians of the same period on earlier days)."""

    code = Opcode.VOLUME
    lua_function = "op_volume"
    _ORDER = ("merchant.volume_today", "merchant.count_today", "merchant.volume_hour", "merchant.count_hour",
              "merchant.baseline_today_7d", "merchant.baseline_hour_7d", "merchant.baseline_count_today_7d",
              "merchant.baseline_today_28d", "merchant.baseline_hour_28d", "merchant.baseline_count_today_28d")
    #: a day more than the 28 days of packs and the open day read: the script refreshes
    #: it on a merchant's first payment of each business day, not on every payment
    _TTL = str(32 * 86400)

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        return [cls()]

    def __init__(self) -> None:
        super().__init__(entity="merchant", column="merchant_id", suffix="volume",
                         outputs=[(name, "optional_scaled" if name in AMOUNT_FEATURES else "optional")
                                  for name in self._ORDER],
                         writes_on=d.PERIOD_VOLUME.events)

    def args(self, event_type: str) -> list[Any]:
        """business day, business hour, amount, ttl, write (1/0)."""
        return [Ref("biz_day"), Ref("biz_hour_text"), Ref("amount"), self._TTL, 1 if event_type in self.writes_on else 0]


class TopOp(Op):
    """The largest volume one card brought the merchant today (a sorted set per business
    day: its key ends with the day, see `fengkong.features.plan`)."""

    code = Opcode.TOP
    lua_function = "op_top"
    per_day = True
    _TTL = str(2 * 86400)

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        return [cls()]

    def __init__(self) -> None:
        super().__init__(entity="merchant", column="merchant_id", suffix="top",
                         outputs=[("merchant.top_card_volume_today", "scaled")], writes_on=d.TOP_SHARE.events)

    def args(self, event_type: str) -> list[Any]:
        """member ("" when the type does not count), amount, ttl, write (1/0)."""
        write = event_type in self.writes_on
        member = Ref(("member", d.TOP_SHARE.of)) if write else ""
        return [member, Ref("amount_text"), self._TTL, 1 if write else 0]


class MakeupOp(Op):
    """Today's make-up of a merchant's payments (`d.TodayMakeup`): three counts in a hash per
    business day (its key ends with the day, as `TopOp`'s). The script decides what the
    payment adds from the card's and account's first-seen times and the card's first day
    at this merchant, read earlier in the same call (`Source`s)."""

    code = Opcode.MAKEUP
    lua_function = "op_makeup"
    per_day = True
    ttl = str(2 * 86400)
    SOURCES = ("card.first_seen_us", "user.first_seen_us", f"{d.FIRST_DAY_AT_MERCHANT}.first_day")

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        return [cls()]

    def __init__(self) -> None:
        super().__init__(entity="merchant", column="merchant_id", suffix="mix",
                         outputs=[(name, "int") for name in d.TODAY_MAKEUP.counts()],
                         writes_on=d.TODAY_MAKEUP.events)
        self._new_within_us = d.TODAY_MAKEUP.new_within_s * 1_000_000

    def args(self, event_type: str) -> list[Any]:
        """ts, how long a card or account stays new (us), business day, ttl, write (1/0),
        then where the card's first-seen time, the account's, and the card's first day at
        this merchant are in the reply (`Source`)."""
        return [Ref("ts"), self._new_within_us, Ref("biz_day"), self.ttl, 1 if event_type in self.writes_on else 0,
                *map(Source, self.SOURCES)]


class ListOp(Op):
    """Membership of the event's card, user, IP... in one analyst list (a set; an IP list
    also has IPv4 ranges, a second key)."""

    code = Opcode.LIST
    lua_function = "op_list"

    @classmethod
    def compile(cls, config: StoreConfig) -> list[Op]:
        return [cls(spec) for spec in config.lists.values()]

    def __init__(self, spec: ListSpec) -> None:
        column = KIND_COLUMN[spec.kind]
        super().__init__(entity="list", column=column, suffix=spec.name, outputs=[(spec.feature, "is_one")])
        self.ranges = spec.kind == "ip"
        self.nkeys = 2 if self.ranges else 1

    def args(self, event_type: str) -> list[Any]:
        """member, the IPv4 address as decimal text ("" if the list has no ranges or the
        address is not IPv4)."""
        return [Ref(("member", self.column)), Ref("ipint") if self.ranges else ""]

    def fixed_keys(self, prefix: str) -> tuple[str, ...]:
        members = keys.list_members_key(prefix, self.suffix)
        return (members, keys.list_ranges_key(prefix, self.suffix)) if self.ranges else (members,)

    def encode(self, event_type: str, key_index: int) -> list[Any]:
        """opcode, members key index, ranges key index (0: none), arguments."""
        ranges_index = key_index + 1 if self.ranges else 0
        return [self.code.value, key_index, ranges_index, *self.args(event_type)]


#: every op kind, in the order the script runs them: the profile first (the near-limit
#: counters read its limit), the make-up after the states whose values it reads, the
#: lists last (their keys are fixed, after the entities')
OP_KINDS: tuple[type[Op], ...] = (ProfileOp, StateOp, DistinctOp, VolumeOp, TopOp, MakeupOp, ListOp)


def compile_ops(lists: dict[str, ListSpec], grade_limits: dict[str, int], default_limit: int) -> list[Op]:
    """The ops of every event, in the order the script runs them, from the definitions."""
    config = StoreConfig(lists, grade_limits, default_limit)
    return [op for kind in OP_KINDS for op in kind.compile(config)]
