"""The decision path's cheaper encodings give what the slower ones gave (issues #16/#17).

Each shortcut is compared with the plain computation it replaced, on inputs that take
its fast path and its fallback."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import hiredis
import pytest

from fengkong.api.audit import ENTRY_FIELDS, Audit, read_entry, reference
from fengkong.api.service import record_event, record_values, records
from fengkong.api.service.decisions import _plain, _recorded
from fengkong.api.service.merchant_snapshots import merchant_values
from fengkong.api.service import renewals as renewals_module
from fengkong.api.service.renewals import MAX_BUCKETS, RENEW_S, Renewals
from fengkong.cases.intake import item_text
from fengkong.engine.decision import FiredRule
from fengkong.events import find_pan, iso_text
from fengkong.features import keys
from fengkong.features.change_audit import utc_now_iso


def test_case_item_text_parses_to_what_the_standard_encoder_wrote():
    item = {"decision_id": "d_1", "score": 85, "risk": 0.125, "reasons": [{"id": "r", "values": {"x": 1e-7}}],
            "merchant_id": "商户-1", "card": None, "amount_minor": 2 ** 63 - 1}
    text = item_text(item)
    assert isinstance(text, str)  # the held file writes the command as JSON
    assert json.loads(text) == json.loads(json.dumps(item, separators=(",", ":"), default=str))
    big = {"amount_minor": 2 ** 70}  # past orjson's integers: the standard library's encoder
    assert json.loads(item_text(big)) == big


def test_recorded_features_are_a_get_per_name_with_or_without_every_name():
    """The record's features as names and values: what ``{name: features.get(name)}`` over
    the rule set's non-model names, then the model outputs present, gave as a dict."""
    features = {"a": 1, "b": None, "c": 2.5, "model.txn_risk": 0.5, "model.habit_anomaly": 0.25}
    for read in [{"a", "b", "c"}, {"a"}, set(), {"a", "missing"}, {"missing"}, {"c", "model.txn_risk"}]:
        for models in (False, True):
            names, values = _recorded(frozenset(read), features, models=models)
            want = {n: features.get(n) for n in _plain(frozenset(read))}
            if models:
                want.update((k, features[k]) for k in ("model.txn_risk", "model.habit_anomaly"))
            assert dict(zip(names, values)) == want and list(names) == list(want) and len(values) == len(names)
            assert _recorded(frozenset(read), features, models=models)[0] is names  # one object: the schema's key
    names, values = _recorded(None, features, models=False)  # the rule set is gone: every feature but the models'
    assert dict(zip(names, values)) == {"a": 1, "b": None, "c": 2.5}


def test_a_record_given_its_features_apart_is_stored_and_read_as_the_whole_record():
    """`Records.encode` with the features as names and values stores what it stores of the
    whole record (`with_features` puts them back where the record has them)."""
    whole = {"kind": "decision", "body_sha256": "ab" * 32, "decision_id": "d_0123456789abcdef01234567",
             "event_id": "e-1", "decision": "allow", "score": 0, "event": {"event_id": "e-1", "ip": "10.0.0.1"},
             "features": {"event.ip": "10.0.0.1", "x": 1.5}, "shadow": [], "latency_ms": 1.0}
    apart = {k: v for k, v in whole.items() if k != "features"}
    names = tuple(whole["features"])
    assert records.with_features(apart, names, (whole["features"].values())) == whole
    assert list(records.with_features(apart, names, tuple(whole["features"].values()))) == list(whole)
    by_dict, apart_store = records.Records("p", 60), records.Records("p", 60)
    for _ in range(records.SAMPLES + 2):  # compact, then compressed: the same bytes
        one, _ = by_dict.encode(whole, ruleset=None, faults=0)
        two, commands = apart_store.encode(apart, ruleset=None, faults=0,
                                           features=(names, tuple(whole["features"].values())))
        assert one == two
    assert two[:1] == records.COMPRESSED
    back = records.decode(two, apart_store.known(records.schema_id(two)))
    assert back["features"] == whole["features"] and back["event"] == whole["event"]
    blob, _ = apart_store.encode(apart, ruleset=None, faults=0, features=(names, (2 ** 70, 1)))  # JSON only
    assert json.loads(blob)["features"] == {"event.ip": 2 ** 70, "x": 1} and list(json.loads(blob)) == list(whole)


