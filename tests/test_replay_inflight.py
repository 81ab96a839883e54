"""Replay with many events in flight gets exactly the one-by-one replay's answers.

The history has every fraud scenario, outcome events (refunds, chargebacks, fraud
reports, label-derived reports), retried event_ids (the same event sent again) and a
row the event contract refuses. The in-flight runs use depths that put chunk
boundaries, retries and outcomes in many different places.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from fengkong.events import parse_event
from fengkong.features.errors import DuplicateEventConflict, FeatureStoreUnavailable
from fengkong.features.inflight import InFlight
from fengkong.features.online import OnlineStore

from replay_histories import RULES, assert_same_replay, assert_varied, history_with_retries, parsed_events, replay


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    return history_with_retries(tmp_path_factory.mktemp("inflight_sim"), events=5_000, seed=5)


def test_in_flight_decisions_equal_one_by_one(history, redis_server) -> None:
    one = replay(history, redis_server.url, "tif1", 1)
    assert_varied(one)
    for prefix, depth in (("tif2", 1024), ("tif3", 100)):
        assert_same_replay(one, replay(history, redis_server.url, prefix, depth))


def test_in_flight_features_equal_process_event_by_event(history, redis_client, ipintel, list_specs) -> None:
    events = parsed_events(history)
    one = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix="tiff1")
    want = [None if e is None else one.process(e) for e in events]
    many = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix="tiff2")
    got = list(InFlight(many, depth=30, chunk=7).run((i, e) for i, e in enumerate(events)))
    assert [tag for tag, _, _ in got] == list(range(len(events)))
    assert sum(w is not None and w.duplicate for w in want) > 100
    for (i, event, result), w in zip(got, want):
        assert event is events[i]
        if w is None:
            assert result is None
            continue
        assert result is not None
        assert (result.duplicate, result.features) == (w.duplicate, w.features), events[i].event_id


def test_the_script_is_loaded_once_per_window_not_per_chunk(history, redis_client, ipintel, list_specs) -> None:
    """A flushed script cache is loaded by the first chunk, and then once per ``depth``
    events: Redis hashes the whole script on every SCRIPT LOAD."""
    events = [e for e in parsed_events(history)[:600] if e is not None]
    store = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix="tifl")
    redis_client.script_flush()
    before = redis_client.info("commandstats").get("cmdstat_script", {}).get("calls", 0)
    got = list(InFlight(store, depth=128, chunk=16).run((i, e) for i, e in enumerate(events)))
    loads = redis_client.info("commandstats")["cmdstat_script"]["calls"] - before
    assert [r is not None and not isinstance(r, Exception) for _, _, r in got] == [True] * len(events)
    assert loads == -(-len(events) // 128), (loads, len(events))  # one per window of 128, not one per 16


def test_a_conflicting_event_id_is_refused_at_that_event(redis_client, ipintel, list_specs) -> None:
    store = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix="tifc")
    base = {"type": "payment", "occurred_at": "2026-11-25T10:00:00+08:00", "merchant_id": "m1", "user_id": "u1",
            "amount": 1000, "card": {"fingerprint": "c1", "bin": "622202", "type": "credit"}}
    events = [parse_event({**base, "event_id": "e1"}), parse_event({**base, "event_id": "e2"}),
              parse_event({**base, "event_id": "e1", "type": "refund"})]
    seen = []
    with pytest.raises(DuplicateEventConflict):
        for tag, _, result in InFlight(store, depth=8).run((i, e) for i, e in enumerate(events)):
            seen.append(tag)
    assert seen == [0, 1]


def test_an_unreachable_store_is_named(tmp_path, ipintel, list_specs) -> None:
    client = redis.Redis(unix_socket_path=str(tmp_path / "no-such.sock"))
    store = OnlineStore(client, ipintel=ipintel, lists=list_specs, prefix="tifu")
    event = parse_event({"event_id": "e1", "type": "login", "occurred_at": "2026-11-25T10:00:00+08:00",
                         "user_id": "u1"})
    with pytest.raises(FeatureStoreUnavailable, match="feature store unreachable"):
        list(InFlight(store).run([(0, event)]))
    with pytest.raises(ValueError, match="depth"):
        InFlight(store, depth=0)


def test_cli_refuses_an_in_flight_depth_below_one(history) -> None:
    from typer.testing import CliRunner

    from fengkong.cli import app

    res = CliRunner().invoke(app, ["replay", str(history / "events.parquet"), "--rules-dir", str(RULES),
                                   "--in-flight", "0", "--no-progress"])
    assert res.exit_code == 2
    assert "--in-flight" in res.output


def test_a_refused_call_is_raised_at_its_event_as_one_by_one(redis_client, ipintel, list_specs) -> None:
    from fengkong.features.errors import FeatureStoreError

    base = {"type": "payment", "occurred_at": "2026-11-25T10:00:00+08:00", "merchant_id": "m1", "user_id": "u1",
            "amount": 1000}
    events = [parse_event({**base, "event_id": f"e{i}", "card": {"fingerprint": f"c{i}", "bin": "622202"}})
              for i in range(3)]
    stores = [OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=p) for p in ("tife1", "tife2")]
    for store in stores:  # the second event's card state is not a string: Redis refuses its script call
        key = next(k for k in store._prepare(events[1]).keys if "{card:c1}" in k)
        redis_client.rpush(key, "not a state")
    with pytest.raises(FeatureStoreError, match="refused"):
        stores[0].process(events[1])
    seen = []
    with pytest.raises(FeatureStoreError, match="refused"):
        for tag, _, result in InFlight(stores[1], depth=8).run((i, e) for i, e in enumerate(events)):
            seen.append(tag)
    assert seen == [0]
