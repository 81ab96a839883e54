"""A number durable only compares with constants travels as its class's representative.

`classes.value_classes` cuts the number line at a field's constants into classes that
pass the same tests, each with a fixed text (nothing, when it passes no test: an
absent field fails them all too); durable then walks fewer fields and Python formats
no float. Held here: the classes, which fields have them, and durable's fires against
the plain-Python predicates on values at, around and past each constant (ints and
floats on either side, -0.0, 2^53 and past it, numpy scalars, NaN, infinities, bools).
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.engine.durable_backend import DurableRuleset, unique_name
from fengkong.engine.durable_backend.classes import classify, exact_constant, number_tests, value_classes
from fengkong.engine.language import parse
from fengkong.engine.predicates import clean, compile_predicate
from fengkong.engine.schema import Schema

SCHEMA = Schema.from_catalog({"blocked_cards": "card"})


def test_classes_merge_neighbours_that_pass_the_same_tests() -> None:
    assert value_classes(None) is None and value_classes([]) is None
    assert value_classes([(">=", 20), (">=", 5), (">=", 50)]) == (
        ("<", 5, None), ("<", 20, "5"), ("<", 50, "20"), (None, None, "50"))
    assert value_classes([(">=", 1), ("<", 1)]) == (("<", 1, "0"), (None, None, "1"))
    assert value_classes([(">", 2)]) == (("<=", 2, None), (None, None, "3"))
    assert value_classes([("<", 7), ("<", 1)]) == (("<", 1, "0"), ("<", 7, "1"), (None, None, None))
    assert value_classes([("==", 2), ("<", 2)]) == (("<", 2, "1"), ("<=", 2, "2"), (None, None, None))
    # between two constants: a number strictly inside (here their mean)
    assert value_classes([(">", 0.1), ("<", 0.3)]) == (("<=", 0.1, "0.1"), ("<", 0.3, "0.2"), (None, None, "0.3"))
    # no plain representative past 2^53: the value is sent as it is
    assert value_classes([(">=", 2**53)]) is None


def test_classify_places_a_value_in_its_class() -> None:
    classes = value_classes([(">=", 0.9), ("<", 0.5), (">=", 0.1)])
    assert classes is not None
    got = {x: classify(x, classes) for x in (-5, 0.0999, 0.1, 0.3, 0.5, 0.8999, 0.9, 7)}
    assert got == {-5: "-0.9", 0.0999: "-0.9", 0.1: "0.1", 0.3: "0.1", 0.5: "0.5", 0.8999: "0.5", 0.9: "0.9",
                   7: "0.9"}


def test_only_fields_compared_with_exact_constants_qualify() -> None:
    assert exact_constant(5) and exact_constant(-2**53) and exact_constant(0.8) and exact_constant(-0.0)
    assert not exact_constant(2**53 + 1) and not exact_constant(True) and not exact_constant(1e-05)
    assert not exact_constant(float("inf")) and not exact_constant("5")
    conds = [{"$gte": {"a": 5}}, {"$and": [{"$lt": {"b": 1}}, {"$nex": {"b": 1}}]}, {"c": 3},
             {"$gte": {"d": {"$m": "e"}}}, {"$neq": {"f": 1}}, {"$gt": {"g": 1e-05}}, {"h": "x"},
             {"$or": [{"$lte": {"i": 2}}, {"$gte": {"j": 1}}]}, {"$gte": {"k": 1}}, {"$ex": {"k": 1}}]
    assert number_tests(conds) == {"a": [(">=", 5)], "c": [("==", 3)], "i": [("<=", 2)], "j": [(">=", 1)]}


RULES = [
    ("ge", "user.amount_n >= 3"), ("gt", "merchant.count_24h > -2.5"), ("lt", "user.amount_zscore < 0"),
    ("le", "user.sum_1h <= 0.1"), ("eq", "card.count_1h == 2"), ("band", "user.amount_n >= 10 and card.count_1h < 2"),
    ("or", "merchant.count_today >= 100 or merchant.count_today < -100"),
    ("big", "merchant.count_24h >= 9007199254740992"), ("tiny", "user.sum_1h > 0"),
    ("derived", "merchant.volume_today / merchant.count_today >= 2.5"),
    ("mixed", "merchant.volume_today < 7 and merchant.volume_today is not missing"),
]
NAMES = ["user.amount_n", "merchant.count_24h", "user.amount_zscore", "user.sum_1h", "card.count_1h",
         "merchant.count_today", "merchant.volume_today"]
_BACKEND = DurableRuleset(unique_name("sent"), [(k, parse(t)) for k, t in RULES], SCHEMA.dtypes)
_PREDS = {k: compile_predicate(parse(t), SCHEMA.dtypes) for k, t in RULES}
_EDGES = [0, 1, 2, 3, 10, 100, -100, -101, 2.5, -2.5, -2.4999999999999996, 2.9999999999999996, 0.1,
          0.10000000000000002, -0.0, 0.0, 5e-324, -5e-324, 2**53, 2**53 - 1, 2**53 + 1, -(2**53) - 1,
          9007199254740992.0, 1e300, -1e300, float("nan"), float("inf"), float("-inf"), True, False,
          np.float64(2.5), np.int64(3), np.float32(0.1), np.int64(-101)]
_VALUE = st.one_of(st.none(), st.sampled_from(_EDGES), st.integers(-200, 200), st.floats(-5, 5),
                   st.floats(allow_nan=True, allow_infinity=True))


def _expected(f: dict) -> list[str]:
    return [k for k, p in _PREDS.items() if p(f)]


@settings(max_examples=600, deadline=None)
@given(values=st.lists(_VALUE, min_size=len(NAMES), max_size=len(NAMES)))
def test_property_durable_fires_like_python_at_every_threshold(values: list) -> None:
    f = dict(zip(NAMES, values))
    result = _BACKEND.fire(f)
    assert result.fired == _expected(f), f
    assert sorted(result.missing) == sorted(n for n in NAMES if clean(f[n], "number") is None)


def test_a_value_that_fails_every_test_is_left_out_and_one_that_passes_travels_as_its_class() -> None:
    keys = _BACKEND.field_keys

    def fact(features: dict) -> dict:
        (text,), _ = _BACKEND.encode(features)
        return json.loads(text)

    failing = {"user.amount_n": 2, "merchant.count_24h": -3, "user.amount_zscore": 0.0, "user.sum_1h": 0.2,
               "card.count_1h": 2.5, "merchant.count_today": 50, "merchant.volume_today": 8}
    sent = fact(failing)
    # but user.sum_1h (<= 0.1 or > 0: every number passes one), merchant.volume_today (also tested
    # for missing) and merchant.count_24h (also compared with 2^53, with no representative above it)
    assert {k for k in sent if k.startswith("f")} == {keys["user.sum_1h"], keys["merchant.volume_today"],
                                                      keys["merchant.count_24h"]}
    assert "d0" not in sent  # 8 / 50 fails `>= 2.5`
    assert _BACKEND.fire(failing).fired == _expected(failing) == ["tiny"]
    passing = {"user.amount_n": 3, "merchant.count_24h": -2, "user.amount_zscore": -0.5, "user.sum_1h": 0.1,
               "card.count_1h": 2, "merchant.count_today": -101, "merchant.volume_today": -300}
    sent = fact(passing)
    assert {n for n in passing if keys[n] in sent} == set(passing)
    assert sent[keys["user.amount_n"]] == 3 and sent["d0"] == 2.5  # its class from 2.5 up
    assert sent[keys["merchant.volume_today"]] == -300 and sent[keys["merchant.count_today"]] == -101.0  # < -100
    assert _BACKEND.fire(passing).fired == _expected(passing) == ["ge", "gt", "lt", "le", "eq", "or", "tiny", "derived", "mixed"]
    # left out is not missing
    assert _BACKEND.fire(failing).missing == []
