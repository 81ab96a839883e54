"""A plan's reply reader and command writer as straight-line Python, generated once per plan.

Every decision turns its row into the script's EVALSHA and the script's reply (the reply
tag, then each op's values) into the features' dict and the inputs `assemble.derive_from`
reads. Both are fixed by the plan but for the event's own values: which keys with which
ids, which op list with which values where; which raw name and decoder kind at which
reply position. So this module writes the steps out once per plan as the source of one
function each and compiles it, as `fengkong.engine.durable_backend.fact_code` does for
the rules' facts:

* `compile_reader`: the reply unpacked into locals, then one line per raw value
  (`decoders.INLINE`'s expression of its kind, stored under its name);
* `compile_writer`: the command as Redis reads it (RESP), in place of a key list, a
  command tuple and ``hiredis.pack_command``;
* `compile_plan_key`: which plan an event's row takes (its type, which columns it lacks);
* `compile_packed_values`: the event's own op-list values, each packed (`plan.EventArgs`),
  those of a few known values looked up rather than packed.

What they give is what they replace, value for value and type for type (the converters
of `Op.decode`) and byte for byte (``hiredis.pack_command`` of `OnlineStore._prepare`'s
command): tests/test_plan_code.py. Only names and expressions this module writes go into
the source (``repr`` of a raw name or a row column, `INLINE`'s templates, locals); every
other text (the keys' prefix, the op list's packed runs) is passed in by name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import CodeType
from typing import Any

import msgpack

from fengkong.features.decoders import DECODERS, INLINE
from fengkong.features.errors import FeatureDefinitionError

#: a plan's reader: the script's reply values (tag first) -> (the features, the inputs in order)
Reader = Callable[[Sequence[Any]], tuple[dict[str, Any], tuple[Any, ...]]]


def interned_names(code: CodeType) -> CodeType:
    """``code`` with its str constants interned: the feature names it stores or looks up
    are then the very str objects that key the features' dicts (whose names are interned
    too), so each finds its key without comparing the text (Python interns only the
    constants that look like identifiers, and a dotted name does not)."""
    return code.replace(co_consts=tuple(sys.intern(c) if type(c) is str else c for c in code.co_consts))


def compile_reader(outputs: Sequence[tuple[str, str, int]], blank: dict[str, Any],
                   inputs: Sequence[str], absent: Sequence[Any],
                   ratios: Sequence[tuple[str, str, str]] = ()) -> Reader:
    """The reader of a reply whose raw values are ``outputs`` (raw name, decoder kind,
    position of its first value; `plan.reply_outputs`): a copy of ``blank`` with every
    raw value that is a feature stored in it, and a tuple of the raw values named in
    ``inputs``, in that order (`assemble.INPUT_ORDER`), ``absent``'s value in place of
    each the reply lacks. A reply of another length raises ValueError.

    ``ratios``: (feature, numerator, denominator) of ratios of two raw features to store as
    well, from the values the reader holds in locals rather than read back from the dict
    (`assemble.RAW_RATIOS`, what `assemble.derive` then leaves alone): one whose
    numerator or denominator the reply lacks is missing, as the blank dict has it."""
    width = 1 + sum(DECODERS[kind].width for _, kind, _ in outputs)
    lines = ["def read(s):"]
    names = ["_"] + [f"v{at}" for at in range(1, width)]
    lines.append(f"    ({', '.join(names)},) = s")
    lines.append("    f = _blank_copy()")
    read_inputs: dict[str, str] = {}  # raw name -> its expression
    features = {name for name, _, _ in outputs if name not in inputs}
    ratios = [(name, num, den) for name, num, den in ratios if num in features and den in features]
    kept = {side: f"r{i}" for i, side in enumerate(dict.fromkeys(side for _, *sides in ratios for side in sides))}
    for name, kind, at in outputs:
        template = INLINE.get(kind)
        if template is None:
            raise FeatureDefinitionError(f"decoder kind {kind!r} has no inline expression in decoders.INLINE")
        values = [f"v{at + i}" for i in range(DECODERS[kind].width)]
        expr = template.format(*values, s="s", at=at)
        if name in inputs:
            read_inputs[name] = expr
        elif name in kept:
            lines.append(f"    f[{name!r}] = {kept[name]} = {expr}")
        else:
            lines.append(f"    f[{name!r}] = {expr}")
    for name, num, den in ratios:  # as `assemble.derive` computes them
        n, d = kept[num], kept[den]
        lines.append(f"    f[{name!r}] = None if {n} is None or {d} is None or {d} == 0 else {n} / {d}")
    # the inputs as one tuple display (built on the stack, where a dict of names was built
    # item by item); an input the reply lacks reads as its ``absent`` value, a global
    namespace: dict[str, Any] = {"_blank_copy": blank.copy}
    items = []
    for at, name in enumerate(inputs):
        if name in read_inputs:
            items.append(read_inputs[name])
        else:
            namespace[f"_absent{at}"] = absent[at]
            items.append(f"_absent{at}")
    lines.append(f"    return f, ({''.join(item + ', ' for item in items)})")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<reply reader of {len(outputs)} raw values>", "exec"), namespace)
    reader = namespace["read"]
    reader.__code__ = interned_names(reader.__code__)
    reader.__doc__ = "A plan's reply reader (`plan_code.compile_reader`); its source:\n\n" + source
    return reader  # type: ignore[no-any-return]


#: a plan's command writer: (event row, its packed values, its slot's packed time values as
#: `EventArgs.packed_time_values` keeps them, script sha, dedup TTL) -> the EVALSHA command
#: as Redis reads it (RESP), or None when a key is not ASCII text
Writer = Callable[[dict[str, Any], Sequence[bytes], list[bytes], str, int], "bytes | None"]

#: lengths as text, looked up rather than formatted (a longer key gets the general way; the
#: audit entry's and the decision pointer's writers, `fengkong.api.audit.entry_command` and
#: `fengkong.api.service.pointers`, read it too)
LENGTHS = tuple(str(n) for n in range(1024))


def ascii_resp(text: str) -> bytes | None:
    """RESP `text` written with its lengths counted in characters, as bytes when that count
    is its bytes' (ASCII text), else None: the caller then packs the command the general way."""
    data = text.encode()
    return data if len(data) == len(text) else None


