"""The change-audit record and its stream entry, shared by every writer of changes.

The service audits rules reloads, list edits and profile changes (`fengkong.api.audit`);
the nightly grading job (`fengkong.training.rescore`) audits the grades it changes. Both
write one shape to ``{prefix}:v1:audit:changes``, so the console's histories (a
merchant's grade history reads ``merchant.*`` actions) show every change alike, whoever
made it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from fengkong.features import keys


#: the second `utc_now_iso` last wrote (microseconds since the epoch at its start) and its text
#: up to the seconds' fraction (the point included)
_second: tuple[int, str] = (-(10 ** 6), "")


def utc_now_iso() -> str:
    """Now in UTC, ISO 8601 with microseconds (the audit's time format): what
    ``datetime.now(timezone.utc).isoformat(timespec="microseconds")`` gives (the clock
    read the same way, microseconds floored), with the date and time of the current second
    formatted once per second, as every decision asks for it."""
    global _second
    micros = time.time_ns() // 1000
    start, text = _second
    fraction = micros - start
    if not 0 <= fraction < 1_000_000:
        seconds = micros // 1_000_000
        start = seconds * 1_000_000
        text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (start, text)
        fraction = micros - start
    return f"{text}{fraction:06d}+00:00"


def change_record(*, actor: str, action: str, version: str | None, detail: dict[str, Any],
                  at: str | None = None) -> dict[str, Any]:
    """One change: who (`actor`), what (`action`, e.g. ``merchant.grade``), under which
    live rule-set version, when, from which process, and the action's own fields."""
    return {"at": at or utc_now_iso(), "actor": actor, "action": action, "ruleset_version": version,
            "pid": os.getpid(), **detail}


def stream_entry(key: str, maxlen: int, record_json: bytes) -> tuple[Any, ...]:
    """XADD of one ``record`` to a capped stream (approximate trimming: O(1) amortised)."""
    return ("XADD", key, "MAXLEN", "~", maxlen, "*", "record", record_json)


def changes_key(prefix: str) -> str:
    """The change-audit stream of a key prefix."""
    return keys.audit_stream(prefix, "changes")
