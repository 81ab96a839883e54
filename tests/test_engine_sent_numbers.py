"""A number durable only compares with constants is sent only when it passes a test.

`facts.sent_when` leaves out of the fact a number (or a derived field) that fails every
comparison durable makes of it, as an absent field fails them: durable walks fewer
fields, Python formats fewer. Held here: the reduction of a field's tests to the
loosest bounds, which fields qualify, and durable's fires against the plain-Python
predicates on values at, around and past each threshold (ints and floats on either
side, -0.0, 2^53 and past it, numpy scalars, NaN, infinities, bools).
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.engine.durable_backend import DurableRuleset, unique_name
from fengkong.engine.durable_backend.facts import exact_constant, number_tests, passes, sent_when
from fengkong.engine.language import parse
from fengkong.engine.predicates import clean, compile_predicate
from fengkong.engine.schema import Schema

SCHEMA = Schema.from_catalog({"blocked_cards": "card"})


def test_sent_when_keeps_the_loosest_bounds() -> None:
    assert sent_when(None) is None and sent_when([]) is None
    assert sent_when([(">=", 20), (">=", 5), (">", 5), (">=", 50)]) == ((">=", 5),)
    assert sent_when([(">", 5), (">=", 5.0)]) == ((">=", 5.0),)  # >= is the looser at a tie
    assert sent_when([("<", 7), ("<", 1), ("<=", 7)]) == (("<=", 7),)
    assert sent_when([(">=", 0.9), ("<", 0.5)]) == ((">=", 0.9), ("<", 0.5))
    # bounds that together hold for every number: always sent
    assert sent_when([(">=", 1), ("<", 1)]) is None
    assert sent_when([(">", 1), ("<=", 1)]) is None
    assert sent_when([(">", 1), ("<", 2)]) is None
    assert sent_when([(">", 1), ("<", 1)]) == ((">", 1), ("<", 1))  # 1 itself passes neither
    # equalities the bounds already cover are dropped
    assert sent_when([("==", 0), ("==", 7), (">=", 5)]) == ((">=", 5), ("==", 0))
    assert passes(1, ((">", 1), ("<", 1))) is False and passes(0.5, ((">", 1), ("<", 1))) is True


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


def test_a_value_that_fails_every_test_is_left_out_and_one_that_passes_is_sent() -> None:
    keys = _BACKEND.field_keys

    def fact(features: dict) -> dict:
        (text,), _ = _BACKEND.encode(features)
        return json.loads(text)

    failing = {"user.amount_n": 2, "merchant.count_24h": -3, "user.amount_zscore": 0.0, "user.sum_1h": 0.2,
               "card.count_1h": 2.5, "merchant.count_today": 50, "merchant.volume_today": 8}
    sent = fact(failing)
    # but user.sum_1h (<= 0.1 or > 0: every number passes one) and merchant.volume_today (also
    # tested for missing), always sent
    assert {k for k in sent if k.startswith("f")} == {keys["user.sum_1h"], keys["merchant.volume_today"]}
    assert "d0" not in sent  # 8 / 50 fails `>= 2.5`
    assert _BACKEND.fire(failing).fired == _expected(failing) == ["tiny"]
    passing = {"user.amount_n": 3, "merchant.count_24h": -2, "user.amount_zscore": -0.5, "user.sum_1h": 0.1,
               "card.count_1h": 2, "merchant.count_today": -101, "merchant.volume_today": -300}
    sent = fact(passing)
    assert {n for n in passing if keys[n] in sent} == set(passing)
    assert sent[keys["user.amount_n"]] == 3 and sent["d0"] == -300 / -101
    assert _BACKEND.fire(passing).fired == _expected(passing) == ["ge", "gt", "lt", "le", "eq", "or", "tiny", "derived", "mixed"]
    # left out is not missing
    assert _BACKEND.fire(failing).missing == []