#: the pieces of one f-string in a writer's source (CPython compiles up to 30 onto the stack)
_FSTRING_PIECES = 30


class _FString:
    """The source of one f-string whose every piece is an expression: constant text goes
    into the writer's globals, adjacent pieces of it as one, so that no text of a key (a
    configured prefix) is ever written into source."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.parts: list[str] = []
        self.pending: list[str] = []

    def text(self, text: str) -> None:
        self.pending.append(text)

    def expr(self, expr: str) -> None:
        self._flush()
        self.parts.append(f"{{{expr}}}")

    def length(self, expr: str) -> None:
        """The decimal text of the int ``expr`` (below 1024: an IndexError otherwise)."""
        self.expr(f"_L[{expr}]")

    def source(self) -> str:
        """The f-string's source; past `_FSTRING_PIECES` pieces, f-strings of that many joined
        by ``+`` (Python builds a longer one in a list, a call to ``str.join`` and an append per
        piece, where one of at most 30 is built on the stack in one step)."""
        self._flush()
        chunks = [self.parts[at:at + _FSTRING_PIECES] for at in range(0, len(self.parts), _FSTRING_PIECES)]
        return " + ".join('f"' + "".join(chunk) + '"' for chunk in chunks) or 'f""'

    def _flush(self) -> None:
        if self.pending:
            name = f"_c{len(self.env)}"
            self.env[name] = "".join(self.pending)
            self.pending = []
            self.parts.append(f"{{{name}}}")


def compile_writer(*, dedup_key: tuple[str, str], legacy_key: tuple[str, str],
                   entity_keys: Sequence[tuple[str, str, str]], day_keys_at: Sequence[int],
                   list_keys: Sequence[str], reply_tag: str, runs: Sequence[bytes], positions: Sequence[int],
                   nvalues: int, ntimes: int) -> Writer:
    """The writer of a plan's EVALSHA command, byte for byte what ``hiredis.pack_command``
    makes of ``("EVALSHA", sha, numkeys, *KEYS, ttl, amount, ops, reply_tag, legacy key)``
    as `OnlineStore` lays it out: the keys' fixed text around the row's ids (``entity_keys``:
    head, row column, tail; the keys at ``day_keys_at`` end with the business day), then the
    op list, its pieces in the order of ``positions`` (below ``nvalues``: an event's packed
    value; then ``ntimes`` time values; then the plan's constant ``runs``).

    Why: packing the command argument by argument (a key list, a command tuple, hiredis'
    formatting of each argument) and joining the op list from some two hundred pieces cost
    more than all the rest of the call. Here the head is one f-string of the ids between
    constant text, lengths looked up; and the op list's runs are joined with the time values
    of a slot once per slot (`merge`), so that an event joins its own values between fewer,
    longer runs. Lengths are counted in characters, so a key with other than ASCII text (or
    one past `LENGTHS`) gets None: the caller packs that command the general way."""
    env: dict[str, Any] = {"_L": LENGTHS, "_merged": [((), ())], "_join": b"".join}
    columns = list(dict.fromkeys(column for _, column, _ in entity_keys))
    local = {column: f"x{i}" for i, column in enumerate(columns)}
    lines = ["def write(row, values, times, sha, ttl):",
             "    merged = _merged[0]",
             "    if merged[0] is not times:  # a new slot: its time values joined into the runs",
             "        merged = _merged[0] = (times, _merge(times))",
             "    m = merged[1]",
             "    e = f\"{row['event_id']}\"",
             "    ne = len(e)"]
    for c in columns:
        lines += [f"    {local[c]} = f\"{{row[{c!r}]}}\"", f"    n{local[c]} = len({local[c]})"]
    if day_keys_at:
        lines += ["    day = str(row['biz_day'])", "    nday = len(day)"]
    refs, merge = _merged_runs(runs, positions, nvalues, ntimes)
    env["_merge"] = merge
    # the pieces as locals: one load each in the join, in place of a load, a constant and a subscript
    merged_refs = [ref for ref in refs if ref.startswith("m")]
    if nvalues:
        lines.append(f"    ({', '.join(f'a{i}' for i in range(nvalues))},) = values")
    if merged_refs:
        lines.append(f"    ({', '.join(merged_refs)},) = m")
    # tuple displays of at most 29 items, each joined, then joined (past 30 items CPython
    # builds a display in a list, an append per item)
    chunks = [refs[at:at + 29] for at in range(0, len(refs), 29)]
    if len(chunks) == 1:
        lines.append(f"    ops = b''.join(({', '.join(refs)},))")
    else:
        lines.append(f"    ops = b''.join(({', '.join(f'_join(({chr(44).join(c)},))' for c in chunks)},))")
    lines += ["    amount = f\"{row['amount']}\"", "    ttl = f\"{ttl}\""]
    nkeys = 1 + len(entity_keys) + len(list_keys)
    head = _FString(env)
    head.text(f"*{3 + nkeys + 5}\r\n$7\r\nEVALSHA\r\n$")
    head.length("len(sha)")
    head.text("\r\n")
    head.expr("sha")
    head.text(f"\r\n${len(str(nkeys))}\r\n{nkeys}\r\n")
    _key(head, "e", dedup_key, False)
    for at, (key_head, column, key_tail) in enumerate(entity_keys, start=1):
        _key(head, local[column], (key_head, key_tail), at in day_keys_at)
    for key in list_keys:
        head.text(f"${len(key)}\r\n{key}\r\n")
    for value in ("ttl", "amount"):
        head.text("$")
        head.length(f"len({value})")
        head.text("\r\n")
        head.expr(value)
        head.text("\r\n")
    head.text("$")
    head.expr("len(ops)")
    head.text("\r\n")
    tail = _FString(env)
    tail.text(f"\r\n${len(reply_tag)}\r\n{reply_tag}\r\n")
    _key(tail, "e", legacy_key, False)
    lines += ["    try:",
              f"        head = {head.source()}",
              f"        tail = {tail.source()}",
              "    except IndexError:  # a length past _L",
              "        return None",
              "    if not (head.isascii() and tail.isascii()):",
              "        return None",
              "    return b''.join((head.encode(), ops, tail.encode()))"]
    source = "\n".join(lines) + "\n"
    namespace = dict(env)
    exec(compile(source, f"<command writer of {nkeys} keys>", "exec"), namespace)
    writer = namespace["write"]
    writer.__doc__ = "A plan's command writer (`plan_code.compile_writer`); its source:\n\n" + source
    return writer  # type: ignore[no-any-return]


def _key(text: _FString, value: str, key: tuple[str, str], per_day: bool) -> None:
    """One key argument: its length, then head, id (the local ``value``, its length in
    ``n<value>``), tail and, for a per-day key, the day."""
    head, tail = key
    fixed = len(head) + len(tail)
    text.text("$")
    text.length(f"n{value} + nday + {fixed}" if per_day else f"n{value} + {fixed}")
    text.text(f"\r\n{head}")
    text.expr(value)
    text.text(tail)
    if per_day:
        text.expr("day")
    text.text("\r\n")


def _merged_runs(runs: Sequence[bytes], positions: Sequence[int], nvalues: int,
                 ntimes: int) -> tuple[list[str], Callable[[Sequence[bytes]], tuple[bytes, ...]]]:
    """The op list's pieces in the writer's source (``a<i>``, an event's own value i, and
    ``m<k>``, merged run k: locals the writer unpacks them into) and the function that
    merges, for one slot's time values, each stretch of runs and time values between two
    of the event's own values into one run."""
    refs: list[str] = []
    stretches: list[list[int]] = []  # per merged run: the positions it joins
    for at in positions:
        if at < nvalues:
            refs.append(f"a{at}")
            continue
        if not refs or not refs[-1].startswith("m"):
            refs.append(f"m{len(stretches)}")
            stretches.append([])
        stretches[-1].append(at)
    constant = [runs[at - nvalues - ntimes] if at >= nvalues + ntimes else None
                for at in range(nvalues + ntimes + len(runs))]

    def merge(times: Sequence[bytes]) -> tuple[bytes, ...]:
        return tuple(b"".join([times[at - nvalues] if (run := constant[at]) is None else run for at in stretch])
                     for stretch in stretches)

    return refs, merge


#: an event row -> its plan's key (`compile_plan_key`)
PlanKey = Callable[[dict[str, Any]], tuple[Any, ...]]


def compile_plan_key(columns: Sequence[str]) -> PlanKey:
    """``(row["type"], row[c] is None for c in columns)`` as one tuple display: the key
    of an event's plan (`plan.Planner.plan_for`), without an itemgetter, a map and an
    unpacking per event."""
    items = ["row['type']"] + [f"row[{c!r}] is None" for c in columns]
    source = f"def plan_key(row):\n    return ({', '.join(items)},)\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<plan key of {len(columns)} columns>", "exec"), namespace)
    key = namespace["plan_key"]
    key.__code__ = interned_names(key.__code__)
    key.__doc__ = "An event's plan key (`plan_code.compile_plan_key`); its source:\n\n" + source
    return key  # type: ignore[no-any-return]


