"""The feature store on a real 3-master Redis Cluster (tests/redis_cluster.py): the
per-slot split gives exactly the single-server script's features, and the event-id
claim keeps a retried event from counting anywhere."""

from __future__ import annotations

import asyncio
import math

import pytest

from eventgen import dense_events
from fengkong.events import flat_to_dict, parse_event
from fengkong.features.cluster import ClusterPipelined, command_key, is_cluster_url, parse_cluster_url, slot_of
from fengkong.features.cluster_store import CLAIMED, UNSETTLED, ClusterOnlineStore
from fengkong.features.errors import FeatureStoreError
from fengkong.features.pipelined import ConnectionFailed
from fengkong.features.online import OnlineStore
from redis_cluster import master_of
from test_feature_twin import _stream, assert_twin


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def test_cluster_url_lists_seed_nodes_and_credentials():
    cfg = parse_cluster_url("redis+cluster://ops:s%40cret@10.0.0.1:7000,10.0.0.2:7001")
    assert cfg.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (cfg.username, cfg.password, cfg.tls) == ("ops", "s@cret", False)
    assert cfg.node_url("10.0.0.2", 7001) == "redis://ops:s@cret@10.0.0.2:7001"
    assert parse_cluster_url("rediss+cluster://h:1").tls
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1") and not is_cluster_url(None)
    with pytest.raises(ValueError, match="host:port"):
        parse_cluster_url("redis+cluster://h1:7000,h2")


def test_commands_route_by_their_key_or_hash_tag():
    assert command_key(("EVALSHA", "abc", 2, "k1", "k2", "a")) == "k1"
    assert command_key(("EVALSHA", "abc", 0, "a")) is None
    assert command_key(("XADD", "s", "*", "f", "v")) == "s"
    assert command_key(("SCRIPT", "LOAD", "return 1")) is None
    assert slot_of("fk:v1:{card:7}:state") == slot_of("other:{card:7}") != slot_of("fk:v1:{card:8}:state")


def test_a_packed_command_routes_by_the_key_of_its_arguments():
    """The decision path writes some commands packed (RESP bytes: the record's SET, the
    audit XADD, the case item's XADD); on a cluster they route by the same key."""
    import hiredis

    for command in (("EVALSHA", "abc", 2, "k1", "k2", "a"), ("EVALSHA", "abc", 0, "a"),
                    ("XADD", "fk:v1:{audit}:decisions", "MAXLEN", "~", 1000, "*", "f", "v"),
                    ("SET", "fk:v1:dec:{e-7}", b"\x02rec", "EX", 259200), ("PING",)):
        key = command_key(command)
        packed = command_key(hiredis.pack_command(command))
        assert packed == (None if key is None else str(key).encode())
    with pytest.raises(ValueError, match="RESP"):
        command_key(b"")


def test_each_script_call_stays_on_one_slot(cluster_store):
    """The split really splits: every call's KEYS share one slot, and the calls of a full
    payment land on more than one master."""
    events = dense_events(300, seed=3)
    masters = set()
    looked_up = False
    for row in events.to_dict("records"):
        r = __import__("fengkong.features.rows", fromlist=["event_row"]).event_row(
            parse_event(flat_to_dict(row)), cluster_store.ipintel, cluster_store.biz_offset_min)
        _, _, calls, lookups = cluster_store.cluster.calls(r)
        looked_up = looked_up or bool(lookups)
        for _, keys, _ in calls:
            assert len({slot_of(k) for k in keys}) == 1, keys
            masters.add(slot_of(keys[0]))
    assert len(masters) > 10 and looked_up  # the lists are read as plain lookups


class _OverDecisionPath:
    """The cluster store as `_stream` drives it, but each event through `process_async`
    over `ClusterPipelined` (the service's path), one at a time on one event loop."""

    def __init__(self, store: ClusterOnlineStore, url: str) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.conn = ClusterPipelined(url)

    def __getattr__(self, name):
        return getattr(self.store, name)

    def process(self, event):
        return self.loop.run_until_complete(self.store.process_async(event, self.conn, 5.0))

    def close(self) -> None:
        self.conn.close()
        self.loop.close()


def test_the_decision_path_on_a_cluster_equals_the_offline_twin(cluster_store, cluster_client, ipintel, list_specs):
    """The online/offline twin test (tests/test_feature_twin.py) against the cluster."""
    events = dense_events(20_000, seed=11)
    driver = _OverDecisionPath(cluster_store, cluster_store_url(cluster_client))
    try:
        clustered = _stream(driver, cluster_client, cluster_store.prefix, events)
    finally:
        driver.close()
    assert_twin(clustered, events, ipintel, list_specs)