def _merchant_features(features: dict) -> dict:
    """The snapshot's ``features`` (`MerchantSnapshots.command` zips the two)."""
    return dict(zip(*merchant_values(features)))


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
    "2026-11-25T09:00:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-12:00", "not a time",
    # the per-second path (`_SECONDS`): a fraction of 6 ASCII digits, not all zero, else the full parse
    "2026-11-25T09:00:00.000001+08:00", "2026-11-25T09:00:00.000000+08:00", "2026-11-25T09:00:00.12345a+08:00",
    "2026-11-25T09:00:00.\u0661\u0662\u0663\u0664\u0665\u0666+08:00", "2026-11-25T09:00:00. 12345+08:00",
    "2026-11-25T09:00:00.+12345+08:00", "2026-11-25T09:00:00.123456-00:00", "2026-11-25T09:00:00-00:00",
    "2026-11-25T24:00:00.123456+08:00", "2026-02-30T09:00:00.123456+08:00", "2026-11-25T09:00:00.123456+24:00",
    "2026-11-25 09:00:00.123456+08:00", "2026-11-25T09:00:00.123456Z+0800", "2026-11-25T09:00:00.1234567+08:00",
    "2026-11-25T09:00:00.999999+05:30", "9999-12-31T23:59:59.999999+14:00"])
def test_occurred_at_code_is_what_it_was(text):
    assert record_values.when_code(text) == _when_before(text)  # twice: its second may be known now
    assert record_values.when_code(text) == _when_before(text)
    code = record_values.when_code(text)
    if isinstance(code, int):
        assert record_values.occurred_text(code) == text


@pytest.mark.parametrize("text", [
    "2026-12-04T22:29:05.896275+00:00", "2026-12-04T22:29:05.000000+00:00", "2026-12-04T22:29:05.896276+00:00",
    "2026-12-04T22:29:06.000001+00:00", "2026-12-04T22:29:05+00:00", "2026-12-04T22:29:05.896275+08:00",
    "2026-12-04T22:29:05.89627Z", "2026-12-04 22:29:05.896275+00:00", "2026-12-04T22:29:05.89627 +00:00",
    "2026-13-04T22:29:05.896275+00:00", "\u0662026-12-04T22:29:05.896275+00:00", "2026-12-04T22:29:05.+96275+00:00",
    "yesterday", ""])
def test_decided_at_micros_are_kept_only_where_they_give_the_text_back(text):
    """`decided_micros` codes the texts that `iso_micros` gives back (what the decision's
    ``decided_at`` is), and no other; twice, as its second is remembered."""
    for _ in range(2):
        code = record_values.decided_micros(text)
        if code is None:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                continue
            assert record_values.iso_micros(record_values.micros_of(parsed)) != text
        else:
            assert record_values.iso_micros(code) == text
            assert code == record_values.micros_of(datetime.fromisoformat(text))


def _resp_args(command: bytes) -> list[bytes]:
    """A command as Redis reads it (RESP), back to its arguments (hiredis parses the array)."""
    reader = hiredis.Reader()
    reader.feed(command)
    args = reader.gets()
    assert isinstance(args, list) and reader.gets() is False  # one whole command, nothing left over
    return args


def _fired(rule_id: str) -> FiredRule:
    return FiredRule(id=rule_id, description="d", action="review", score=10, mode="enforce", tags=("t",),
                     values={"x": 1})


#: a record as the decision path gives the audit entry every field of
_FULL = {"kind": "decision", "body_sha256": "ab", "decision_id": "d_0123456789abcdef01234567", "event_id": "e-9",
         "decision": "deny", "score": 90, "reasons": [], "merchant_grade": "A", "ruleset_version": "v@1",
         "degraded": False, "degraded_reason": None, "lane": "card", "risk": 0.5, "models": None,
         "decided_at": "2026-12-06T05:00:00.000001+00:00", "caller": "bench",
         "event": {"event_id": "e-9", "card": {"fingerprint": "c1"}}, "shadow": [], "missing_features": [],
         "score_action": "deny", "thresholds": {}}