#: an event row -> its op-list values, each packed (`compile_packed_values`)
PackedValues = Callable[[dict[str, Any]], list[bytes]]

#: MessagePack of the small ints 0..127 (each its own byte) and of the hours' text
_SMALL_INTS = tuple(msgpack.packb(i) for i in range(128))
_HOURS_PACKED = tuple(msgpack.packb(str(h)) for h in range(24))


def compile_packed_values(wheres: Sequence[tuple[str, bool]], members: Sequence[str],
                          ipv4_text: Callable[[str], str]) -> PackedValues:
    """The packed form of `plan.EventArgs.values` (``msgpack.Packer().pack`` of each, in
    order, byte for byte: tests/test_plan_code.py): one list display, the hour, the
    moment mode and the 0 or 1 of a flag looked up packed, the others packed by one
    packer per call (so that no two threads ever share one). ``wheres``: (row column,
    whether the value is the amount rather than 1) of each flag; ``members``: the row
    columns whose values the ops add as members."""
    items = ["pack(amount)", "pack(f'{amount}')", "pack(t)", "pack(f'{t}')", "_SMALL[row['hour']]",
             "pack(row['biz_day'])", "_HOURS[row['biz_hour']]", "_SMALL[2 if row['has_amount'] else 1]",
             "pack(_ipv4_text(ip) if row['ip_info'] is not None and ':' not in ip else '')"]
    for column, is_amount in wheres:
        items.append(f"(pack(amount) if row[{column!r}] else _ZERO)" if is_amount
                     else f"(_ONE if row[{column!r}] else _ZERO)")
    items += [f"pack(row[{column!r}])" for column in members]
    lines = ["def packed_values(row):",
             "    pack = _Packer().pack",
             "    amount = row['amount']",
             "    t = row['ts_us']",
             "    ip = row['ip']",
             f"    return [{', '.join(items)}]"]
    source = "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {"_Packer": msgpack.Packer, "_SMALL": _SMALL_INTS, "_HOURS": _HOURS_PACKED,
                                 "_ZERO": _SMALL_INTS[0], "_ONE": _SMALL_INTS[1], "_ipv4_text": ipv4_text}
    exec(compile(source, f"<packed values of {len(items)} values>", "exec"), namespace)
    packed = namespace["packed_values"]
    packed.__code__ = interned_names(packed.__code__)
    packed.__doc__ = "An event's packed op-list values (`plan_code.compile_packed_values`); its source:\n\n" + source
    return packed  # type: ignore[no-any-return]