def test_cluster_features_equal_the_single_server_script(redis_client, cluster_client, ipintel, list_specs):
    """Value for value and type for type, on both cluster paths: `process_async` over
    `ClusterPipelined` (the service's) and `process` over RedisCluster (replay, scripts)."""
    events = dense_events(3_000, seed=12)
    single = _stream(OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix="eq1"), redis_client,
                     "eq1", events)
    assert len(single) > 1_500
    driver = _OverDecisionPath(ClusterOnlineStore(cluster_client, ipintel=ipintel, lists=list_specs, prefix="eq1"),
                               cluster_store_url(cluster_client))
    try:
        decision_path = _stream(driver, cluster_client, "eq1", events)
    finally:
        driver.close()
    synchronous = _stream(ClusterOnlineStore(cluster_client, ipintel=ipintel, lists=list_specs, prefix="eq2"),
                          cluster_client, "eq2", events)
    for clustered in (decision_path, synchronous):
        assert clustered.keys() == single.keys()
        diffs = [(eid, name, value, single[eid][name]) for eid, feats in clustered.items()
                 for name, value in feats.items() if not _equal(value, single[eid][name])]
        assert not diffs, diffs[:5]


def test_a_retried_event_counts_nothing_on_any_shard(cluster_store, cluster_client):
    events = dense_events(600, seed=21)[:80].to_dict("records")
    for row in events[:-1]:
        cluster_store.process(parse_event(flat_to_dict(row)))
    last = parse_event(flat_to_dict(events[-1]))
    before = {k: cluster_client.dump(k) for k in cluster_client.scan_iter(match=f"{cluster_store.prefix}:*")
              if b"{evt:" not in k}
    first = cluster_store.process(last)
    assert not first.duplicate and first.features
    after_first = {k: cluster_client.dump(k) for k in cluster_client.scan_iter(match=f"{cluster_store.prefix}:*")
                   if b"{evt:" not in k}
    assert after_first != before  # the event counted
    again = cluster_store.process(last)
    assert again.duplicate and again.features == first.features
    after_retry = {k: cluster_client.dump(k) for k in cluster_client.scan_iter(match=f"{cluster_store.prefix}:*")
                   if b"{evt:" not in k}
    assert after_retry == after_first  # nothing anywhere changed
    # a twin over the decision path's connection: a duplicate too, with the same features
    conn = ClusterPipelined(cluster_store_url(cluster_client))

    async def twin():
        try:
            return await cluster_store.process_async(last, conn, 2.0)
        finally:
            conn.close()

    got = asyncio.run(twin())
    assert got.duplicate and got.features == first.features


def cluster_store_url(client) -> str:
    return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in client.get_primaries())


def test_concurrent_duplicates_count_once_and_share_the_features(cluster_store, cluster_client):
    """Many deliveries of one event id at once over several connections (as several
    workers would): one counts, every other waits for and gets its features."""
    events = [parse_event(flat_to_dict(r)) for r in dense_events(600, seed=8).to_dict("records")]
    event = next(e for e in events if e.type.value == "payment" and e.card is not None)
    url = cluster_store_url(cluster_client)

    async def run():
        conns = [ClusterPipelined(url) for _ in range(4)]
        try:
            return await asyncio.gather(*(cluster_store.process_async(event, conns[i % 4], 2.0) for i in range(16)))
        finally:
            for c in conns:
                c.close()

    results = asyncio.run(run())
    assert sum(not r.duplicate for r in results) == 1
    assert all(r.features == results[0].features for r in results)
    # the card's counters saw the event once: a second event of the card reads a count of 1
    probe = event.model_copy(update={"event_id": "probe-" + event.event_id})
    assert cluster_store.process(probe).features["card.count_10m"] == 1


def test_an_unsettled_claim_counts_nothing_and_says_why(cluster_store, cluster_client):
    event = parse_event(flat_to_dict(dense_events(600, seed=2).to_dict("records")[0]))
    claim = cluster_store._claim_key(event)
    cluster_client.set(claim, UNSETTLED)
    with pytest.raises(FeatureStoreError, match="shard failed"):
        cluster_store.process(event)
    cluster_client.set(claim, CLAIMED)
    with pytest.raises(FeatureStoreError, match="still being counted"):
        cluster_store.process(event)
    cluster_client.delete(claim)
    assert not cluster_store.process(event).duplicate


def test_a_claim_of_the_format_before_or_a_record_over_the_claim_counts_nothing(cluster_store, cluster_client):
    """The claim shares its key with the service's record (``{evt:<id>}:request``): a record
    stored over the features is handed back as it is (`FeatureResult.stored`), and an
    event whose claim is still under the older ``:dedup`` key counts nothing, on both paths."""
    from fengkong.features import keys

    events = [parse_event(flat_to_dict(r)) for r in dense_events(600, seed=5).to_dict("records")]
    pays = [e for e in events if e.type.value == "payment" and e.card is not None][:3]
    assert not cluster_store.process(pays[0]).duplicate
    record = b"\x01" + b"\x90"  # what the service stores over the claim (a compact record)
    cluster_client.set(cluster_store._claim_key(pays[0]), record)
    again = cluster_store.process(pays[0])
    assert again.duplicate and again.stored == record and again.features == {}
    url = cluster_store_url(cluster_client)

    async def replay(event):
        conn = ClusterPipelined(url)
        try:
            return await cluster_store.process_async(event, conn, 2.0)
        finally:
            conn.close()

    assert asyncio.run(replay(pays[0])).stored == record
    for event, run in ((pays[1], cluster_store.process), (pays[2], lambda e: asyncio.run(replay(e)))):
        counted = cluster_store.process(event.model_copy(update={"event_id": "old-" + event.event_id}))
        blob = cluster_client.get(cluster_store._claim_key(event.model_copy(update={"event_id": "old-" + event.event_id})))
        cluster_client.set(keys.legacy_claim_key(cluster_store.prefix, event.event_id), blob)
        got = run(event)
        assert got.duplicate and {k: v for k, v in got.features.items() if k != "event.event_id"} == \
            {k: v for k, v in counted.features.items() if k != "event.event_id"}
        assert cluster_client.get(cluster_store._claim_key(event)) == blob  # the claim took the old one's value


