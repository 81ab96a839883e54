"""The decision record in Redis (`fengkong.api.service.records`): compact, read back
exactly, shared schema found by other workers, and records in the older JSON and deflated
formats still answer GET /v1/decisions and retries."""

from __future__ import annotations

import zlib

import msgpack
import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api_fixtures import DECIDE_KEY, RULES_DIR, Served, payment, settings
from fengkong.api.audit import read_entry
from fengkong.api.encoding import dumps
from fengkong.api.service import record_codec, records
from fengkong.api.service.record_values import thousandths
from fengkong.api.service.records import Records
from fengkong.engine import load_ruleset
from fengkong.features.keys import audit_stream, record_schema_key, request_key

PREFIX = "trec"


@pytest.fixture(scope="module")
def ruleset():
    rs = load_ruleset(RULES_DIR)  # the default pack: the schema's rule table comes from it
    yield rs
    rs.close()


def _fired(ruleset, rule_id, values):
    """A fired rule as `Reason.to_dict` gives it."""
    r = ruleset.by_id[rule_id]
    return {"id": r.id, "description": r.description, "action": r.then, "score": r.score, "mode": r.mode,
            "tags": list(r.tags), "values": values}


def _record(**overrides):
    reason = {"id": "ip.tor_exit", "description": "Tor 出口节点 / payment from a Tor exit", "action": "review",
              "score": 50, "mode": "enforce", "tags": ["proxy_ip"], "values": {"ip.is_tor": True}}
    record = {
        "kind": "decision", "body_sha256": "ab" * 32, "decision_id": "d_0123456789abcdef01234567",
        "event_id": "e-1", "decision": "review", "score": 50, "reasons": [reason], "merchant_grade": "NEW",
        "ruleset_version": "c4844d417b90@2026-12-04T22:29:04.361987Z", "degraded": False, "degraded_reason": None,
        "lane": None, "risk": 0.25, "models": "rules-only: no model artifacts loaded",
        "decided_at": "2026-12-04T22:29:05.896275+00:00", "caller": "gateway",
        "event": {"event_id": "e-1", "type": "payment", "occurred_at": "2026-11-25T10:00:00+08:00", "amount": "1.00",
                  "card": {"fingerprint": "tok-1", "type": "debit"}, "ip": "185.220.101.7"},
        "features": {"ip.is_tor": True, "event.amount": 1.0, "card.count_1h": 3, "merchant.grade": "NEW",
                     "user.amount_zscore": None, "event.ip": "185.220.101.7", "card.fingerprint": "tok-1",
                     "event.type": "payment", "event.channel": "not the event's"},
        "shadow": [dict(reason, id="shadow.x", mode="shadow", values={})],
        "missing_features": ["user.amount_zscore", "model.txn_risk", "not.in.the.schema"],
        "score_action": "review", "thresholds": {"challenge": 30, "review": 60, "deny": 90}, "latency_ms": 2.19,
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize("overrides", [
    {},
    {"decision_id": "not-a-hex-id", "decided_at": "yesterday", "reasons": [], "shadow": []},
    {"event_id": "other-than-the-event's", "degraded": True, "degraded_reason": "model failed: ValueError"},
    {"reasons": [{"id": "odd", "values": {}}], "missing_features": []},
    {"event": {"event_id": "e-1", "type": "payment", "unknown_field": {"nested": [1, 2]}}},
    "fired from the rule set",
])
def test_a_record_reads_back_exactly_as_written_and_smaller(overrides, ruleset):
    if overrides == "fired from the rule set":  # by id and values (the schema has the rest); one edited
        tor = _fired(ruleset, "ip.tor_exit", {"ip.is_tor": True, "not.a.feature": 1})
        overrides = {"reasons": [tor, dict(tor, score=tor["score"] + 1)], "shadow": [dict(tor, mode="shadow")]}
    rec = _record(**overrides)
    store = Records("p", 3600)
    blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
    assert blob[:1] == records.COMPACT and commands and commands[0][0] == "SET"
    schema = records.Schema.from_blob(commands[0][2])
    assert records.schema_id(blob) == schema.id and commands[0][1] == store.schema_key(schema.id)
    # the body's hash is kept to its first 16 bytes: enough to tell a retry from another body
    assert records.decode(blob, schema) == dict(rec, body_sha256=rec["body_sha256"][:32])
    assert list(records.decode(blob, schema)) == list(rec)  # same key order: the same JSON
    assert records.header(blob) == ("decision", rec["body_sha256"][:32])
    assert records.same_body(records.header(blob)[1], rec["body_sha256"].encode())
    assert not records.same_body(records.header(blob)[1], ("ab" * 15 + "ac" + "ab" * 16).encode())
    assert len(blob) < len(dumps(rec)) * 0.6
    if overrides == {}:  # the features that repeat the event's texts refer to them
        assert sum(1 for v in records._unpack(blob)[15] if isinstance(v, msgpack.ExtType)) == 3
    if rec["reasons"] and rec["reasons"][0]["id"] == "ip.tor_exit" and rec["reasons"][0]["values"].get("not.a.feature"):
        stored_reasons = records._unpack(blob)[6]
        assert len(stored_reasons[0]) == 2 and len(stored_reasons[1]) == 7  # by id; the edited one whole


@pytest.mark.parametrize("text", ["2026-11-25T10:00:00+08:00", "2026-11-25T10:00:00.123456+08:00",
                                  "1999-12-31T23:59:59-09:30", "2026-11-25T02:00:00+00:00", "2026-11-25T10:00:00+05:45"])
def test_the_time_of_the_event_is_an_integer_that_gives_its_text_back(text):
    rec = _record(event={"event_id": "e-1", "type": "payment", "occurred_at": text})
    blob, commands = Records("p", 3600).encode(rec, ruleset=None, faults=0)
    assert type(records._unpack(blob)[14][2]) is int  # 9 bytes, not the text's 25-32
    assert records.decode(blob, records.Schema.from_blob(commands[0][2]))["event"]["occurred_at"] == text


@pytest.mark.parametrize("text", ["2026-11-25T02:00:00Z", "2026-11-25T10:00:00", "2026-11-25 10:00:00+08:00",
                                  "2026-11-25T10:00:00.500+08:00", "soon", 17])
def test_a_time_that_would_not_read_back_as_written_is_kept_as_it_is(text):
    rec = _record(event={"event_id": "e-1", "type": "payment", "occurred_at": text})
    blob, commands = Records("p", 3600).encode(rec, ruleset=None, faults=0)
    assert records._unpack(blob)[14][2] in (text, [text])
    assert records.decode(blob, records.Schema.from_blob(commands[0][2]))["event"]["occurred_at"] == text


def test_floats_are_stored_as_integers_where_exact_and_read_back_as_the_same_floats(ruleset):
    """Whole floats and whole numbers of hundredths are stored as integers, and read
    back as floats equal bit for bit (the same JSON); the others stay floats."""
    floats = [0.0, -0.0, 120.0, 123.45, 0.1 + 0.2, 33.33, -7.5, 1e300, float(2 ** 60), 2.0 ** 53 - 1, 1 / 3,
              float("inf"), -2.37, 5000.0]
    features = {f"f{i}": v for i, v in enumerate(floats)}
    features.update({"n": 3, "b": True, "none": None, "s": "x", "big": 2 ** 62})
    rec = _record(features=features)
    store = Records("p", 3600)
    blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
    schema = records.Schema.from_blob(commands[0][2])
    got = records.decode(blob, schema)["features"]
    assert [(type(v), repr(v)) for v in got.values()] == [(type(v), repr(v)) for v in features.values()]
    assert dumps(records.decode(blob, schema)) == dumps(dict(rec, body_sha256=rec["body_sha256"][:32]))
    stored = records._unpack(blob)[15]
    as_ints = {i for i, v in enumerate(stored) if type(v) is int}
    # 0.0, 120.0, 123.45, 33.33, -7.5, 2**53-1, -2.37, 5000.0 (and n, big); not -0.0, 0.1+0.2, 1e300, 2**60, 1/3, inf
    assert as_ints == {0, 2, 3, 5, 6, 9, 12, 13, 14, 18}
    plain, _ = Records("p", 3600).encode(_record(features={k: str(v) for k, v in features.items()}),
                                         ruleset=ruleset, faults=0)
    assert records._unpack(plain)[22] is None  # no float: no bitmaps


def test_a_record_of_the_format_before_bitmaps_reads_as_it_was(ruleset):
    """Records written before floats were scaled (22 items, floats as floats) read as before."""
    rec = _record(features={"a": 1.5, "b": 120.0, "c": 3})
    store = Records("p", 3600)
    blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
    schema = records.Schema.from_blob(commands[0][2])
    items = records._unpack(blob)
    items[15] = [1.5, 120.0, 3]
    items[19] = rec["thresholds"]  # names, as before they were indexed
    items[1] = bytes.fromhex(rec["body_sha256"])  # all 32 bytes, as before
    items[14][2] = rec["event"]["occurred_at"]  # the text, as before
    before = records.COMPACT + msgpack.packb(items[:22], use_bin_type=True)
    assert dumps(records.decode(before, schema)) == dumps(rec)


def test_the_schema_is_written_once_then_again_after_a_fault():
    store = Records("p", 3600)
    _, first = store.encode(_record(), ruleset=None, faults=0)
    _, again = store.encode(_record(decision_id="d_" + "1" * 24), ruleset=None, faults=0)
    _, after_fault = store.encode(_record(), ruleset=None, faults=1)
    assert len(first) == 1 and again == [] and after_fault == first
    assert first[0][3:] == ("EX", 3600 + 3600)  # outlives the records that name it


def test_a_record_msgpack_cannot_hold_is_stored_as_json_and_read_back():
    rec = _record(event={"event_id": "e-1", "type": "payment", "huge": 2 ** 70})
    blob, commands = Records("p", 3600).encode(rec, ruleset=None, faults=0)
    assert blob[:1] == b"{" and records.schema_id(blob) is None and records.decode(blob, None) == rec


def test_a_record_without_its_schema_keeps_its_decision(ruleset):
    rec = _record(reasons=[_fired(ruleset, "ip.tor_exit", {"ip.is_tor": True})])
    blob, _ = Records("p", 3600).encode(rec, ruleset=ruleset, faults=0)
    got = records.decode(blob, None)
    assert got["decision_id"] == rec["decision_id"] and got["decision"] == "review" and got["features"] == {}
    assert [r["id"] for r in got["reasons"]] == ["ip.tor_exit"]


@pytest.fixture(scope="module")
def api(redis_server):
    with Served(settings(redis_server.url, PREFIX)) as served:
        yield served


def test_the_stored_record_is_compact_and_answers_as_before(api, redis_client):
    ev = payment(ip="185.220.101.7")
    with api.client(DECIDE_KEY) as c:
        out = c.post("/v1/decisions", json=ev).json()
        detail = c.get(f"/v1/decisions/{out['decision_id']}").json()
        again = c.post("/v1/decisions", json=ev).json()
    key = request_key(PREFIX, ev["event_id"])
    stored = redis_client.get(key)
    assert stored[:1] == records.COMPACT
    # the JSON record of this decision was ~3.2 kB (features by name, the event, the versions)
    assert int(redis_client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")) < 1200
    assert detail["features"]["ip.is_tor"] is True and detail["event"] == ev and detail["caller"] == "gateway"
    assert detail["ruleset_version"] == out["ruleset_version"] and detail["models"] == out["models"]
    assert [r["id"] for r in detail["reasons"]] == [r["id"] for r in out["reasons"]]
    assert again["duplicate"] is True
    assert {k: v for k, v in again.items() if k not in ("latency_ms", "duplicate")} == \
           {k: v for k, v in out.items() if k not in ("latency_ms", "duplicate")}
    entry = redis_client.xrevrange(audit_stream(PREFIX, "decisions"), count=50)
    ref = next(read_entry(i, v) for i, v in entry if v[b"decision_id"] == out["decision_id"].encode())
    assert ref["rules"] == [r["id"] for r in out["reasons"]] and "features" not in ref


def test_another_worker_reads_the_record_through_the_shared_schema(api, redis_server):
    ev = payment()
    with api.client(DECIDE_KEY) as c:
        out = c.post("/v1/decisions", json=ev).json()
        mine = c.get(f"/v1/decisions/{out['decision_id']}").json()
    with Served(settings(redis_server.url, PREFIX)) as other, other.client(DECIDE_KEY) as c2:
        assert other.runtime.records.known(records.schema_id(
            redis_server.client().get(request_key(PREFIX, ev["event_id"])))) is None  # a fresh worker
        theirs = c2.get(f"/v1/decisions/{out['decision_id']}").json()
        retried = c2.post("/v1/decisions", json=ev).json()
    assert theirs == mine and len(theirs["features"]) > 30
    assert retried["decision_id"] == out["decision_id"] and retried["duplicate"] is True


def _answers_as_stored(c, ev, out, detail):
    """A stored record rewritten in another format still answers as the one written: GET
    gives the same detail, a retry the same decision, another body under the id a 409."""
    assert c.get(f"/v1/decisions/{out['decision_id']}").json() == detail
    retried = c.post("/v1/decisions", json=ev).json()
    assert retried["decision_id"] == out["decision_id"] and retried["duplicate"] is True
    assert retried["reasons"] == out["reasons"] and retried["decision"] == out["decision"]
    other = c.post("/v1/decisions", json=dict(ev, amount="99.00"))
    assert other.status_code == 409 and other.json()["field"] == "event_id"


def test_records_in_the_older_json_format_still_answer(api, redis_client):
    """A record written before this format (JSON, the whole record) is read as before:
    GET /v1/decisions, a retry of the event_id, and a conflicting body's 409."""
    ev = payment(ip="185.220.101.7")
    key = request_key(PREFIX, ev["event_id"])
    with api.client(DECIDE_KEY) as c:
        out = c.post("/v1/decisions", json=ev).json()
        detail = c.get(f"/v1/decisions/{out['decision_id']}").json()
        schema = api.runtime.records.known(records.schema_id(redis_client.get(key)))
        legacy = records.decode(redis_client.get(key), schema)
        redis_client.set(key, dumps(legacy), keepttl=True)  # what the service wrote before
        assert redis_client.get(key)[:1] == b"{"
        _answers_as_stored(c, ev, out, detail)


def test_the_audit_streams_stay_near_their_length_cap(redis_server, redis_client):
    """Memory is bounded: the decisions' audit stream is trimmed to about
    ``audit_stream_maxlen`` entries however many decisions are made (Redis trims whole
    nodes of up to 100 entries, hence the slack)."""
    cap = 100
    with Served(settings(redis_server.url, "trcap", audit_stream_maxlen=cap)) as api, api.client(DECIDE_KEY) as c:
        for _ in range(5 * cap):
            assert c.post("/v1/decisions", json=payment()).status_code == 200
        c.get("/v1/decisions/d_" + "0" * 24)  # after the write-behind batches, on the same connection
    length = redis_client.xlen(audit_stream("trcap", "decisions"))
    assert cap <= length <= 2 * cap, length


def _compressing(store, ruleset, features=None):
    """Write `SAMPLES` records through `store` (the ones the dictionary of their schema,
    the one of `features`' names, is made of)."""
    for i in range(records.SAMPLES):
        blob, _ = store.encode(_record(decision_id=f"d_{i:024x}", event=dict(_record()["event"], event_id=f"e-{i}"),
                                       event_id=f"e-{i}", latency_ms=1.5 + i,
                                       features=features or _record()["features"]), ruleset=ruleset, faults=0)
        assert blob[:1] == records.COMPACT


@pytest.mark.parametrize("overrides", [
    {},
    {"decision_id": "not-a-hex-id", "decided_at": "yesterday", "reasons": [], "shadow": []},
    {"event_id": "other-than-the-event's", "degraded": True, "degraded_reason": "model failed: ValueError"},
    {"reasons": [{"id": "odd", "values": {}}], "missing_features": []},
    {"event": {"event_id": "e-1", "type": "payment", "unknown_field": {"nested": [1, 2]}}},
    {"features": {"a": 0.0, "b": -0.0, "c": 123.45, "d": 1 / 3, "e": 2 ** 62, "f": True, "g": None, "h": "x",
                  "i": float("inf"), "j": 7}},
    {"lane": "fast", "risk": None, "score": 12.5, "thresholds": None, "merchant_grade": None, "latency_ms": 3},
    {"latency_ms": 0.1 + 0.2}, {"latency_ms": -0.0}, {"latency_ms": None}, {"latency_ms": 1e300},
    {"latency_ms": 41.233},
    {"extra_field": {"kept": [1, "two"]}},
])
def test_after_its_first_records_a_schema_gets_a_dictionary_and_records_are_compressed(overrides, ruleset):
    """Once a worker has written `SAMPLES` records under a schema, it writes them
    compressed with a dictionary trained on those records, stored in a schema of its own;
    every field reads back as written (same values, types and key order)."""
    store = Records("p", 3600)
    rec = _record(**overrides)
    _compressing(store, ruleset, rec["features"])
    plain = records.COMPACT + _msgpacked(records._values(rec, next(iter(store._by_id.values())),
                                                         list(rec["features"].values())))
    blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
    assert blob[:1] == records.COMPRESSED
    assert commands and commands[0][0] == "SET"  # the schema with the dictionary, written before the record
    schema = records.Schema.from_blob(commands[0][2])
    assert schema.zdict[:4] == b"\x37\xa4\x30\xec"  # a trained zstd dictionary (with entropy tables)
    assert schema.zdict and records.schema_id(blob) == schema.id and commands[0][1] == store.schema_key(schema.id)
    want = dict(rec, body_sha256=rec["body_sha256"][:32])
    got = records.decode(blob, schema)
    assert dumps(got) == dumps(want) and list(got) == list(want)
    assert [(type(v), repr(v)) for v in got["features"].values()] == \
           [(type(v), repr(v)) for v in rec["features"].values()]
    assert records.header(blob) == ("decision", rec["body_sha256"][:32])
    assert records.same_body(records.header(blob)[1], rec["body_sha256"].encode())
    assert not records.same_body(records.header(blob)[1], ("ab" * 15 + "ac" + "ab" * 16).encode())
    assert records.is_record(blob)
    if overrides == {}:
        assert len(blob) < 0.6 * len(plain)  # the dictionary's records share most of its bytes


def test_the_records_after_the_first_dictionarys_make_the_last_one(ruleset):
    """The first dictionary is of a rule set's first records (cold entities); after
    `RESAMPLE_AFTER` records compressed with it, the next `SAMPLES` make the shape's last
    schema and dictionary: the records after are written with it (smaller when the traffic
    moved on from the first records), no third one is made, and every record reads back."""
    store = Records("p", 3600)
    _compressing(store, ruleset)  # cold: the first records' features

    def warm(i):
        features = dict(_record()["features"], **{"card.count_1h": 40 + i % 3, "user.amount_zscore": 1.25,
                                                   "merchant.grade": "A", "event.channel": "wallet app"})
        return _record(decision_id=f"d_{i:024x}", event_id=f"e-{i}", event=dict(_record()["event"], event_id=f"e-{i}"),
                       features=features, latency_ms=3.5)

    written = []
    for i in range(2 * (records.RESAMPLE_AFTER + records.SAMPLES)):
        rec = warm(i)
        blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
        written.append((rec, blob, commands))
    ids = [records.schema_id(blob) for _, blob, _ in written]
    first, last = ids[0], ids[-1]
    assert first != last and ids.count(first) == records.RESAMPLE_AFTER + records.SAMPLES
    assert set(ids) == {first, last}  # no third schema
    _, blob, commands = written[records.RESAMPLE_AFTER + records.SAMPLES]  # the last schema's first record
    assert commands and commands[0][0] == "SET" and records.Schema.from_blob(commands[0][2]).id == last
    one, two = store.known(first), store.known(last)
    assert two.zdict and two.zdict != one.zdict and (two.names, two.rules) == (one.names, one.rules)
    assert len(written[-1][1]) < len(written[5][1])  # the same traffic, compressed with the dictionary of it
    other = Records("p", 3600)  # another worker, which learns the schemas from their SETs
    assert records.Schema.from_blob(written[0][2][0][2]).id == first  # the first's SET, with its first record
    other.learn(written[0][2][0][2])
    other.learn(commands[0][2])
    for rec, blob, _ in written:
        want = dict(rec, body_sha256=rec["body_sha256"][:32])
        assert records.decode(blob, store.known(records.schema_id(blob))) == want
        assert records.decode(blob, other.known(records.schema_id(blob))) == want


def test_a_compressed_record_is_read_by_a_worker_that_learns_its_schema(ruleset):
    store = Records("p", 3600)
    _compressing(store, ruleset)
    rec = _record()
    blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
    other = Records("p", 3600)
    assert other.known(records.schema_id(blob)) is None
    schema = other.learn(commands[0][2])
    assert records.decode(blob, schema) == dict(rec, body_sha256=rec["body_sha256"][:32])
    # without its schema only the body's hash is known (the schema outlives its records)
    got = records.decode(blob, None)
    assert got["body_sha256"] == rec["body_sha256"][:32] and got["decision"] is None and got["features"] == {}
    assert records.header(blob) == ("decision", rec["body_sha256"][:32]) and records.schema_id(blob) == schema.id


def test_the_schema_with_a_dictionary_is_written_again_after_a_fault(ruleset):
    store = Records("p", 3600)
    _compressing(store, ruleset)
    _, first = store.encode(_record(), ruleset=ruleset, faults=0)
    _, again = store.encode(_record(), ruleset=ruleset, faults=0)
    _, after_fault = store.encode(_record(), ruleset=ruleset, faults=1)
    assert len(first) == 1 and again == [] and after_fault == first
    assert records.Schema.from_blob(first[0][2]).zdict


def test_the_compressed_record_answers_as_the_record_written(api, redis_client, redis_server):
    """Through the service and its Redis: past the first records, the stored record is
    compressed, and GET /v1/decisions/{id} (this worker and a fresh one), a retry and a
    changed body's 409 give what the service wrote, field by field."""
    written = {}
    encode = api.runtime.records.encode

    def keep(record, **kw):  # what the service stores, to compare the reads with
        assert "features" not in record  # given apart, as names and values: no dict of them made
        written[record["decision_id"]] = dumps(records.with_features(record, *kw["features"]))
        return encode(record, **kw)

    api.runtime.records.encode = keep
    try:
        with api.client(DECIDE_KEY) as c:
            outs = [c.post("/v1/decisions", json=payment(ip="185.220.101.7")).json()
                    for _ in range(records.SAMPLES + 2)]
            ev = payment(ip="185.220.101.7", amount="12.34")
            out = c.post("/v1/decisions", json=ev).json()
            detail = c.get(f"/v1/decisions/{out['decision_id']}").json()
            again = c.post("/v1/decisions", json=ev).json()
            conflict = c.post("/v1/decisions", json=dict(ev, amount="99.00"))
    finally:
        del api.runtime.records.encode  # the class's method again, no instance attribute left behind
    stored = redis_client.get(request_key(PREFIX, ev["event_id"]))
    assert stored[:1] == records.COMPRESSED and len(outs) == records.SAMPLES + 2
    want = orjson.loads(written[out["decision_id"]])
    for k in ("kind", "body_sha256"):
        want.pop(k)
    assert {k: v for k, v in detail.items() if k != "duplicate"} == want
    assert detail["features"]["ip.is_tor"] is True and detail["event"] == ev
    assert again["duplicate"] is True and again["decision_id"] == out["decision_id"]
    assert {k: v for k, v in again.items() if k not in ("latency_ms", "duplicate")} == \
           {k: v for k, v in out.items() if k not in ("latency_ms", "duplicate")}
    assert conflict.status_code == 409 and conflict.json()["field"] == "event_id"
    with Served(settings(redis_server.url, PREFIX)) as other, other.client(DECIDE_KEY) as c2:
        assert other.runtime.records.known(records.schema_id(stored)) is None
        assert c2.get(f"/v1/decisions/{out['decision_id']}").json() == detail


_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1), st.floats(allow_nan=False),
                   st.text(max_size=12))


