"""The code each plan generates (`fengkong.features.plan_code`) against what it replaces:
the reply reader against the kind-by-kind converters (`DECODERS`), the command writer
against ``hiredis.pack_command`` of the command tuple, byte for byte, on every plan a
dense history makes, and on keys it cannot write (not ASCII, too long)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import hiredis
import msgpack
import pytest
from eventgen import dense_events

from fengkong.events import Event, EventType, flat_to_dict, parse_event
from fengkong.features.assemble import ABSENT, INPUT_ABSENT, INPUT_ORDER, input_values
from fengkong.features.decoders import DECODERS, INLINE
from fengkong.features.errors import FeatureStoreError
from fengkong.features.online import OnlineStore
from fengkong.features.pipelined import PipelinedRedis
from fengkong.features.plan_code import compile_reader
from fengkong.features.rows import event_row, ts_us

#: reply values of each kind as the script sends them (Lua's false is missing), and the odd
#: ones a converter must still read alike (text, floats)
SAMPLES: dict[str, list[list[Any]]] = {
    "int": [[0], [7], [False], ["12"], [3.0]],
    "scaled": [[0], [12345], [-5], [False]],
    "optional": [[False], [0], ["A"], [2.5]],
    "optional_text": [[False], ["x"], [""]],
    "optional_int": [[False], [0], [1795568400147000], ["17.9"], [3.7], [True], [2**53], [-(2**53)], [2**53 + 1],
                     [-(2**53) - 1], [10**20 + 1]],  # past 2**53 an int is what a float makes of it
    "optional_float": [[False], [0], [1.25], ["2.5"]],
    "optional_scaled": [[False], [0], [12345], [7.5]],
    "is_one": [[0], [1], [False], [2]],
    "optional_is_one": [[False], [0], [1], [2]],
    "moments": [[0, 0, 0], [3, 1500.5, 20.25], ["2", "10", "0.5"], [True, 7, False], [2.0, 1, 2]],
    "recent": [[0] + [0] * 32, [3, 500, 700, "900"] + [0] * 29, [40] + list(range(32)), [1, 12] + [9] * 31],
}


def _typed(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_typed(v) for v in value)
    return type(value), value


def test_each_kinds_inline_expression_reads_as_its_converter():
    assert set(SAMPLES) == set(DECODERS) == set(INLINE)
    for kind, runs in SAMPLES.items():
        read_feature = compile_reader([("x.raw", kind, 1)], {"x.raw": None}, (), ())
        read_input = compile_reader([("x.raw", kind, 1)], {}, ("x.raw",), (None,))
        for values in runs:
            assert len(values) == DECODERS[kind].width, (kind, values)
            (expected,) = DECODERS[kind].convert(values)
            features, inputs = read_feature(["tag", *values])
            assert inputs == () and _typed(features["x.raw"]) == _typed(expected), (kind, values)
            features, inputs = read_input(["tag", *values])
            assert features == {} and _typed(inputs[0]) == _typed(expected), (kind, values)


def test_a_readers_inputs_come_in_the_order_asked_the_lacking_ones_as_told():
    """The inputs' tuple holds every input asked for, in that order: a value the reply holds
    as read, one it lacks as its ``absent`` value (`assemble.INPUT_ABSENT`: a first-seen
    time's is `ABSENT`, as None would be a first sighting)."""
    read = compile_reader([("a.in", "int", 1), ("a.f", "int", 2), ("b.in", "optional_int", 3)], {"a.f": None},
                          ("b.in", "c.lacking", "a.in", "d.lacking"), (None, ABSENT, None, "gone"))
    assert read(["t", 4, 5, False]) == ({"a.f": 5}, (None, ABSENT, 4, "gone"))
    assert read(["t", 4, 5, 17]) == ({"a.f": 5}, (17, ABSENT, 4, "gone"))
    assert input_values({}) == INPUT_ABSENT
    assert input_values({"card.first_seen_us": None})[INPUT_ORDER.index("card.first_seen_us")] is None
    assert input_values(dict.fromkeys(INPUT_ORDER, 1)) == (1,) * len(INPUT_ORDER)


def test_a_readers_ratios_are_deriveds_from_the_values_it_read():
    """The ratios of two raw features a reader computes (`assemble.RAW_RATIOS`) are what
    `derive` computes from the dict: missing when a side is missing, absent from the reply
    or the denominator is 0; the blank dict's order kept."""
    blank = dict.fromkeys(["a.n", "a.d", "b.n", "r.ab", "r.bc", "r.self"])
    read = compile_reader([("a.n", "int", 1), ("a.d", "optional", 2), ("b.n", "scaled", 3)], blank, (), (),
                          [("r.ab", "a.n", "a.d"), ("r.bc", "b.n", "c.absent"), ("r.self", "b.n", "b.n")])
    for reply, expected in [(["t", 3, 4, 500], (0.75, None, 1.0)), (["t", 3, 0, 0], (None, None, None)),
                            (["t", "7", False, 250], (None, None, 1.0)), (["t", 0, 2.5, -100], (0.0, None, 1.0))]:
        f, inputs = read(reply)
        assert list(f) == list(blank) and inputs == ()
        oracle = dict(f, **{"r.ab": None, "r.bc": None, "r.self": None})
        for name, num, den in (("r.ab", "a.n", "a.d"), ("r.self", "b.n", "b.n")):
            n, d = oracle[num], oracle[den]
            oracle[name] = None if n is None or d is None or d == 0 else n / d
        assert _typed(tuple(f[k] for k in ("r.ab", "r.bc", "r.self"))) == _typed(expected), reply
        assert {k: _typed(v) for k, v in f.items()} == {k: _typed(v) for k, v in oracle.items()}, reply


def test_a_plans_reader_gives_what_each_ops_decode_gives(store):
    features = inputs = 0
    for event in _dense(800):
        call = store._prepare(event)
        reply = store._script(keys=call.keys, args=call.args)
        stored = msgpack.unpackb(reply[1])
        f, i = call.plan.read(stored)
        raw: dict[str, Any] = {}
        at = 1
        for op in call.plan.ops:
            raw.update(op.decode(stored[at:at + op.width]))
            at += op.width
        assert at == len(stored) == call.plan.width
        assert len(i) == len(INPUT_ORDER)
        read = {k for k in INPUT_ORDER if k in raw}
        for k, v, lacking in zip(INPUT_ORDER, i, INPUT_ABSENT):
            assert _typed(v) == _typed(raw[k]) if k in raw else v is lacking, k
        assert read | {k for k in f if k in raw} == set(raw)  # every raw value, once
        assert all(_typed(f[k]) == _typed(raw[k]) for k in f if k in raw)
        assert list(f) == list(call.plan.blank)
        features += len(f)
        inputs += len(read)
    assert features and inputs


def test_a_reply_of_another_length_is_refused_by_name(store):
    event = next(e for e in _dense(50) if e.type.value == "payment")
    call = store._prepare(event)
    reply = store._script(keys=call.keys, args=call.args)
    stored = msgpack.unpackb(reply[1])
    with pytest.raises(FeatureStoreError, match=f"holds {len(stored) - 1} values, its ops return {len(stored)}"):
        store._read(event, call, stored[:-1], False)


def test_the_written_command_is_hiredis_pack_of_the_command_tuple(store):
    for event in _dense(3000):
        call = store._packed_call(event)
        assert call.packed == hiredis.pack_command(store._prepare(event).command), event.event_id
    assert len(store.planner.plans) > 40  # types x entities present: the writers of many plans


def test_the_packed_values_and_the_plan_key_are_those_of_the_rows_values(store):
    """The generated packer against ``Packer().pack`` of `EventArgs.values`, the generated
    plan key against the type and the columns' ``is None``: on a dense history's rows and
    on rows varied where the packer looks values up (every hour, no amount, flags, an
    IPv6 address, none)."""
    args, planner = store.planner.args, store.planner
    rows = [event_row(e, store.ipintel, store.biz_offset_min) for e in _dense(1500)]
    base = next(r for r in rows if r["type"] == "payment" and r["ip"])
    for hour in range(24):
        rows.append({**base, "hour": hour, "biz_hour": (hour + 5) % 24})
    for column, _ in args.wheres:
        rows += [{**base, column: True}, {**base, column: False}, {**base, column: True, "amount": 0}]
    rows += [{**base, "has_amount": False, "amount": 0}, {**base, "ip": "2001:db8::1"},
             {**base, "ip": None, "ip_info": None, "subnet": None}, {**base, "amount": 10**12, "ts_us": 2**62}]
    assert args.wheres and args.members
    for row in rows:
        assert args.packed(row) == list(map(msgpack.Packer().pack, args.values(row))), row["event_id"]
        assert planner._plan_key(row) == (row["type"], *(row[c] is None for c in planner.columns))
    assert len({planner._plan_key(row) for row in rows}) > 40


@pytest.mark.parametrize("prefix_text", ["fk-é", "p" * 1100])
def test_keys_the_writer_cannot_count_are_packed_the_general_way(redis_client, ipintel, list_specs, prefix_text):
    store = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix_text)
    for event in _dense(50):
        row = event_row(event, store.ipintel, store.biz_offset_min)
        assert store.planner.command(row, store._script.sha, store.dedup_ttl_s)[1] is None
        assert store._packed_call(event).packed == hiredis.pack_command(store._prepare(event).command)


