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


# --- the strict reading of the wire --------------------------------------------------------------
@pytest.mark.parametrize("amount", ["1E+999999", "1e-999999999", "1e3", "４９.９０", "1_000", " 12.50", "12.50 ",
                                    "12.", ".5", "+12", "0x10", "1,000.00", "١٢", "12.5.0", "", "9" * 5000])
def test_an_amount_is_a_plain_ascii_decimal(amount):
    err = refused(with_(amount=amount))
    assert err.field == "amount"


@pytest.mark.parametrize("amount, minor", [("0.01", 1), ("12", 1200), ("012.50", 1250), ("12.500", 1250),
                                           ("10000000000000.00", 10**15)])
def test_plain_decimals_within_the_cap_are_accepted(amount, minor):
    assert parse_event(with_(amount=amount)).amount_minor == minor


@pytest.mark.parametrize("amount, currency, minor", [("0" * 5000 + "1", "CNY", 100), ("0" * 5000 + "1.50", "CNY", 150),
                                                     ("0" * 5000, "JPY", 0), ("000", "JPY", 0)])
def test_leading_zeros_past_pythons_digit_limit_are_only_zeros(amount, currency, minor):
    """int() refuses a text of more than 4,300 digits: leading zeros are not the value's digits,
    so an amount padded with thousands of them is the amount, not an error naming no field."""
    assert parse_event(with_(amount=amount, currency=currency)).amount_minor == minor


def test_an_amount_of_thousands_of_digits_is_refused_by_its_field():
    assert refused(with_(amount="1" + "0" * 5000)).field == "amount"


@pytest.mark.parametrize("literal, reason", [("123456789012345678901234567890", "is larger than"),
                                             ("9223372036854775808", "is larger than"),
                                             ("-123456789012345678901234567890", "must not be negative"),
                                             ("12.5", "never a float"), ("100.0", "never a float")])
def test_an_integer_too_large_for_64_bits_is_refused_as_too_large_not_as_a_float(literal, reason):
    """orjson, the service's parser, returns an integer literal past 64 bits as a float: the
    client sent an integer, so the answer says it is too large (or negative), not "never a float"."""
    from fengkong.api.encoding import loads

    body = json.dumps(with_(amount=0)).replace('"amount": 0', f'"amount": {literal}')
    err = refused(loads(body))
    assert err.field == "amount" and reason in err.reason, err


def _decimal_minor(amount: str, currency: str) -> int | None:
    """The oracle: the amount in minor units by `decimal`, None where the contract refuses it."""
    from decimal import Decimal

    from fengkong.events import MAX_AMOUNT_MINOR, currency_exponent

    minor = Decimal(amount).scaleb(currency_exponent(currency))
    if amount.startswith("-") or minor != minor.to_integral_value() or minor > MAX_AMOUNT_MINOR:
        return None
    return int(minor)


@settings(max_examples=400)
@given(whole=st.text("0123456789", min_size=1, max_size=19), fraction=st.none() | st.text("0123456789", max_size=6),
       negative=st.booleans(), currency=st.sampled_from(["CNY", "JPY", "KWD", "XXX"]))
def test_a_decimal_amount_is_converted_as_decimal_arithmetic_would(whole, fraction, negative, currency):
    amount = ("-" if negative else "") + whole + ("" if fraction is None else "." + fraction)
    if fraction == "":  # "12." is not a plain decimal
        assert refused(with_(amount=amount, currency=currency)).field == "amount"
        return
    expected = _decimal_minor(amount, currency)
    if expected is None:
        assert refused(with_(amount=amount, currency=currency)).field == "amount"
    else:
        assert parse_event(with_(amount=amount, currency=currency)).amount_minor == expected


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00",
                                  "1999-12-31T23:59:59+00:00", "2100-01-01T00:00:00+00:00", 1764036000,
                                  "２０２６-11-25T10:00:00+08:00", "0001-01-01T00:00:00+23:59",
                                  "9999-12-31T23:59:59-23:59", "2000-01-01T07:59:59.999999+08:00",
                                  "2100-01-01T08:00:00+08:00"])
def test_occurred_at_outside_the_sane_range_or_not_text_is_refused(when):
    assert refused(with_(occurred_at=when)).field == "occurred_at"


