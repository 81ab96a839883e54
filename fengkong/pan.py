"""Card numbers (PANs) and over-deep JSON, found without parsing or recursion.

Split out of `fengkong.events` (which re-exports every name here) to keep each module
short; the rules are in that module's docstring. It imports nothing from fengkong.
"""

from __future__ import annotations

import array
import itertools
import re
from typing import Any

#: Deepest nesting accepted (the event itself nests 2 deep: event -> card).
MAX_DEPTH = 32
#: 13 or more digits (any script), consecutive ones separated by at most three separators.
_PAN_RUN = re.compile(r"(?<!\d)\d(?:[ \-._/]{0,3}+\d){12,}")
_DIGIT_GROUP = re.compile(r"\d+")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
#: ASCII digits become ``0`` and ``[`` becomes ``{`` (every other byte stays; `scan_text` counts
#: the brackets in the copy); `_PAN_RUN`'s separators are deleted
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789[", b"000000000{")
_RUN_SEPARATORS = b" -._/"
_THIRTEEN_DIGITS = b"0" * 13
#: ASCII digits become ``0`` and `_PAN_RUN`'s separators ``-`` (every other byte stays)
_DIGITS_AND_SEPARATORS = bytes.maketrans(b"0123456789 -._/", b"0000000000-----")
#: in such a copy, what a card number written in groups needs (`_run_holds_pan`): a group of
#: exactly 4 digits, 1 to 3 separators, then a group of 4 digits or more
_GROUPED_START = re.compile(rb"0000-(?<!00000-)-{0,2}0000")
#: a stretch of ASCII digits and `_PAN_RUN`'s separators, from a digit on, long enough to hold 13 digits
_DIGIT_STRETCH = re.compile(r"[0-9][0-9 \-._/]{12,}")
#: what a run needs to hold a PAN (`_run_holds_pan`): a group of exactly 4 digits (a grouped
#: number's first) or of 13 or more (one group alone), digits of any script as `_PAN_RUN`'s
_MAY_HOLD = re.compile(r"(?<!\d)\d{4}(?!\d)|\d{13}")


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit test over ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _glued(ch: str) -> bool:
    """A neighbour that makes digits part of a word (``x4111...``): an ASCII letter or digit."""
    return ch.isascii() and ch.isalnum()


def _run_holds_pan(text: str, begin: int, end: int) -> bool:
    """Whether the run ``text[begin:end]`` (digit groups joined by separators) holds a PAN.

    A PAN here is 13 to 19 digits passing Luhn, either one group alone, or groups
    written the way card numbers are grouped: a first group of 4, middle groups of
    4 or 6, a last group of 1 to 6 (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4). That shape is
    what keeps date-and-sequence ids (``ORD-20261125-00012345``: 8-8, which passes
    Luhn one time in ten) from being taken for card numbers. A span may not start
    or end glued to an ASCII letter or digit, so hex ids are not card numbers."""
    groups = _DIGIT_GROUP.findall(text, begin, end)
    if not text[begin:end].isascii():
        groups = ["".join(str(int(c)) for c in g) for g in groups]
    glued_first = begin > 0 and _glued(text[begin - 1])
    glued_last = end < len(text) and _glued(text[end])
    last = len(groups) - 1
    for i, group in enumerate(groups):
        if i == 0 and glued_first:
            continue
        if 13 <= len(group) <= 19:
            if (i < last or not glued_last) and luhn_ok(group):
                return True
            continue
        if len(group) != 4:
            continue
        digits = group
        for j in range(i + 1, last + 1):
            size = len(groups[j])
            if size > 6 or len(digits) + size > 19:
                break
            digits += groups[j]
            if len(digits) >= 13 and (j < last or not glued_last) and luhn_ok(digits):
                return True
            if size not in (4, 6):  # only a last group may have another size
                break
    return False


def _holds_pan(text: str, begin: int, end: int) -> bool:
    """Whether a `_PAN_RUN` of ``text[begin:end]`` holds a PAN (`_run_holds_pan`), runs without
    a group that could start or be one (`_MAY_HOLD`) passed over: a value's test in
    `looks_like_pan`, and a stretch's in `text_shows_no_pan`."""
    run = _PAN_RUN.search(text, begin, end)
    while run is not None:
        start, stop = run.span()
        if _MAY_HOLD.search(text, start, stop) is not None and _run_holds_pan(text, start, stop):
            return True
        run = _PAN_RUN.search(text, stop, end)
    return False


def looks_like_pan(value: Any) -> bool:
    """A card number written anywhere in a string, or an integer that is one (see the module doc)."""
    if isinstance(value, str):
        if len(value) < 13:  # fewer than 13 characters cannot hold 13 digits
            return False
        return _holds_pan(value, 0, len(value))
    if isinstance(value, int) and not isinstance(value, bool):
        if -10**12 < value < 10**12:
            return False
        digits = str(abs(value))
        return 13 <= len(digits) <= 19 and luhn_ok(digits)
    return False


def text_shows_no_pan(raw: bytes) -> bool:
    """True when the JSON text `raw` cannot hold a card number in any value, key or
    integer; False when it may (then look, with `fengkong.events.find_pan`).

    A PAN needs a `_PAN_RUN`: 13 or more digits with nothing but its separators
    between them. In ASCII text without escapes every string and number of the
    document is written out as it is, so such a run shows as 13 adjacent digits once
    the separators are deleted. Non-ASCII text (digits of other scripts) and escapes
    (``\\u0034`` is a 4) answer False.

    Text with such a run (an id with a date and a sequence number, a millisecond
    timestamp) is judged run by run, as `looks_like_pan` judges a value: a string or
    number without escapes is its own text, and the quotes and punctuation around it
    end a run where the value ends. One regular-expression pass finds the stretches to
    judge, where the walk over the values would judge every one; it scans only the part
    of the text between the first and the last 13 digits the separator-free copy shows
    (a stretch's place in the text is its place in the copy plus at most the separators
    deleted), not every digit of the body's times, amounts and addresses; and only when
    that part, its separators kept, shows 13 digits in a row or a group of 4 followed by
    a group of 4 or more (what `_run_holds_pan` needs: a card number's first group is 4
    digits, its second 4 or 6), so long ids of other shapes are passed at once."""
    return _shows_no_pan(raw, raw.translate(_DIGITS_AS_ZERO, _RUN_SEPARATORS))


def _shows_no_pan(raw: bytes, digits: bytes) -> bool:
    """`text_shows_no_pan` of `raw`, given its copy ``raw.translate(_DIGITS_AS_ZERO, _RUN_SEPARATORS)``."""
    if not raw.isascii() or raw.find(b"\\") >= 0:  # (``in`` on bytes tries the operand as an integer first:
        return False                                  # a TypeError raised and cleared per call)
    first = digits.find(_THIRTEEN_DIGITS)
    if first < 0:
        return True
    # the last such run's last digit is at ``rfind + 12`` in the copy, so at most that
    # plus the separators deleted (``len(raw) - len(digits)``) in the text
    last = digits.rfind(_THIRTEEN_DIGITS) + 13 + len(raw) - len(digits)
    # with its separators kept, a PAN there shows as 13 digits in a row or as `_GROUPED_START`
    # (a date-and-sequence id or a pid and an epoch shows neither): only then is it judged
    span = raw[first:last].translate(_DIGITS_AND_SEPARATORS)
    if span.find(_THIRTEEN_DIGITS) < 0 and _GROUPED_START.search(span) is None:
        return True
    text = raw.decode("ascii")
    for stretch in _DIGIT_STRETCH.finditer(text, first, last):
        begin, end = stretch.span()
        if len(raw[begin:end].translate(None, _RUN_SEPARATORS)) < 13:  # its digits (bytes: a C table)
            continue
        if _holds_pan(text, begin, end):
            return False
    return True


def nesting_problem(raw: bytes, limit: int = MAX_DEPTH) -> str | None:
    """Why raw JSON bytes nest too deep to be read, or None; a linear scan that never recurses.

    Meant to run before the JSON parser: brackets inside strings do not count. A body
    with no more than `limit` brackets in all is passed at once (two ``count`` calls)."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return None
    return _nesting_problem(raw, limit)


def scan_text(raw: bytes, limit: int = MAX_DEPTH) -> tuple[str | None, bool]:
    """`nesting_problem` and `text_shows_no_pan` of the JSON bytes `raw` at once: one copy of
    the text (`_DIGITS_AS_ZERO`) serves the bracket count of the one and the digit search of
    the other. Both are done before any parser sees the text."""
    digits = raw.translate(_DIGITS_AS_ZERO, _RUN_SEPARATORS)
    too_deep = None if digits.count(b"{") <= limit else _nesting_problem(raw, limit)
    return too_deep, _shows_no_pan(raw, digits)


def _nesting_problem(raw: bytes, limit: int) -> str | None:
    """`nesting_problem` past its bracket count."""
    steps = array.array("b", _JSON_STRING.sub(b"", raw).translate(_BRACKET_STEP, _NOT_BRACKET))
    if max(itertools.accumulate(steps), default=0) > limit:
        return f"nests deeper than {limit} levels of objects and arrays"
    return None