def test_process_async_answers_as_process(redis_client, redis_server, ipintel, list_specs, prefix):
    sync = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix + "s")
    pipelined = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix + "a")
    events = _dense(400)

    async def run() -> list[Any]:
        conn = PipelinedRedis(redis_server.url)
        try:
            return [await pipelined.process_async(e, conn, 2.0) for e in events]
        finally:
            conn.close()

    for event, got in zip(events, asyncio.run(run())):
        want = sync.process(event)
        assert got.duplicate == want.duplicate
        assert {k: _typed(v) for k, v in got.features.items()} == {k: _typed(v) for k, v in want.features.items()}


def test_a_command_given_as_bytes_is_written_as_it_is(redis_server):
    async def run() -> list[Any]:
        conn = PipelinedRedis(redis_server.url)
        try:
            return await conn.execute([hiredis.pack_command(("ECHO", "as packed")), ("ECHO", "as args")], 2.0)
        finally:
            conn.close()

    assert asyncio.run(run()) == [b"as packed", b"as args"]


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(hours=8), timedelta(hours=-9, minutes=-30),
                                    timedelta(hours=5, minutes=45), timedelta(seconds=-1, microseconds=250_000)])
def test_the_rows_time_is_the_exact_microseconds_of_its_instant(ipintel, offset):
    tz = timezone(offset)
    for when in (datetime(2026, 11, 25, 23, 59, 59, 999_999, tzinfo=tz), datetime(2027, 1, 1, 0, 0, tzinfo=tz),
                 datetime(2026, 3, 1, 12, 30, 0, 5, tzinfo=tz), datetime(2026, 3, 1, 15, 59, 59, 999_999, tzinfo=tz)):
        event = parse_event({"event_id": "t1", "type": "payment", "merchant_id": "m1", "amount": 100,
                             "occurred_at": when})
        row = event_row(event, ipintel, 480)
        t = ts_us(when)
        local = t + int(offset.total_seconds()) * 1_000_000
        assert row["ts_us"] == t
        assert row["hour"] == (local // 3_600_000_000) % 24  # as it always was, a sub-second offset too
        assert offset.microseconds or row["hour"] == when.hour
        assert row["biz_day"] == (t + 480 * 60_000_000) // 86_400_000_000
        assert row["biz_hour"] == ((t + 480 * 60_000_000) // 3_600_000_000) % 24  # (taken in whole seconds)
        assert row["biz_night"] == (row["biz_hour"] < 6) and row["is_night"] == (row["hour"] < 6)


@pytest.mark.parametrize("text", ["2026-11-25T23:59:59.999999+05:45", "2026-03-01T00:00:00-09:30",
                                  "2027-01-01T07:59:59Z", "2026-06-30T12:00:00.000001+14:00"])
def test_the_rows_time_from_iso_text_is_the_exact_microseconds_of_its_instant(ipintel, text):
    """Parsed from text, the event's time has pydantic's `TzInfo`, which `event_row` asks for
    its offset directly: the same instant, wall-time hour and business day and hour as the
    datetime's own arithmetic."""
    event = parse_event({"event_id": "t2", "type": "payment", "merchant_id": "m1", "amount": 100,
                         "occurred_at": text})
    when = event.occurred_at
    assert type(when.tzinfo).__name__ == "TzInfo"
    row = event_row(event, ipintel, 480)
    t = ts_us(when)
    assert row["ts_us"] == t and row["hour"] == when.hour
    assert row["biz_day"] == (t + 480 * 60_000_000) // 86_400_000_000
    assert row["biz_hour"] == ((t + 480 * 60_000_000) // 3_600_000_000) % 24


def _row_by_attributes(event: Any, ipintel: Any) -> dict[str, Any]:
    """What `event_row` gives for the event's entity and amount columns, read the plain way
    (the model's attributes, `Event.amount_minor`): the reference for its reads of ``__dict__``."""
    card = event.card
    fp = card.fingerprint if card else None
    kind = card.type.value if card and card.type else None
    info, subnet = ipintel.lookup_with_subnet(event.ip) if event.ip else (None, None)
    return {"event_id": event.event_id, "type": event.type.value, "amount": event.amount_minor or 0,
            "has_amount": event.amount is not None, "currency": event.currency,
            "channel": event.channel.value if event.channel else None, "card_fp": fp, "card_type": kind,
            "card_bin": card.bin if card else None, "card_country": card.issuer_country if card else None,
            "is_credit": kind == "credit", "user_id": event.user_id, "device_id": event.device_id,
            "ip": event.ip, "subnet": subnet, "ip_info": info, "merchant_id": event.merchant_id,
            "merchant_card": f"{event.merchant_id}|{fp}" if event.merchant_id and fp else None,
            "mcc": event.merchant_mcc}


def test_the_rows_columns_are_the_events_fields(ipintel):
    """`event_row` reads the event's (and its card's) field values from ``__dict__`` rather
    than attribute by attribute: the same values, for every type and with entities missing;
    and an event built without validation (no stored minor amount) gets its amount from
    `Event.amount_minor`, as before."""
    events = _dense(400)
    events.append(parse_event({"event_id": "login1", "type": "login", "user_id": "u1", "ip": "2001:db8::1",
                               "occurred_at": "2026-11-25T09:00:00+08:00"}))
    events.append(Event.model_construct(event_id="raw1", type=EventType.PAYMENT, merchant_id="m1",
                                        occurred_at=datetime(2026, 11, 25, 9, tzinfo=timezone.utc),
                                        amount="12.50", currency="CNY", card=None, ip="113.5.6.7",
                                        channel=None, user_id=None, device_id=None, merchant_mcc=None,
                                        refers_to=None, challenge=None))
    assert "_amount_minor" not in events[-1].__dict__
    for event in events:
        row = event_row(event, ipintel, 480)
        expected = _row_by_attributes(event, ipintel)
        assert {name: row[name] for name in expected} == expected, event.event_id
    assert event_row(events[-1], ipintel, 480)["amount"] == 1250
    assert any(e.card is not None and e.card.type is not None for e in events)
    assert any(e.card is None for e in events) and any(e.amount is None for e in events)


def _dense(n: int) -> list[Any]:
    """The first ``n`` events of a dense history (every type, entities often missing)."""
    frame = dense_events(max(n, 400)).head(n)
    return [parse_event(flat_to_dict(r)) for r in frame.to_dict("records")]