@hsettings(max_examples=150, deadline=None)
@given(features=st.lists(_VALUE, min_size=1, max_size=12), latency=st.one_of(st.floats(allow_nan=False),
                                                                            st.integers(0, 10 ** 6), st.none()),
       event_texts=st.lists(st.text(max_size=8), max_size=3))
def test_any_record_reads_back_compressed_as_written(features, latency, event_texts):
    """Whatever values the features and the latency take (the floats bit for bit), and
    whichever of them repeat the event's texts, a compressed record reads back as written."""
    names = {f"event.f{i}": v for i, v in enumerate(features)}
    event = dict(_record()["event"], **{f"x{i}": t for i, t in enumerate(event_texts)})
    store = Records("p", 3600)
    for i in range(records.SAMPLES):
        store.encode(_record(features=names, event_id=f"e-{i}", event=dict(event, event_id=f"e-{i}")),
                     ruleset=None, faults=0)
    rec = _record(features=names, latency_ms=latency, event=event)
    blob, commands = store.encode(rec, ruleset=None, faults=0)
    assert blob[:1] == records.COMPRESSED
    got = records.decode(blob, store.known(records.schema_id(blob)))
    assert dumps(got) == dumps(dict(rec, body_sha256=rec["body_sha256"][:32]))
    assert [(type(v), repr(v)) for v in got["features"].values()] == [(type(v), repr(v)) for v in features]
    assert (type(got["latency_ms"]), repr(got["latency_ms"])) == (type(latency), repr(latency))


