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
from types import CodeType
from typing import Any

from fengkong.features.decoders import DECODERS, INLINE
from fengkong.features.errors import FeatureDefinitionError

#: a plan's reader: the script's reply values (tag first) -> (the features, the inputs)
Reader = Callable[[Sequence[Any]], tuple[dict[str, Any], dict[str, Any]]]


def interned_names(code: CodeType) -> CodeType:
    """``code`` with its str constants interned: the feature names it stores or looks up
    are then the very str objects that key the features' dicts (whose names are interned
    too), so each finds its key without comparing the text (Python interns only the
    constants that look like identifiers, and a dotted name does not)."""
    return code.replace(co_consts=tuple(sys.intern(c) if type(c) is str else c for c in code.co_consts))


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
    reader.__code__ = interned_names(reader.__code__)
    reader.__doc__ = "A plan's reply reader (`plan_code.compile_reader`); its source:\n\n" + source
    return reader  # type: ignore[no-any-return]


#: a plan's command writer: (event row, its packed values and time values, script sha, dedup
#: TTL) -> the EVALSHA command as Redis reads it (RESP), or None when a key is not ASCII text
Writer = Callable[[dict[str, Any], Sequence[bytes], str, int], "bytes | None"]


def compile_writer(*, dedup_key: tuple[str, str], legacy_key: tuple[str, str],
                   entity_keys: Sequence[tuple[str, str, str]], day_keys_at: Sequence[int],
                   list_keys: Sequence[str], reply_tag: str, runs: Sequence[bytes], positions: Sequence[int],
                   first_run: int) -> Writer:
    """The writer of a plan's EVALSHA command, byte for byte what ``hiredis.pack_command``
    makes of ``("EVALSHA", sha, numkeys, *KEYS, ttl, amount, ops, reply_tag, legacy key)``
    as `OnlineStore` lays it out: the keys' fixed text around the row's ids (``entity_keys``:
    head, row column, tail; the keys at ``day_keys_at`` end with the business day), the op
    list joined from the event's packed pieces and the plan's constant ``runs`` in the order
    of ``positions`` (below ``first_run``: a piece; from it on: a run). One f-string of
    the whole head, in place of a key list, a command tuple and hiredis' formatting of each
    argument. Lengths are counted in characters, so a key with other than ASCII text gets
    None (the caller packs that command the general way)."""
    env: dict[str, Any] = {}

    def name(obj: Any, stem: str) -> str:
        key = f"_{stem}{len(env)}"
        env[key] = obj
        return key

    columns = list(dict.fromkeys(column for _, column, _ in entity_keys))
    local = {column: f"x{i}" for i, column in enumerate(columns)}
    lines = ["def write(row, pieces, sha, ttl):", "    e = f\"{row['event_id']}\""]
    lines += [f"    {local[c]} = f\"{{row[{c!r}]}}\"" for c in columns]
    if day_keys_at:
        lines.append("    day = str(row['biz_day'])")
    lines.append(f"    ops = b''.join(({', '.join(_piece(at, first_run, runs, name) for at in positions)},))")
    lines.append("    amount = f\"{row['amount']}\"")
    lines.append("    ttl = f\"{ttl}\"")
    nkeys = 1 + len(entity_keys) + len(list_keys)
    head = [f"*{3 + nkeys + 5}\\r\\n$7\\r\\nEVALSHA\\r\\n${{len(sha)}}\\r\\n{{sha}}\\r\\n",
            f"${len(str(nkeys))}\\r\\n{nkeys}\\r\\n", _key("e", dedup_key, "", name)]
    for at, (key_head, column, key_tail) in enumerate(entity_keys, start=1):
        head.append(_key(local[column], (key_head, key_tail), "day" if at in day_keys_at else "", name))
    for key in list_keys:
        head.append(f"${len(key)}\\r\\n{{{name(key, 'k')}}}\\r\\n")
    head.append("${len(ttl)}\\r\\n{ttl}\\r\\n${len(amount)}\\r\\n{amount}\\r\\n${len(ops)}\\r\\n")
    lines.append(f"    head = f\"{''.join(head)}\"")
    tail = [f"\\r\\n${len(reply_tag)}\\r\\n{{{name(reply_tag, 'tag')}}}\\r\\n", _key("e", legacy_key, "", name)]
    lines.append(f"    tail = f\"{''.join(tail)}\"")
    lines.append("    if not (head.isascii() and tail.isascii()):")
    lines.append("        return None")
    lines.append("    return b''.join((head.encode(), ops, tail.encode()))")
    source = "\n".join(lines) + "\n"
    namespace = dict(env)
    exec(compile(source, f"<command writer of {nkeys} keys>", "exec"), namespace)
    writer = namespace["write"]
    writer.__doc__ = "A plan's command writer (`plan_code.compile_writer`); its source:\n\n" + source
    return writer  # type: ignore[no-any-return]


def _key(value: str, text: tuple[str, str], day: str, name: Callable[[Any, str], str]) -> str:
    """The f-string text of one key argument: its length, then head, id (the local
    ``value``), tail and, for a per-day key, the day."""
    head, tail = text
    fixed = len(head) + len(tail)
    length = f"len({value}) + len({day}) + {fixed}" if day else f"len({value}) + {fixed}"
    return (f"${{{length}}}\\r\\n{{{name(head, 'h')}}}{{{value}}}{{{name(tail, 't')}}}"
            + (f"{{{day}}}" if day else "") + "\\r\\n")


def _piece(at: int, first_run: int, runs: Sequence[bytes], name: Callable[[Any, str], str]) -> str:
    """One piece of the op list in the writer's source: an event's piece, or a run."""
    return f"pieces[{at}]" if at < first_run else name(runs[at - first_run], "r")
