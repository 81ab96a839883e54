"""The scan of a request's raw JSON text for card numbers (`text_shows_no_pan`), and
`parse_event`'s ``text_clear``, which skips its walk of values for a body that scan cleared.

The scan is only ever allowed to say "no PAN" when the walk (`find_pan`) would find
none: every written PAN the contract's tests use, in any field, key or integer, and
any JSON document the walk refuses, must make it say "look"."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.api.body import parse_json, parse_json_clear
from fengkong.api.errors import MalformedBody
from fengkong.events import EventRejected, MAX_DEPTH, find_pan, parse_event, text_shows_no_pan
from test_events import (SEPARATORS, STRING_FIELDS, VISA_TEST, after_pan, before_pan, luhn_complete, with_,
                         with_field, written_pans)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STRING_FIELDS), written_pans(), before_pan, after_pan)
def test_a_body_with_a_pan_in_any_field_is_looked_at_and_refused_naming_the_field(path, pan, before, after):
    body = orjson.dumps(with_field(path, f"{before}{pan}{after}"))
    assert not text_shows_no_pan(body)
    with pytest.raises(EventRejected) as err:
        _parsed(body)
    assert err.value.field == path and "card number" in err.value.reason


@settings(max_examples=100, deadline=None)
@given(written_pans(), before_pan)
def test_a_body_with_a_pan_as_a_key_is_refused(pan, before):
    body = orjson.dumps(with_(card={"fingerprint": "tok", f"{before}{pan}": "x"}))
    assert not text_shows_no_pan(body)
    with pytest.raises(EventRejected) as err:
        _parsed(body)
    assert err.value.field == "card.<key>"


ARABIC_INDIC_PAN = "٤١١١١١١١١١١١١١١١"  # 4111111111111111 in Arabic-Indic digits


def test_a_pan_as_an_integer_escaped_or_in_other_digits_is_looked_at():
    other_script = json.dumps(with_(device_id=ARABIC_INDIC_PAN), ensure_ascii=False).encode()
    escaped = b'{"event_id":"e-1","device_id":"\\u0034' + VISA_TEST[1:].encode() + b'"}'  # an escaped 4
    for body in (json.dumps(with_(amount=int(VISA_TEST))).encode(),  # a JSON integer
                 json.dumps(with_(amount=-int(VISA_TEST))).encode(), escaped, other_script):
        assert not text_shows_no_pan(body), body
    assert "card number" in _refused(other_script)
    assert "card number" in _refused(escaped)


def _refused(body: bytes) -> str:
    with pytest.raises(EventRejected) as err:
        _parsed(body)
    return err.value.reason


_keys = st.one_of(st.text("0123456789 -._/ab", max_size=25), written_pans())
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**19, 10**19), st.text(max_size=40),
              st.text("0123456789 -._/x", max_size=40), st.tuples(before_pan, written_pans(), after_pan).map("".join)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=5), st.booleans())
def test_whatever_the_walk_finds_the_text_scan_never_clears(data, ascii_escapes):
    body = json.dumps(data, ensure_ascii=ascii_escapes).encode()
    if find_pan(json.loads(body), max_depth=MAX_DEPTH) is not None:
        assert not text_shows_no_pan(body)


def test_ordinary_bench_shaped_bodies_are_cleared():
    assert text_shows_no_pan(orjson.dumps(with_(occurred_at="2026-11-25T09:00:00.003000+08:00",
                                                ip="192.168.100.200", amount=123456789012)))


def test_long_digit_runs_that_are_not_card_numbers_are_cleared_in_the_text():
    # ids with a date and a sequence (8-8 digits, Luhn-valid or not), millisecond timestamps, a
    # process id and an epoch: 13+ digits in a run, none a card number; cleared without the walk
    for event_id in ("ORD-20261125-00012345", "ORD-20261125-00012346", "b14669-1796515002M-5",
                     "1796515002418", "evt_2026.11.25_000123456"):
        body = orjson.dumps(with_(event_id=event_id, amount=1796515002418))
        assert find_pan(orjson.loads(body), max_depth=MAX_DEPTH) is None
        assert text_shows_no_pan(body), event_id


def test_a_card_number_beside_long_non_card_runs_is_still_found():
    for device_id in (f"ORD-20261125-00012345 {VISA_TEST}", f"{VISA_TEST[:4]} {VISA_TEST[4:8]} {VISA_TEST[8:12]} "
                      f"{VISA_TEST[12:]}", f"1796515002418/{VISA_TEST}"):
        body = orjson.dumps(with_(event_id="ORD-20261125-00012345", device_id=device_id))
        assert not text_shows_no_pan(body), device_id
        assert "card number" in _refused(body)
    assert not text_shows_no_pan(orjson.dumps(with_(event_id="1796515002418", amount=int(VISA_TEST))))


def _parsed(body: bytes) -> object:
    """The event parsed as the routes parse it: ``text_clear`` from the body's own scan."""
    data, text_clear = parse_json_clear(body)
    return parse_event(data, text_clear=text_clear)