def _old_packed(rec, schema):
    """A record's values as the code before zstd packed them to deflate (and to sample):
    the schema id and body hash taken out, the floats unscaled, the latency in microseconds."""
    values = records._values(rec, schema, list(rec["features"].values()), scale=False)
    values[0] = values[1] = None
    values[20] = thousandths(values[20])
    return _msgpacked(values)


def _msgpacked(values):
    """Values as msgpack packed them (the code before msgspec): the feature references as its
    ExtType. The record's encoder (`records.pack`) writes the same bytes."""
    packed = msgpack.packb(values, use_bin_type=True,
                           default=lambda o: msgpack.ExtType(o.code, o.data) if isinstance(o, msgspec.msgpack.Ext) else o)
    assert records.pack(values) == packed
    return packed


def _old_deflated(rec, schema):
    """A record as the code before zstd wrote it (format ``\\x02``, kept here to test that
    such records still read): its schema id and body hash in the clear, then raw deflate
    (level 3, window 2^13, memory level 4) with the schema's dictionary."""
    one = zlib.compressobj(3, zlib.DEFLATED, -13, 4, zlib.Z_DEFAULT_STRATEGY, zdict=schema.zdict)
    return b"".join((b"\x02", schema.raw_id, bytes.fromhex(rec["body_sha256"])[:16],
                     one.compress(_old_packed(rec, schema)), one.flush()))


