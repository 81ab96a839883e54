"""durable_rules backend: every matching rule fires, exactly, under load, on any thread."""

from __future__ import annotations

import json
import random
import threading

import numpy as np

from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.engine.durable_backend import MAX_FIELDS_PER_SHARD, DurableRuleset, _fact, _member, unique_name
from fengkong.engine.language import parse
from fengkong.engine.predicates import compile_predicate
from fengkong.engine.schema import Schema

SCHEMA = Schema.from_catalog({"blocked_cards": "card"})
NUMBERS = sorted(n for n, t in SCHEMA.dtypes.items() if t == "number")
BOOLS = sorted(n for n, t in SCHEMA.dtypes.items() if t == "bool")

RULES = [
    ("a", "event.amount >= 100"),
    ("b", "event.amount >= 100 and card.type == 'credit'"),
    ("c", "not event.is_night or event.amount < 10"),
    ("d", "merchant.volume_today >= 3 * merchant.baseline_today_7d"),
    ("e", "merchant.count_24h / merchant.distinct_cards_24h >= 5"),
    ("f", "merchant.grade in ['C', 'D'] or card.fingerprint in lists.blocked_cards"),
    ("g", "merchant.volume_ratio_today is missing"),
    ("h", "user.amount_zscore - 1 > user.amount_n"),
    ("i", "not (event.amount >= 100 and card.type == 'credit')"),
]


def make(rules=RULES) -> tuple[DurableRuleset, dict]:
    conds = [(rid, parse(text)) for rid, text in rules]
    backend = DurableRuleset(unique_name("test"), conds, SCHEMA.dtypes)
    preds = {rid: compile_predicate(expr, SCHEMA.dtypes) for rid, expr in conds}
    return backend, preds


def expected(preds: dict, features: dict) -> list[str]:
    return [rid for rid, p in preds.items() if p(features)]


def random_features(rng: random.Random) -> dict:
    f: dict = {}
    for name in ("event.amount", "merchant.volume_today", "merchant.baseline_today_7d", "merchant.count_24h",
                 "merchant.distinct_cards_24h", "merchant.volume_ratio_today", "user.amount_zscore", "user.amount_n"):
        if rng.random() < 0.8:
            f[name] = rng.choice([0, 1, 5, 9.5, 10, 99, 100, 250.5, 1000])
    if rng.random() < 0.8:
        f["event.is_night"] = rng.random() < 0.5
    if rng.random() < 0.8:
        f["card.type"] = rng.choice(["credit", "debit"])
    if rng.random() < 0.8:
        f["merchant.grade"] = rng.choice(["A", "C", "D", "NEW"])
    if rng.random() < 0.8:
        f["lists.blocked_cards"] = rng.random() < 0.3
    return f


def test_every_matching_rule_fires_not_just_the_first() -> None:
    backend, preds = make()
    features = {"event.amount": 150, "card.type": "credit", "event.is_night": False,
                "merchant.grade": "C", "lists.blocked_cards": True}
    result = backend.fire(features)
    assert result.fired == ["a", "b", "c", "f", "g"]
    assert result.fired == expected(preds, features)
    assert "merchant.volume_ratio_today" in result.missing


def test_first_fact_of_a_session_does_not_report_the_session_state() -> None:
    # durable's session state itself matches a `$nex`-only rule once; it must not leak in.
    backend, _ = make([("only_missing", "merchant.volume_ratio_today is missing")])
    assert backend.fire({"merchant.volume_ratio_today": 2.0}).fired == []
    assert backend.fire({}).fired == ["only_missing"]


def test_durable_agrees_with_plain_python_on_many_events() -> None:
    backend, preds = make()
    rng = random.Random(1)
    for _ in range(2000):
        f = random_features(rng)
        assert backend.fire(f).fired == expected(preds, f), f


