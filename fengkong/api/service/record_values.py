"""How a decision record writes single values compactly: times as integers, floats that
are whole numbers or whole hundredths as integers (with a bitmap to read them back), the
latency in whole microseconds. Part of the record's stored format (`records`): a change
here must keep reading what earlier code wrote within the records' TTL.

A module of its own so that the record's layout (`records`) and these value codecs can
each be read whole."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


OFFSETS = 4096  # an event's UTC offset in minutes, +2048, is the low 12 bits of `when_code`


#: texts of whole seconds (`when_code`'s text without its fraction) -> their code, or the text
#: when it has none: events of one second share it, and parsing and formatting a time cost
#: more than the rest of a record's items together
_SECONDS: dict[str, int | str] = {}


def when_code(text: str) -> int | str:
    """An event's ``occurred_at`` as one integer (microseconds since the epoch x 4096 +
    the UTC offset in minutes + 2048: 9 bytes where the text takes 26-33) when `occurred_text`
    gives back the same text; else the text as it is.

    A text of the form ``<second>.<6 digits><offset>`` (or without the fraction) is its
    second's code (`_whole_code`, found once per second and offset) plus its microseconds:
    the fraction, 6 ASCII digits not all zero, is exactly what ``isoformat`` writes of them.
    The last text asked about is answered again without a look (the record's event and the
    case item's time ask about one text)."""
    global _last_when
    last = _last_when
    if last[0] is text:
        return last[1]
    code = _coded(text)
    _last_when = (text, code)
    return code


#: the text `when_code` answered last, and its answer
_last_when: tuple[str, int | str] = ("", "")


def _coded(text: str) -> int | str:
    n = len(text)
    if n == 32 and text[19] == ".":
        digits = text[20:26]
        head = text[:19] + text[26:]
        if not (digits.isdigit() and digits.isascii()) or digits == "000000":
            return _when_code(text)
    elif n == 25:
        digits, head = "", text
    else:
        return _when_code(text)
    code = _SECONDS.get(head)
    if code is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        code = _SECONDS[head] = _when_code(head)
    if not isinstance(code, int):
        return text
    if digits:
        code += int(digits) * OFFSETS
    return code if code < 2 ** 64 else text


def _when_code(text: str) -> int | str:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    offset = at.utcoffset()
    if offset is None or offset.seconds % 60 or offset.microseconds:  # `occurred_text` keeps whole minutes
        return text
    minutes = offset.days * 1440 + offset.seconds // 60
    code = micros_of(at) * OFFSETS + minutes + 2048
    # `occurred_text(code)` is this instant at this offset: the same text as `at`'s, formatted once
    return code if 0 <= code < 2 ** 64 and at.isoformat() == text else text


def occurred_text(code: int) -> str:
    micros, minutes = divmod(code, OFFSETS)
    zone = timezone(timedelta(minutes=minutes - 2048))
    return (_EPOCH + timedelta(microseconds=micros)).astimezone(zone).isoformat()


def micros(text: str) -> int:
    return micros_of(datetime.fromisoformat(text))


#: a second as `decided_micros` takes it (ASCII digits: ``\\d`` takes others too)
_SECOND = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
#: the second `decided_micros` read last, and its microseconds since the epoch
_decided_second: tuple[str, int] = ("", 0)


def decided_micros(text: str) -> int | None:
    """Microseconds since the epoch of a decision's ``decided_at`` when it is of the form
    ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (what `iso_micros` gives back), else None. Its
    second is parsed once, for the decisions of that second, and the fraction added."""
    global _decided_second
    if len(text) != 32 or text[19] != "." or text[26:] != "+00:00":
        return None
    digits = text[20:26]
    if not (digits.isdigit() and digits.isascii()):
        return None
    second = text[:19]
    if second != _decided_second[0]:
        if not _SECOND.fullmatch(second):
            return None
        try:
            at = datetime.fromisoformat(second + "+00:00")
        except ValueError:
            return None
        _decided_second = (second, micros_of(at))
    return _decided_second[1] + int(digits)


#: the second `decided_now` wrote last: its microseconds since the epoch and its text up to the fraction
_now_second: tuple[int, str] = (-(10 ** 6), "")
#: the text `decided_now` gave last and its microseconds: what `decided_code` answers without parsing it
_last_decided: tuple[str, int] = ("", 0)


def decided_now() -> str:
    """Now as a decision's ``decided_at``: UTC, ISO 8601 with microseconds (the clock read
    and floored as `fengkong.features.change_audit.utc_now_iso` reads it, the date and time
    formatted once per second), remembered with its microseconds so that the record's
    encoder (`decided_code`) does not parse the text it was just given back."""
    global _now_second, _last_decided
    micros = time.time_ns() // 1000
    start, head = _now_second
    fraction = micros - start
    if not 0 <= fraction < 1_000_000:
        start = micros - micros % 1_000_000
        head = iso_micros(start)[:20]  # "YYYY-MM-DDTHH:MM:SS."
        _now_second = (start, head)
        fraction = micros - start
    text = f"{head}{fraction:06d}+00:00"
    _last_decided = (text, micros)
    return text


def micros_of(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def iso_micros(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat(timespec="microseconds")


_WHOLE = float(2 ** 53)  # past this a float's whole value is not exact, and int() would widen it


def scaled(values: list[Any]) -> list[bytes] | None:
    """Replace in `values` each float that is a whole number, or a whole number of
    hundredths, by that integer, and say which were: [whole bitmap, hundredths bitmap]
    (bit i = values[i]; little-endian bytes), or None when none was. -0.0, NaN and
    infinities stay floats; a hundredths value is one that `n / 100` gives back exactly."""
    whole = cents = 0
    for i, v in enumerate(values):
        if type(v) is not float or not -_WHOLE < v < _WHOLE:
            continue
        if v.is_integer():
            if v or math.copysign(1.0, v) > 0:
                values[i] = int(v)
                whole |= 1 << i
        else:
            n = round(v * 100)
            if n / 100 == v:
                values[i] = n
                cents |= 1 << i
    if not (whole or cents):
        return None
    return [whole.to_bytes((whole.bit_length() + 7) // 8, "little"),
            cents.to_bytes((cents.bit_length() + 7) // 8, "little")]


def unscaled(values: list[Any], scales: Any) -> list[Any]:
    """`values` with the floats `scaled` stored as integers made floats again."""
    if not scales:
        return values
    whole, cents = (int.from_bytes(b, "little") for b in scales)
    i = 0
    while whole:
        if whole & 1:
            values[i] = float(values[i])
        whole >>= 1
        i += 1
    i = 0
    while cents:
        if cents & 1:
            values[i] = values[i] / 100
        cents >>= 1
        i += 1
    return values


def thousandths(latency: Any) -> Any:
    """A deflated record's ``latency_ms`` (rounded to the microsecond by the service): a
    float of whole thousandths as that integer (3 to 5 bytes where a float's 9 do not
    deflate), another float as it is, anything else in a list (`latency_of` reads it back)."""
    if type(latency) is float:
        n = round(latency * 1000) if -2.0 ** 31 < latency < 2.0 ** 31 else None
        return n if n is not None and n / 1000 == latency and (n or math.copysign(1.0, latency) > 0) else latency
    return [latency]


def latency_of(stored: Any) -> Any:
    if type(stored) is int:
        return stored / 1000
    return stored[0] if type(stored) is list else stored


def decided_code(decided_at: Any) -> Any:
    """``decided_at`` as an integer of microseconds where `iso_micros` gives its text back
    (the text `decided_now` gave last: its microseconds, known)."""
    if type(decided_at) is str:
        last = _last_decided
        if last[0] is decided_at:
            return last[1]
        code = decided_micros(decided_at)
        if code is not None:
            return code
    return decided_at


def id_bytes(decision_id: Any) -> Any:
    """A decision id ``d_`` + 24 lowercase hex digits as its 12 bytes; another id as it is."""
    if type(decision_id) is str and len(decision_id) == 26 and decision_id[:2] == "d_":
        digits = decision_id[2:]
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            return decision_id
        if raw.hex() == digits:  # lowercase, no spaces: what decoding gives back
            return raw
    return decision_id
