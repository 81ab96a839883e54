"""Constants a rule author marks tunable, and how a tuned value goes back into the file.

A rule may say which of its numeric constants `fengkong tune` may move, and how far:

    when: user.amount_robust_z >= 3.5
    tunable:
      user.amount_robust_z: [2.5, 5]          # the constant this feature is compared with

A key names the feature compared with the constant, optionally followed by the
operator when the feature meets several constants (``"merchant.volume_ratio_today_floored
>=": [2, 5]`` in a rule that also says ``< 10``). The range must hold the current value,
so a tuned rule never leaves what its author judged sensible. `resolve` checks one entry
against the parsed condition; `substitute` gives the condition with a new value;
`rewrite_constants` changes the number in the file's own text, so the comments and the
layout of a candidate stay the author's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fengkong.engine.tree import FLIP_OP, And, Compare, Const, Expr, Feature, Not, Or, walk_atoms

_OPS = ("<=", ">=", "==", "!=", "<", ">")


@dataclass(frozen=True)
class Tunable:
    """One constant of a rule that tune may move within ``[lo, hi]``.

    ``key`` is the entry as written; ``feature`` and ``op`` (None: any operator) say
    which comparisons hold the constant; ``value`` is its current value."""

    key: str
    feature: str
    op: str | None
    value: float
    lo: float
    hi: float


def _split_key(key: str) -> tuple[str, str | None]:
    text = key.strip()
    for op in _OPS:
        if text.endswith(op):
            return text[: -len(op)].strip(), op
    return text, None


def _matches(atom: object, feature: str, op: str | None) -> bool:
    return (isinstance(atom, Compare) and isinstance(atom.left, Feature) and atom.left.name == feature
            and isinstance(atom.right, Const) and _is_number(atom.right.value) and (op is None or atom.op == op))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve(key: str, lo: float, hi: float, expr: Expr) -> Tunable:
    """The tunable constant ``key`` names in ``expr``; ValueError with the reason when
    the key names no constant, several, or a range that does not hold the current value."""
    feature, op = _split_key(key)
    if not math.isfinite(lo) or not math.isfinite(hi) or lo >= hi:
        raise ValueError(f"tunable.{key}: the range [{lo}, {hi}] must be two finite numbers, low first")
    matching = [a for a in walk_atoms(expr) if _matches(a, feature, op)]
    values = sorted({float(a.right.value) for a in matching})  # type: ignore[union-attr,arg-type]
    if not values:
        what = f"{feature} {op}" if op else feature
        raise ValueError(f"tunable.{key}: `when` compares no feature {what} with a number")
    if len(values) > 1:
        ops = sorted({a.op for a in matching})  # type: ignore[union-attr]
        numbers = ", ".join(map(format_number, values))
        raise ValueError(f"tunable.{key}: {feature} is compared with several numbers ({numbers}); "
                         f"name the operator, e.g. \"{feature} {ops[0]}\"")
    value = values[0]
    if not lo <= value <= hi:
        raise ValueError(f"tunable.{key}: the range [{format_number(lo)}, {format_number(hi)}] does not contain "
                         f"the current value {format_number(value)}")
    return Tunable(key, feature, op, value, float(lo), float(hi))


def substitute(expr: Expr, t: Tunable, new: float) -> Expr:
    """``expr`` with the constant of ``t`` replaced by ``new`` (every comparison holding it)."""
    if isinstance(expr, (And, Or)):
        return type(expr)(tuple(substitute(i, t, new) for i in expr.items))
    if isinstance(expr, Not):
        return Not(substitute(expr.item, t, new))
    if _matches(expr, t.feature, t.op) and isinstance(expr, Compare):
        return Compare(expr.op, expr.left, Const(_const(new)))
    return expr


def _const(v: float) -> int | float:
    """A value as the parser would read its text back (`format_number`): an int when whole."""
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


def format_number(v: float) -> str:
    """The shortest text of a number that reads back as the same value."""
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


# -- the file's own text ------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<feature>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<op><=|>=|==|!=|<|>)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<other>\S)
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str, int, int]]:
    return [(m.lastgroup or "", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def rewrite_constants(text: str, feature: str, op: str | None, old: float, new: float) -> str:
    """``text`` (a `when` as written in the file, over one or several lines) with every
    number compared with ``feature`` (by ``op``, or any) and equal to ``old`` written as ``new``.

    Raises ValueError when no such number is found."""
    toks = _tokens(text)
    spans: list[tuple[int, int]] = []
    for i, (kind, tok, start, end) in enumerate(toks):
        if kind != "number" or float(tok) != old:
            continue
        before = toks[i - 2: i] if i >= 2 else []
        after = toks[i + 1: i + 3]
        if len(before) == 2 and before[0][:2] == ("feature", feature) and before[1][0] == "op" \
                and (op is None or before[1][1] == op) and not _in_arithmetic(toks, i):
            spans.append((start, end))
        elif len(after) == 2 and after[1][:2] == ("feature", feature) and after[0][0] == "op" \
                and (op is None or FLIP_OP[after[0][1]] == op) and not _in_arithmetic(toks, i):
            spans.append((start, end))
    if not spans:
        raise ValueError(f"no number {format_number(old)} compared with {feature} in the text")
    out = text
    for start, end in reversed(spans):
        out = out[:start] + format_number(new) + out[end:]
    return out


def _in_arithmetic(toks: list[tuple[str, str, int, int]], i: int) -> bool:
    """A sign or an arithmetic operator next to the number: not a plain constant."""
    prev = toks[i - 1][1] if i >= 1 else ""
    nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
    return prev in ("-", "+", "*", "/") or nxt in ("*", "/", "+", "-")


__all__ = ["Tunable", "format_number", "resolve", "rewrite_constants", "substitute"]
