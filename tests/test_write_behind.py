"""What the decision path writes after deciding is the same whichever form its parts take:
a record whose fired rules are the engine's `FiredRule` objects (the decision path's) stores,
answers and queues the same bytes as one holding their ``to_dict``; ``decided_at`` made by
`decided_now` codes as its text would; a rule's value names indexed once still follow the
rule when they change."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgpack
import msgspec
import numpy
import pytest

from api_fixtures import RULES_DIR
from fengkong.api.audit import Audit, read_entry, reference, rule_ids
from fengkong.api.encoding import dumps
from fengkong.api.service import record_event, record_values, records
from fengkong.api.service.records import Records
from fengkong.cases.config import CasesConfig
from fengkong.cases.intake import Intake
from fengkong.engine import load_ruleset
from fengkong.engine.decision import FiredRule
from fengkong.events import parse_event
from fengkong.features.pipelined import packed_args

EVENT = {"event_id": "e-1", "type": "payment", "occurred_at": "2026-11-25T10:00:00.250000+08:00", "amount": "1.00",
         "currency": "CNY", "merchant_id": "m-1", "card": {"fingerprint": "tok-1", "type": "debit"},
         "ip": "185.220.101.7"}


@pytest.fixture(scope="module")
def ruleset():
    rs = load_ruleset(RULES_DIR)
    yield rs
    rs.close()


def _fired(ruleset, rule_id, values, **changed):
    """A `FiredRule` as the engine makes it of the rule (`changed`: fields it does not share with it)."""
    r = ruleset.by_id[rule_id]
    fields = {"id": r.id, "description": r.description, "action": r.then, "score": r.score, "mode": r.mode,
              "tags": r.tags, "values": values}
    fields.update(changed)
    return FiredRule(**fields)


def _record(reasons, shadow, decided_at="2026-12-04T22:29:05.896275+00:00"):
    return {
        "kind": "decision", "body_sha256": "ab" * 32, "decision_id": "d_0123456789abcdef01234567",
        "event_id": "e-1", "decision": "review", "score": 50, "reasons": reasons, "merchant_grade": "NEW",
        "ruleset_version": "v1", "degraded": False, "degraded_reason": None, "lane": None, "risk": 0.25,
        "models": "rules-only", "decided_at": decided_at, "caller": "gateway", "event": EVENT, "shadow": shadow,
        "missing_features": ["user.amount_zscore"], "score_action": "review",
        "thresholds": {"challenge": 30, "review": 60, "deny": 90}, "latency_ms": 2.19,
    }


def _as_dicts(record):
    return dict(record, reasons=[r.to_dict() for r in record["reasons"]],
                shadow=[r.to_dict() for r in record["shadow"]])


def _cases(ruleset):
    """Fired rules that take each path of `record_reasons.reason_values`: the rule as the table has it
    (two value names, one not among the features), a score, a description and tags of its
    own, no values, and an id the table does not know."""
    tor = _fired(ruleset, "ip.tor_exit", {"ip.is_tor": True, "not.a.feature": 1.5})
    return [
        ([tor], []),
        ([tor, _fired(ruleset, "ip.tor_exit", {"ip.is_tor": False}, score=99)], []),
        ([_fired(ruleset, "ip.tor_exit", {}, description="changed", tags=("other",))], [tor]),
        ([_fired(ruleset, "ip.tor_exit", {"ip.is_tor": None}, score=float(tor.score))], []),
        ([FiredRule("not.in.the.set", "d", "deny", 10, "shadow", ("t",), {"x": 1})], []),
        ([], []),
    ]


def test_fired_rules_as_objects_store_and_answer_the_bytes_their_dicts_did(ruleset):
    names = ("ip.is_tor", "event.ip", "card.count_1h")
    values = (True, "185.220.101.7", 3)
    for reasons, shadow in _cases(ruleset):
        objects = _record(reasons, shadow)
        plain = _as_dicts(objects)
        assert dumps(objects) == dumps(plain)  # the answer's and the audit file's JSON
        by_objects, by_dicts = Records("p", 60), Records("p", 60)
        for _ in range(records.SAMPLES + 2):  # compact, then compressed
            one, _ = by_objects.encode(objects, ruleset=ruleset, faults=0, features=(names, values))
            two, _ = by_dicts.encode(plain, ruleset=ruleset, faults=0, features=(names, values))
            assert one == two
        assert one[:1] == records.COMPRESSED
        back = records.decode(one, by_objects.known(records.schema_id(one)))
        assert back["reasons"] == plain["reasons"] and back["shadow"] == plain["shadow"]
        assert list(back["reasons"][0]) == list(records.REASON_KEYS) if reasons else back["reasons"] == []


def test_a_rules_value_names_indexed_once_follow_the_rule_when_they_change(ruleset):
    store = Records("p", 60)
    names, values = ("ip.is_tor", "card.count_1h"), (True, 3)
    for read in [{"ip.is_tor": True, "card.count_1h": 3}, {"card.count_1h": 4, "ip.is_tor": False},
                 {"card.count_1h": 5}, {"other": 1, "ip.is_tor": None}]:
        rec = _record([_fired(ruleset, "ip.tor_exit", read)], [])
        blob, _ = store.encode(rec, ruleset=ruleset, faults=0, features=(names, values))
        got = records.decode(blob, store.known(records.schema_id(blob)))["reasons"][0]["values"]
        assert got == read and list(got) == list(read)


def test_a_rule_seen_before_flattens_as_it_did_whatever_its_count_of_value_names(ruleset):
    """A firing made of the very objects an earlier one of the rule was compared with skips the
    comparison (`Schema.fired`): the same bytes as its dict, for one to five value names, in
    the order the rule read them; a firing whose fields are equal but other objects, or differ,
    takes the comparison again."""
    names = ("ip.is_tor", "event.ip", "card.count_1h", "user.age_days", "card.amount_sum_1h")
    features = (True, "185.220.101.7", 3, 2.5, 10.25)
    cached, plain = Records("p", 60), Records("p", 60)
    tor = ruleset.by_id["ip.tor_exit"]
    reads = [dict(zip(names[:n], features[:n])) for n in range(1, 6)]
    reads += [dict(reversed(read.items())) for read in reads] + [{"not.a.feature": 1, "ip.is_tor": False}]
    variants = [{"description": str(tor.description)[:-1] + str(tor.description)[-1:]},  # equal, another object
                {"description": "changed"}, {"score": float(tor.score)}, {}]
    for read in reads:
        for changed in variants:
            for _ in range(2):  # the first compares and remembers, the second reads what it remembered
                rec = _record([_fired(ruleset, "ip.tor_exit", dict(read), **changed)], [])
                one, _ = cached.encode(rec, ruleset=ruleset, faults=0, features=(names, features))
                two, _ = plain.encode(_as_dicts(rec), ruleset=ruleset, faults=0, features=(names, features))
                assert one == two
                back = records.decode(one, cached.known(records.schema_id(one)))["reasons"][0]
                assert back == _as_dicts(rec)["reasons"][0] and list(back["values"]) == list(read)
    schema = cached.known(records.schema_id(one))
    assert schema is not None and schema.fired["ip.tor_exit"][0] is tor.description


def test_audit_entries_and_case_items_are_the_same_for_objects_and_dicts(ruleset):
    audit = Audit(prefix="p", maxlen=1000, path=None)
    intake = Intake(CasesConfig(decisions=frozenset({"review"}), rules=frozenset({"not.in.the.set"})), prefix="p")
    event = parse_event(EVENT)
    for reasons, shadow in _cases(ruleset):
        objects = _record(reasons, shadow)
        plain = _as_dicts(objects)
        assert audit.decision_command(objects) == audit.decision_command(plain)
        assert reference(objects) == reference(plain) and rule_ids(reasons) == [r.id for r in reasons]
        for decision in ("review", "deny", "allow"):  # in the decisions; by a rule id (the last case); neither
            one, two = dict(objects, decision=decision), dict(plain, decision=decision)
            assert intake.command(one, event, EVENT["occurred_at"]) == intake.command(two, event, EVENT["occurred_at"])
        assert (intake.command(dict(objects, decision="deny"), event) is not None) == (reasons[:1] != []
                                                                                      and reasons[0].id == "not.in.the.set")
    by_tag = Intake(CasesConfig(decisions=frozenset({"review"}), tags=frozenset({"proxy_ip"})), prefix="p")
    tor = _cases(ruleset)[0][0]
    assert "proxy_ip" in tor[0].tags
    for reasons, opens in ((tor, True), ([FiredRule("x", "d", "deny", 10, "enforce", ("other",), {})], False)):
        one, two = _record(reasons, []), _as_dicts(_record(reasons, []))
        got = by_tag.command(dict(one, decision="deny"), event)
        assert got == by_tag.command(dict(two, decision="deny"), event) and (got is not None) == opens
    args = packed_args(audit.decision_command(_record(*_cases(ruleset)[1])))[6:]  # past XADD key MAXLEN ~ n *
    fields = dict(zip(args[::2], args[1::2]))
    assert read_entry(b"1-0", fields)["rules"] == ["ip.tor_exit", "ip.tor_exit"]


def test_decided_now_is_the_time_as_text_and_its_code_is_the_texts():
    before = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    text = record_values.decided_now()
    after = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    assert before <= text <= after
    assert datetime.fromisoformat(text).utcoffset() == timedelta(0)
    assert datetime.fromisoformat(text).isoformat(timespec="microseconds") == text
    assert record_values.decided_code(text) == record_values.decided_micros(text)  # remembered, and parsed alike
    assert record_values.iso_micros(record_values.decided_code(text)) == text
    other = "2026-12-04T22:29:05.896275+00:00"  # not the text it gave: parsed
    assert record_values.decided_code(other) == record_values.decided_micros(other)
    copy = "".join(list(text))  # an equal text, another object: parsed, the same code
    assert record_values.decided_code(copy) == record_values.decided_code(text)


def _msgpack(values):
    return msgpack.packb(values, use_bin_type=True,
                         default=lambda o: msgpack.ExtType(o.code, o.data) if isinstance(o, msgspec.msgpack.Ext) else o)


def test_a_records_values_pack_as_msgpack_packed_them():
    """`records.pack` (msgspec) writes msgpack's bytes: each kind of value a record holds, the
    feature references, a float subclass (numpy's: msgpack packs what msgspec refuses), and an
    integer past 64 bits fails in both (the record is then JSON)."""
    values = [None, True, False, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32, 2 ** 64 - 1, -1, -32, -33, -129,
              -2 ** 63, 1.5, -0.0, float("nan"), float("inf"), "", "a" * 31, "a" * 32, "a" * 256, "a" * 65536, "商户",
              b"", b"x" * 300, [], [1] * 16, (1, 2), {}, {1: "a", "b": [2.5, None]}, {i: i for i in range(16)},
              record_event._REFS[0], record_event._REFS[255]]
    for value in values:
        assert records.pack([value]) == _msgpack([value])
    assert records.pack(values) == _msgpack(values)
    assert records.pack([numpy.float64(0.25), 0.5]) == msgpack.packb([0.25, 0.5])  # a float subclass
    for big in (2 ** 64, -2 ** 63 - 1):
        with pytest.raises(OverflowError):
            records.pack([big])
    refs = msgpack.unpackb(records.pack([record_event._REFS[3]]))
    assert type(refs[0]) is msgpack.ExtType and record_event.resolved(refs, {"a": "x", "b": 1, "c": "y", "d": "z",
                                                                            "e": "w"}) == ["w"]