def test_audit_entry_reads_back_as_the_reference():
    reason = {"id": "r.one"}
    for prefix in ("t", "租户"):  # a prefix not ASCII: packed the general way
        audit = Audit(prefix=prefix, maxlen=100, path=None)
        for record in [
            {"decision_id": "d_1", "event_id": "e1", "decision": "review", "score": 40,
             "reasons": [reason, {"id": "r.two"}], "shadow": [{"id": "s"}], "ruleset_version": "v",
             "degraded": False, "caller": "c", "event": {"card": {"fingerprint": "fp"}}},
            {"decision_id": "d_2", "score": 0, "degraded": True, "event": {}},  # 0 is not False's JSON
            {"decision_id": "d_3", "score": 1.5, "degraded": None, "reasons": None, "event": {"card": None}},
            {"decision_id": "d_4", "event_id": "事件", "score": -7, "caller": "商户", "degraded": False,
             "event": {"card": {"fingerprint": "fp"}}},  # text not ASCII: packed the general way
            {"decision_id": "d_5", "reasons": [{"id": f"rule.{k:03d}." + "x" * 30} for k in range(40)],
             "event": {}},  # a value longer than the lengths looked up (1,600 characters): the general way
            # the decision path's record (every field): read at once and written straight away ...
            dict(_FULL, reasons=[_fired("r.one"), _fired("r.two")], shadow=[_fired("s")]),
            dict(_FULL, degraded=True, score=0, reasons=[]), dict(_FULL, reasons=[reason], shadow=None),
            # ... but a field of another type, a text not ASCII, a value past the lengths looked up
            dict(_FULL, score=1.5), dict(_FULL, score=True), dict(_FULL, degraded=None), dict(_FULL, caller="商户"),
            dict(_FULL, event={"card": None}), dict(_FULL, event=None), dict(_FULL, decision_id=None),
            dict(_FULL, reasons=[_fired("x" * 1100)]),
        ]:
            command = audit.decision_command(record)
            assert isinstance(command, bytes)
            args = _resp_args(command)
            assert args[:6] == [b"XADD", audit.decisions_key.encode(), b"MAXLEN", b"~", b"100", b"*"]
            pairs = args[6:]
            assert tuple(k.decode() for k in pairs[::2]) == ENTRY_FIELDS  # the stream stores the names once per node
            assert command == hiredis.pack_command(tuple(a.decode() for a in args))  # what hiredis makes of it
            back = read_entry(b"1700000000000-0", dict(zip(pairs[::2], pairs[1::2])))
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


def test_an_hours_buckets_are_all_remembered_and_only_the_stale_forgotten(monkeypatch):
    """An hour has 4,096 buckets (keys.BUCKET_DIGITS): all of them seen does not forget them
    (which renewed every bucket again); a full memory forgets the buckets due again anyway."""
    now = [1000.0]
    monkeypatch.setattr(renewals_module.time, "monotonic", lambda: now[0])
    renewals = Renewals()
    hour = [f"h1:{i:03x}" for i in range(16 ** (keys.BUCKET_DIGITS - 6))]
    assert len(hour) == 4096 and all(renewals.due(k, faults=0) for k in hour)
    assert not any(renewals.due(k, faults=0) for k in hour)  # within the minute: none again
    now[0] += RENEW_S  # a minute on: each once again
    assert all(renewals.due(k, faults=0) for k in hour) and not renewals.due(hour[0], faults=0)
    now[0] += RENEW_S
    recent = [f"h2:{i}" for i in range(MAX_BUCKETS - len(hour))]
    assert all(renewals.due(k, faults=0) for k in recent)  # fills the memory: the next forgets the stale
    assert renewals.due("h3:0", faults=0)
    assert not any(renewals.due(k, faults=0) for k in recent[-10:])  # the recent ones kept
    assert renewals.due(hour[0], faults=0)  # a stale one forgotten (it was due anyway)


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


