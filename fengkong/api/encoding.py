"""JSON in and out of the service with orjson (the decision path parses and writes
JSON several times: request, response, decision record, audit entry; see
docs/benchmarks.md). Non-JSON values (datetimes, sets, tuples) are rendered, not refused,
because audit records must never fail to write."""

from __future__ import annotations

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
        return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError (orjson.JSONDecodeError) on malformed input."""
    return orjson.loads(data)
