"""Identifiers: new decision ids, and the shape an id from a caller must have."""

from __future__ import annotations

import os
import re
import time

from fengkong.events import EventRejected, looks_like_pan

ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")

_decision_ids: list[tuple[str, bytes]] = []  # (18 hex digits, their 9 bytes)
os.register_at_fork(after_in_child=_decision_ids.clear)  # a forked worker must not reuse its parent's ids
#: the hour the text was made for (hours since 1970 UTC), ``d_`` with its 6 hex digits, and their 3 bytes
_hour: tuple[int, str, bytes] = (-1, "", b"")
#: the id `new_decision_id` made last and its 12 bytes (`raw_of`)
_last: tuple[str, bytes] = ("", b"")


def new_decision_id() -> str:
    """``d_`` and 24 hex digits: the hour it is made (6 digits, hours since 1970 UTC),
    which with the next 3 names the hash that holds its pointer
    (`fengkong.api.service.pointers`), then 18 from the OS's CSPRNG, drawn 256 ids per
    system call (a system call per decision shows in the worker's CPU; see
    docs/benchmarks.md). The hour's text is made once an hour. Its bytes are remembered
    (`raw_of`): the decision's record stores them."""
    global _hour, _last
    if not _decision_ids:
        raw = os.urandom(9 * 256)
        _decision_ids.extend((raw[i:i + 9].hex(), raw[i:i + 9]) for i in range(0, len(raw), 9))
    hour = int(time.time()) // 3600
    if hour != _hour[0]:
        _hour = (hour, f"d_{hour % 0x1000000:06x}", (hour % 0x1000000).to_bytes(3, "big"))
    digits, raw = _decision_ids.pop()
    _last = (text := _hour[1] + digits, _hour[2] + raw)
    return text


def raw_of(decision_id: str) -> bytes | None:
    """The 24 hex digits' 12 bytes of the id `new_decision_id` made last when this is that very
    text (the record's encoder asks right after: nothing to decode), else None."""
    last = _last
    return last[1] if last[0] is decision_id else None


def check_id(field: str, value: str) -> str:
    """`value` if it is an id a caller may send (1-128 safe characters); `EventRejected` otherwise."""
    if not ID_RE.match(value):
        raise EventRejected(field, "must be 1-128 letters, digits or _.:@-")
    if looks_like_pan(value):  # ids become Redis key names and audit lines
        raise EventRejected(field, "looks like a full card number (PAN); send a card fingerprint instead")
    return value
