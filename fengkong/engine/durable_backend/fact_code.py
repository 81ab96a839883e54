"""A shard's fact writer as straight-line Python, generated once per rule-set compile.

`facts.encode_fact` interprets a `FactPlan` on every decision: per field it unpacks a
tuple, reads the feature, then writes it; each derived field is a chain of closure
calls (`predicates.compile_value`) that reads its operands again. The plan never
changes once the rule set is compiled, so this module writes the same steps out as
the source of one function per shard (names, prefixes and members as literals, each
feature read once into a local that the derived fields reuse, their arithmetic
inline) and compiles it. The text it returns is `encode_fact`'s, byte for byte, and
``missing`` gets the same names in the same order: tests/test_engine_durable.py holds
the two equal on every kind of value.

Only literals the module writes itself go into the source (``repr`` of a str, an int
or a float, a fixed operator); anything else (a set of members, a non-numeric
constant, a derived field of a shape it does not inline) is passed in by name.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from typing import Any, Callable, Iterator, Mapping

from fengkong.engine.durable_backend.classes import Classes, classify, plain_number
from fengkong.engine.durable_backend.facts import EXACT_INT, FactPlan, encode_str, json_value, written_clean
from fengkong.engine.durable_backend.guards import MASK_BITS, KeepByMasks
from fengkong.engine.predicates import FLOAT_MAX, clean
from fengkong.engine.tree import Arith, Const, Feature, Value

#: a shard's writer: (features, head, missing) -> the fact's JSON text (None: not to be asserted)
FactWriter = Callable[[Mapping[str, Any], str, list[str]], str | None]

_ARITH_OPS = frozenset("+-*/")
# In the generated source ``-1e309 < x < 1e309`` is "x is finite" for a float: 1e309 is read
# as infinity, a constant; NaN fails both comparisons. No float is made, as ``x - x == 0`` does.
_PREFIX = re.compile(r'"[fd][0-9]+":(true|false)?\Z')
_CLASS_OPS = frozenset(("<", "<=", None))
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?\Z")
#: after a mapping lacked one of a writer's names, how many calls read through ``get`` before
#: its itemgetter is tried again (a rules-only service lacks the model features every time)
_GET_SPELL = 64


def compile_writer(plan: FactPlan, exprs: Mapping[str, Value], dtypes: Mapping[str, str]) -> FactWriter:
    """The function that writes ``plan``'s fact, as `encode_fact(plan, ...)` does.

    ``exprs`` maps a derived field's prefix (``'"d0":'``) to its expression, whose
    arithmetic is then written inline; a derived field without one calls its function."""
    prefixes = [p for _, p, _, _ in plan.numbers] + [p for _, p, _, _ in plan.strings]
    prefixes += [p for _, p, _, _ in plan.others] + [p for p, _, _ in plan.computed] + list(plan.guards)
    prefixes += [m for _, t, f, _ in plan.bools for m in (t, f) if m is not None]
    odd = [p for p in prefixes if not _PREFIX.match(p)]
    if odd:  # the compiler's keys (f0, d0...): anything else is not written into source
        raise ValueError(f"fact field prefixes not of the compiler's form: {odd}")
    whens = [when for *_, when in plan.numbers] + [when for *_, when in plan.computed]
    odd_classes = [c for when in whens if when is not None for c in when
                   if c[0] not in _CLASS_OPS or type(c[1]) not in ((int, float) if c[0] else (type(None),))
                   or not (c[2] is None or (type(c[2]) is str and _NUMBER.match(c[2])))]
    if odd_classes:  # `classes.value_classes`'s bounds and number texts: nothing else goes into source
        raise ValueError(f"fact field classes not of `value_classes`'s form: {odd_classes}")
    return _Writer(plan, exprs, dtypes).build()


class _Writer:
    """Accumulates one writer's source lines and the objects it refers to by name."""

    def __init__(self, plan: FactPlan, exprs: Mapping[str, Value], dtypes: Mapping[str, str]) -> None:
        self.plan = plan
        self.exprs = exprs
        self.dtypes = dtypes
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"clean": clean, "json_value": json_value, "written_clean": written_clean,
                                    "encode_str": encode_str, "classify": classify, "plain_number": plain_number}
        self.locals: dict[str, str] = {}  # feature name -> the local holding its raw value
        self._temps = 0

    def name_of(self, obj: Any, stem: str) -> str:
        """A global name for ``obj`` in the generated function."""
        name = f"_{stem}{len(self.env)}"
        self.env[name] = obj
        return name

    def temp(self) -> str:
        self._temps += 1
        return f"t{self._temps}"

    def read(self, feature: str) -> str:
        """The local holding ``feature``'s raw value (`build` reads them all first)."""
        return self.locals[feature]

    def build(self) -> FactWriter:
        plan, emit = self.plan, self.lines.append
        emit("def write(features, head, missing):")
        emit("    miss = missing.append")
        # every feature the fact reads, read at once (a C loop) into locals
        names = [n for n, *_ in plan.numbers] + [n for n, *_ in plan.bools] + [n for n, *_ in plan.strings]
        names += [n for n, *_ in plan.others] + [n for n, _ in plan.unsent]
        for prefix, _, _ in plan.computed:
            expr = self.exprs.get(prefix)
            if expr is not None and _inlinable(expr, self.dtypes):
                names += _leaf_names(expr)
        names = list(dict.fromkeys(names))
        self.locals = {name: f"x{i}" for i, name in enumerate(names)}
        if len(names) == 1:
            emit(f"    x0 = features.get({names[0]!r})")
        elif names:
            # A plain dict holding every name (the decision path's, with models) is read by one
            # itemgetter: a C loop of subscripts, a fraction of the cost of a ``get`` call per
            # name. When a name is absent (rules only: no model.* features) the subscript raises,
            # and the next `_GET_SPELL` calls read through ``get`` without trying it again.
            targets = ", ".join(self.locals.values())
            spell = self.name_of([0], "spell")
            all_names = self.name_of(tuple(names), "names")
            emit(f"    if type(features) is dict and not {spell}[0]:")
            emit("        try:")
            emit(f"            {targets} = {self.name_of(operator.itemgetter(*names), 'items')}(features)")
            emit("        except KeyError:")
            emit(f"            {spell}[0] = {_GET_SPELL}")
            emit(f"            {targets} = map(features.get, {all_names})")
            emit("    else:")
            emit(f"        if {spell}[0]:")
            emit(f"            {spell}[0] -= 1")
            emit(f"        {targets} = map(features.get, {all_names})")
        self.unguarded()
        # the text's parts, made only once the fact may be asserted (past `unguarded`'s return)
        emit("    parts = [head]")
        emit("    append = parts.append")
        fields = len(plan.numbers) + len(plan.bools) + len(plan.strings) + len(plan.others) + len(plan.computed)
        masks = [f"m{k}" for k in range(max(1, -(-fields // MASK_BITS)))] if plan.live is not None else []
        if masks:  # a bit per field sent, `MASK_BITS` to a mask (each a one-digit int, added to fast)
            emit(f"    {' = '.join(masks)} = 0")
        keys: list[str] = []  # each field's prefix, by its bit
        for name, prefix, report, when in plan.numbers:
            with self.field(prefix, keys):
                self.number(name, prefix, report, when)
        for name, true, false, report in plan.bools:
            with self.field((true or false or "")[:-4 if true else -5], keys):
                self.boolean(name, true, false, report)
        for name, prefix, sent, report in plan.strings:
            with self.field(prefix, keys):
                self.string(name, prefix, sent, report)
        for name, prefix, dtype, report in plan.others:
            with self.field(prefix, keys):
                v = self.read(name)
                emit(f"    written_clean(parts, missing, {name!r}, {v}, {prefix!r}, {dtype!r}, {report!r})")
        for name, dtype in plan.unsent:
            self.unsent(name, dtype)
        for prefix, fn, when in plan.computed:
            with self.field(prefix, keys), self.only_if(self.needed(prefix, keys)):
                self.computed(prefix, fn, when)
        if plan.live is not None:  # only the fields a rule able to fire reads; None when no rule can fire
            cache: dict[Any, Any] = {}
            key = masks[0] if len(masks) == 1 else f"({', '.join(masks)})"
            emit(f"    key = {key}")
            emit(f"    kept = {self.name_of(cache, 'kept')}.get(key)")
            emit("    if kept is None:")
            emit(f"        kept = {self.name_of(KeepByMasks(plan.live, keys, len(masks), cache), 'keep')}(key)")
            emit("    if kept is True:")
            emit("        return ','.join(parts) + '}'")
            emit("    if kept is False:")
            emit("        return None")
            emit("    return ','.join(kept(parts)) + '}'")
        elif plan.guards:  # none of them sent: no rule of the shard can fire (`guards`)
            emit("    text = ','.join(parts) + '}'")
            emit(f"    if {' and '.join(f'{g!r} not in text' for g in plan.guards)}:")
            emit("        return None")
            emit("    return text")
        else:
            emit("    return ','.join(parts) + '}'")
        source = "\n".join(self.lines) + "\n"
        namespace = dict(self.env)
        exec(compile(source, f"<fact writer of {len(plan.numbers) + len(plan.bools)} fields>", "exec"), namespace)
        writer: FactWriter = namespace["write"]
        writer.__doc__ = "This shard's fact (`fact_code.compile_writer`); its source:\n\n" + source
        return writer

    @contextlib.contextmanager
    def field(self, prefix: str, keys: list[str]) -> Iterator[None]:
        """Around the lines of one field: with a liveness table, each line that adds the
        field's part also adds its bit to its mask (the next bit: ``keys`` gets its prefix;
        a field adds at most one part, so its bit once)."""
        start = len(self.lines)
        yield
        if self.plan.live is None:
            return
        mask, bit = f"m{len(keys) // MASK_BITS}", 1 << (len(keys) % MASK_BITS)
        keys.append(prefix)
        lines: list[str] = []
        for line in self.lines[start:]:
            lines.append(line)
            code = line.lstrip()
            indent = line[:len(line) - len(code)]
            if code.startswith("append("):
                lines.append(f"{indent}{mask} += {bit}")
            elif code.startswith("written_clean(parts,"):  # it may or may not have added the part
                lines += [f"{indent}if parts[-1].startswith({prefix!r}):", f"{indent}    {mask} += {bit}"]
        self.lines[start:] = lines

    def needed(self, prefix: str, keys: list[str]) -> str | None:
        """When a derived field need not be computed: the test, on the masks of the fields
        written before it (``keys``), that some rule reading it may still be able, as far as
        those fields tell (None: always computed). A rule lacking a field it requires is not
        able whatever comes after, so the field would be left out (`guards.kept_fields`), and
        no rule that requires it could fire: skipping it changes no text."""
        live = self.plan.live
        if live is None:
            return None
        sendable = set(keys) | {p for p, _, _ in self.plan.computed}
        bit = {key: k for k, key in enumerate(keys)}
        needs: set[frozenset[int]] = set()  # each reader's fields written so far, by bit
        for required in live.required:
            if prefix not in live.reads[required] or not required <= sendable:
                continue  # not a reader, or never able
            before = frozenset(bit[key] for key in required if key in bit)
            if not before:
                return None  # a reader nothing written so far rules out
            needs.add(before)
        tests: list[str] = []
        for before in sorted(needs, key=sorted):
            if any(other < before for other in needs):
                continue  # another reader needs less
            masks: dict[int, int] = {}
            for k in before:
                masks[k // MASK_BITS] = masks.get(k // MASK_BITS, 0) | 1 << (k % MASK_BITS)
            tests.append(" and ".join(f"(m{j} & {m}) == {m}" for j, m in sorted(masks.items())))
        return " or ".join(f"({t})" for t in tests) or "False"

    @contextlib.contextmanager
    def only_if(self, test: str | None) -> Iterator[None]:
        """Around a block of lines: with ``test``, the block runs only when it holds."""
        start = len(self.lines)
        yield
        if test is not None:
            self.lines[start:] = [f"    if {test}:", *("    " + line for line in self.lines[start:])]

    def number(self, name: str, prefix: str, report: bool, classes: Classes) -> None:
        emit = self.lines.append
        v = self.read(name)
        emit(f"    if {v} is None:")
        emit(f"        miss({name!r})" if report else "        pass")
        if classes is not None:  # its class's text, or nothing (`classes`)
            self.classed(v, prefix, classes, "    ", "elif")
        else:
            emit(f"    elif type({v}) is int and {-EXACT_INT} <= {v} <= {EXACT_INT}:")
            emit(f"        append(f'{_braces(prefix)}{{{v}}}')")
            emit(f"    elif type({v}) is float and -1e309 < {v} < 1e309:")
            emit(f"        t = f'{{{v}!r}}'")
            emit("        if 'e' in t and '.' not in t:")
            emit("            t = t.replace('e', '.0e')")
            emit(f"        append({prefix!r} + t)")
        emit("    else:")
        tail = "" if classes is None else f", {self.name_of(classes, 'classes')}"
        emit(f"        written_clean(parts, missing, {name!r}, {v}, {prefix!r}, 'number', {report!r}{tail})")

    def classed(self, v: str, prefix: str, classes: tuple[tuple[str | None, int | float | None, str | None], ...],
                indent: str, keyword: str) -> None:
        """The branches (the first opened by ``keyword``: ``if`` or ``elif``) that send a finite
        float's or an exact int's class text (`chain`); any other value falls past them."""
        emit = self.lines.append
        emit(f"{indent}{keyword} type({v}) is float and -1e309 < {v} < 1e309:")
        self.chain(v, prefix, classes, indent + "    ", as_float=True)
        emit(f"{indent}elif type({v}) is int and {-EXACT_INT} <= {v} <= {EXACT_INT}:")
        self.chain(v, prefix, classes, indent + "    ")

    def chain(self, v: str, prefix: str, classes: tuple[tuple[str | None, int | float | None, str | None], ...],
              indent: str, as_float: bool = False) -> None:
        """Lines that append the text of the class of the plain number in ``v`` (`classes.classify`).
        ``as_float``: ``v`` holds a float, so the constants are written as floats (the same
        values, every one exact: `classes.exact_constant`), which Python compares faster."""
        emit = self.lines.append
        for k, (op, const, text) in enumerate(classes):
            if op is None:
                emit(f"{indent}else:" if k else f"{indent}if True:")
            else:
                assert const is not None
                emit(f"{indent}{'elif' if k else 'if'} {v} {op} {_literal(float(const) if as_float else const)}:")
            emit(f"{indent}    append({prefix + text!r})" if text is not None else f"{indent}    pass")

    def boolean(self, name: str, true: str | None, false: str | None, report: bool) -> None:
        emit = self.lines.append
        v = self.read(name)
        # a flag sent only when true (a list hit, a risk signal) is most often false: that test first
        first, second = ((False, false), (True, true)) if false is None else ((True, true), (False, false))
        for k, (value, member) in enumerate((first, second)):
            emit(f"    {'elif' if k else 'if'} {v} is {value}:")
            emit(f"        append({member!r})" if member is not None else "        pass")
        emit("    else:")
        emit(f"        t = clean({v}, 'bool')")
        emit("        if t is None:")
        emit(f"            miss({name!r})" if report else "            pass")
        emit("        elif t:")
        emit(f"            append({true!r})" if true is not None else "            pass")
        emit("        else:")
        emit(f"            append({false!r})" if false is not None else "            pass")

    def string(self, name: str, prefix: str, sent: frozenset[Any] | None, report: bool) -> None:
        emit = self.lines.append
        v = self.read(name)
        test = "True" if sent is None else f"t in {self.name_of(sent, 'sent')}"
        emit(f"    if type({v}) is str:")
        emit(f"        t = {v}")
        emit(f"        if {test}:")
        emit(f"            append({prefix!r} + encode_str(t))")
        emit(f"    elif {v} is None:")
        emit(f"        miss({name!r})" if report else "        pass")
        emit("    else:")
        emit(f"        t = clean({v}, 'string')")
        emit("        if t is None:")
        emit(f"            miss({name!r})" if report else "            pass")
        emit(f"        elif {test}:")
        emit(f"            append({prefix!r} + json_value(t))")

    def unsent(self, name: str, dtype: str | None, indent: str = "    ") -> None:
        """Report ``name`` missing when its value is absent or unreadable, and send nothing."""
        emit = self.lines.append
        v = self.read(name)
        emit(f"{indent}if {v} is None:")
        emit(f"{indent}    miss({name!r})")
        if dtype == "number":
            emit(f"{indent}elif not ((type({v}) is int and {-FLOAT_MAX!r} <= {v} <= {FLOAT_MAX!r})"
                 f" or (type({v}) is float and -1e309 < {v} < 1e309)) and clean({v}, 'number') is None:")
        elif dtype == "bool":
            emit(f"{indent}elif {v} is not True and {v} is not False and clean({v}, 'bool') is None:")
        else:
            emit(f"{indent}elif clean({v}, {dtype!r}) is None:")
        emit(f"{indent}    miss({name!r})")

    def unguarded(self) -> None:
        """When every guard is a feature and each is None, no guard can be sent (`guards`):
        only report the missing features, in the order the whole writer would, and
        return None, skipping the formatting of every other field."""
        plan = self.plan
        fields: list[tuple[str, str, str | None, bool]] = [(n, p, "number", r) for n, p, r, _ in plan.numbers]
        fields += [(n, (t or f or "")[:-4 if t else -5], "bool", r) for n, t, f, r in plan.bools]
        fields += [(n, p, "string", r) for n, p, _, r in plan.strings] + [(n, p, d, r) for n, p, d, r in plan.others]
        name_of = {p: n for n, p, _, _ in fields}
        if not plan.guards or not all(g in name_of for g in plan.guards):
            return
        emit = self.lines.append
        emit(f"    if {' and '.join(f'{self.read(name_of[g])} is None' for g in plan.guards)}:")
        for name, _, dtype, report in fields:
            if report:
                self.unsent(name, dtype, "        ")
        for name, dtype in plan.unsent:
            self.unsent(name, dtype, "        ")
        emit("        return None")

    def computed(self, prefix: str, fn: Any, classes: Classes) -> None:
        emit = self.lines.append
        expr = self.exprs.get(prefix)
        if expr is None or not _inlinable(expr, self.dtypes):
            emit(f"    t = {self.name_of(fn, 'derived')}(features)")
            if classes is None:
                emit("    if t is not None:")
                emit(f"        append({prefix!r} + json_value(t))")
                return
            emit("    if t is None:")
            emit("        pass")
            emit("    elif plain_number(t):")
            emit(f"        t = classify(t, {self.name_of(classes, 'classes')})")
            emit("        if t is not None:")
            emit(f"            append({prefix!r} + t)")
            emit("    else:")
            emit(f"        append({prefix!r} + json_value(t))")
            return
        result = self.value(expr, "    ")
        emit(f"    if {result} is not None:")
        if classes is not None:  # its class's text, or nothing (`classes`)
            self.classed(result, prefix, classes, "        ", "if")
        else:
            emit(f"        if type({result}) is float:")
            emit(f"            t = repr({result})")
            emit("            if 'e' in t and '.' not in t:")
            emit("                t = t.replace('e', '.0e')")
            emit(f"            append({prefix!r} + t)")
            emit(f"        elif type({result}) is int and {-EXACT_INT} <= {result} <= {EXACT_INT}:")
            emit(f"            append({prefix!r} + str({result}))")
        emit("        else:")
        emit(f"            append({prefix!r} + json_value({result}))")

    def value(self, v: Value, indent: str) -> str:
        """Lines that leave ``v``'s value (None when missing) in a temp, and the temp's
        name (a constant's literal instead): the same steps as `predicates.compile_value`'s
        closures."""
        emit = self.lines.append
        if isinstance(v, Const):
            assert isinstance(v.value, int | float)  # `_inlinable`: a plain int or a finite float
            return _literal(v.value)
        out = self.temp()
        if isinstance(v, Feature):
            x = self.read(v.name)
            # `predicates._number_reader`: a plain int within a double's range or a finite float as it is
            emit(f"{indent}{out} = {x}")
            emit(f"{indent}if {x} is not None and not ((type({x}) is int and {-FLOAT_MAX!r} <= {x} <= {FLOAT_MAX!r})"
                 f" or (type({x}) is float and -1e309 < {x} < 1e309)):")
            emit(f"{indent}    {out} = clean({x}, 'number')")
        else:
            assert isinstance(v, Arith)
            a = self.value(v.left, indent)
            emit(f"{indent}{out} = None")
            emit(f"{indent}if {a} is not None:" if not isinstance(v.left, Const) else f"{indent}if True:")
            inner = indent + "    "
            b = self.value(v.right, inner)
            guard = f"{b} is not None" if isinstance(v.right, Feature | Arith) else "True"
            guard += f" and {b} != 0" if v.op == "/" else ""
            emit(f"{inner}if {guard}:")
            # `predicates.finite`, inline
            emit(f"{inner}    {out} = {a} {v.op} {b}")
            emit(f"{inner}    if type({out}) is float:")
            emit(f"{inner}        if not -1e309 < {out} < 1e309:")
            emit(f"{inner}            {out} = None")
            emit(f"{inner}    elif not {-FLOAT_MAX!r} <= {out} <= {FLOAT_MAX!r}:")
            emit(f"{inner}        {out} = None")
        return out


def _inlinable(v: Value, dtypes: Mapping[str, str]) -> bool:
    """Whether `_Writer.value` writes ``v`` inline: arithmetic of number features and
    int or finite float constants (what the type checker lets arithmetic read)."""
    if isinstance(v, Const):  # its repr is then a literal of the same value and type
        value = v.value
        return type(value) is int or (type(value) is float and math.isfinite(value))
    if isinstance(v, Feature):
        return dtypes.get(v.name) == "number"
    if isinstance(v, Arith):
        return v.op in _ARITH_OPS and _inlinable(v.left, dtypes) and _inlinable(v.right, dtypes)
    return False


def _braces(text: str) -> str:
    """``text`` as it must appear inside an f-string literal."""
    return text.replace("{", "{{").replace("}", "}}")


def _leaf_names(v: Value) -> list[str]:
    if isinstance(v, Feature):
        return [v.name]
    if isinstance(v, Arith):
        return _leaf_names(v.left) + _leaf_names(v.right)
    return []


def _literal(value: int | float) -> str:
    """A number constant as Python source that evaluates to the same value and type."""
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