def test_a_cleared_body_skips_the_walk_and_an_uncleared_one_is_walked():
    data, text_clear = parse_json_clear(orjson.dumps(with_()))
    assert text_clear and parse_event(data, text_clear=text_clear).event_id == "evt-1"
    data["device_id"] = VISA_TEST  # what text_clear promises no longer holds: the walk is skipped,
    assert parse_event(data, text_clear=True).device_id == VISA_TEST  # so the flag is the caller's word
    with pytest.raises(EventRejected, match="card number"):  # and without it the walk runs
        parse_event(data)
    twin, text_clear = parse_json_clear(orjson.dumps(with_(device_id=VISA_TEST)))
    assert not text_clear  # its text shows a PAN: the route walks it
    with pytest.raises(EventRejected, match="card number"):
        parse_event(twin, text_clear=text_clear)


def test_a_body_the_scan_clears_is_still_held_to_the_depth_limit():
    deep = b'{"event_id":"e","note":' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
    assert text_shows_no_pan(deep)
    with pytest.raises(MalformedBody, match="nests deeper"):
        parse_json(deep)


def _scan_of_the_whole_text(raw: bytes) -> bool:
    """`text_shows_no_pan` as it was before it bounded its scan: every stretch of the text judged."""
    import re

    from fengkong.pan import _PAN_RUN, _run_holds_pan

    if not raw.isascii() or b"\\" in raw:
        return False
    text = raw.decode("ascii")
    for stretch in re.finditer(r"[0-9][0-9 \-._/]{12,}", text):
        begin, end = stretch.span()
        run = _PAN_RUN.search(text, begin, end)
        while run is not None:
            if _run_holds_pan(text, run.start(), run.end()):
                return False
            run = _PAN_RUN.search(text, run.end(), end)
    return True


_texty = st.lists(st.one_of(st.text("0123456789 -._/x\":,", max_size=30), written_pans(),
                            st.sampled_from(["b14669-1796515002M-5", "ORD-20261125-00012345", "1796515002418",
                                             "- - - - - - - - -", "2026-11-25T09:00:00.003+08:00", VISA_TEST])),
                  max_size=8).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_texty)
def test_the_bounded_scan_judges_as_the_scan_of_the_whole_text(text):
    # the scan looks only between the first and the last 13-digit run of the separator-free
    # copy, widened by the separators deleted: separators anywhere, runs at either end, card
    # numbers before, between and after long non-card runs must all judge as a whole scan does
    raw = text.encode()
    assert text_shows_no_pan(raw) == _scan_of_the_whole_text(raw)


def test_a_card_number_after_many_separators_and_long_runs_is_found():
    seps = "- . _ / " * 20
    for text in (f'{{"a":"{seps}","b":"1796515002418","c":"{seps}{VISA_TEST}"}}',
                 f'{{"a":"1-2-3","b":"{VISA_TEST}","c":"{seps}b14669-1796515002M-5"}}',
                 f'{{"a":"b14669-1796515002M-5{seps}","d":"{VISA_TEST[:4]} {VISA_TEST[4:8]} {VISA_TEST[8:12]} '
                 f'{VISA_TEST[12:]}"}}'):
        assert not text_shows_no_pan(text.encode()) and not _scan_of_the_whole_text(text.encode()), text


def _main_text_shows_no_pan(raw: bytes) -> bool:
    """`text_shows_no_pan` as main had it (d2b16a2), before the span was first tested for the
    shape a card number needs: the reference the faster check must answer like, text for text."""
    from fengkong.pan import _DIGIT_STRETCH, _RUN_SEPARATORS, _THIRTEEN_DIGITS, _holds_pan

    if not raw.isascii() or raw.find(b"\\") >= 0:
        return False
    digits = raw.translate(bytes.maketrans(b"123456789", b"000000000"), _RUN_SEPARATORS)
    first = digits.find(_THIRTEEN_DIGITS)
    if first < 0:
        return True
    last = digits.rfind(_THIRTEEN_DIGITS) + 13 + len(raw) - len(digits)
    text = raw.decode("ascii")
    for stretch in _DIGIT_STRETCH.finditer(text, first, last):
        begin, end = stretch.span()
        if len(raw[begin:end].translate(None, _RUN_SEPARATORS)) < 13:
            continue
        if _holds_pan(text, begin, end):
            return False
    return True


