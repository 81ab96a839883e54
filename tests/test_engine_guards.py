"""A shard none of whose rules can fire is not asserted, and a fact keeps only what a rule
able to fire reads (`durable_backend.guards`).

Held here: which fields a compiled condition needs (`required_keys`), the cover of a
shard's rules by a few of them (`guard_keys`), that a skipped shard never reaches
durable's wire, and that the fires stay those of the plain-Python predicates on random
rules of and / or / not / missing over features often absent, and on the default pack.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import durable_rules_engine as dre

from fengkong.engine import load_ruleset
from fengkong.engine.durable_backend import DurableRuleset, unique_name
from fengkong.engine.durable_backend.facts import encode_fact
from fengkong.engine.durable_backend.guards import Liveness, guard_keys, kept_fields, read_keys, required_keys
from fengkong.engine.language import parse
from fengkong.engine.predicates import compile_predicate
from fengkong.engine.schema import Schema

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
SCHEMA = Schema.from_catalog({"blocked_cards": "card"})
NUMBERS = sorted(n for n, t in SCHEMA.dtypes.items() if t == "number")[:12]


def test_required_keys_of_each_kind_of_condition() -> None:
    assert required_keys({"$gte": {"a": 5}}) == {"a"}
    assert required_keys({"a": "x"}) == {"a"}
    assert required_keys({"$ex": {"a": 1}}) == {"a"} and required_keys({"$nex": {"a": 1}}) == set()
    assert required_keys({"$neq": {"a": 1}}) == {"a"}
    assert required_keys({"$and": [{"$ex": {"d0": 1}}, {"$gte": {"a": {"$m": "d0"}}}]}) == {"a", "d0"}
    assert required_keys({"$and": [{"a": True}, {"$or": [{"$lt": {"b": 1}}, {"$nex": {"b": 1}}]}]}) == {"a"}
    assert required_keys({"$or": [{"$and": [{"a": 1}, {"b": 2}]}, {"$and": [{"b": 3}, {"c": 4}]}]}) == {"b"}


def test_guard_keys_cover_every_rule_or_none() -> None:
    conds = [{"$and": [{"$gte": {"a": 1}}, {"$gte": {"b": 1}}]}, {"$and": [{"a": 2}, {"c": 1}]}, {"$gte": {"d": 1}}]
    assert guard_keys(conds) == ("a", "d")
    assert guard_keys(conds, preferred={"b", "c"}) == ("a", "d")  # coverage first
    assert guard_keys(conds[:1], preferred={"b"}) == ("b",)  # then the field most often left out
    assert guard_keys([*conds, {"$nex": {"e": 1}}]) == ()  # a rule that needs no field: always asserted
    assert guard_keys([]) == ()


class _Wire:
    """durable's C module, recording the facts asserted."""

    def __init__(self) -> None:
        self.asserted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(dre, name)

    def assert_fact(self, handle: Any, text: str) -> Any:
        self.asserted.append(text)
        return dre.assert_fact(handle, text)


def test_a_fact_without_a_guard_is_not_asserted() -> None:
    wire = _Wire()
    # each rule needs a field a quiet payment does not send: an amount of 100 or more, a
    # night, an amount_n above 3
    rules = [("big", "event.amount >= 100 and card.type == 'credit'"), ("night", "event.is_night"),
             ("ratio", "user.amount_n > 3 and (merchant.count_24h / merchant.distinct_cards_24h >= 5"
                       " or merchant.count_24h is missing)")]
    backend = DurableRuleset(unique_name("guards"), [(k, parse(t)) for k, t in rules], SCHEMA.dtypes, engine=wire)
    quiet = {"event.amount": 50, "card.type": "credit", "event.is_night": False, "user.amount_n": 1}
    assert backend.encode(quiet)[0] == [None]
    assert backend.fire(quiet).fired == [] and wire.asserted == []
    assert backend.fire(quiet).missing == ["merchant.count_24h", "merchant.distinct_cards_24h"]  # still reported
    loud = quiet | {"event.amount": 150}
    assert backend.fire(loud).fired == ["big"] and len(wire.asserted) == 1
    assert backend.fire({"user.amount_n": 4}).fired == ["ratio"] and len(wire.asserted) == 2
    backend.close()


