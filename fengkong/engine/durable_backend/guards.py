"""Which fields a shard's rules cannot fire without, so a fact lacking them is not asserted.

durable visits an alpha node that tests a field only when the fact carries that field
(events.c, handleAlpha: the conjunctive nodes are found from the fact's own
properties); only ``$nex`` holds of an absent field. So a rule fires only when its
fact carries every field of `required_keys`, and when a shard's fact lacks one such
field of each of its rules (its `guard_keys`), no rule of the shard can fire: the
fact is not asserted, which spares durable's parse, walk and retraction. A shard with
a rule that needs no field (one whose every branch holds of an absent field) has no
guards and is always asserted.

The same premise trims the fact itself (`kept_fields`): a rule lacking one of its
required fields cannot fire whatever else the fact holds, so only the fields some rule
that still can fire reads are sent. Those rules see every field they read, the others
still lack a required field: the fires are the same, and durable parses, walks and
echoes back (once per fire) a shorter text. `kept_fields` is the rule; `KeepByMasks` gives
the same answer to a generated writer from the bit masks of the fields it sent, remembered
per mask.
"""

from __future__ import annotations

import operator
from itertools import compress
from typing import Any, Collection, Iterable, Sequence

from fengkong.engine.durable_backend.compiler import leaf_tests, refs


def required_keys(cond: dict[str, Any]) -> set[str]:
    """The field keys a fact must carry for ``cond`` (a compiled condition) to hold in
    durable: every field a test reads on its left, but under ``$nex``; all of an
    ``$and``'s items', only what every branch of an ``$or`` needs."""
    (op, arg), = cond.items()
    if op == "$and":
        return set().union(*(required_keys(item) for item in arg))
    if op == "$or":
        needs = [required_keys(item) for item in arg]
        return set.intersection(*needs) if needs else set()
    if op == "$nex":
        return set()
    if op.startswith("$"):
        return set(arg)  # {"$gte": {key: rhs}}: the key on the left
    return {op}  # {key: constant}: an equality


def guard_keys(conditions: Sequence[dict[str, Any]], preferred: Collection[str] = ()) -> tuple[str, ...]:
    """Fields such that each condition requires one of them (`required_keys`), few and
    ``preferred`` first (the fields most often left out of a fact); () when some
    condition requires no field, so the shard must always be asserted.

    A greedy cover: the field required by the most conditions not yet covered."""
    needs = [required_keys(cond) for cond in conditions]
    if not needs or not all(needs):
        return ()
    guards: list[str] = []
    open_ = list(range(len(needs)))
    while open_:
        counts: dict[str, int] = {}
        for i in open_:
            for key in needs[i]:
                counts[key] = counts.get(key, 0) + 1
        best = max(sorted(counts), key=lambda k: (counts[k], k in preferred))
        guards.append(best)
        open_ = [i for i in open_ if best not in needs[i]]
    return tuple(guards)


def read_keys(cond: dict[str, Any]) -> set[str]:
    """Every field key ``cond`` (a compiled condition) tests, on either side, under
    ``$ex`` / ``$nex`` too: the fields whose presence or value can change its answer."""
    keys: set[str] = set()
    for op, arg in leaf_tests([cond]):
        if op.startswith("$"):
            for key, rhs in arg.items():
                keys.add(key)
                keys |= refs(rhs)
        else:
            keys.add(op)
            keys |= refs(arg)
    return keys


class Liveness:
    """A shard's rules as `kept_fields` reads them: each distinct set of fields some rule
    requires (``required``), and what the rules requiring it read (``reads``). A rule that
    requires no field has the empty set: it is always able."""

    __slots__ = ("reads", "required")

    def __init__(self, rules: Iterable[tuple[Collection[str], Collection[str]]]) -> None:
        reads: dict[frozenset[str], frozenset[str]] = {}
        for required, read in rules:
            key = frozenset(required)
            reads[key] = reads.get(key, frozenset()) | frozenset(read)
        self.reads = reads
        self.required = tuple(reads)


def liveness(conditions: Iterable[dict[str, Any]], key_of: Any = str) -> Liveness:
    """`kept_fields`' table of a shard's compiled conditions, each field as ``key_of(key)``."""
    return Liveness((set(map(key_of, required_keys(c))), set(map(key_of, read_keys(c)))) for c in conditions)