@pytest.mark.parametrize("decision_id", [
    "d_0123456789abcdef01234567", "d_0123456789ABCDEF01234567", "d_0123456789abcdef0123456 ",
    "d_0123 56789abcdef01234567", "x_0123456789abcdef01234567", "d_0123456789abcdef012345678",
    "d_0123456789abcdef0123456\n", "d_0123456789abcdef0123456g"])
def test_a_decision_id_is_kept_as_bytes_only_where_they_give_it_back(decision_id):
    raw = record_values.id_bytes(decision_id)
    if decision_id == "d_0123456789abcdef01234567":
        assert raw == bytes.fromhex(decision_id[2:])
    else:
        assert raw is decision_id


@pytest.mark.parametrize("text", [
    "2026-11-25T09:00:00+08:00", "2026-11-25T09:00:00.545000+08:00", "2026-11-25T09:00:00.000001-05:30",
    "2026-11-25T23:59:59.999999+00:00", "2030-01-01T00:00:00-12:00", "2026-11-25T09:00:00Z",
    "2026-11-25T09:00:00.5+08:00", "2026-11-25 09:00:00+08:00"])
def test_the_case_item_time_is_the_received_text_only_where_isoformat_gives_it(text):
    """The decision path hands the case item the event's ``occurred_at`` as received when
    `when_code` codes it; the item then reads what ``iso_text`` of the parsed event gives."""
    from fengkong.api.service.decisions import _iso_occurred_at
    from fengkong.cases.intake import item_for
    from fengkong.events import parse_event

    data = {"event_id": "e-1", "type": "payment", "occurred_at": text, "merchant_id": "m1", "amount": "1.00",
            "currency": "CNY"}
    event = parse_event(data)
    reason = {"id": "r", "description": "d", "action": "review", "score": 50, "mode": "enforce", "tags": ["t"],
              "values": {"x": 1}}
    record = {"decision_id": "d_1", "decision": "review", "reasons": [reason]}
    given = _iso_occurred_at(data)
    assert given is None or given == text
    if type(record_values.when_code(text)) is int:
        assert given == text
    assert item_for(record, event, given) == item_for(record, event)
    assert item_for(record, event)["occurred_at"] == iso_text(event.occurred_at)
    assert item_for(record, event)["reasons"] == [{"id": "r", "action": "review", "score": 50, "mode": "enforce",
                                                  "tags": ["t"], "values": {"x": 1}}]


def _refs_by_loop(values: list, positions: tuple, event: dict) -> list:
    """What `record_event.with_refs` stands for, written plainly (the texts numbered in order)."""
    refs: dict = {}
    n = 0
    for value in [*event.values(), *(event["card"].values() if isinstance(event.get("card"), dict) else ())]:
        if type(value) is str:
            refs.setdefault(value, n)
            n += 1
    for i in positions:
        if type(values[i]) is str and refs.get(values[i], 256) < 256:
            values[i] = record_event._REFS[refs[values[i]]]
    return values


def test_feature_references_are_the_first_number_of_a_repeated_text():
    """`with_refs` numbers a text by its first place among the event's texts (top level then
    the card's), and `resolved` reads it back: repeats, a card, numbers past 255, other types."""
    card = {"fingerprint": "c1", "bin": "622038", "type": "debit", "issuer_country": "CN"}
    wide = {f"x{i}": f"t{i}" for i in range(300)}
    events = [
        {"event_id": "e1", "ip": "10.0.0.1", "user_id": "u1", "device_id": "u1", "amount": 5, "card": card},
        {"event_id": "same", "channel": "same", "card": dict(card, type="same")},
        {"event_id": "e2", **wide, "card": {"fingerprint": "t299", "type": "x1"}},
        {"amount": 1, "card": None}, {},
    ]
    values = ["10.0.0.1", "u1", "c1", "same", "t299", "t1", "x1", 7, None, "nowhere", "CN", "t255", "t256"]
    positions = tuple(range(len(values)))
    for event in events:
        for at in (positions, positions[::2], ()):
            want = _refs_by_loop(list(values), at, event)
            assert record_event.with_refs(list(values), at, event) == want
            assert record_event.resolved(want, event) == values