def _old_schema(schema, rec):
    """The schema the code before zstd made of `schema` (its names, no dictionary) after its
    first 16 records (here: `rec` under 16 decision ids): the last 8 kB of their packed values
    as a raw deflate dictionary."""
    base = records.Schema.from_blob(msgpack.packb(msgpack.unpackb(schema.blob)[:5], use_bin_type=True))
    samples = [_old_packed(dict(rec, decision_id=f"d_{i:024x}"), base) for i in range(16)]
    return base.with_dictionary(b"".join(samples)[-8192:])


@pytest.mark.parametrize("overrides", [
    {}, {"decision_id": "not-a-hex-id", "decided_at": "yesterday", "reasons": [], "shadow": []},
    {"features": {"a": 0.0, "b": -0.0, "c": 123.45, "d": 1 / 3, "e": 2 ** 62, "f": True, "g": None, "h": "x"}},
    {"latency_ms": 0.1 + 0.2}, {"latency_ms": None}, {"extra_field": {"kept": [1, "two"]}},
    "fired from the rule set",
])
def test_a_deflated_record_of_before_still_reads_as_written(overrides, ruleset):
    """A ``\\x02`` record (raw deflate with a schema's raw dictionary, what the code before
    zstd wrote) reads back as written with its schema, and gives its body's hash without it."""
    if overrides == "fired from the rule set":
        overrides = {"reasons": [_fired(ruleset, "ip.tor_exit", {"ip.is_tor": True})]}
    rec = _record(**overrides)
    _, commands = Records("p", 3600).encode(rec, ruleset=ruleset, faults=0)
    schema = _old_schema(records.Schema.from_blob(commands[0][2]), rec)
    blob = _old_deflated(rec, schema)
    assert records.is_record(blob) and records.schema_id(blob) == schema.id
    assert records.header(blob) == ("decision", rec["body_sha256"][:32])
    reader = Records("p", 3600)  # a worker after the upgrade, which learns the schema from Redis
    got = records.decode(blob, reader.learn(schema.blob))
    want = dict(rec, body_sha256=rec["body_sha256"][:32])
    assert dumps(got) == dumps(want) and list(got) == list(want)
    gone = records.decode(blob, None)
    assert gone["body_sha256"] == rec["body_sha256"][:32] and gone["features"] == {} and gone["decision"] is None


