"""The decision path's cheaper encodings give what the slower ones gave (issues #16/#17).

Each shortcut is compared with the plain computation it replaced, on inputs that take
its fast path and its fallback."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from fengkong.api.audit import Audit, read_entry, reference
from fengkong.api.service import record_values, records
from fengkong.api.service.decisions import _merchant_values, _picked
from fengkong.api.service.renewals import RENEW_S, Renewals
from fengkong.cases.intake import item_text
from fengkong.events import find_pan, iso_text
from fengkong.features.change_audit import utc_now_iso


def test_case_item_text_parses_to_what_the_standard_encoder_wrote():
    item = {"decision_id": "d_1", "score": 85, "risk": 0.125, "reasons": [{"id": "r", "values": {"x": 1e-7}}],
            "merchant_id": "商户-1", "card": None, "amount_minor": 2 ** 63 - 1}
    text = item_text(item)
    assert isinstance(text, str)  # the held file writes the command as JSON
    assert json.loads(text) == json.loads(json.dumps(item, separators=(",", ":"), default=str))
    big = {"amount_minor": 2 ** 70}  # past orjson's integers: the standard library's encoder
    assert json.loads(item_text(big)) == big


def test_picked_features_are_a_get_per_name_with_or_without_every_name():
    features = {"a": 1, "b": None, "c": 2.5}
    for names in [("a", "b", "c"), ("a",), (), ("a", "missing"), ("missing",)]:
        assert _picked(names, features) == {n: features.get(n) for n in names}
        assert list(_picked(names, features)) == list(names)


def _merchant_features(features: dict) -> dict:
    """The snapshot's ``features`` (`MerchantSnapshots.command` zips the two)."""
    return dict(zip(*_merchant_values(features)))


def test_merchant_features_follow_the_features_keys_when_their_shape_changes():
    one = {"card.x": 1, "merchant.a": 2, "merchant.b": None, "user.z": 3}
    assert _merchant_features(one) == {"merchant.a": 2, "merchant.b": None}
    # same count and last name, other merchant names: the cached getter misses, names found again
    other = {"card.x": 1, "merchant.c": 5, "merchant.d": 6, "user.z": 3}
    assert _merchant_features(other) == {"merchant.c": 5, "merchant.d": 6}
    assert list(_merchant_features(one)) == ["merchant.a", "merchant.b"]
    assert _merchant_features({"card.x": 1}) == {}


def test_utc_now_iso_is_the_datetime_text_of_now():
    before = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    now = utc_now_iso()
    after = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    assert before <= now <= after
    parsed = datetime.fromisoformat(now)
    assert parsed.utcoffset() == timedelta(0) and parsed.isoformat(timespec="microseconds") == now


def _when_before(text: str) -> int | str:
    """`record_values.when_code` as it was: the round trip checked by rebuilding the time from its code."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    offset = at.utcoffset()
    if offset is None:
        return text
    code = record_values.micros_of(at) * record_values.OFFSETS + offset.days * 1440 + offset.seconds // 60 + 2048
    return code if 0 <= code < 2 ** 64 and record_values.occurred_text(code) == text else text


@pytest.mark.parametrize("text", [
    "2026-11-25T09:00:00+08:00", "2026-11-25T09:00:00.250000-05:00", "2026-11-25T09:00:00.5+08:00",
    "2026-11-25T09:00:00Z", "2026-11-25T09:00:00+05:30:15", "2026-11-25T09:00:00-09:30", "2026-11-25 09:00:00+00:00",
    "2026-11-25T09:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-12:00", "not a time"])
def test_occurred_at_code_is_what_it_was(text):
    assert record_values.when_code(text) == _when_before(text)
    code = record_values.when_code(text)
    if isinstance(code, int):
        assert record_values.occurred_text(code) == text


def test_audit_entry_reads_back_as_the_reference():
    audit = Audit(prefix="t", maxlen=100, path=None)
    reason = {"id": "r.one"}
    for record in [
        {"decision_id": "d_1", "event_id": "e1", "decision": "review", "score": 40, "reasons": [reason, {"id": "r.two"}],
         "shadow": [{"id": "s"}], "ruleset_version": "v", "degraded": False, "caller": "c",
         "event": {"card": {"fingerprint": "fp"}}},
        {"decision_id": "d_2", "score": 0, "degraded": True, "event": {}},  # 0 is not False's JSON
        {"decision_id": "d_3", "score": 1.5, "degraded": None, "reasons": None, "event": {"card": None}},
    ]:
        command = audit.decision_command(record)
        assert command[:6] == ("XADD", audit.decisions_key, "MAXLEN", "~", 100, "*")
        pairs = command[6:]
        fields = {str(k).encode(): v if isinstance(v, bytes) else str(v).encode()
                  for k, v in zip(pairs[::2], pairs[1::2])}
        back = read_entry(b"1700000000000-0", fields)
        assert back is not None and back.pop("at").startswith("2023-11-14T22:13:20")
        assert back == reference(record)


def test_a_bucket_is_renewed_once_a_minute_and_again_after_a_fault():
    renewals = Renewals()
    assert renewals.due("b1", faults=0)
    assert not renewals.due("b1", faults=0)
    assert renewals.due("b2", faults=0)  # each bucket its own
    assert renewals.due("b1", faults=1)  # a Redis fault: Redis may have lost the TTL
    assert not renewals.due("b1", faults=1)
    renewals._at["b1"] -= RENEW_S  # a minute later
    assert renewals.due("b1", faults=1)


def test_iso_text_is_each_datetime_objects_own_text():
    at = datetime(2026, 11, 25, 9, tzinfo=timezone(timedelta(hours=8)))
    same_instant = at.astimezone(timezone.utc)  # equal, but another text
    assert iso_text(at) == at.isoformat()
    assert iso_text(same_instant) == same_instant.isoformat() != at.isoformat()
    assert iso_text(at) == at.isoformat()


def test_find_pan_after_the_shortcuts():
    pan = "4111 1111 1111 1111"
    assert find_pan({"issuer_country_code": "CN", "n": None, "f": 1.5, "b": True}) is None
    assert find_pan({"issuer_country_code": "CN", "card": {"note": pan}}) == "card.note"
    assert find_pan({"issuer_country_code": pan}) == "issuer_country_code"  # a clean key, a PAN value
    assert find_pan({pan: 1}) == "<key>"  # a PAN key is never remembered as clean
    assert find_pan({pan: 1}) == "<key>"
    assert find_pan({"x": (pan,)}) == "x[0]"
