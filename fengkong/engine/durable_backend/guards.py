"""Which fields a shard's rules cannot fire without, so a fact lacking them is not asserted.

durable visits an alpha node that tests a field only when the fact carries that field
(events.c, handleAlpha: the conjunctive nodes are found from the fact's own
properties); only ``$nex`` holds of an absent field. So a rule fires only when its
fact carries every field of `required_keys`, and when a shard's fact lacks one such
field of each of its rules (its `guard_keys`), no rule of the shard can fire: the
fact is not asserted, which spares durable's parse, walk and retraction. A shard with
a rule that needs no field (one whose every branch holds of an absent field) has no
guards and is always asserted.
"""

from __future__ import annotations

from typing import Any, Collection, Sequence


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
