"""Replay with many events in flight on a real 3-master Redis Cluster gets exactly the
one-by-one answers, and the single server's.

The history (as tests/test_replay_inflight.py's) has every fraud scenario, outcome
events, label-derived reports, retried event_ids and a row the event contract refuses.
Small depths and chunks put the claim-then-entities steps of a retry and of its first
delivery in the same chunk, in neighbouring chunks, and far apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fengkong.events import parse_event
from fengkong.features.cluster_store import CLAIMED, ClusterOnlineStore
from fengkong.features.errors import FeatureStoreError
from fengkong.features.inflight import InFlight
from fengkong.features.inflight_cluster import ClusterInFlight

from replay_histories import assert_same_replay, assert_varied, history_with_retries, parsed_events, replay


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    return history_with_retries(tmp_path_factory.mktemp("inflight_cluster_sim"), events=4_000, seed=11, late_every=97)


def test_cluster_in_flight_decisions_equal_one_by_one_and_one_server(history, redis_cluster, redis_server) -> None:
    one = replay(history, redis_cluster.url, "tcif1", 1)
    assert_varied(one)
    for prefix, depth in (("tcif2", 1024), ("tcif3", 60)):
        assert_same_replay(one, replay(history, redis_cluster.url, prefix, depth))
    assert_same_replay(one, replay(history, redis_server.url, "tcif4", 1024))  # the single-server script's answers


def test_cluster_in_flight_features_equal_process_event_by_event(history, cluster_client, ipintel,
                                                                   list_specs) -> None:
    events = parsed_events(history)
    head = [e for e in events[:80] if e is not None]

    def store(prefix: str) -> ClusterOnlineStore:
        s = ClusterOnlineStore(cluster_client, ipintel=ipintel, lists=list_specs, prefix=prefix)
        for e in head:  # claims and blobs already in the cluster before the run: read back from Redis
            s.process(e)
        return s

    one = store("tciff1")
    want = [None if e is None else one.process(e) for e in events]
    assert sum(w is not None and w.duplicate for w in want) > 150
    for prefix, depth, chunk in (("tciff2", 30, 7), ("tciff3", 1, 1), ("tciff4", 400, 64)):
        got = list(ClusterInFlight(store(prefix), depth=depth, chunk=chunk).run(enumerate(events)))
        assert [tag for tag, _, _ in got] == list(range(len(events)))
        for (i, event, result), w in zip(got, want):
            assert event is events[i]
            if w is None:
                assert result is None
                continue
            assert result is not None
            assert (result.duplicate, result.features) == (w.duplicate, w.features), (prefix, events[i].event_id)


def test_a_claim_held_elsewhere_is_refused_at_its_event(cluster_client, ipintel, list_specs) -> None:
    store = ClusterOnlineStore(cluster_client, ipintel=ipintel, lists=list_specs, prefix="tcifc")
    base = {"type": "payment", "occurred_at": "2026-11-25T10:00:00+08:00", "merchant_id": "m1", "user_id": "u1",
            "amount": 1000, "card": {"fingerprint": "c1", "bin": "622202", "type": "credit"}}
    events = [parse_event({**base, "event_id": f"e{i}"}) for i in range(3)]
    cluster_client.set(store._claim_key(events[1]), CLAIMED)  # another worker counting it, never finishing
    seen = []
    with pytest.raises(FeatureStoreError, match="still being counted"):
        for tag, _, result in ClusterInFlight(store, depth=8).run(enumerate(events)):
            seen.append(tag)
    assert seen == [0]
    with pytest.raises(ValueError, match="cluster"):
        list(InFlight(store).run([(0, events[0])]))
    with pytest.raises(ValueError, match="depth"):
        ClusterInFlight(store, depth=0)