def test_a_deflated_record_of_before_answers_through_the_service(api, redis_client, redis_server):
    """A ``\\x02`` record left in Redis by the code before (with its schema) answers GET
    /v1/decisions/{id} as written, on this worker and a fresh one, a retry of its event id
    with its decision, and a changed body with 409."""
    ev = payment(ip="185.220.101.7")
    key = request_key(PREFIX, ev["event_id"])
    with api.client(DECIDE_KEY) as c:
        out = c.post("/v1/decisions", json=ev).json()
        detail = c.get(f"/v1/decisions/{out['decision_id']}").json()
        stored = redis_client.get(key)
        schema = api.runtime.records.known(records.schema_id(stored))
        rec = records.decode(stored, schema)
        old = _old_schema(schema, rec)
        redis_client.set(record_schema_key(PREFIX, old.id), old.blob, ex=600)
        redis_client.set(key, _old_deflated(rec, old), keepttl=True)  # what the code before wrote
        assert redis_client.get(key)[:1] == records.DEFLATED
        _answers_as_stored(c, ev, out, detail)
    with Served(settings(redis_server.url, PREFIX)) as fresh, fresh.client(DECIDE_KEY) as c2:
        assert c2.get(f"/v1/decisions/{out['decision_id']}").json() == detail


def test_a_schema_whose_dictionary_cannot_be_trained_keeps_the_samples_bytes(ruleset, monkeypatch):
    """Where zstd cannot train a dictionary (too few samples) the schema's is the samples'
    last bytes, read as raw content (never as a trained one, even when they begin as one
    does), and its records compress and read back as written."""
    magic = b"\x37\xa4\x30\xec"  # what a trained zstd dictionary begins with
    assert record_codec.dictionary([b"ab"] * 4) == b"ab" * 4
    assert record_codec.dictionary([magic + b"x" * 20] * 4) == ((magic + b"x" * 20) * 4)[1:]

    def untrainable(*a, **kw):
        raise record_codec.zstandard.ZstdError("cannot train dict")

    monkeypatch.setattr(record_codec.zstandard, "train_dictionary", untrainable)
    store = Records("p", 3600)
    _compressing(store, ruleset)
    rec = _record()
    blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
    schema = records.Schema.from_blob(commands[0][2])
    assert blob[:1] == records.COMPRESSED and schema.zdict[:4] != magic
    assert len(schema.zdict) == record_codec.DICT_BYTES
    assert records.decode(blob, Records("p", 3600).learn(schema.blob)) == dict(rec, body_sha256=rec["body_sha256"][:32])


