"""The event contract: what it accepts, what it refuses, and that every refusal names the field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.events import (
    Event,
    EventRejected,
    event_to_flat,
    find_pan,
    flat_to_dict,
    looks_like_pan,
    luhn_ok,
    parse_event,
)

BASE = {
    "event_id": "evt-1",
    "type": "payment",
    "occurred_at": "2026-11-25T10:00:00+08:00",
    "merchant_id": "m-1",
    "user_id": "u-1",
    "amount": "12.50",
    "channel": "quick_pay",
    "card": {"fingerprint": "tok_abc", "bin": "622848", "type": "credit", "issuer_country": "CN"},
    "ip": "113.87.1.2",
    "device_id": "dev-1",
}
VISA_TEST = "4111111111111111"  # a well-known test PAN (passes Luhn)


def with_(**changes):
    data = json.loads(json.dumps(BASE))
    data.update(changes)
    return data


def refused(data) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        parse_event(data)
    return info.value


def test_a_complete_payment_is_accepted_and_money_is_exact():
    event = parse_event(BASE)
    assert event.amount_minor == 1250
    assert parse_event(with_(amount=1250)).amount_minor == 1250  # integer = minor units
    assert parse_event(with_(amount="100", currency="JPY")).amount_minor == 100
    assert event.occurred_at.utcoffset().total_seconds() == 8 * 3600


def test_the_minor_amount_is_converted_once_at_validation(monkeypatch):
    import fengkong.events as events

    event = parse_event(BASE)  # "12.50": a decimal text, the costly form to convert

    def refuse(*args):
        raise AssertionError("amount converted again")

    monkeypatch.setattr(events, "_to_minor", refuse)
    assert event.amount_minor == 1250 and event.amount_minor == 1250


@pytest.mark.parametrize(
    "change, field",
    [
        ({"amount": 12.5}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "Infinity"}, "amount"),
        ({"amount": "-1.00"}, "amount"),
        ({"amount": -100}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "1.234"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": 10**15 + 1}, "amount"),
        ({"amount": 2**70}, "amount"),
        ({"amount": "10000000000000.01"}, "amount"),
        ({"occurred_at": "2026-11-25T10:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"type": "purchase"}, "type"),
        ({"channel": "carrier_pigeon"}, "channel"),
        ({"card": {"fingerprint": "t", "type": "gold"}}, "card.type"),
        ({"card": {"fingerprint": "t", "bin": "12"}}, "card.bin"),
        ({"ip": "300.1.1.1"}, "ip"),
        ({"merchant_id": None}, "merchant_id"),
        ({"colour": "red"}, "colour"),
        ({"currency": "yuan"}, "currency"),
    ],
)
def test_each_refusal_names_its_field(change, field):
    data = with_(**change)
    if change.get("merchant_id", "") is None:
        del data["merchant_id"]
    assert refused(data).field == field


def test_event_id_and_type_are_required():
    data = with_()
    del data["event_id"]
    assert refused(data).field == "event_id"
    data = with_()
    del data["type"]
    assert refused(data).field == "type"


def test_a_payment_needs_an_amount_but_a_login_does_not():
    data = with_()
    del data["amount"]
    assert refused(data).field == "amount"
    login = {"event_id": "l1", "type": "login", "occurred_at": BASE["occurred_at"], "user_id": "u-1"}
    assert parse_event(login).amount_minor is None


@pytest.mark.parametrize(
    "where",
    [
        {"card": {"fingerprint": VISA_TEST}},
        {"device_id": "4111 1111 1111 1111"},
        {"user_id": "4111-1111-1111-1111"},
        {"note": VISA_TEST},  # an unknown field is still scanned first
        {"amount": int(VISA_TEST)},
    ],
)
def test_a_card_number_anywhere_is_refused_without_echoing_it(where):
    err = refused(with_(**where))
    assert "card number" in err.reason
    assert "4111" not in str(err) and "1111 1111" not in str(err)


def test_digit_strings_that_fail_luhn_or_are_short_are_not_pans():
    assert luhn_ok(VISA_TEST) and not luhn_ok("4111111111111112")
    assert not looks_like_pan("4111111111111112")
    assert not looks_like_pan("411111111111")  # 12 digits
    assert not looks_like_pan("41111111111111111111")  # 20 digits
    assert looks_like_pan("5500 0000 0000 0004")
    assert find_pan({"a": {"b": ["x", VISA_TEST]}}) == "a.b[1]"


def test_flat_round_trip_keeps_the_event():
    event = parse_event(BASE)
    again = parse_event(flat_to_dict(event_to_flat(event)))
    assert again.amount_minor == event.amount_minor == 1250
    assert again.model_dump(exclude={"amount"}) == event.model_dump(exclude={"amount"})


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_no_float_amount_is_ever_accepted(value):
    with pytest.raises(EventRejected) as info:
        parse_event(with_(amount=value))
    assert info.value.field == "amount"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**15))
def test_integer_minor_units_survive_exactly(value):
    if looks_like_pan(value):
        return
    assert parse_event(with_(amount=value)).amount_minor == value


def test_event_model_is_immutable():
    event = parse_event(BASE)
    with pytest.raises(Exception):
        event.amount = "99"  # type: ignore[misc]
    assert isinstance(event, Event)


def test_flat_rows_with_pandas_missing_markers_drop_those_fields():
    import pandas as pd

    row = {"event_id": "e", "type": "login", "occurred_at": BASE["occurred_at"], "amount": pd.NA,
           "user_id": "u", "card_fingerprint": float("nan"), "ip": None}
    assert flat_to_dict(row) == {"event_id": "e", "type": "login", "occurred_at": BASE["occurred_at"], "user_id": "u"}
