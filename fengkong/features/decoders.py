"""How the feature script's reply values become raw values: one decoder per kind of value.

Each op (`fengkong.features.ops`) names, per reply value, the entry of `DECODERS` that
reads it. A decoder says it twice: as a converter of a run of values (`Op.decode`, the
debugging view `FeatureResult.raw`) and as a Python expression of one raw value's reply
values (`INLINE`), which `fengkong.features.plan_code` writes into each plan's reply
reader, so that the decision path runs no Python call per kind or per value.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from fengkong.features import definitions as d

_SCALE = d.MINOR_PER_MAJOR


# -- decoding reply values ------------------------------------------------------------------
# Each decoder converts all the reply values of its kind in an event at once (one call per
# kind, not per value). Lua's false is a missing value: None.
_INT_ONLY = {int}
_SCALES = itertools.repeat(_SCALE)
_ONES = itertools.repeat(1)


def _ints(vals: Sequence[Any]) -> Sequence[Any]:
    # counts arrive as MessagePack integers: checking the types is cheaper than converting
    return vals if set(map(type, vals)) == _INT_ONLY else list(map(int, vals))


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


def _recent(vals: Sequence[Any]) -> list[Any]:
    # how many amounts were ever written, then the ring: the first min(n, size) slots hold them
    width = 1 + d.RECENT_AMOUNTS_SIZE
    out: list[Any] = []
    for at in range(0, len(vals), width):
        n = int(vals[at])
        out.append(tuple(map(int, vals[at + 1:at + 1 + min(n, width - 1)])))
    return out


class Decoder(NamedTuple):
    """How reply values of one kind become raw values: the converter of a run of them,
    and how many reply values one raw value takes."""

    convert: Callable[[Sequence[Any]], Iterable[Any]]
    width: int


DECODERS: dict[str, Decoder] = {
    "int": Decoder(_ints, 1),
    "scaled": Decoder(_scaled, 1),  # minor units to major
    "optional": Decoder(_optional, 1),
    "optional_text": Decoder(_optional, 1),  # as optional; a kind of its own for an input (plan reads kinds apart)
    "optional_int": Decoder(_optional_ints, 1),
    "optional_float": Decoder(_optional_floats, 1),
    "optional_scaled": Decoder(_optional_scaled, 1),
    "is_one": Decoder(_is_one, 1),
    "optional_is_one": Decoder(_optional_is_one, 1),
    "moments": Decoder(_moments, 3),  # (n, mean, m2)
    "recent": Decoder(_recent, 1 + d.RECENT_AMOUNTS_SIZE),  # the last amounts (minor units), a tuple
}


#: every int of at most this size is a float exactly (53-bit significand)
_EXACT = 2 ** 53

#: `DECODERS` as one Python expression per kind: ``{0}``, ``{1}``... are the raw value's
#: reply values (locals of the generated reader), ``{s}`` the whole reply and ``{at}`` the
#: position of ``{0}`` in it. Each gives what the kind's converter gives for one raw value,
#: value for value and type for type (tests/test_features_hot_path.py holds the two equal).
INLINE: dict[str, str] = {
    "int": "{0} if type({0}) is int else int({0})",  # `_ints`, one value at a time
    "scaled": f"{{0}} / {_SCALE!r}",
    "optional": "None if {0} is False else {0}",
    "optional_text": "None if {0} is False else {0}",
    # an int that a float holds exactly is int(float(v)) already: no float made and read back
    "optional_int": f"None if {{0}} is False else {{0}} if type({{0}}) is int and -{_EXACT} <= {{0}} <= {_EXACT} "
                    "else int(float({0}))",
    "optional_float": "None if {0} is False else float({0})",
    "optional_scaled": f"None if {{0}} is False else {{0}} / {_SCALE!r}",
    "is_one": "{0} == 1",
    "optional_is_one": "None if {0} is False else {0} == 1",
    # int() of an int and float() of a float are the value itself: called only for another type
    "moments": "({0} if type({0}) is int else int({0}), {1} if type({1}) is float else float({1}), "
               "{2} if type({2}) is float else float({2}))",
    "recent": f"tuple(map(int, {{s}}[{{at}} + 1:{{at}} + 1 + min(int({{0}}), {d.RECENT_AMOUNTS_SIZE})]))",
}