@pytest.mark.parametrize("when", ["2000-01-01T00:00:00+00:00", "2000-01-01T08:00:00+08:00",
                                  "1999-12-31T19:00:00-05:00", "2099-12-31T23:59:59.999999+00:00",
                                  "2100-01-01T07:59:59.999999+08:00"])
def test_occurred_at_at_the_edges_of_the_range_at_any_offset_is_accepted(when):
    assert parse_event(with_(occurred_at=when)).occurred_at.isoformat() == when


def test_the_occurred_at_range_is_configurable(monkeypatch):
    from fengkong.events import occurred_at_range

    assert parse_event(with_(occurred_at="2000-01-01T00:00:00+00:00")).ts == 946684800
    monkeypatch.setenv("FENGKONG_OCCURRED_AT_MIN", "1990-01-01")
    monkeypatch.setenv("FENGKONG_OCCURRED_AT_MAX", "2027-01-01T00:00:00+00:00")
    occurred_at_range.cache_clear()
    try:
        assert parse_event(with_(occurred_at="1995-06-01T00:00:00+08:00")).occurred_at.year == 1995
        assert "2027-01-01" in refused(with_(occurred_at="2027-06-01T00:00:00+00:00")).reason
    finally:
        occurred_at_range.cache_clear()


def _nested(depth: int) -> dict:
    inner: dict = {}
    outer = inner
    for _ in range(depth - 1):
        inner["x"] = {}
        inner = inner["x"]
    return outer


def test_deep_nesting_is_refused_without_recursion():
    import time

    from fengkong.events import MAX_DEPTH

    t0 = time.perf_counter()
    err = refused(with_(note=_nested(100_000)))  # far past Python's recursion limit
    assert err.field == "<event>" and f"{MAX_DEPTH} levels" in err.reason
    assert time.perf_counter() - t0 < 1.0
    assert refused(with_(note=[[[["x"]]]])).field == "note"  # shallow: refused as an unknown field