def kept_fields(live: Liveness, present: Sequence[str]) -> list[int] | None:
    """Of the fields a fact carries (``present``, in its order), the positions of those that
    some rule able to fire reads (a rule is able when the fact carries every field it
    requires); None when no rule of the shard can fire. (C loops: `filter`, `map`, `compress`.)"""
    able = list(filter(frozenset(present).issuperset, live.required))
    if not able:
        return None
    read = frozenset().union(*map(live.reads.__getitem__, able))
    return list(compress(range(len(present)), map(read.__contains__, present)))


#: how many entries each table of `KeepByMasks` holds at most
KEPT_MEMORY = 4096
#: fields to a mask of a fact writer's fields sent (`fact_code`): a mask stays a one-digit int (below 2**30)
MASK_BITS = 30


def _head_only(parts: list[str]) -> tuple[str]:
    """The parts of a fact that keeps no field (a rule able to fire reads none it carries)."""
    return (parts[0],)


def _places(m: int, kept: int) -> tuple[tuple[int, ...], int]:
    """The places (from 1) among the fields of mask ``m`` of those in ``kept``, and how many
    fields ``m`` holds."""
    places: list[int] = []
    place = 0
    while m:
        low = m & -m
        place += 1
        if low & kept:
            places.append(place)
        m ^= low
    return tuple(places), place


class KeepByMasks:
    """`kept_fields` for a generated fact writer (`fact_code`): what it keeps of its parts (the head, then one part per field sent), by ``key``:
    the masks of the fields sent (a tuple past one mask; bit b of mask j is field
    ``keys[j * MASK_BITS + b]``). True all, False none (no rule can fire: not asserted), else
    a function of the parts that gives the head and the kept ones. Remembered per key in ``cache``; a key seen first is worked out from what each
    mask alone allows (far fewer masks than keys recur), each table `KEPT_MEMORY` entries at most."""

    def __init__(self, live: Liveness, keys: list[str], masks: int, cache: dict[Any, Any]) -> None:
        bit = {key: k for k, key in enumerate(keys)}
        # a required set with a field never sent is never met; a field never sent is never kept
        needs = [(req, live.reads[req]) for req in live.required if req <= bit.keys()]

        def split(fields: frozenset[str]) -> list[int]:
            out = [0] * masks
            for key in fields & bit.keys():
                out[bit[key] // MASK_BITS] |= 1 << (bit[key] % MASK_BITS)
            return out

        #: per mask, each required set's bits in it; per required set, the bits it reads, by mask
        self.required = [tuple(split(req)[j] for req, _ in needs) for j in range(masks)]
        self.reads = [split(reads) for _, reads in needs]
        self.everyone = (1 << len(needs)) - 1
        self.masks = masks
        self.cache = cache
        self.met: list[dict[int, int]] = [{} for _ in range(masks)]  # per mask: mask -> required sets met
        self.kept: dict[int, list[int]] = {}  # the required sets met -> what is kept, by mask
        #: per mask: (mask, its bits kept) -> `_places`
        self.places: list[dict[tuple[int, int], tuple[tuple[int, ...], int]]] = [{} for _ in range(masks)]

    def __call__(self, key: Any) -> Any:
        ms = (key,) if self.masks == 1 else key
        able = self.everyone
        for j, m in enumerate(ms):
            met = self.met[j].get(m)
            if met is None:
                met = sum(1 << q for q, req in enumerate(self.required[j]) if m & req == req)
                if len(self.met[j]) < KEPT_MEMORY:
                    self.met[j][m] = met
            able &= met
        answer: Any = False
        if able:
            kept = self.kept.get(able)
            if kept is None:
                kept = [0] * self.masks
                for q, reads in enumerate(self.reads):
                    if able >> q & 1:
                        kept = [k | r for k, r in zip(kept, reads)]
                if len(self.kept) < KEPT_MEMORY:
                    self.kept[able] = kept
            where: list[int] = []  # the kept parts' places (the head is 0)
            place = 0
            for j, m in enumerate(ms):
                known = self.places[j].get((m, kept[j]))
                if known is None:
                    known = _places(m, kept[j])
                    if len(self.places[j]) < KEPT_MEMORY:
                        self.places[j][m, kept[j]] = known
                where += map(place.__add__, known[0])
                place += known[1]
            answer = True if len(where) == place else operator.itemgetter(0, *where) if where else _head_only
        if len(self.cache) < KEPT_MEMORY:
            self.cache[key] = answer
        return answer