@st.composite
def _split_luhn_numbers(draw):
    """A Luhn-valid number of 12 to 20 digits cut into groups of any size (card-like or not),
    joined by 1 to 4 separators: the shapes around the ones `_run_holds_pan` takes for a PAN."""
    digits = luhn_complete(draw(st.text("0123456789", min_size=11, max_size=19)))
    out, at = [], 0
    while at < len(digits):
        size = draw(st.sampled_from([1, 2, 3, 4, 4, 4, 5, 6, 6, 7, 13]))
        out.append(digits[at:at + size])
        at += size
    return "".join(g + draw(st.text(SEPARATORS, min_size=1, max_size=4)) for g in out[:-1]) + out[-1]


_ids = st.one_of(
    st.builds(lambda p, e, n: f"b{p}-{e}-{n}", st.integers(1, 4_194_304), st.integers(10**9, 2 * 10**9),
              st.integers(0, 10**6)),
    st.builds(lambda d, n: f"ORD-{d}-{n:08d}", st.sampled_from(["20261125", "20000101", "20991231"]),
              st.integers(0, 10**8 - 1)),
    st.integers(10**12, 10**19).map(str),
    st.sampled_from(["2026-11-25T09:00:00.003000+08:00", "183.254.233.18", "622005", "2999.45"]))
_span_texts = st.lists(st.one_of(_ids, _split_luhn_numbers(), written_pans(),
                                 st.text("0123456789 -._/x\":,", max_size=24),
                                 st.sampled_from(['","', '":"', ",", ":", "x", "9", "-", "  "])),
                       max_size=10).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_span_texts)
def test_the_check_judges_every_text_as_mains_check_did(text):
    # the differential test: long ids (a pid and an epoch, a date and a sequence), card numbers
    # written in groups of any size with 1-4 separators, near misses, beside and inside each other
    raw = text.encode()
    assert text_shows_no_pan(raw) == _main_text_shows_no_pan(raw)


@settings(max_examples=500, deadline=None)
@given(_ids, st.one_of(st.none(), _split_luhn_numbers(), written_pans(), _ids))
def test_a_body_is_judged_as_mains_check_did(event_id, device_id):
    body = orjson.dumps(with_(event_id=event_id, **({} if device_id is None else {"device_id": device_id})))
    assert text_shows_no_pan(body) == _main_text_shows_no_pan(body)


def test_long_ids_of_other_shapes_are_passed_without_judging_their_runs(monkeypatch):
    import fengkong.pan as pan

    def judged(*args):
        raise AssertionError("a run was judged")

    monkeypatch.setattr(pan, "_holds_pan", judged)
    for event_id in ("b31234-1765012345-3", "ORD-20261125-00012345", "b4194304-2000000000-999999"):
        assert text_shows_no_pan(orjson.dumps(with_(event_id=event_id, amount="2999.45"))), event_id
    for device_id in ("4111 1111 1111 1112", "1796515002418"):  # a grouped number's shape, 13 digits in a row
        with pytest.raises(AssertionError, match="judged"):
            text_shows_no_pan(orjson.dumps(with_(event_id="b31234-1765012345-3", device_id=device_id)))


_bracketed = st.lists(st.one_of(st.sampled_from(["[", "{", "]", "}", '"[', '"{', '"', "\\", "é"]), _span_texts),
                      max_size=60).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_bracketed, st.integers(0, 40))
def test_the_one_pass_scan_answers_as_the_two_checks(text, limit):
    # `scan_text` counts both kinds of bracket in the PAN check's copy of the text: the same
    # nesting answer as `nesting_problem`, the same card-number answer as `text_shows_no_pan`
    from fengkong.pan import nesting_problem, scan_text

    raw = text.encode()
    assert scan_text(raw, limit) == (nesting_problem(raw, limit), text_shows_no_pan(raw))


def _nested_body(kinds: str, depth: int) -> bytes:
    """An event-like body whose ``note`` nests `depth` levels in all (its own object the first),
    the inner levels arrays or objects in the order of `kinds` (``[`` and ``{``), repeated."""
    inner = [kinds[i % len(kinds)] for i in range(depth - 1)]
    opening = "".join("[" if k == "[" else '{"a":' for k in inner)
    closing = "".join("]" if k == "[" else "}" for k in reversed(inner))
    return f'{{"event_id":"e","note":{opening}1{closing}}}'.encode()


@pytest.mark.parametrize("kinds", ["[", "{", "[{", "{{["])
def test_parse_json_clear_refuses_deep_nesting_of_either_bracket_before_parsing(kinds):
    with pytest.raises(MalformedBody, match=f"nests deeper than {MAX_DEPTH}"):
        parse_json_clear(_nested_body(kinds, MAX_DEPTH + 1))
    assert parse_json_clear(_nested_body(kinds, MAX_DEPTH))[0]["event_id"] == "e"
    with pytest.raises(MalformedBody, match="is empty"):
        parse_json_clear(b"")
    with pytest.raises(MalformedBody, match="not valid JSON"):
        parse_json_clear(_nested_body(kinds, MAX_DEPTH)[:-1])  # brackets to count, not too deep
