"""A model of durable's alpha network, and the packing of rules into shards by it.

durable's C engine walks its alpha network with a stack of 64 nodes (MAX_STACK_SIZE
in events.c; one more push fails a fact with error 303), and every test that holds
pushes its node. `alpha_stack_peak` bounds that stack for any fact; `pack` puts the
rules into shards (separate durable rulesets, one fact each per decision) that each
stay within a budget, with a margin below 64 for any difference between this model
and durable's node sharing. tests/test_engine_durable.py holds the model against
durable itself at the limit and on random and/or nests.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

#: the default budget of `pack`: below durable's 64, for safety (module docstring)
ALPHA_STACK_BUDGET = 48
#: the alpha stack durable itself allows (MAX_STACK_SIZE, events.c)
DURABLE_ALPHA_STACK = 64
#: a message holds 255 properties, id and sid included (MAX_OBJECT_PROPERTIES, state.h)
MAX_FIELDS_PER_SHARD = 200
#: durable links at most 256 rules to one alpha node (BETA_LIST_LENGTH, rules.h)
MAX_RULES_PER_SHARD = 200

#: a condition as `alpha_shape` gives it: ("and" | "or", items) or a test's JSON text
Shape = Any


class _Alpha:
    """A node of the model: its tests (shared, keyed by their JSON) and the nodes
    pushed when it holds, in order, repeats included."""

    __slots__ = ("next", "tests")

    def __init__(self) -> None:
        self.tests: dict[str, _Alpha] = {}
        self.next: list[_Alpha] = []


def alpha_shape(cond: dict[str, Any]) -> Shape:
    """A compiled condition as ("and", items), ("or", items) or a test's JSON text, so
    that packing (which models each shard many times) writes each test once."""
    if len(cond) == 1 and "$and" in cond:
        return ("and", tuple(alpha_shape(c) for c in cond["$and"]))
    if len(cond) == 1 and "$or" in cond:
        return ("or", tuple(alpha_shape(c) for c in cond["$or"]))
    return json.dumps(cond, sort_keys=True)


def alpha_stack_peak(shapes: Sequence[Shape]) -> int:
    """The most entries durable's alpha stack can hold for any fact, given these rules.

    The network is built as rete.c builds it: a test under the same parent with the
    same field, operator and value is one shared node; ``$and`` chains its items;
    ``$or`` hangs each item under the parent and links each to one new join node
    (pushed once per true item, hence one fire per true branch). events.c pops a node,
    then pushes every child whose test holds; assuming every test holds, the stack
    while a node's children are worked through is at most (children - 1) plus the
    deepest child's own need."""
    root = _Alpha()
    for shape in shapes:
        _link(shape, root)
    return _need(root, {})


def pack(rules: Sequence[tuple[Shape, set[str]]],
         budget: int = ALPHA_STACK_BUDGET) -> list[tuple[list[int], int]]:
    """The rules (shape, field keys read) grouped into shards: for each, the indices of
    its rules in order, and its alpha-stack peak as `alpha_stack_peak` models it.

    Each rule goes to the first shard that can take it within durable's limits on
    fields and rules per ruleset and within ``budget`` for the alpha stack; a rule over
    budget on its own gets a shard of its own. Each shard keeps its network: a rule is
    linked into it on trial and unlinked when over budget, which gives the network
    `alpha_stack_peak` would build from the shard's rules, without building it anew
    for every rule tried."""
    shards: list[tuple[list[int], set[str], _Alpha]] = []
    peaks: list[int] = []
    for i, (shape, fields) in enumerate(rules):
        home = None
        for j, s in enumerate(shards):
            if len(s[1] | fields) <= MAX_FIELDS_PER_SHARD and len(s[0]) < MAX_RULES_PER_SHARD:
                undo: list[tuple[_Alpha, str | None]] = []
                _link(shape, s[2], undo)
                # a node's need is at least its count of children: a root already too wide is
                # over budget without walking the network
                peak = budget + 1 if len(s[2].next) > budget else _need(s[2], {})
                if peak <= budget:
                    home, peaks[j] = s, peak
                    break
                for node, key in reversed(undo):  # each step appended last: undone by pops
                    node.next.pop()
                    if key is not None:
                        del node.tests[key]
        if home is None:
            home = ([], set(), _Alpha())
            _link(shape, home[2])
            shards.append(home)
            peaks.append(_need(home[2], {}))
        home[0].append(i)
        home[1].update(fields)
    return [(indices, peak) for (indices, _, _), peak in zip(shards, peaks)]


def _link(shape: Shape, parent: _Alpha, undo: list[tuple[_Alpha, str | None]] | None = None) -> _Alpha:
    """Add one condition under ``parent``; return the node it ends on. ``undo`` gets each
    change in order: (node, test key) for a test node added under node, (node, None)
    for a join appended to node's next."""
    if isinstance(shape, str):
        node = parent.tests.get(shape)
        if node is None:
            node = parent.tests[shape] = _Alpha()
            parent.next.append(node)
            if undo is not None:
                undo.append((parent, shape))
        return node
    kind, items = shape
    if kind == "and":
        node = parent
        for item in items:
            node = _link(item, node, undo)
        return node
    join = _Alpha()
    for item in items:
        end = _link(item, parent, undo)
        end.next.append(join)
        if undo is not None:
            undo.append((end, None))
    return join


def _need(node: _Alpha, memo: dict[int, int]) -> int:
    need = memo.get(id(node))
    if need is None:
        k = len(node.next)
        need = max(k, k - 1 + max(_need(c, memo) for c in node.next)) if k else 0
        memo[id(node)] = need
    return need
