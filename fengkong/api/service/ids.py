"""Identifiers: new decision ids, and the shape an id from a caller must have."""

from __future__ import annotations

import os
import re
import time

from fengkong.events import EventRejected, looks_like_pan

ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")

_decision_ids: list[str] = []
os.register_at_fork(after_in_child=_decision_ids.clear)  # a forked worker must not reuse its parent's ids
#: the hour the text was made for (hours since 1970 UTC) and ``d_`` with its 6 hex digits
_hour: tuple[int, str] = (-1, "")


def new_decision_id() -> str:
    """``d_`` and 24 hex digits: the hour it is made (6 digits, hours since 1970 UTC),
    which with the next 3 names the hash that holds its pointer
    (`fengkong.api.service.pointers`), then 18 from the OS's CSPRNG, drawn 256 ids per
    system call (a system call per decision shows in the worker's CPU; see
    docs/benchmarks.md). The hour's text is made once an hour."""
    global _hour
    if not _decision_ids:
        raw = os.urandom(9 * 256).hex()
        _decision_ids.extend(raw[i:i + 18] for i in range(0, len(raw), 18))
    hour = int(time.time()) // 3600
    if hour != _hour[0]:
        _hour = (hour, f"d_{hour % 0x1000000:06x}")
    return _hour[1] + _decision_ids.pop()


def check_id(field: str, value: str) -> str:
    """`value` if it is an id a caller may send (1-128 safe characters); `EventRejected` otherwise."""
    if not ID_RE.match(value):
        raise EventRejected(field, "must be 1-128 letters, digits or _.:@-")
    if looks_like_pan(value):  # ids become Redis key names and audit lines
        raise EventRejected(field, "looks like a full card number (PAN); send a card fingerprint instead")
    return value
