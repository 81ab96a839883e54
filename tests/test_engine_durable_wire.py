"""Golden wire: what the durable backend gives durable_rules for a few typical rules.

The JSON rulesets and the fact are durable's whole input, so pinning them holds the
compiler's translations (a right-hand field guarded with ``$ex``, every arithmetic
as a derived field Python computes, so an overflow is missing rather than infinite, ``is missing`` as ``$nex``, ``in`` as
``$or`` of equalities, a list test as a flag) and the fact's encoding (values no
test can tell from absent left out, a number compared only with constants as its
class's representative, ``1.0e-05`` with its decimal point) whatever the modules behind `DurableRuleset`
become. tests/test_engine_durable.py holds the fires themselves against plain Python.
"""

from __future__ import annotations

import json

from fengkong.engine.durable_backend import DurableRuleset, unique_name
from fengkong.engine.language import parse
from fengkong.engine.schema import Schema

SCHEMA = Schema.from_catalog({"blocked_cards": "card"})
RULES = [
    ("arith", "event.amount >= 3 * user.amount_n"),
    ("ratio", "merchant.count_24h / merchant.distinct_cards_24h >= 5"),
    ("absent", "card.type is missing"),
    ("grade", "merchant.grade in ['C', 'D']"),
    ("clean", "not (card.fingerprint in lists.blocked_cards)"),
    ("left", "user.amount_zscore - 1 > 2"),
]


def test_compiled_rulesets_and_fact_are_golden() -> None:
    backend = DurableRuleset(unique_name("golden"), [(k, parse(t)) for k, t in RULES], SCHEMA.dtypes)
    assert backend.field_keys == {
        "event.amount": "f0", "user.amount_n": "f1", "merchant.count_24h": "f2",
        "merchant.distinct_cards_24h": "f3", "card.type": "f4", "merchant.grade": "f5",
        "lists.blocked_cards": "f6", "user.amount_zscore": "f7",
    }
    (definition,) = backend.definition.values()
    assert {name: rule["all"][0]["m"] for name, rule in definition.items()} == {
        "r0": {"$and": [{"$ex": {"d0": 1}}, {"$gte": {"f0": {"$m": "d0"}}}]},
        "r1": {"$gte": {"d1": 5}},
        "r2": {"$nex": {"f4": 1}},
        "r3": {"$or": [{"f5": "C"}, {"f5": "D"}]},
        "r4": {"f6": False},
        "r5": {"$gt": {"d2": 2}},
    }
    features = {"event.amount": 10, "user.amount_n": 3, "merchant.count_24h": 10, "merchant.distinct_cards_24h": 4,
                "merchant.grade": "B", "lists.blocked_cards": False, "user.amount_zscore": 1e-05}
    (fact,), missing = backend.encode(features)
    # grade B is named by no rule, so it is left out; arithmetic operands travel as their result only;
    # d1 (2.5) and d2 (-0.99999) fail their only tests (>= 5, > 2), so they are left out too
    assert fact == '{"id":0,"f0":10,"f6":false,"d0":9}'
    assert missing == ["card.type"]
    # passing them, each travels as its class's representative (`classes`): from 5 up, above 2
    passing = features | {"merchant.count_24h": 30, "user.amount_zscore": 3.5}
    assert backend.encode(passing)[0][0] == '{"id":0,"f0":10,"f6":false,"d0":9,"d1":5,"d2":3}'
    assert json.loads(backend.encode({"user.amount_zscore": 1e-05, "event.amount": 1e-05, "user.amount_n": 0})[0][0]) \
        == {"id": 0, "f0": 1e-05, "d0": 0}
    assert '"f0":1.0e-05' in backend.encode({"event.amount": 1e-05, "user.amount_n": 0})[0][0]
    # a product that overflows a double is absent, so `event.amount >= 3 * user.amount_n` is false;
    # r0 then cannot fire (it requires d0), so the fact keeps nothing r0 alone reads (`guards.kept_fields`)
    assert backend.encode({"event.amount": 1.0, "user.amount_n": 1e308})[0][0] == '{"id":0}'
    assert backend.encode({"event.amount": 10, "lists.blocked_cards": False})[0][0] == '{"id":0,"f6":false}'
    assert backend.fire(features).fired == ["arith", "absent", "clean"]
    backend.close()
