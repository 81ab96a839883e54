"""The plan compiler: from the ops (`fengkong.features.ops`) to one script call per event.

The Python side of a call runs once per decision, so what does not change from one
event to the next is worked out once. A `Plan`, one per event type and set of
entities present, holds the keys' fixed text, the op list with its constant runs
already packed, the reply tag, how the reply reads and the features' blank dict;
an event only adds its ids and a few dozen values (`EventArgs`). Both ends handle
values in bulk (one ``itemgetter`` orders the packed pieces of the op list; the reply is
read by straight-line code generated once per plan, `plan_code`), never one Python call
per op or per value: see docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import math
import operator
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgpack

from fengkong.events import OUTCOME_TYPES, EventType
from fengkong.features import keys
from fengkong.features.assemble import INPUT_ABSENT, INPUT_ORDER, RAW_RATIOS, blank_features
from fengkong.features.errors import FeatureDefinitionError
from fengkong.features.ops import DECODERS, Op, Opcode, Ref, Source
from fengkong.features.plan_code import (
    PackedValues,
    Reader,
    Writer,
    compile_packed_values,
    compile_plan_key,
    compile_reader,
    compile_writer,
)

_OUTCOMES = frozenset(t.value for t in OUTCOME_TYPES)
_EVENT_TYPES = tuple(t.value for t in EventType)
_HOUR_TEXT = tuple(str(h) for h in range(24))

Pick = Callable[[Any], Sequence[Any]]  # the items at fixed positions, as one sequence


def picker(positions: Sequence[Any]) -> Pick:
    """The items at ``positions`` of a sequence (or at these keys of a dict), as one
    sequence: one C call for many."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if len(positions) == 1:
        at = positions[0]
        return lambda seq: (seq[at],)
    return lambda seq: ()


