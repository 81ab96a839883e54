"""JSON in and out of the service with orjson (the decision path parses and writes
JSON several times: request, response, decision record, audit entry; see
docs/benchmarks.md). Non-JSON values (datetimes, sets, tuples) are rendered, not refused,
because audit records must never fail to write."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; non-string keys are allowed, NaN becomes null.

    orjson's OPT_NON_STR_KEYS makes every dict slower, and the service's dicts have
    string keys: it is only the retry."""
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError:
        try:
            return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # an integer past 64 bits (a caller's value in a dry-run, say)
            return json.dumps(_plain(value), default=_default, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    """`value` with string keys and non-finite floats as null: what orjson's options give,
    for the standard library's encoder (which writes integers of any size)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError (orjson.JSONDecodeError) on malformed input."""
    return orjson.loads(data)