def test_two_threads_never_miss_or_borrow_a_fire() -> None:
    backend, preds = make()
    rng = random.Random(2)
    events = [random_features(rng) for _ in range(3000)]
    truth = [expected(preds, f) for f in events]
    errors: list[str] = []

    def worker(offset: int) -> None:
        for i in range(offset, len(events), 2):
            got = backend.fire(events[i]).fired
            if got != truth[i]:
                errors.append(f"event {i}: got {got}, expected {truth[i]}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_wide_rule_sets_are_sharded_and_stay_exact() -> None:
    # 60 rules over 60 different features: more than one durable message can hold.
    rules = [(f"n{i}", f"{name} >= 50") for i, name in enumerate(NUMBERS[:60])]
    backend, preds = make(rules)
    assert backend.shard_count >= 60 // MAX_FIELDS_PER_SHARD
    rng = random.Random(3)
    for _ in range(200):
        f = {name: rng.randint(0, 100) for name in NUMBERS[:60] if rng.random() < 0.9}
        assert backend.fire(f).fired == expected(preds, f)


@settings(max_examples=300, deadline=None)
@given(
    a=st.one_of(st.none(), st.integers(-5, 5), st.floats(-5, 5), st.floats(allow_nan=True), st.just(1e-05)),
    b=st.one_of(st.none(), st.integers(-5, 5)),
    night=st.one_of(st.none(), st.booleans()),
)
def test_property_durable_equals_python(a, b, night) -> None:
    f = {"event.amount": a, "merchant.volume_today": a, "merchant.baseline_today_7d": b,
         "merchant.count_24h": a, "merchant.distinct_cards_24h": b, "event.is_night": night,
         "user.amount_zscore": a, "user.amount_n": b}
    assert _PROP[0].fire(f).fired == expected(_PROP[1], f)


_PROP = make()


def _as_numpy(features: dict) -> dict:
    """The same values as numpy scalars (floats: np.float64, what pandas rows and models hand out)."""
    return {k: (np.float64(v) if isinstance(v, float) else v) for k, v in features.items()}


def test_numpy_scalars_get_the_same_decision_as_python_scalars() -> None:
    # numpy 2 writes repr(np.float64(0.3)) as "np.float64(0.3)", which durable refused (error 202)
    from pathlib import Path

    from fengkong.engine import load_ruleset

    rs = load_ruleset(Path(__file__).resolve().parents[1] / "rules")
    plain = {"merchant.grade": "B", "ip.is_tor": True, "event.type": "payment", "event.amount": 4990.0,
             "model.txn_risk": 0.95, "model.habit_anomaly": 0.7, "user.amount_zscore": 1e-05}
    want, got = rs.evaluate(plain), rs.evaluate(_as_numpy(plain))
    assert "model.txn_risk_high" in {r.id for r in want.reasons}
    assert got.to_dict() == want.to_dict()
    # and rule by rule, derived fields (division, arithmetic on the left) included
    backend, preds = make()
    rng = random.Random(4)
    for _ in range(300):
        f = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
             for k, v in random_features(rng).items()}
        assert backend.fire(_as_numpy(f)).fired == backend.fire(f).fired == expected(preds, f), f


def _encode(fact: dict, fid: int) -> str:
    return _fact(fid, [_member(k, v) for k, v in fact.items()])


def test_encoded_fact_is_json_for_every_numpy_scalar() -> None:
    fact = {"a": np.float64(0.3), "b": np.float64(1e-05), "c": np.int64(7), "d": np.bool_(True),
            "e": np.float32(0.5), "f": np.uint8(3)}
    text = _encode(fact, 1)
    assert json.loads(text) == {"id": 1, "sid": "0", "a": 0.3, "b": 1e-05, "c": 7, "d": True, "e": 0.5, "f": 3}
    assert '"b":1.0e-05' in text  # durable's parser needs a decimal point before the exponent
    assert text == _encode({"a": 0.3, "b": 1e-05, "c": 7, "d": True, "e": 0.5, "f": 3}, 1)


def test_numpy_scalars_of_every_kind_read_like_python_values():
    import numpy as np

    from fengkong.engine.predicates import clean

    assert clean(np.int64(3), "number") == 3 and isinstance(clean(np.int64(3), "number"), int)
    assert clean(np.float32(0.5), "number") == 0.5
    assert clean(np.bool_(True), "bool") is True
    assert clean(np.float64("nan"), "number") is None
    assert clean(np.str_("credit"), "string") == "credit"