def _condition(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth < 2 and r < 0.25:
        return "(" + " and ".join(_condition(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"
    if depth < 2 and r < 0.45:
        return "(" + " or ".join(_condition(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"
    if r < 0.5:
        return "not " + _condition(rng, 2)
    name = rng.choice(NUMBERS)
    return rng.choice([f"{name} >= {rng.randint(0, 4)}", f"{name} < {rng.randint(0, 4)}", f"{name} == 2",
                       f"{name} != 2", f"{name} is missing", f"{name} is not missing",
                       f"{name} + {rng.choice(NUMBERS)} > 3", f"{name} >= {rng.choice(NUMBERS)}"])


def test_random_rules_fire_like_python_with_shards_skipped() -> None:
    rng = random.Random(11)
    skipped = asserted = 0
    for _ in range(40):
        rules = [(f"r{i}", _condition(rng)) for i in range(rng.randint(1, 6))]
        backend = DurableRuleset(unique_name("guards"), [(k, parse(t)) for k, t in rules], SCHEMA.dtypes,
                                 stack_budget=rng.choice([4, 48]))
        preds = {k: compile_predicate(parse(t), SCHEMA.dtypes) for k, t in rules}
        for _ in range(60):
            f = {n: rng.choice([0, 1, 2, 3, 4.5, -1]) for n in NUMBERS if rng.random() < 0.3}
            texts, _ = backend.encode(f)
            skipped += texts.count(None)
            asserted += len(texts) - texts.count(None)
            assert backend.fire(f).fired == [k for k, p in preds.items() if p(f)], (rules, f)
        backend.close()
    assert skipped > 500 and asserted > 500  # both paths taken many times


def test_default_pack_skips_the_spike_shard_only_when_no_spike_rule_can_fire() -> None:
    rs = load_ruleset(RULES_DIR)
    backend = DurableRuleset(unique_name("pack"), [(r.id, r.expr) for r in rs.rules], rs.schema.dtypes)
    guarded = [i for i, g in enumerate(backend.encode({})[0]) if g is None]
    assert guarded, "some shard of the pack has guards"
    payment = {"event.type": "payment", "merchant.grade": "B", "event.amount": 120.0, "card.age_days": 30.0,
               "user.account_age_days": 40.0, "merchant.has_baseline": True, "merchant.volume_hour": 500.0}
    assert all(backend.encode(payment)[0][i] is None for i in guarded)
    spike = payment | {"merchant.volume_ratio_hour": 6.0, "merchant.volume_hour": 50000.0}
    assert any(backend.encode(spike)[0][i] is not None for i in guarded)
    assert "spike.hour_5x" in backend.fire(spike).fired and "spike.hour_5x" not in backend.fire(payment).fired
    for f in (payment, spike):
        want = [r.id for r in rs.rules if compile_predicate(r.expr, rs.schema.dtypes)(f)]
        assert backend.fire(f).fired == want
    backend.close()


def test_kept_fields_are_those_a_rule_able_to_fire_reads() -> None:
    live = Liveness([({"a"}, {"a", "b"}), ({"c", "a"}, {"c", "d"}), (set(), {"e"})])
    # "a" there: the first rule is able; "c" absent: the second is not; the third needs nothing
    assert kept_fields(live, ["b", "a", "d", "e"]) == [0, 1, 3]
    assert kept_fields(live, ["c", "d", "a"]) == [0, 1, 2]
    assert kept_fields(Liveness([({"a"}, {"a", "b"})]), ["b", "d"]) is None  # no rule can fire
    cond = {"$and": [{"$ex": {"d0": 1}}, {"$gte": {"a": {"$m": "d0"}}}, {"$or": [{"b": True}, {"$nex": {"c": 1}}]}]}
    assert read_keys(cond) == {"a", "b", "c", "d0"}


def test_a_fact_keeps_only_what_a_rule_able_to_fire_reads() -> None:
    wire = _Wire()
    rules = [("big_night", "event.amount >= 100 and event.is_night"),
             ("credit_z", "user.amount_zscore > 2 and card.type == 'credit'"),
             ("ratio", "user.amount_n >= 1 and merchant.count_24h / merchant.distinct_cards_24h >= 5")]
    backend = DurableRuleset(unique_name("kept"), [(k, parse(t)) for k, t in rules], SCHEMA.dtypes, engine=wire)
    keys = backend.field_keys
    f = {"event.amount": 150, "event.is_night": True, "user.amount_zscore": 3, "card.type": "debit",
         "user.amount_n": 2}
    # a debit card is not sent, so credit_z cannot fire: its z-score is left out; ratio lacks its quotient
    (text,), missing = backend.encode(f)
    assert {k for k in json.loads(text) if k != "id"} == {keys["event.amount"], keys["event.is_night"]}
    assert missing == ["merchant.count_24h", "merchant.distinct_cards_24h"]
    assert backend.fire(f).fired == ["big_night"]
    credit = f | {"card.type": "credit"}
    (text,), _ = backend.encode(credit)
    assert keys["user.amount_zscore"] in json.loads(text) and backend.fire(credit).fired == ["big_night", "credit_z"]
    # none can fire (no night, no credit card, no quotient): nothing asserted
    asserted = len(wire.asserted)
    assert backend.encode(f | {"event.is_night": False})[0] == [None]
    assert backend.fire(f | {"event.is_night": False}).fired == [] and len(wire.asserted) == asserted
    backend.close()


def test_random_rules_fire_like_python_with_facts_trimmed() -> None:
    rng = random.Random(23)
    trimmed = 0
    for _ in range(30):
        rules = [(f"r{i}", _condition(rng)) for i in range(rng.randint(2, 8))]
        backend = DurableRuleset(unique_name("kept"), [(k, parse(t)) for k, t in rules], SCHEMA.dtypes)
        preds = {k: compile_predicate(parse(t), SCHEMA.dtypes) for k, t in rules}
        for _ in range(60):
            f = {n: rng.choice([0, 1, 2, 3, 4.5, -1]) for n in NUMBERS if rng.random() < 0.5}
            for shard, text in zip(backend._shards, backend.encode(f)[0]):
                whole = encode_fact(dataclasses.replace(shard.plan, live=None), f, '{"id":0', [])
                trimmed += text is not None and whole is not None and len(text) < len(whole)
            assert backend.fire(f).fired == [k for k, p in preds.items() if p(f)], (rules, f)
        backend.close()
    assert trimmed > 200  # facts did lose fields, and the fires stayed Python's
