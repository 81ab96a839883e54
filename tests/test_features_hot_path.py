"""The online store's per-event shortcuts against their plain definitions.

`OnlineStore._prepare` joins ARGV[3] from pieces packed ahead (`_ops_layout`), and
`_finish` fills a plan's blank dict from the reply and calls `assemble.derive`, with
`FeatureResult.raw` built only when read. Each must give exactly what the plain way
gives: the whole op list packed at once, and `assemble` of a dict of every raw value
read one by one. Events of every type, with entities missing, IPv6 and lists that
match, so that many plans are exercised. The row's one IP lookup with its subnet
(`IpIntel.lookup_with_subnet`) must answer as `lookup` and `subnet_of` do."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pandas as pd
import pytest
from eventgen import dense_events

from fengkong.events import flat_to_dict, parse_event
from fengkong.features.assemble import FIRST_SEEN_TIMES, assemble, blank_features
from fengkong.features.errors import FeatureDefinitionError
from fengkong.features.lists import ListStore
from fengkong.features.online import _READERS, OnlineStore, _Ref, _reply_outputs


def _events() -> list:
    frame = dense_events(3_000, seed=5, days=4)
    ipv6 = frame.index % 11 == 0
    frame.loc[ipv6 & frame["ip"].notna(), "ip"] = "2001:db8:5::7"
    frame.loc[frame.index % 13 == 0, "ip"] = "185.220.101.7"  # Tor exit
    return [parse_event(flat_to_dict(row)) for row in frame.to_dict("records")]


def _typed(mapping: dict[str, Any]) -> list[tuple[str, type, Any]]:
    return [(k, type(v), "nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in mapping.items()]


@pytest.fixture
def listed(store, redis_client):
    lists = ListStore(redis_client, store.lists, prefix=store.prefix)
    lists.add("blocked_ips", ["113.0.0.0/10", "2001:db8::/32"])
    lists.add("blocked_cards", ["c7", "c9"])
    lists.add("trusted_users", ["u3"])
    store.set_merchant_profile("m1", grade="A", single_limit_minor=300_000, daily_cap_minor=2_000_000,
                               onboarded_at="2026-08-01")
    return store


def _reference_ops(store: OnlineStore, call) -> list[Any]:
    """The plan's op list with this event's values in place of its `_Ref`s."""
    row = call.row
    values = dict(zip(store._value_at, store._values(row)))
    values.update(zip(store._time_at, store._time_values(row["ts_us"])))
    return [values[item.key] if isinstance(item, _Ref) else item for item in call.plan.ops]


def _reference_raw(call, stored: list[Any]) -> dict[str, Any]:
    """Every raw value of the reply, each read on its own, in reply order."""
    raw = {}
    for name, kind, at in _reply_outputs(call.plan.used):
        convert, width = _READERS[kind]
        (raw[name],) = list(convert(stored[at:at + width]))
    return raw


def test_the_op_array_joined_from_pieces_is_the_op_list_packed(listed):
    store = listed
    plans = set()
    for event in _events():
        call = store._prepare(event)
        plans.add(id(call.plan))
        ops = call.args[2]
        assert ops == msgpack.packb(_reference_ops(store, call))
    assert len(plans) > 20


def test_features_and_raw_values_equal_assemble_of_every_raw_value(listed):
    store = listed
    decisions = 0
    for event in _events():
        call = store._prepare(event)
        reply = store._script(keys=call.keys, args=call.args)
        result = store._finish(event, call, reply)
        raw = _reference_raw(call, msgpack.unpackb(reply[1]))
        if call.plan.outcome:
            assert result.features == {}
            assert _typed(result.raw) == _typed(raw)
            continue
        decisions += 1
        expected = assemble(call.row, dict(raw), store.default_limit, store.lists)
        assert _typed(result.features) == _typed(expected)  # names, order, types and values
        assert _typed(result.raw) == _typed({k: v for k, v in raw.items() if k not in FIRST_SEEN_TIMES})
    assert decisions > 1_000


def test_the_blank_features_are_the_catalog_then_the_lists(store):
    from fengkong.features import definitions as d

    plan = store._plan_for(("payment", *[False] * len(store._plan_columns)))
    names = list(plan.blank)
    catalog = [name for name, spec in d.CATALOG.items() if spec.source != "model"]
    assert names == catalog + [spec.feature for spec in store.lists.values()]
    assert set(plan.blank.values()) == {None}


def test_a_raw_value_named_like_an_event_feature_is_refused():
    with pytest.raises(FeatureDefinitionError, match="event.amount"):
        blank_features(["card.count_10m", "event.amount"])


def test_raw_is_built_once_and_only_when_read(store):
    event = parse_event({"event_id": "lazy-1", "type": "payment", "occurred_at": "2026-11-02T00:00:00+00:00",
                         "merchant_id": "m1", "amount": 500, "card": {"fingerprint": "c1"}})
    result = store.process(event)
    assert "raw" not in vars(result)
    assert result.raw is result.raw
    assert result.raw["card.count_10m"] == 0
    assert "card.first_seen_us" not in result.raw  # made an age of, as before
    assert pd.isna(result.features["device.count_1h"])


def test_lookup_with_subnet_is_lookup_and_subnet_of(ipintel):
    import random

    from fengkong.features.ipintel import subnet_of

    rng = random.Random(4)
    ips = [f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(3000)]
    ips += ["10.0.0.1", "185.220.101.7", "52.1.2.3", "203.0.113.5", "2001:db8:5::7", "2a0b:f4c0::9", "::1",
            "::ffff:52.1.2.3", " 1.2.3.4", "fe80::1"]
    for ip in ips:
        assert ipintel.lookup_with_subnet(ip) == (ipintel.lookup(ip), subnet_of(ip)), ip
    for bad in ("x", "1.2.3", "256.1.1.1", "01.2.3.4", ""):
        with pytest.raises(ValueError):
            subnet_of(bad)
        with pytest.raises(ValueError):
            ipintel.lookup_with_subnet(bad)
