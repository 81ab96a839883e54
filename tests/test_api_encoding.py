"""The service's JSON writer: string keys take orjson's fast path, anything else
must still be written (audit records never fail to write)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from decimal import Decimal

from fengkong.api.encoding import dumps


def test_non_string_keys_nested_anywhere_are_written_as_strings():
    value = {"a": 1, "nested": [{"x": {7: "seven", 2.5: None, True: "yes"}}]}
    assert json.loads(dumps(value)) == {"a": 1, "nested": [{"x": {"7": "seven", "2.5": None, "true": "yes"}}]}


def test_values_json_lacks_are_rendered_not_refused():
    at = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
    out = json.loads(dumps({"set": {3}, "tuple": (1, 2), "when": at, "money": Decimal("1.10"), "nan": math.nan}))
    assert out == {"set": [3], "tuple": [1, 2], "when": at.isoformat(), "money": "1.10", "nan": None}


def test_string_keyed_output_is_what_the_standard_library_writes():
    value = {"decision": "allow", "score": 40, "features": {"merchant.sum_24h": 1.5, "card.bin": None},
             "reasons": [{"description": "网银充值", "values": {"user.is_new_device": True}}]}
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_integers_past_64_bits_are_written_not_refused():
    """A caller's huge integer (a dry-run feature, say) must not make the answer or the audit
    record fail to write: written exactly, with NaN still null and keys still strings."""
    import json as stdlib_json

    from fengkong.api.encoding import dumps

    value = {"event.amount": 2**64 + 1, "neg": -(2**70), "nan": float("nan"), 7: ("a", 2**65), "s": {1}}
    assert stdlib_json.loads(dumps(value)) == {"event.amount": 2**64 + 1, "neg": -(2**70), "nan": None,
                                               "7": ["a", 2**65], "s": [1]}