def test_a_restarted_worker_samples_again_and_a_reader_of_the_schemas_reads_every_record(ruleset):
    """A worker restarted (a new encoder, nothing remembered) writes its first records
    compact again and trains a dictionary of its own records, under a schema of its own
    (sent with its first record); a reader that learns the schemas from their SETs reads
    the records of both."""
    sets = {}
    written = []
    for offset in (0, 1000):  # the worker, then the same worker restarted
        store = Records("p", 3600)
        for i in range(offset, offset + records.SAMPLES + 3):
            rec = _record(decision_id=f"d_{i:024x}", event_id=f"e-{i}", latency_ms=1.5 + i,
                          event=dict(_record()["event"], event_id=f"e-{i}"))
            blob, commands = store.encode(rec, ruleset=ruleset, faults=0)
            sets.update((c[1], c[2]) for c in commands)
            written.append((rec, blob))
    assert [blob[:1] for _, blob in written] == 2 * ([records.COMPACT] * records.SAMPLES + [records.COMPRESSED] * 3)
    ids = [records.schema_id(blob) for _, blob in written]
    assert ids[0] == ids[len(ids) // 2]  # the names' schema is the same after the restart
    assert ids[records.SAMPLES] != ids[-1]  # the dictionary is of each one's own records
    reader = Records("p", 3600)
    for rec, blob in written:
        sid = records.schema_id(blob)
        schema = reader.known(sid) or reader.learn(sets[reader.schema_key(sid)])
        assert records.decode(blob, schema) == dict(rec, body_sha256=rec["body_sha256"][:32])


def test_the_decision_path_hands_the_encoder_its_fields_in_the_order_records_reads_them(api, monkeypatch):
    """`_decision_record` writes the record's values of `records.READ` out in that order (the
    encoder then looks none up): a field out of place there or in `READ` would store one field's
    value under another's name."""
    seen = []
    encode = api.runtime.records.encode

    def watched(record, **kw):
        seen.append((dict(record), kw.get("fields")))
        return encode(record, **kw)

    monkeypatch.setattr(api.runtime.records, "encode", watched)  # this worker's Records
    with api.client(DECIDE_KEY) as c:
        for ev in (payment(), payment(ip="185.220.101.7", amount=880_000)):
            assert c.post("/v1/decisions", json=ev).status_code == 200
    assert len(seen) == 2
    for record, fields in seen:
        assert fields is not None and len(fields) == len(records.READ)
        assert fields == tuple(record[name] for name in records.READ)