def ipv4_int(ip: str) -> int | str:
    """A dotted IPv4 address as an integer ("" if it is not one): how list ranges are scored."""
    try:
        parts = ip.split(".")
        return (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
    except (ValueError, IndexError):
        return ""


def ipv4_text(ip: str) -> str:
    """`ipv4_int` as decimal text; inet_pton reads the dotted quads the event contract lets
    through faster, and leaves anything else to `ipv4_int`."""
    try:
        return str(int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big"))
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return str(ipv4_int(ip))


# -- per-event arguments --------------------------------------------------------------------
#: the arguments every event has, whatever the ops: `EventArgs.values` computes them first
_SCALAR_ARGS = ("amount", "amount_text", "ts", "ts_text", "hour", "biz_day", "biz_hour_text", "moment_mode", "ipint")


class EventArgs:
    """The op arguments that change with each event (the `Ref`s of the ops: a scalar of
    `_SCALAR_ARGS`, or a ``where``, ``member``, ``bucket``, ``thr`` (a threshold's text),
    ``thr_num`` (the same threshold as a number), ``prune`` or ``prune_min`` tuple), and where each
    lands among the packed pieces of an op list: first `values` (from the event row), then
    `time_values` (from its time only; the same for every event of one minute-long slot,
    so kept packed for the last slot).

    Values Redis is given come as decimal strings (see the script's header): the Lua side
    would otherwise format a number on every call."""

    def __init__(self, ops: Sequence[Op]) -> None:
        refs = dict.fromkeys(item.key for op in ops for typ in _EVENT_TYPES
                             for item in op.args(typ) if isinstance(item, Ref))
        tuple_refs = [key for key in refs if isinstance(key, tuple)]
        self.wheres = tuple(key[1:] for key in tuple_refs if key[0] == "where")  # (column, is_amount)
        self.members = tuple(key[1] for key in tuple_refs if key[0] == "member")  # columns
        self.buckets = tuple(key[1] for key in tuple_refs if key[0] == "bucket")  # resolutions in us
        self.prune_mins = tuple(key[1] for key in tuple_refs if key[0] == "prune_min")  # tuples of spans
        spans = [key[1:] for key in tuple_refs if key[0] in ("thr", "thr_num", "prune")]
        spans += [span for group in self.prune_mins for span in group]
        self.horizons = tuple(dict.fromkeys(spans))  # (resolution in us, buckets back)
        names: list[str | tuple[Any, ...]] = [*_SCALAR_ARGS]
        names += [("where", *w) for w in self.wheres]
        names += [("member", c) for c in self.members]
        self.value_at = {name: i for i, name in enumerate(names)}
        times: list[str | tuple[Any, ...]] = [("bucket", r) for r in self.buckets]
        times += [("thr", *h) for h in self.horizons]
        times += [("thr_num", *h) for h in self.horizons]
        times += [("prune", *h) for h in self.horizons]
        times += [("prune_min", s) for s in self.prune_mins]
        self.time_at = {name: i for i, name in enumerate(times)}
        self._prune_min_at = tuple(tuple(self.horizons.index(h) for h in s) for s in self.prune_mins)
        self._member_values = picker(self.members)  # itemgetter reads a dict's keys too
        #: `values`, each packed, from generated code (`plan_code.compile_packed_values`)
        self.packed: PackedValues = compile_packed_values(self.wheres, self.members, ipv4_text)
        # every resolution is a whole number of slots: buckets and thresholds change only
        # from one slot to the next
        # (1 for ops with no time values at all, e.g. a list's alone on a cluster slot)
        self.slot_us = math.gcd(*self.buckets, *(res for res, _ in self.horizons)) or 1
        self.last_slot: tuple[int, list[bytes]] = (-1, [])

    def position(self, ref: Ref) -> int:
        """Where the value of ``ref`` lands among an event's pieces (values, then time values)."""
        at = self.value_at.get(ref.key)
        return at if at is not None else len(self.value_at) + self.time_at[ref.key]

    def values(self, row: dict[str, Any]) -> list[Any]:
        """The values of the row, in `value_at`'s order: `_SCALAR_ARGS` (``moment_mode``:
        an event without an amount only reads the moments), then the flags, the members."""
        t = row["ts_us"]
        amount = row["amount"]
        ip = row["ip"]
        vals = [amount, str(amount), t, str(t), row["hour"], row["biz_day"], _HOUR_TEXT[row["biz_hour"]],
                2 if row["has_amount"] else 1,
                ipv4_text(ip) if row["ip_info"] is not None and ":" not in ip else ""]
        for column, is_amount in self.wheres:
            vals.append((amount if is_amount else 1) if row[column] else 0)
        vals += self._member_values(row)  # a missing one is never picked: the plan sends "" instead
        return vals

    def time_values(self, t: int) -> list[Any]:
        """The ring bucket ids, window thresholds and prune bounds at time ``t``, in
        `time_at`'s order; the same for every ``t`` of one slot."""
        vals: list[Any] = [t // res for res in self.buckets]
        thrs = [(t // res - back) * res for res, back in self.horizons]
        texts = [str(thr) for thr in thrs]
        vals += texts
        vals += thrs
        vals += ["(" + text for text in texts]  # exclusive bounds: members last seen before them are pruned
        vals += ["(" + str(min(thrs[i] for i in at)) for at in self._prune_min_at]
        return vals

    def packed_time_values(self, t: int) -> list[bytes]:
        """`time_values` at ``t``, each packed; those of the last slot are kept, as events
        come about in time order."""
        slot = t // self.slot_us
        last = self.last_slot
        if last[0] != slot:
            last = self.last_slot = (slot, list(map(msgpack.Packer().pack, self.time_values(t))))
        return last[1]


# -- reading the reply ----------------------------------------------------------------------
def reply_outputs(ops: Sequence[Op]) -> list[tuple[str, str, int]]:
    """(raw name, decoder kind, position of its first value in the reply) of every raw value
    of these ops, in reply order (the reply's first value is the reply tag)."""
    outputs: list[tuple[str, str, int]] = []
    at = 1
    for op in ops:
        for name, kind in op.outputs:
            outputs.append((sys.intern(name), kind, at))  # the very keys of `blank_features`: faster to find
            at += DECODERS[kind].width
    names = [name for name, _, _ in outputs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise FeatureDefinitionError(f"two ops return the same raw values: {twice}")
    return outputs


# -- plans ----------------------------------------------------------------------------------
class Plan(NamedTuple):
    """Everything about the script call that is the same for all events of one type with
    the same entities present: built once (`Planner.plan_for`), then each event only fills
    in its own values."""

    ops: tuple[Op, ...]  # the ops that run, in order
    reply_tag: str  # first value of the reply: which ops ran (a hash of their idents)
    entity_keys: tuple[tuple[str, str, str], ...]  # (head, row column of the id, tail) of each entity key
    day_keys_at: tuple[int, ...]  # indexes in KEYS of the keys that end with the business day
    list_keys: tuple[str, ...]  # the lists' keys, after the entity keys
    op_list: tuple[Any, ...]  # ARGV[3] before packing: constants and `Ref`s
    packed_runs: list[bytes]  # ARGV[3]'s array header and its runs of constants, packed
    order_pieces: Pick  # ARGV[3]'s pieces from `EventArgs` values packed, time values packed, runs
    outcome: bool  # an outcome event: it gets no features
    blank: dict[str, Any]  # every feature, missing, in order (`assemble.blank_features`)
    read: Reader  # the reply -> (a copy of `blank` with the raw features, the inputs of `assemble.derive_from`)
    width: int  # how many values the reply holds, its tag first
    write: Writer  # the EVALSHA command in RESP (`Planner.command`)


def _split_key(key: str) -> tuple[str, str]:
    head, _, tail = key.partition("\0")
    return head, tail


class Planner:
    """Compiles and keeps the plans of one store's ops, and lays out one event's call."""

    def __init__(self, ops: Sequence[Op], prefix: str, args: EventArgs | None = None, *, split: bool = False) -> None:
        """``args``: another planner's `EventArgs` whose refs cover these ops, to share
        one event's packed values (the cluster store plans each entity's call apart).
        ``split``: these ops are one slot's share of an event's work, so a `Source` that
        none of them returns is read by another call (-1), not absent from the event (0)."""
        seen: set[tuple[str, str]] = set()
        for op in ops:
            if (op.entity, op.suffix) in seen:
                raise FeatureDefinitionError(f"two features share the key {(op.entity, op.suffix)}: "
                                             "give them distinct names")
            seen.add((op.entity, op.suffix))
        self.ops = tuple(ops)
        self.split = split
        self.args = args or EventArgs(ops)
        # keys are built by `keys` around a placeholder id, split into the fixed text around it
        self.dedup_key = _split_key(keys.request_key(prefix, "\0"))
        self.legacy_dedup_key = _split_key(keys.legacy_claim_key(prefix, "\0"))
        self._fixed_keys = {id(op): op.fixed_keys(prefix) for op in ops}
        self._key_text = {
            id(op): _split_key(keys.entity_key(prefix, op.entity, "\0", op.suffix + (":" if op.per_day else "")))
            for op in ops
        }
        # a plan per event type and which of these columns are missing: bounded by types x 2^columns
        self.columns = tuple(dict.fromkeys([op.column for op in ops] + list(self.args.members)))
        self._plan_key = compile_plan_key(self.columns)  # (type, column is None for each column)
        self.plans: dict[tuple[Any, ...], Plan] = {}

    def plan_for(self, row: dict[str, Any]) -> Plan:
        """The plan of an event with this row (built on first use)."""
        plan_key = self._plan_key(row)
        plan = self.plans.get(plan_key)
        if plan is None:
            plan = self.plans[plan_key] = self.compile(plan_key)
        return plan

    def call(self, row: dict[str, Any], pieces: list[bytes] | None = None) -> tuple[Plan, list[str], bytes]:
        """The plan of the event, its KEYS, and ARGV[3] joined from its packed pieces: the
        event's values, its slot's time values, the plan's constant runs (a packer per call,
        so that no two threads ever share one). ``pieces``: the event's packed values and
        time values, when the caller has them already (`packed_values`)."""
        plan = self.plan_for(row)
        dedup_head, dedup_tail = self.dedup_key
        keys = [f"{dedup_head}{row['event_id']}{dedup_tail}"]
        keys += [f"{head}{row[column]}{tail}" for head, column, tail in plan.entity_keys]
        if plan.day_keys_at:
            day = str(row["biz_day"])
            for at in plan.day_keys_at:
                keys[at] += day
        keys += plan.list_keys
        if pieces is None:
            pieces = self.packed_values(row)
            pieces += plan.packed_runs
        else:
            pieces = pieces + plan.packed_runs
        return plan, keys, b"".join(plan.order_pieces(pieces))

    def packed_values(self, row: dict[str, Any]) -> list[bytes]:
        """The event's values and its slot's time values, each packed (`EventArgs`)."""
        pieces = self.args.packed(row)
        pieces += self.args.packed_time_values(row["ts_us"])
        return pieces

    def command(self, row: dict[str, Any], sha: str, ttl: int) -> tuple[Plan, bytes | None]:
        """The plan of the event and its EVALSHA command as Redis reads it (the plan's
        writer, `plan_code.compile_writer`; None: a key is not ASCII text)."""
        plan_key = self._plan_key(row)  # `plan_for` and `packed_time_values`' common case, inline
        plan = self.plans.get(plan_key)
        if plan is None:
            plan = self.plans[plan_key] = self.compile(plan_key)
        args = self.args
        t = row["ts_us"]
        last = args.last_slot
        times = last[1] if last[0] == t // args.slot_us else args.packed_time_values(t)
        return plan, plan.write(row, args.packed(row), times, sha, ttl)

    def compile(self, plan_key: tuple[Any, ...]) -> Plan:
        """The plan of events of type ``plan_key[0]`` whose columns are missing where
        ``plan_key[1:]`` says (in `columns`' order)."""
        typ, missing = plan_key[0], dict(zip(self.columns, plan_key[1:]))
        outcome = typ in _OUTCOMES
        used = tuple(op for op in self.ops
                     if not missing[op.column] and not (outcome and typ not in op.writes_on))
        entity_keys: list[tuple[str, str, str]] = []
        list_keys: list[str] = []
        day_keys_at: list[int] = []
        op_list: list[Any] = []
        nkeys = 1  # KEYS[1] is the dedup key
        for op in used:
            fixed = self._fixed_keys[id(op)]
            if fixed:
                list_keys += fixed
            else:
                if list_keys:  # `call` puts the fixed keys last
                    raise FeatureDefinitionError("ops on fixed keys must come after every entity op")
                head, tail = self._key_text[id(op)]
                entity_keys.append((head, op.column, tail))
                if op.per_day:
                    day_keys_at.append(nkeys)
            op_list += op.encode(typ, nkeys + 1)
            nkeys += op.nkeys
        outputs = reply_outputs(used)
        absent = -1 if self.split else 0
        sources = {name: at + 1 for name, _, at in outputs}  # the script's `out` has the tag at 1
        op_list = [sources.get(item.name, absent) if isinstance(item, Source) else _missing_as_empty(item, missing)
                   for item in op_list]
        packed_runs, positions = self._pack(op_list)
        tag = hashlib.sha1("|".join(op.ident for op in used).encode()).hexdigest()[:12]
        blank = blank_features(name for name, _, _ in outputs)
        write = compile_writer(dedup_key=self.dedup_key, legacy_key=self.legacy_dedup_key, entity_keys=entity_keys,
                               day_keys_at=day_keys_at, list_keys=list_keys, reply_tag=tag, runs=packed_runs,
                               positions=positions, nvalues=len(self.args.value_at), ntimes=len(self.args.time_at))
        return Plan(ops=used, reply_tag=tag, entity_keys=tuple(entity_keys), day_keys_at=tuple(day_keys_at),
                    list_keys=tuple(list_keys), op_list=tuple(op_list), packed_runs=packed_runs,
                    order_pieces=picker(positions), outcome=outcome, blank=blank,
                    read=compile_reader(outputs, blank, INPUT_ORDER, INPUT_ABSENT, RAW_RATIOS),
                    width=1 + sum(op.width for op in used),
                    write=write)

    @property
    def _first_run(self) -> int:
        """Where the plan's runs start among an event's pieces (after `packed_values`')."""
        return len(self.args.value_at) + len(self.args.time_at)

    def _pack(self, op_list: list[Any]) -> tuple[list[bytes], list[int]]:
        """ARGV[3], the op list as one MessagePack array, in pieces: an array is its header
        then its items packed one after another, so the header and each run of constants
        are packed here once, and an event packs only its own values, once each however many
        ops use them. Returns the packed runs and the positions that order an event's pieces
        (`EventArgs` values packed, time values packed, then the runs)."""
        pack = msgpack.Packer().pack
        first_run = self._first_run
        runs: list[bytes] = []
        positions: list[int] = []
        run = [msgpack.Packer().pack_array_header(len(op_list))]
        for item in op_list:
            if not isinstance(item, Ref):
                run.append(pack(item))
                continue
            if run:
                positions.append(first_run + len(runs))
                runs.append(b"".join(run))
                run = []
            positions.append(self.args.position(item))
        if run:
            positions.append(first_run + len(runs))
            runs.append(b"".join(run))
        return runs, positions


def _missing_as_empty(item: Any, missing: dict[str, bool]) -> Any:
    """An op argument as a plan sends it: a member of a column the event lacks is ""."""
    if isinstance(item, Ref) and isinstance(item.key, tuple) and item.key[0] == "member" and missing[item.key[1]]:
        return ""
    return item