class _Card(dict):
    """A card of a dict's own subclass: `with_refs` and `indexed` take it as a card."""


def test_an_events_writer_stores_it_as_indexed_and_with_refs_did():
    """`stored_event` (a writer per shape of event) gives `indexed` of the event and the values
    `with_refs` gave, for events of one shape with texts, numbers and None in turn, repeats
    among the texts, a card of other names or another class, a card that is no object, and
    names not in `EVENT_NAMES` (the plain way); and a shape's writer is made once."""
    card = {"fingerprint": "c1", "bin": "622038", "type": "debit", "issuer_country": "CN"}
    base = {"event_id": "e1", "type": "payment", "occurred_at": "2026-11-25T09:00:03.897000+08:00",
            "merchant_id": "m1", "user_id": "u1", "amount": "12.30", "currency": "CNY", "channel": "app",
            "card": card, "ip": "10.0.0.1", "device_id": "d1"}
    events = [
        base, dict(base, amount=1230), dict(base, amount=None, device_id="u1"), dict(base, ip="c1", channel="CN"),
        dict(base, card={"bin": "622038", "fingerprint": "c1"}), dict(base, card=_Card(card)),
        dict(base, card=None), dict(base, card="c1"), dict(base, occurred_at=5), dict(base, occurred_at="late"),
        {k: v for k, v in base.items() if k != "card"}, dict(base, extra="u1"), {"card": card, "event_id": "c1"}, {},
    ]
    values = ["10.0.0.1", "u1", "c1", "debit", "CN", "app", "payment", 7, None, "nowhere", "m1", "e1"]
    wide = tuple(range(len(values)))
    for positions in (wide, wide[::3], ()):
        for event in events + events:  # each shape a second time: its writer then made
            want = record_event.with_refs(list(values), positions, event)
            got = list(values)
            assert record_event.stored_event(event, got, positions) == record_event.indexed(event)
            assert got == want
            assert list(record_event.stored_event(event, list(values), positions)) == list(
                record_event.indexed(event))  # (the map's order is the stored bytes' order)
    record_event._WRITERS.clear()  # a shape's writer made for an event without a card object first
    for event in (dict(base, card=None), base, dict(base, card=_Card(card)), dict(base, card="c1")):
        want = record_event.with_refs(list(values), wide, event)
        got = list(values)
        assert record_event.stored_event(event, got, wide) == record_event.indexed(event) and got == want
    made = record_event._WRITERS
    record_event.stored_event(base, list(values), positions)
    record_event.stored_event(dict(base, extra="u1"), list(values), positions)
    assert made[tuple(base)][0] is positions and made[tuple(base)][1] is not None
    assert made[tuple(dict(base, extra="u1"))][1] is None  # a name not in EVENT_NAMES: the plain way
    writer = made[tuple(base)][1]
    record_event.stored_event(base, list(values), positions)
    assert made[tuple(base)][1] is writer


def test_thresholds_and_reasons_are_stored_as_the_plain_forms_stored_them():
    """The record's thresholds (names as their index, another name as it is) and a fired rule
    the schema's table does not hold (its values as a list in `REASON_KEYS` order) are what a
    comprehension over each gave; both read back as written."""
    schema = records.Schema.make("v1", None, ("event.ip",), (), {"known": ["d", "deny", 5, "enforce", ["t"]]})
    thresholds = {"review": 60, "other": 7, "challenge": 30}
    reasons = [{"id": "known", "description": "d", "action": "deny", "score": 5, "mode": "enforce", "tags": ["t"],
                "values": {"event.ip": "1.2.3.4", "x": 1}},
               {"id": "known", "description": "changed", "action": "deny", "score": 5, "mode": "enforce",
                "tags": ["t"], "values": {}},
               {"id": "unknown", "description": "u", "action": "review", "score": 1, "mode": "shadow", "tags": [],
                "values": {"a": None}}]
    record = {"body_sha256": "ab" * 32, "decision_id": "d_0123456789abcdef01234567", "event_id": "e-1",
              "decision": "deny", "score": 5, "reasons": reasons, "thresholds": thresholds, "latency_ms": 1.5,
              "event": {"event_id": "e-1", "ip": "1.2.3.4"}}
    items = records._values(record, schema, ["1.2.3.4"], scale=False)
    assert items[19] == {records._THRESHOLD_INDEX.get(k, k): v for k, v in thresholds.items()}
    assert list(items[19]) == [1, "other", 0]
    assert items[6] == [["known", [0, "1.2.3.4", "x", 1]], [reasons[1][k] for k in records.REASON_KEYS],
                        [reasons[2][k] for k in records.REASON_KEYS]]
    blob, _ = records.Records("p", 60).encode(dict(record, features={"event.ip": "1.2.3.4"}), ruleset=None, faults=0)
    back = records.decode(blob, records.Schema.make("v1", None, ("event.ip",), (), {}))
    assert back["thresholds"] == thresholds and list(back["thresholds"]) == list(thresholds)
    assert back["reasons"][1:] == reasons[1:]