def test_the_rescore_jobs_grade_writes_reach_every_shard_and_the_next_decision(redis_cluster, ipintel):
    """`fengkong rescore --redis-url redis+cluster://...` writes through `client_for_url`:
    grades, anomaly and caps land in the profile hashes on their shards, and the
    cluster store's next decision reads them."""
    import pandas as pd

    from fengkong.features.cluster import client_for_url
    from fengkong.training.grade_policy import GradePolicy
    from fengkong.training.rescore import write_to_store
    from test_rescore import ROOT

    policy = GradePolicy.load(ROOT / "rules" / "grades" / "grades.yaml")
    grades = sorted(policy.daily_cap_minor)
    current = pd.DataFrame({"merchant_id": [f"rsm{i}" for i in range(60)],
                            "grade": [grades[i % len(grades)] for i in range(60)],
                            "reason": [f"why {i}" for i in range(60)], "anomaly": [i / 100 for i in range(60)],
                            "anomaly_day": ["2026-03-01"] * 60})
    client = client_for_url(redis_cluster.url)
    try:
        store = ClusterOnlineStore(client, ipintel=ipintel, prefix="rescore1")
        assert write_to_store(store, current, policy, batch=25) == 60
        shards = {master_of(redis_cluster, store.profile_key(m)) for m in current["merchant_id"]}
        assert shards == {0, 1, 2}
        for row in current.itertuples():
            profile = store.get_merchant_profile(row.merchant_id)
            assert profile["grade"] == row.grade and profile["grade_reason"] == row.reason
            assert int(profile["daily_cap"]) == policy.daily_cap_minor[row.grade]
        row = current.iloc[7]
        ev = parse_event({"event_id": "rs-c1", "type": "payment", "occurred_at": "2026-03-01T10:00:00+08:00",
                          "merchant_id": row["merchant_id"], "amount": 1000, "user_id": "u1"})
        feats = store.process(ev).features
        assert feats["merchant.grade"] == row["grade"] and feats["merchant.anomaly"] == row["anomaly"]
    finally:
        client.close()


def test_a_moved_reply_refreshes_the_slot_map_and_the_command_is_answered(redis_cluster, cluster_client):
    """A stale slot map (as after a resharding or a failover): the command goes to the
    wrong master, which answers MOVED; the connection re-reads the map and resends."""
    key = "moved-test:{card:17}"
    cluster_client.set(key, b"here")
    conn = ClusterPipelined(redis_cluster.url)
    owner = master_of(redis_cluster, key)
    wrong = f"127.0.0.1:{redis_cluster.ports[(owner + 1) % 3]}"

    async def run():
        try:
            await conn.refresh(2.0)
            right = conn.slots[slot_of(key)]
            conn.slots = [wrong] * len(conn.slots)  # every slot on one master: stale
            replies = await conn.execute((("GET", key), ("SET", key + "x", b"1")), 2.0)
            return right, replies
        finally:
            conn.close()

    right, replies = asyncio.run(run())
    assert replies == [b"here", b"OK"]
    assert conn.slots[slot_of(key)] == right != wrong  # the map was read again
    assert cluster_client.get(key + "x") == b"1"


def test_an_unreachable_master_makes_the_connection_reread_the_slot_map(redis_cluster, cluster_client):
    """As after a failover (the slots now on a promoted replica): commands routed to an
    address nobody answers fail, the map is re-read in the background, and the next
    commands reach the master that holds the slot."""
    import socket

    key = "failover-test:{user:17}"
    cluster_client.set(key, b"alive")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused
    conn = ClusterPipelined(redis_cluster.url)

    async def run():
        try:
            await conn.refresh(2.0)
            conn.slots = [gone] * len(conn.slots)
            with pytest.raises(ConnectionFailed):
                await conn.execute((("GET", key),), 1.0)
            for _ in range(200):  # the background re-read
                if conn.slots[slot_of(key)] != gone:
                    break
                await asyncio.sleep(0.01)
            return await conn.execute((("GET", key),), 2.0)
        finally:
            conn.close()

    assert asyncio.run(run()) == [b"alive"]
