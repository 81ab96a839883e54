"""The rule language: whitelist parser, type checker, missing-feature semantics."""

from __future__ import annotations

import pytest

from fengkong.engine.errors import RuleSyntaxError
from fengkong.engine.language import parse
from fengkong.engine.predicates import compile_predicate
from fengkong.engine.schema import Schema
from fengkong.engine.tree import Compare, Const, Feature, InList, to_nnf, to_text
from fengkong.engine.typecheck import typecheck

SCHEMA = Schema.from_catalog({"blocked_cards": "card", "proxy_ips": "ip"})


def holds(text: str, features: dict) -> bool:
    expr = parse(text)
    assert typecheck(expr, SCHEMA) == []
    return compile_predicate(expr, SCHEMA.dtypes)(features)


@pytest.mark.parametrize("text", [
    '__import__("os").system("true")',
    "card.type.__class__",  # parses as a feature name, refused by the checker below
    "open('x')",
    "card.type[0] == 'c'",
    "[x for x in card.type]",
    "lambda: 1",
    "card.type == 'credit' if True else False",
    "event.amount ** 2 > 3",
    "event.amount // 2 > 3",
    "True",
    "1 < 2",
    "event.amount is None",
])
def test_parser_refuses_everything_outside_the_grammar(text: str) -> None:
    try:
        expr = parse(text)
    except RuleSyntaxError:
        return
    assert typecheck(expr, SCHEMA), f"{text!r} was accepted"


def test_issue_example_parses_and_normalises() -> None:
    expr = parse('card.type == "credit" and merchant.volume_ratio_today >= 3 and not merchant.grade in ["A"]')
    assert typecheck(expr, SCHEMA) == []
    assert to_text(to_nnf(expr)) == ("(card.type == 'credit' and merchant.volume_ratio_today >= 3 "
                                     "and merchant.grade not in ['A'])")


def test_constant_on_the_left_is_flipped_and_bare_bool_is_a_test() -> None:
    assert parse("3 <= merchant.volume_ratio_today") == Compare(">=", Feature("merchant.volume_ratio_today"), Const(3))
    assert parse("event.is_night") == Compare("==", Feature("event.is_night"), Const(True))
    assert parse("card.fingerprint in lists.blocked_cards") == InList(Feature("card.fingerprint"), "blocked_cards")


@pytest.mark.parametrize("text,needle", [
    ("merchant.volume_ratio_todya >= 3", "did you mean merchant.volume_ratio_today"),
    ("card.type == 3", "type mismatch"),
    ('event.amount > "100"', "type mismatch"),
    ('card.type > "credit"', "needs numbers"),
    ("event.ip in lists.blocked_cards", "is a card list"),
    ("card.fingerprint in lists.blocked_cardz", "unknown list"),
    ("customer.age > 3", "unknown namespace"),
    ("card.type + 1 > 3", "arithmetic"),
    ("event.amount", "type mismatch"),  # a number used as a condition
    ('merchant.grade in ["A", 1]', "mixes types"),
])
def test_type_checker_explains(text: str, needle: str) -> None:
    reasons = " | ".join(e.reason for e in typecheck(parse(text), SCHEMA))
    assert needle in reasons


def test_type_checker_reports_every_problem_in_one_expression() -> None:
    errors = typecheck(parse('card.tipe == "x" and event.amount > "1" and user.bogus'), SCHEMA)
    assert len(errors) == 3


def test_missing_feature_makes_a_comparison_and_its_negation_false() -> None:
    assert holds("merchant.volume_ratio_today >= 3", {"merchant.volume_ratio_today": 4})
    assert not holds("merchant.volume_ratio_today >= 3", {})
    assert not holds("not merchant.volume_ratio_today >= 3", {})
    assert not holds("merchant.volume_ratio_today < 3", {"merchant.volume_ratio_today": None})
    assert not holds('not merchant.grade in ["A"]', {})
    assert holds('not merchant.grade in ["A"]', {"merchant.grade": "B"})
    assert holds("merchant.volume_ratio_today is missing", {})
    assert holds("not merchant.volume_ratio_today is missing", {"merchant.volume_ratio_today": 1.0})
    # or: a missing side does not poison the other side
    assert holds("merchant.volume_ratio_today >= 3 or event.is_night", {"event.is_night": True})


def test_arithmetic_division_by_zero_is_missing_not_a_crash() -> None:
    text = "merchant.count_24h / merchant.distinct_cards_24h >= 5"
    assert holds(text, {"merchant.count_24h": 60, "merchant.distinct_cards_24h": 10})
    assert not holds(text, {"merchant.count_24h": 60, "merchant.distinct_cards_24h": 0})
    assert not holds("not " + text, {"merchant.count_24h": 60, "merchant.distinct_cards_24h": 0})


def test_wrong_typed_value_is_treated_as_missing() -> None:
    assert not holds("event.amount > 3", {"event.amount": "100"})
    assert not holds("event.amount > 3", {"event.amount": True})
    assert not holds("event.is_night", {"event.is_night": 1})


def test_number_reader_of_a_derived_field_is_clean() -> None:
    # the fast path of a number feature inside arithmetic (`_number_reader`) reads what
    # `clean` reads, for every kind of value
    import math

    import numpy as np

    from fengkong.engine.predicates import clean, compile_value
    from fengkong.engine.tree import Feature

    read = compile_value(Feature("event.amount"), SCHEMA.dtypes)
    for value in (None, 0, 7, -3, 2**70, 0.5, -0.0, 1e-05, math.inf, -math.inf, math.nan, True, False, "5",
                  np.int64(4), np.float64(2.5), np.float64("nan"), np.bool_(True), [1]):
        got, want = read({"event.amount": value}), clean(value, "number")
        assert got == want or (got is None and want is None), value
        assert type(got) is type(want), value
    assert read({}) is None


def test_numpy_scalars_of_every_kind_read_like_python_values() -> None:
    import numpy as np

    from fengkong.engine.predicates import clean

    assert clean(np.int64(3), "number") == 3 and isinstance(clean(np.int64(3), "number"), int)
    assert clean(np.float32(0.5), "number") == 0.5
    assert clean(np.bool_(True), "bool") is True
    assert clean(np.float64("nan"), "number") is None
    assert clean(np.str_("credit"), "string") == "credit"