def test_nesting_is_measured_on_raw_bytes_outside_strings():
    from fengkong.events import MAX_DEPTH, nesting_problem

    assert nesting_problem(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)) is not None
    assert nesting_problem(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is None
    assert nesting_problem(b'{"a": "' + b"[{" * 500 + b'"}') is None  # brackets inside a string
    assert nesting_problem(b'{"a": "\\"' + b"[" * 500 + b'"}') is None  # after an escaped quote
    assert nesting_problem(b'{"a": "x"' + b', "b": {"c": [1]}' * 100 + b"}") is None  # wide, not deep
    deep = b'{"a": "x\\\\", "b": ' + b"[" * 40 + b"]" * 40 + b"}"  # an escaped backslash ends the string
    assert nesting_problem(deep) is not None


# --- card numbers anywhere ----------------------------------------------------------------------
SEPARATORS = " -._/"
STRING_FIELDS = ["event_id", "merchant_id", "user_id", "device_id", "refers_to", "ip", "currency", "channel",
                 "type", "occurred_at", "amount", "merchant_mcc", "card.fingerprint", "card.bin", "card.type",
                 "card.issuer_country", "note", "card.note"]
#: How card numbers are written in groups, by length.
GROUPINGS = {13: [(4, 4, 4, 1)], 14: [(4, 6, 4)], 15: [(4, 6, 5)], 16: [(4, 4, 4, 4)], 17: [(4, 4, 4, 4, 1)],
             18: [(4, 4, 4, 6)], 19: [(4, 4, 4, 4, 3)]}


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it pass Luhn."""
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


@st.composite
def written_pans(draw):
    """A Luhn-valid 13-19 digit number, unbroken or grouped with random separators."""
    length = draw(st.integers(13, 19))
    pan = luhn_complete(draw(st.sampled_from("2345689")) + draw(st.text("0123456789", min_size=length - 2,
                                                                          max_size=length - 2)))
    if draw(st.booleans()):
        return pan
    out, at = [], 0
    for size in draw(st.sampled_from(GROUPINGS[length])):
        out.append(pan[at:at + size])
        at += size
    seps = [draw(st.text(SEPARATORS, min_size=1, max_size=3)) for _ in out[1:]]
    return out[0] + "".join(s + g for s, g in zip(seps, out[1:]))


_word = st.text("xyz9:#@=" + SEPARATORS, max_size=5)
_boundary = st.sampled_from(":#@=" + SEPARATORS)
#: Text around the number: anything, but never glued to it by a letter or a digit.
before_pan = st.one_of(st.just(""), st.tuples(_word, _boundary).map("".join))
after_pan = st.one_of(st.just(""), st.tuples(_boundary, _word).map("".join))


def with_field(path: str, value: str) -> dict:
    data = with_()
    if path.startswith("card."):
        data["card"] = dict(data["card"], **{path[5:]: value})
    else:
        data[path] = value
    return data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STRING_FIELDS), written_pans(), before_pan, after_pan)
def test_a_pan_in_any_string_field_is_refused_naming_the_field_without_echoing_it(path, pan, before, after):
    err = refused(with_field(path, f"{before}{pan}{after}"))
    assert err.field == path and "card number" in err.reason
    digits = "".join(c for c in pan if c.isdigit())
    assert digits[:6] not in str(err) and pan not in str(err)


@settings(max_examples=100, deadline=None)
@given(written_pans(), before_pan)
def test_a_pan_as_an_object_key_is_refused_without_naming_it(pan, before):
    err = refused(with_(card={"fingerprint": "tok", f"{before}{pan}": "x"}))
    assert err.field == "card.<key>" and "card number" in err.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(str),
    st.text("abcdefghijklmnopqrstuvwxyz-_:.", min_size=1, max_size=20).map(lambda t: "u" + t),
    st.integers(0, 10**12 - 1).map(lambda n: f"acct-{n:012d}"),  # 12-digit runs
    st.integers(10**15, 10**16 - 1).map(lambda n: f"n-{n}").filter(lambda t: not luhn_ok(t[2:])),
    st.tuples(st.integers(0, 10**8 - 1), st.integers(0, 10**8 - 1)).map(lambda p: f"ORD-{p[0]:08d}-{p[1]:08d}"),
    st.lists(st.integers(0, 10**6 - 1), min_size=1, max_size=6).map(lambda ns: "-".join(f"{n:06d}" for n in ns)),
))
def test_ordinary_ids_are_not_taken_for_card_numbers(ident):
    for path in ("event_id", "user_id", "device_id", "card.fingerprint"):
        assert parse_event(with_field(path, ident)) is not None


def test_pans_written_as_reported_are_refused():
    for where in [{"device_id": "4111.1111.1111.1111"}, {"device_id": "pan:4111111111111111"},
                  {"event_id": "e-4111111111111111"}, {"user_id": "4111_1111_1111_1111"},
                  {"device_id": "3782/822463/10005"}, {"device_id": "卡号4111111111111111"}]:
        assert "card number" in refused(with_(**where)).reason, where
    assert not looks_like_pan("x4111111111111111")  # glued to a letter: a hex id, not a card number


# -- the decision path's cheaper checks give the answers of the plain ones ------------------
_REFERENCE_DECIMAL = __import__("re").compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


def _reference_minor(amount: str, currency: str) -> int:
    """The amount text's minor units as the contract defines them, by the regular expression
    and `decimal` (what `_to_minor`'s string path must answer, refusal for refusal)."""
    from decimal import Decimal

    from fengkong.events import MAX_AMOUNT_MINOR, currency_exponent

    plain = _REFERENCE_DECIMAL.fullmatch(amount)
    if plain is None:
        raise EventRejected("amount", "must be a plain decimal")
    if plain.group(1):
        raise EventRejected("amount", "must not be negative")
    if len(plain.group(2).lstrip("0")) > 16:
        raise EventRejected("amount", "is larger")
    exponent = currency_exponent(currency)
    minor = Decimal(amount).scaleb(exponent)
    if minor != minor.to_integral_value():
        raise EventRejected("amount", "has more than")
    if minor > MAX_AMOUNT_MINOR:
        raise EventRejected("amount", "is larger")
    return int(minor)


_AMOUNT_TEXT = st.one_of(
    st.text(alphabet="0123456789.-", max_size=24),
    st.text(alphabet="0123456789.-+ e_x\u0663\u00b2\uff11", max_size=12),
    st.builds(lambda z, w, f, t: "0" * z + w + ("." + f + "0" * t if f is not None else ""),
              st.integers(0, 20), st.integers(0, 10**19).map(str),
              st.none() | st.text(alphabet="0123456789", min_size=0, max_size=6), st.integers(0, 4)),
)


@settings(max_examples=3000, deadline=None)
@given(_AMOUNT_TEXT, st.sampled_from(["CNY", "JPY", "KWD", "XXX"]))
def test_an_amount_text_converts_or_is_refused_as_the_contract_says(amount, currency):
    from fengkong.events import _to_minor

    try:
        expected: object = _reference_minor(amount, currency)
    except EventRejected as exc:
        expected = exc.reason.split(" ")[0:2]
    try:
        got: object = _to_minor(amount, currency)
    except EventRejected as exc:
        assert exc.field == "amount"
        got = exc.reason.split(" ")[0:2]
    assert got == expected


def test_occurred_at_far_from_the_bounds_is_checked_against_the_configured_span(monkeypatch):
    """`_aware` passes a year well inside the span without the subtraction: the years it
    trusts follow the configured span, and near a bound the exact check still decides."""
    from fengkong.events import occurred_at_range

    monkeypatch.setenv("FENGKONG_OCCURRED_AT_MIN", "2026-11-25T00:00:00+00:00")
    monkeypatch.setenv("FENGKONG_OCCURRED_AT_MAX", "2030-01-01T00:00:00+00:00")
    occurred_at_range.cache_clear()
    try:
        assert parse_event(with_(occurred_at="2028-06-01T00:00:00+08:00")).occurred_at.year == 2028
        assert refused(with_(occurred_at="2026-11-24T23:59:59+00:00")).field == "occurred_at"
        assert refused(with_(occurred_at="2026-11-25T07:59:59+08:00")).field == "occurred_at"
        assert parse_event(with_(occurred_at="2026-11-25T08:00:00+08:00")).ts == 1795564800  # 2026-11-25T00:00Z
        assert refused(with_(occurred_at="2029-12-31T23:00:00-01:00")).field == "occurred_at"
        assert refused(with_(occurred_at="2026-06-01T00:00:00+00:00")).field == "occurred_at"
        monkeypatch.setenv("FENGKONG_OCCURRED_AT_MIN", "2026-12-31T23:00:00-10:00")  # 2027-01-01T09:00Z
        occurred_at_range.cache_clear()
        assert refused(with_(occurred_at="2027-01-01T08:59:59+00:00")).field == "occurred_at"
        assert parse_event(with_(occurred_at="2027-01-01T09:00:00+00:00")).occurred_at.year == 2027
    finally:
        monkeypatch.delenv("FENGKONG_OCCURRED_AT_MIN")
        monkeypatch.delenv("FENGKONG_OCCURRED_AT_MAX")
        occurred_at_range.cache_clear()
    assert parse_event(with_(occurred_at="2026-06-01T00:00:00+00:00")).occurred_at.year == 2026


@settings(max_examples=2000, deadline=None)
@given(st.datetimes(min_value=__import__("datetime").datetime(1998, 1, 1),
                    max_value=__import__("datetime").datetime(2101, 12, 31)),
       st.integers(-23 * 60 - 59, 23 * 60 + 59))
def test_occurred_at_is_accepted_exactly_within_the_span_at_any_offset(naive, offset_min):
    from datetime import timedelta, timezone

    from fengkong.events import occurred_at_range

    when = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    low, high = occurred_at_range()
    text = when.isoformat()
    if low <= when < high:
        assert parse_event(with_(occurred_at=text)).occurred_at == when
    else:
        assert refused(with_(occurred_at=text)).field == "occurred_at"


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.text(alphabet="0123456789.", max_size=17),
    st.lists(st.integers(0, 999).map(str) | st.sampled_from(["", "00", "01", "+1", " 1", "1a", "\u0661"]),
             min_size=3, max_size=5).map(".".join)))
def test_the_ip_field_keeps_exactly_the_canonical_dotted_quads_and_normalises_the_rest(text):
    import ipaddress

    from fengkong.events import IPV4_TEXT

    try:
        expected = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    if expected is None:
        assert refused(with_(ip=text)).field == "ip"
    else:
        assert parse_event(with_(ip=text)).ip == expected
        if IPV4_TEXT.fullmatch(text):
            assert expected == text
