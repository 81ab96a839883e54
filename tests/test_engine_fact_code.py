"""The generated fact writers (`fact_code`) against the plan they are compiled from.

`facts.encode_fact` interprets a shard's `FactPlan`; `fact_code.compile_writer` turns
the same plan into straight-line Python, which is what `DurableRuleset` asserts. The
two must write the same text and report the same missing features, in the same
order, for every kind of value in every kind of field: held here on random values,
on nested arithmetic, with features another shard reports, and on the default pack
with the bench's kinds of rows. tests/test_engine_durable.py holds the fires.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.engine import load_ruleset
from fengkong.engine.durable_backend.compiler import Compiler
from fengkong.engine.durable_backend import fact_code, guards
from fengkong.engine.durable_backend.fact_code import compile_writer
from fengkong.engine.durable_backend.facts import FactPlan, encode_fact, field_prefix, make_plan
from fengkong.engine.language import parse
from fengkong.engine.schema import Schema

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
SCHEMA = Schema.from_catalog({"blocked_cards": "card"})
HEAD = '{"id":7,"sid":"0"'

RULES = [
    "event.amount >= 0.5", "user.amount_zscore == 0", "event.amount >= 3 * user.amount_n",
    "merchant.count_24h / merchant.distinct_cards_24h >= 1", "event.is_night", "not event.is_night",
    "card.fingerprint in lists.blocked_cards", "card.type == 'credit'", "event.channel in ['wallet', 'pos']",
    "merchant.grade != 'A'", "card.type is missing", "user.amount_n is not missing",
    # nested arithmetic, constants on either side, a quotient of a difference
    "(event.amount + user.amount_n) * 2 - merchant.count_24h / (merchant.distinct_cards_24h - 1) > 3",
    "1.5 - event.amount * -2 <= user.amount_zscore", "user.sum_1h / 4 >= 100",
    "user.sum_1h * 9007199254740992 > 1.0e300", "event.amount * 1.0e300 > 1",
]
NAMES = ["event.amount", "user.amount_zscore", "user.amount_n", "merchant.count_24h", "merchant.distinct_cards_24h",
         "event.is_night", "lists.blocked_cards", "card.type", "event.channel", "merchant.grade", "user.sum_1h"]


class _Channel(enum.StrEnum):
    WALLET = "wallet"


_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-5, 5),
    st.sampled_from([1e-05, -1e-07, 1e16, 1.5e300, -0.0, 0.0, 5e-324, 123456789.125, 2**53 + 1, 10**400]),
    st.sampled_from([np.float64(0.3), np.float64(1e-05), np.float32(0.5), np.int64(7), np.uint8(3),
                     np.bool_(True), np.bool_(False), np.float64("nan"), np.str_("credit")]),
    st.sampled_from(["credit", "debit", "", 'a "quoted" \\ back\nslash', "信用卡", _Channel.WALLET, "1e-05", "A"]),
)


def plans(rules: list[str], owned: set[str] | None = None) -> list[tuple[FactPlan, Any]]:
    """The plan of one shard of ``rules``, and its writer; with ``owned``, the features
    another shard reports (so this one reports none of them)."""
    compiler = Compiler(dict(SCHEMA.dtypes))
    compiled = [compiler.compile(parse(text)) for text in rules]
    names = {k: n for n, k in compiler.keys.items()}
    plan = make_plan(set().union(*(used for _, used in compiled)), (cond for cond, _ in compiled), names,
                     dict(compiler.derived.values()), SCHEMA.dtypes, set(owned or ()))
    exprs = {field_prefix(key): v for key, v in compiler.exprs.items()}
    return [(plan, compile_writer(plan, exprs, SCHEMA.dtypes)), (plan, compile_writer(plan, {}, SCHEMA.dtypes))]


#: every rule needs a feature (not only a derived field), so the plan has guards the writer
#: checks before it formats anything (`guards`)
GUARDED = ["event.amount >= 0.5 and card.type == 'credit'", "event.is_night", "event.channel in ['wallet', 'pos']",
           "merchant.grade != 'A' and user.amount_n > 2", "user.sum_1h / 4 >= 100 and user.amount_zscore == 0"]
PLANS = (plans(RULES) + plans(RULES, owned={"event.amount", "card.type", "event.is_night", "user.sum_1h"})
         + plans(GUARDED) + plans(GUARDED, owned={"event.amount", "user.sum_1h"}))


def assert_same(features: dict[str, Any]) -> None:
    for plan, write in PLANS:
        want_missing: list[str] = []
        got_missing: list[str] = []
        want = encode_fact(plan, features, HEAD, want_missing)
        assert write(features, HEAD, got_missing) == want, features
        assert got_missing == want_missing, features


def test_writers_inline_the_arithmetic_and_fall_back_without_expressions() -> None:
    inline, called = PLANS[0][1], PLANS[1][1]
    assert " * 2" in inline.__doc__ and "_derived" not in inline.__doc__
    assert "_derived" in called.__doc__  # each derived field's own function
    f = {"event.amount": 10, "user.amount_n": 3, "merchant.count_24h": 9, "merchant.distinct_cards_24h": 4,
         "user.amount_zscore": -1e-05, "user.sum_1h": 1e-300}
    text = PLANS[0][1](f, HEAD, [])
    # 10 >= 3 * 3 -> d0 = 9; 1.5 - 10 * -2 = 21.5 (both compared with fields: sent as they are);
    # (10 + 3) * 2 - 9 / 3 = 23 > 3: the class above 3, sent as 4 (`classes`); 1e-300 / 4 fails
    # `>= 100`, its one test, so it is left out, as 1e3 / 4 is not (the class from 100 up)
    assert '"d0":9' in text and '"d2":4' in text and ":21.5" in text and '"d4"' not in text, text
    assert '"d4":100' in PLANS[0][1](f | {"user.sum_1h": 1e3}, HEAD, [])


@settings(max_examples=500, deadline=None)
@given(values=st.lists(_ANY, min_size=len(NAMES), max_size=len(NAMES)))
def test_property_writers_equal_the_plan_on_any_value(values: list[Any]) -> None:
    assert_same(dict(zip(NAMES, values)))


def test_writers_equal_the_plan_on_absent_and_overflowing_values() -> None:
    assert_same({})
    assert_same({"event.amount": 1e308, "user.amount_n": 1e308, "merchant.count_24h": 1,
                 "merchant.distinct_cards_24h": 1, "user.amount_zscore": float("inf")})
    assert_same({"merchant.count_24h": 5, "merchant.distinct_cards_24h": 1})  # a zero divisor
    assert_same({"event.amount": 10**400, "user.amount_n": 2**53, "user.sum_1h": -(2**60)})


def test_default_pack_writers_equal_the_plan() -> None:
    rs = load_ruleset(RULES_DIR)
    compiler = Compiler(dict(rs.schema.dtypes))
    compiled = [compiler.compile(expr) for _, expr in rs.conditions]
    names = {k: n for n, k in compiler.keys.items()}
    plan = make_plan(set().union(*(used for _, used in compiled)), (c for c, _ in compiled), names,
                     dict(compiler.derived.values()), rs.schema.dtypes, set())
    write = compile_writer(plan, {field_prefix(k): v for k, v in compiler.exprs.items()}, rs.schema.dtypes)
    rng = random.Random(16)
    dtypes = rs.schema.dtypes
    pool = {"number": [None, 0, 1, 7, 250.5, 0.125, 1e-05, 3e16, -2.0, float("nan")],
            "bool": [None, True, False, np.bool_(True)], "string": [None, "A", "B", "credit", "signup", "wallet"]}
    for _ in range(400):
        f = {n: rng.choice(pool.get(dtypes.get(n, ""), [None])) for n in names.values()}
        if rng.random() < 0.2:  # absent rather than None
            f = {n: v for n, v in f.items() if v is not None}
        want_missing: list[str] = []
        got_missing: list[str] = []
        assert write(f, HEAD, got_missing) == encode_fact(plan, f, HEAD, want_missing)
        assert got_missing == want_missing


def test_a_full_dict_is_read_at_once_and_any_other_mapping_through_get() -> None:
    """A plain dict with every name is read by one itemgetter; one that lacks a name, and
    the next `_GET_SPELL` calls, through ``get``, as is any other mapping (a mapping whose
    subscript answers for an absent name, as a defaultdict does, still reads it as absent)."""
    plan, write = PLANS[0]
    spell = next(v for k, v in write.__globals__.items() if k.startswith("_spell"))
    full = {"event.amount": 10, "user.amount_zscore": 0, "user.amount_n": 2, "merchant.count_24h": 9,
            "merchant.distinct_cards_24h": 4, "event.is_night": True, "lists.blocked_cards": False,
            "card.type": "credit", "event.channel": "pos", "merchant.grade": "B", "user.sum_1h": 1e3}
    want = encode_fact(plan, full, HEAD, [])
    spell[0] = 0
    assert write(full, HEAD, []) == want and spell[0] == 0  # read at once, no fallback
    lacking = {k: v for k, v in full.items() if k != "card.type"}
    want_missing: list[str] = []
    got_missing: list[str] = []
    assert write(lacking, HEAD, got_missing) == encode_fact(plan, lacking, HEAD, want_missing)
    assert got_missing == want_missing and "card.type" in got_missing
    assert spell[0] == fact_code._GET_SPELL  # the subscript raised: a spell of `get` reads
    for _ in range(fact_code._GET_SPELL):
        assert write(full, HEAD, []) == want
    assert spell[0] == 0
    answers_one = collections.defaultdict(lambda: 1, lacking)
    got_missing = []
    assert write(answers_one, HEAD, got_missing) == encode_fact(plan, lacking, HEAD, [])
    assert "card.type" in got_missing and "card.type" not in answers_one  # get never calls __missing__


def test_a_guarded_writer_skips_the_formatting_when_no_guard_is_there() -> None:
    plan, write = PLANS[4]
    assert plan.guards and not PLANS[0][0].guards
    assert "return None" in write.__doc__ and " is None and " in write.__doc__
    features = {"user.amount_n": float("nan"), "user.sum_1h": np.int64(2), "card.type": 5, "event.amount": 0.1}
    for f in ({}, features, features | {"merchant.grade": "A"}, features | {"event.is_night": True}):
        assert_same(f)
    missing: list[str] = []
    assert write(features, HEAD, missing) is None
    assert "user.amount_n" in missing and "card.type" in missing and "user.sum_1h" not in missing


def test_a_prefix_not_of_the_compilers_form_is_refused() -> None:
    plan, _ = PLANS[0]
    odd = FactPlan((("event.amount", "\"f0\":'); import os; ('", True, None),), (), (), (), (), ())
    with pytest.raises(ValueError, match="prefixes"):
        compile_writer(odd, {}, SCHEMA.dtypes)
    # nor a class that is not a bound and a number text of `classes.value_classes`'s
    for cls in (("<", "0); import os; (0", "1"), ("in", 1, "1"), ("<", True, "1"), ("<", 1, "1'); import os; ('"),
                (None, 1, "1"), ("<", 1, 1)):
        odd = FactPlan((("event.amount", '"f0":', True, (cls, (None, None, None))),), (), (), (), (), ())
        with pytest.raises(ValueError, match="classes"):
            compile_writer(odd, {}, SCHEMA.dtypes)
    assert plan.numbers  # the real plan has numbers, all of the form


def test_writers_keep_what_the_plan_keeps_past_a_full_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default pack's first shard sends more fields than one mask holds (`guards.MASK_BITS`),
    so its writer keys what it keeps by several masks; with every table of `guards.KeepByMasks`
    full (`KEPT_MEMORY` 1) each fact is worked out afresh and must still be the plan's, byte for byte."""
    rs = load_ruleset(RULES_DIR)
    shard = rs._durable._shards[0]
    sent = len(shard.plan.numbers) + len(shard.plan.bools) + len(shard.plan.strings) + len(shard.plan.computed)
    assert sent > guards.MASK_BITS and shard.plan.live is not None
    dtypes = rs.schema.dtypes
    pool = {"number": [None, 0, 1, 3, 7, 25, 250.5, 0.95, 6000.0], "bool": [None, True, False],
            "string": [None, "credit", "online_banking", "D", "signup"]}
    names = [n for n, *_ in shard.plan.numbers + shard.plan.bools + shard.plan.strings] + ["merchant.single_limit"]
    rng = random.Random(31)
    for limit in (guards.KEPT_MEMORY, 1):
        monkeypatch.setattr(guards, "KEPT_MEMORY", limit)
        trimmed = 0
        for _ in range(300):
            f = {n: rng.choice(pool.get(dtypes.get(n, ""), [None])) for n in names}
            want = encode_fact(shard.plan, f, HEAD, [])
            assert shard.write(f, HEAD, []) == want, f
            whole = encode_fact(dataclasses.replace(shard.plan, live=None), f, HEAD, [])
            trimmed += want is not None and len(want) < len(whole or "")
        assert trimmed > 100


def test_a_derived_field_no_able_rule_reads_is_not_computed() -> None:
    """``3 * user.amount_n`` is read by a rule that also needs the night flag, written before
    it: on a day the writer does not compute the product (its function is not called), and
    its answer is still the plan's."""
    (plan, inline), (_, called) = plans(["event.is_night and event.amount >= 3 * user.amount_n"])
    assert "if ((m0 & " in inline.__doc__
    name = next(k for k in called.__globals__ if k.startswith("_derived"))
    derive = called.__globals__[name]
    calls: list[object] = []
    called.__globals__[name] = lambda features: calls.append(features) or derive(features)
    day = {"event.is_night": False, "event.amount": 10, "user.amount_n": 2}
    for write in (inline, called):
        assert write(day, HEAD, []) is encode_fact(plan, day, HEAD, []) is None  # nothing can fire
    assert calls == []
    night = day | {"event.is_night": True}
    for write in (inline, called):
        assert write(night, HEAD, []) == encode_fact(plan, night, HEAD, [])
    assert '"d0":6' in called(night, HEAD, []) and len(calls) == 2