def _a_record(i: int) -> dict:
    return {"kind": "decision", "body_sha256": f"{i:064x}", "decision_id": f"d_{i:024x}", "event_id": f"e-{i}",
            "decision": "review", "score": 20, "reasons": [], "merchant_grade": "A", "ruleset_version": "v1",
            "degraded": False, "degraded_reason": None, "lane": None, "risk": 0.5, "models": "m 1",
            "decided_at": "2026-12-06T08:00:00.000001+00:00", "caller": "c",
            "event": {"event_id": f"e-{i}", "occurred_at": "2026-11-25T09:00:03.897000+08:00", "ip": "10.0.0.1"},
            "shadow": [], "missing_features": ["x"], "score_action": "allow",
            "thresholds": {"review": 60, "deny": 90}, "latency_ms": 1.5 + i / 1000}


def test_a_record_given_its_fields_is_stored_as_when_they_are_read_from_it():
    """The decision path hands `Records.encode` the record's `READ` values as it made them
    (`fields`): the stored bytes are those of the record read field by field, compact and
    compressed, and a record with another field still keeps it when read from."""
    names = ("event.ip", "x")
    given, read = records.Records("p", 60), records.Records("p", 60)
    for i in range(records.SAMPLES + 3):
        record = _a_record(i)
        fields = tuple(record[k] for k in records.READ)
        one = given.encode(record, ruleset=None, faults=0, features=(names, ("10.0.0.1", 2.5)), fields=fields)
        two = read.encode(record, ruleset=None, faults=0, features=(names, ("10.0.0.1", 2.5)))
        assert one == two
    assert one[0][:1] == records.COMPRESSED
    extra = dict(_a_record(0), note="kept")
    blob, _ = records.Records("p", 60).encode(extra, ruleset=None, faults=0, features=(names, ("10.0.0.1", 2.5)))
    assert records.decode(blob, None)["note"] == "kept"


def test_records_of_the_last_shape_find_its_schema_without_looking_it_up(monkeypatch):
    """A record of the same rule-set version, models and feature names object as the last one
    takes the last one's schema (no shape tuple hashed); another version or names object looks
    its schema up."""
    store = records.Records("p", 60)
    looked: list = []
    lookup = store._schema
    monkeypatch.setattr(store, "_schema", lambda shape, ruleset: looked.append(shape) or lookup(shape, ruleset))
    names = ("event.ip", "x")
    for i in range(3):
        store.encode(_a_record(i), ruleset=None, faults=0, features=(names, ("10.0.0.1", 1)))
    assert len(looked) == 1
    store.encode(dict(_a_record(3), ruleset_version="v2"), ruleset=None, faults=0, features=(names, ("a", 1)))
    store.encode(_a_record(4), ruleset=None, faults=0, features=(tuple(list(names)), ("a", 1)))  # equal, not it
    store.encode(_a_record(5), ruleset=None, faults=0, features=(("event.ip", "y"), ("a", 1)))
    assert [shape[0] for shape in looked] == ["v1", "v2", "v1", "v1"]
