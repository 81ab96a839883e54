"""A plan's reply reader as straight-line Python, generated once per plan.

Every decision turns the script's reply (the reply tag, then each op's values) into the
features' dict and the inputs `assemble.derive` reads. What each reply value becomes is
fixed by the plan: its position, its raw name, its decoder kind. So this module writes
the steps out once per plan as the source of one function (the reply unpacked into
locals, then one line per raw value: `decoders.INLINE`'s expression stored under its
name) and compiles it, as `fengkong.engine.durable_backend.fact_code` does for the
rules' facts. The features come out as the kind-by-kind converters (`Op.decode`) give
them, value for value and type for type: tests/test_features_hot_path.py holds the two
equal.

Only names and expressions this module writes go into the source (``repr`` of a raw
name, `INLINE`'s templates); the blank dict is passed in by name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from fengkong.features.decoders import DECODERS, INLINE
from fengkong.features.errors import FeatureDefinitionError

#: a plan's reader: the script's reply values (tag first) -> (the features, the inputs)
Reader = Callable[[Sequence[Any]], tuple[dict[str, Any], dict[str, Any]]]


def compile_reader(outputs: Sequence[tuple[str, str, int]], blank: dict[str, Any],
                   inputs: frozenset[str]) -> Reader:
    """The reader of a reply whose raw values are ``outputs`` (raw name, decoder kind,
    position of its first value; `plan.reply_outputs`): a copy of ``blank`` with every
    raw value that is a feature stored in it, and a dict of those named in ``inputs``
    (in reply order). A reply of another length raises ValueError."""
    width = 1 + sum(DECODERS[kind].width for _, kind, _ in outputs)
    lines = ["def read(s):"]
    names = ["_"] + [f"v{at}" for at in range(1, width)]
    lines.append(f"    ({', '.join(names)},) = s")
    lines.append("    f = _blank_copy()")
    read_inputs: list[str] = []
    for name, kind, at in outputs:
        template = INLINE.get(kind)
        if template is None:
            raise FeatureDefinitionError(f"decoder kind {kind!r} has no inline expression in decoders.INLINE")
        values = [f"v{at + i}" for i in range(DECODERS[kind].width)]
        expr = template.format(*values, s="s", at=at)
        if name in inputs:
            read_inputs.append(f"{name!r}: {expr}")
        else:
            lines.append(f"    f[{name!r}] = {expr}")
    lines.append(f"    return f, {{{', '.join(read_inputs)}}}")
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {"_blank_copy": blank.copy}
    exec(compile(source, f"<reply reader of {len(outputs)} raw values>", "exec"), namespace)
    reader = namespace["read"]
    # the raw names as the very str objects that key the blank dict (`reply_outputs`
    # interns them): a store or lookup then finds its key without comparing the text
    reader.__code__ = reader.__code__.replace(
        co_consts=tuple(sys.intern(c) if type(c) is str else c for c in reader.__code__.co_consts))
    reader.__doc__ = "A plan's reply reader (`plan_code.compile_reader`); its source:\n\n" + source
    return reader  # type: ignore[no-any-return]
