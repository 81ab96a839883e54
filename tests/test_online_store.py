"""The online store against a real Redis: windows, idempotency, outcomes, lists,
baselines, memory bounds and failures. Expected values are worked out by hand from
the window definitions in `fengkong/features/definitions.py`."""

from __future__ import annotations

import re
import struct
import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from fengkong.events import flat_to_dict, parse_event
from fengkong.features.embedded_redis import EmbeddedRedis
from fengkong.features.errors import FeatureStoreUnavailable
from fengkong.features.lists import ListStore
from fengkong.features.online import OnlineStore

CN = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 2, 12, 0, 30, tzinfo=CN)
_ids = iter(range(10**9))


def pay(at: datetime, *, amount: str = "100.00", card="c1", user="u1", device="d1", ip="113.87.1.2",
        merchant="m1", typ="payment", event_id: str | None = None, **extra):
    data = {
        "event_id": event_id or f"e{next(_ids)}",
        "type": typ,
        "occurred_at": at.isoformat(),
        "merchant_id": merchant,
        "user_id": user,
        "amount": amount,
        "card": {"fingerprint": card, "type": "credit", "issuer_country": "CN"} if card else None,
        "ip": ip,
        "device_id": device,
        **extra,
    }
    return parse_event({k: v for k, v in data.items() if v is not None})


def test_ten_minute_window_counts_the_current_minute_and_nine_before(store):
    store.process(pay(T0))  # bucket 12:00
    store.process(pay(T0 + timedelta(minutes=5)))  # 12:05
    third = store.process(pay(T0 + timedelta(minutes=9)))  # 12:09: sees 12:00 and 12:05
    assert third.features["card.count_10m"] == 2
    assert third.features["card.sum_10m"] == 200.0
    fourth = store.process(pay(T0 + timedelta(minutes=9, seconds=40)))  # 12:10:10, window 12:01..12:10
    assert fourth.features["card.count_10m"] == 2  # 12:05 and 12:09; 12:00 left the window
    assert fourth.features["card.count_1h"] == 3
    later = store.process(pay(T0 + timedelta(hours=2)))
    assert later.features["card.count_10m"] == 0 and later.features["card.count_1h"] == 0
    assert later.features["card.count_24h"] == 4


def test_the_same_event_id_counts_once_and_gets_the_same_features(store):
    first = store.process(pay(T0, event_id="dup-1"))
    again = store.process(pay(T0, event_id="dup-1"))
    assert not first.duplicate and again.duplicate
    assert again.features == first.features
    nxt = store.process(pay(T0 + timedelta(seconds=1)))
    assert nxt.features["card.count_10m"] == 1
    assert nxt.features["merchant.count_today"] == 1


def test_concurrent_deliveries_of_one_event_count_once(redis_server, ipintel, list_specs, prefix):
    stores = [OnlineStore(redis_server.client(), ipintel=ipintel, lists=list_specs, prefix=prefix) for _ in range(8)]
    event = pay(T0, event_id="race-1")
    results = []
    barrier = threading.Barrier(len(stores))

    def send(s):
        barrier.wait()
        results.append(s.process(event))

    threads = [threading.Thread(target=send, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not r.duplicate for r in results) == 1
    after = stores[0].process(pay(T0 + timedelta(seconds=2)))
    assert after.features["card.count_10m"] == 1


def test_a_missing_entity_gives_missing_features_not_zeros(store):
    res = store.process(pay(T0, device=None))
    assert res.features["device.count_1h"] is None
    assert res.features["device.distinct_cards_1h"] is None
    assert res.features["card.count_1h"] == 0  # the card is known: zero is a real count


def test_outcomes_update_features_without_a_decision(store):
    p = store.process(pay(T0, amount="200.00", event_id="p1"))
    refund = store.process(pay(T0 + timedelta(minutes=1), typ="refund", amount="50.00", refers_to="p1"))
    assert refund.features == {}
    store.process(pay(T0 + timedelta(minutes=2), typ="decline", amount="10.00"))
    store.process(pay(T0 + timedelta(minutes=3), typ="chargeback", refers_to="p1", amount="200.00"))
    store.process(pay(T0 + timedelta(minutes=4), typ="withdrawal", amount="150.00", card=None, user=None, device=None, ip=None))
    nxt = store.process(pay(T0 + timedelta(minutes=5), amount="200.00"))
    f = nxt.features
    assert p.features["merchant.refund_sum_30d"] == 0.0
    assert f["merchant.refund_sum_30d"] == 50.0
    assert f["merchant.refund_ratio_30d"] == 50.0 / 200.0
    assert f["card.declines_1h"] == 1
    assert f["merchant.chargeback_count_30d"] == 1 and f["merchant.chargeback_ratio_30d"] == 1.0
    assert f["merchant.withdrawal_sum_7d"] == 150.0 and f["merchant.withdrawal_ratio_7d"] == 150.0 / 200.0
    assert f["card.count_1h"] == 1  # outcomes are not payments


def test_distinct_counts_and_new_device(store):
    store.process(pay(T0, device="d1", user="u1", card="c1"))
    store.process(pay(T0 + timedelta(minutes=1), device="d1", user="u2", card="c2"))
    store.process(pay(T0 + timedelta(minutes=2), device="d1", user="u2", card="c2"))
    res = store.process(pay(T0 + timedelta(minutes=3), device="d1", user="u3", card="c3"))
    assert res.features["device.distinct_cards_1h"] == 2
    assert res.features["device.distinct_users_1h"] == 2
    u = store.process(pay(T0 + timedelta(minutes=4), device="d9", user="u1", card="c1"))
    assert u.features["user.is_new_device"] is True
    assert u.features["user.devices_seen_90d"] == 1
    back = store.process(pay(T0 + timedelta(minutes=5), device="d1", user="u1", card="c1"))
    assert back.features["user.is_new_device"] is False
    assert back.features["card.distinct_devices_24h"] == 2



def test_distinct_counts_of_two_windows_from_one_set(store):
    """The script counts a set's widest window first and, when it holds nobody, gives
    every window 0 without counting it; otherwise each window is counted."""
    first = store.process(pay(T0, device="d1", card="c1"))
    assert (first.features["device.distinct_cards_1h"], first.features["device.distinct_cards_24h"]) == (0, 0)
    later = store.process(pay(T0 + timedelta(hours=2), device="d1", card="c2"))  # c1 left the hour, not the day
    assert (later.features["device.distinct_cards_1h"], later.features["device.distinct_cards_24h"]) == (0, 1)
    both = store.process(pay(T0 + timedelta(hours=2, minutes=1), device="d1", card="c3"))
    assert (both.features["device.distinct_cards_1h"], both.features["device.distinct_cards_24h"]) == (1, 2)
    gone = store.process(pay(T0 + timedelta(days=3), device="d1", card="c4"))  # everyone left both windows
    assert (gone.features["device.distinct_cards_1h"], gone.features["device.distinct_cards_24h"]) == (0, 0)
    again = store.process(pay(T0 + timedelta(days=3, minutes=1), device="d1", card="c5"))
    assert (again.features["device.distinct_cards_1h"], again.features["device.distinct_cards_24h"]) == (1, 1)


def test_an_event_that_counts_in_a_set_refreshes_its_ttl_and_one_that_only_reads_it_does_not(
        store, redis_client, prefix):
    """D ops refresh a sorted set's TTL before reading it (EXPIRE's answer says whether
    the set exists, and a new set needs no reads): a new set and an existing one alike
    are left with their full TTL, which covers the longest window (24 h + 1 h for a
    merchant's cards), as when the TTL was set after the write. A user's seen devices
    live in its state value, whose TTL covers their horizon (90 + 1 days)."""
    cards = f"{prefix}:v1:{{merchant:m1}}:d:card_fp"
    seen = f"{prefix}:v1:{{user:u1}}:" + next(op.suffix for op in store.planner.ops
                                               if op.entity == "user" and op.suffix.startswith("state."))
    full = {cards: 86400 + 3600, seen: 91 * 86400}
    store.process(pay(T0))  # both sets are new
    for key, ttl in full.items():
        assert ttl - 5 <= redis_client.ttl(key) <= ttl, key
        redis_client.expire(key, 100)  # as if the last write were long ago
    store.process(pay(T0 + timedelta(seconds=5), device="d2", card="c2"))  # both exist: a new member each
    for key, ttl in full.items():
        assert ttl - 5 <= redis_client.ttl(key) <= ttl, key
        redis_client.expire(key, 100)
    store.process(pay(T0 + timedelta(seconds=9), device="d2", card="c2"))  # both exist: the member is not new
    for key, ttl in full.items():
        assert ttl - 5 <= redis_client.ttl(key) <= ttl, key
        redis_client.expire(key, 100)
    # a card bind counts no merchant cards (payments do): the set is only read
    store.process(pay(T0 + timedelta(seconds=12), typ="card_bind", amount=None, card="c3"))
    assert redis_client.ttl(cards) <= 100
    assert redis_client.zscore(cards, "c3") is None


def test_an_entity_in_the_new_format_pays_no_read_of_the_keys_of_before(store, redis_client, prefix):
    """A user's seen sets and first uses, and a card's, are in its state value (one key
    each); an entity whose value carries its groups of sets pays no EXISTS over the keys
    of before: the event's only EXISTS is its claim's. A read-only event (a decline
    counts no first use of the card) still finds every group in place."""
    def exists_calls() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_exists", {}).get("calls", 0))

    store.process(pay(T0, user="u-x", card="c-x", device="d-x", ip="113.9.9.9"))
    assert [k.decode().rsplit("}:", 1)[1][:6] for k in redis_client.scan_iter(f"{prefix}:v1:{{user:u-x}}:*")] == [
        "state."]
    assert [k.decode().rsplit("}:", 1)[1][:6] for k in redis_client.scan_iter(f"{prefix}:v1:{{card:c-x}}:*")] == [
        "state."]
    for i, typ in enumerate(("payment", "login", "payment"), 1):
        before = exists_calls()
        f = store.process(pay(T0 + timedelta(minutes=i), user="u-x", card="c-x", device="d-x", ip="113.9.9.9",
                              typ=typ, amount=None if typ == "login" else "100.00")).features
        assert exists_calls() - before == 1, typ  # the claim's, no entity's
        assert f["user.is_new_device"] is False and f["user.devices_seen_90d"] == 1


def test_a_merchants_volume_and_top_card_ttls_are_set_once_a_day_not_per_payment(store, redis_client, prefix):
    """The volume hash's TTL (32 days) is refreshed by the merchant's first payment of a
    business day, the day's top-card set's (2 days) when it is made: a later payment the
    same day sends no EXPIRE, and leaves a shortened TTL as it was."""
    volume = f"{prefix}:v1:{{merchant:m7}}:volume"
    store.process(pay(T0, merchant="m7"))
    (top,) = [k.decode() for k in redis_client.scan_iter(f"{prefix}:v1:{{merchant:m7}}:top:*")]
    assert 32 * 86400 - 5 <= redis_client.ttl(volume) <= 32 * 86400
    assert 2 * 86400 - 5 <= redis_client.ttl(top) <= 2 * 86400
    for key in (volume, top):
        redis_client.expire(key, 100)
    later = store.process(pay(T0 + timedelta(minutes=5), merchant="m7", card="c2"))
    assert later.features["merchant.count_today"] == 1  # the same day: the first payment was read
    assert redis_client.ttl(volume) <= 100 and redis_client.ttl(top) <= 100  # not refreshed
    assert redis_client.zscore(top, "c2") == 10_000  # (written all the same)
    store.process(pay(T0 + timedelta(days=1), merchant="m7"))  # the next business day
    assert 32 * 86400 - 5 <= redis_client.ttl(volume) <= 32 * 86400
    tops = [k.decode() for k in redis_client.scan_iter(f"{prefix}:v1:{{merchant:m7}}:top:*") if k.decode() != top]
    assert len(tops) == 1 and 2 * 86400 - 5 <= redis_client.ttl(tops[0]) <= 2 * 86400


def test_small_distinct_sets_live_in_the_entity_state_and_a_set_of_before_is_read_once(
        store, redis_client, prefix):
    """An IP's (card's, device's, subnet's) distinct-count sets are part of its state
    value, not sorted sets of their own; a sorted set written before they were folded in
    is read when the state has no sets yet, so no distinct count starts over."""
    ip = "113.87.9.9"
    legacy = f"{prefix}:v1:{{ip:{ip}}}:d:card_fp"
    before = T0 - timedelta(minutes=10)
    redis_client.zadd(legacy, {"c_old": int(before.timestamp()) * 1_000_000})
    first = store.process(pay(T0, ip=ip, card="c1", user="u5"))
    assert first.features["ip.distinct_cards_1h"] == 1  # c_old, from the set of before
    assert redis_client.zscore(legacy, "c1") is None  # the new member went to the state
    redis_client.delete(legacy)
    second = store.process(pay(T0 + timedelta(minutes=1), ip=ip, card="c2", user="u6"))
    assert second.features["ip.distinct_cards_1h"] == 2  # c_old and c1, from the state now
    assert second.features["ip.distinct_users_1h"] == 1
    # a login counts no IP cards (payments and card binds do): read, not written
    login = store.process(pay(T0 + timedelta(minutes=2), ip=ip, typ="login", amount=None, card=None, user="u7"))
    assert login.features["ip.distinct_cards_1h"] == 3 and login.features["ip.distinct_users_1h"] == 2
    later = store.process(pay(T0 + timedelta(minutes=3), ip=ip, card="c9", user="u8"))
    assert later.features["ip.distinct_cards_1h"] == 3 and later.features["ip.distinct_users_1h"] == 3
    keys = sorted(k.decode().rsplit("}:", 1)[1] for k in redis_client.scan_iter(f"{prefix}:v1:{{ip:{ip}}}:*"))
    assert len(keys) == 1 and keys[0].startswith("state."), keys  # one key per IP, not three
    assert not list(redis_client.scan_iter(f"{prefix}:v1:{{card:c1}}:d:*"))


def test_running_mean_std_and_zscore(store):
    for i, amount in enumerate(["100.00", "200.00", "300.00"]):
        store.process(pay(T0 + timedelta(minutes=i), amount=amount))
    res = store.process(pay(T0 + timedelta(minutes=5), amount="400.00"))
    f = res.features
    assert f["user.amount_n"] == 3
    assert f["user.amount_mean"] == pytest.approx(200.0)
    assert f["user.amount_std"] == pytest.approx(100.0)  # sample std of 100, 200, 300
    assert f["user.amount_zscore"] == pytest.approx(2.0)


def test_volume_baseline_ratio_and_the_new_merchant_without_one(store):
    new = store.process(pay(T0, merchant="fresh"))
    assert new.features["merchant.has_baseline"] is False
    assert new.features["merchant.volume_ratio_today"] is None
    day0 = datetime(2026, 11, 1, 10, 15, tzinfo=CN)
    for k in range(8):  # one 100.00 payment at 10:15 on each of 8 days
        store.process(pay(day0 + timedelta(days=k), merchant="steady", card=f"c{k}", user=f"u{k}"))
    spike = day0 + timedelta(days=8, hours=1)  # 11:15 on the 9th day
    for i in range(3):
        store.process(pay(spike + timedelta(minutes=i), merchant="steady", card=f"s{i}", user=f"s{i}"))
    res = store.process(pay(spike + timedelta(minutes=5), merchant="steady", card="s9", user="s9"))
    f = res.features
    assert f["merchant.has_baseline"] is True
    assert f["merchant.volume_today"] == 300.0
    assert f["merchant.baseline_today_7d"] == 100.0  # each earlier day: 100.00 by the end of 11:00
    assert f["merchant.volume_ratio_today"] == 3.0
    assert f["merchant.baseline_today_28d"] is None  # only 8 days of history
    assert f["merchant.baseline_hour_7d"] == 0.0  # nothing was ever paid in the 11:00 hour
    assert f["merchant.volume_ratio_hour"] is None


def test_single_limit_near_limit_share_and_top_card(store):
    store.set_merchant_profile("lim", single_limit_minor=100_000)  # 1,000.00
    a = store.process(pay(T0, merchant="lim", amount="950.00", card="k1"))
    b = store.process(pay(T0 + timedelta(minutes=1), merchant="lim", amount="850.00", card="k2"))
    c = store.process(pay(T0 + timedelta(minutes=2), merchant="lim", amount="1001.00", card="k1"))
    assert a.features["event.near_limit"] is True and a.features["merchant.single_limit"] == 1000.0
    assert b.features["event.near_limit"] is False
    assert c.features["event.over_limit"] is True
    assert c.features["merchant.near_limit_share_24h"] == 0.5
    assert c.features["merchant.top_card_share_today"] == pytest.approx(950.0 / 1800.0)
    assert c.features["merchant.grade"] == "NEW"
    store.set_merchant_profile("lim", grade="A")
    d = store.process(pay(T0 + timedelta(minutes=3), merchant="lim", amount="10.00"))
    assert d.features["merchant.grade"] == "A"


def test_list_changes_are_effective_on_the_next_event(store, redis_client, prefix, list_specs):
    lists = ListStore(redis_client, list_specs, prefix=prefix)
    before = store.process(pay(T0, card="bad-card", ip="203.0.113.9"))
    assert before.features["lists.blocked_cards"] is False
    lists.add("blocked_cards", ["bad-card"])
    lists.add("blocked_ips", ["203.0.113.0/24"])
    after = store.process(pay(T0 + timedelta(seconds=1), card="bad-card", ip="203.0.113.9"))
    assert after.features["lists.blocked_cards"] is True
    assert after.features["lists.blocked_ips"] is True
    outside = store.process(pay(T0 + timedelta(seconds=2), card="ok-card", ip="203.0.114.9"))
    assert outside.features["lists.blocked_ips"] is False and outside.features["lists.blocked_cards"] is False
    lists.remove("blocked_cards", ["bad-card"])
    assert store.process(pay(T0 + timedelta(seconds=3), card="bad-card")).features["lists.blocked_cards"] is False


def test_every_feature_key_is_prefixed_tagged_and_expires(store, redis_client, prefix):
    for i in range(30):
        store.process(pay(T0 + timedelta(minutes=7 * i), card=f"c{i % 4}", device=f"d{i % 3}", merchant=f"m{i % 2}"))
    store.process(pay(T0, typ="refund", amount="1.00"))
    keys = [k.decode() for k in redis_client.scan_iter(f"{prefix}:*")]
    assert keys
    pattern = re.compile(rf"^{prefix}:v1:\{{[a-z_]+:[^}}]+\}}:.+$")
    longest = 90 * 86400 + 86400
    for key in keys:
        assert pattern.match(key), key
        if key.endswith(":profile"):
            continue  # merchant profiles are reference data, not counters
        ttl = redis_client.ttl(key)
        assert 0 < ttl <= longest, (key, ttl)


def test_a_down_redis_raises_a_clear_error_never_zeros(ipintel, list_specs):
    server = EmbeddedRedis(persist=False).start()
    store = OnlineStore(server.client(socket_timeout=0.5), ipintel=ipintel, lists=list_specs)
    assert store.process(pay(T0)).features["card.count_10m"] == 0
    server.kill()
    with pytest.raises(FeatureStoreUnavailable):
        store.process(pay(T0 + timedelta(seconds=1)))
    server.stop()


def test_a_refused_event_touches_no_counter(store):
    from fengkong.events import EventRejected

    with pytest.raises(EventRejected):
        parse_event({"event_id": "x", "type": "payment", "occurred_at": T0.isoformat(), "merchant_id": "m1",
                     "amount": 1.5, "card": {"fingerprint": "c1"}})
    assert store.process(pay(T0 + timedelta(seconds=5))).features["card.count_10m"] == 0


def test_a_reused_event_id_with_another_body_is_refused_and_counts_nothing(store):
    from fengkong.features.errors import DuplicateEventConflict

    store.process(pay(T0, event_id="reuse-1"))
    with pytest.raises(DuplicateEventConflict):
        store.process(pay(T0, event_id="reuse-1", device=None, ip=None))
    with pytest.raises(DuplicateEventConflict):
        store.process(pay(T0, event_id="reuse-1", typ="refund"))
    assert store.process(pay(T0 + timedelta(seconds=1))).features["card.count_10m"] == 1


def test_a_plan_kept_across_events_sends_and_reads_what_a_fresh_one_does(redis_client, ipintel, list_specs, prefix):
    """`_prepare` keeps a plan per event type and missing columns, and the time values of
    the last minute: neither may carry one event's values into another's call. Another
    store rebuilds both for every event, on its own keys; the calls and features agree."""
    from eventgen import dense_events

    events = dense_events(2_500, seed=3, days=3)
    # mostly in time order (the minute's values are reused), with a shuffled stretch (they are not)
    events = pd.concat([events.iloc[:1_500], events.iloc[1_500:].sample(frac=1.0, random_state=2)])
    kept = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix)
    fresh = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=f"{prefix}x")
    for store in (kept, fresh):
        lists = ListStore(redis_client, list_specs, prefix=store.prefix)
        lists.add("blocked_ips", ["113.0.0.0/10", "8.8.8.8"])
        lists.add("blocked_cards", ["c7"])
    for row in events.to_dict("records"):
        event = parse_event(flat_to_dict(row))
        a = kept._prepare(event)
        fresh.planner.plans.clear()
        fresh.planner.args.last_slot = (-1, [])
        b = fresh._prepare(event)
        assert [k.replace(f"{prefix}:", f"{prefix}x:", 1) for k in a.keys] == b.keys
        assert a.args[:-1] == b.args[:-1]  # the last is the claim's key of the format before: prefixed
        assert a.args[-1].replace(f"{prefix}:", f"{prefix}x:", 1) == b.args[-1]
        assert len(kept.planner.args.values(a.row)) == len(kept.planner.args.value_at)
        ra = kept._finish(event, a, kept._script(keys=a.keys, args=a.args))
        rb = fresh._finish(event, b, fresh._script(keys=b.keys, args=b.args))
        assert [(k, type(v), v) for k, v in ra.features.items()] == [(k, type(v), v) for k, v in rb.features.items()]
        assert [(k, type(v), v) for k, v in ra.raw.items()] == [(k, type(v), v) for k, v in rb.raw.items()]
    assert 10 < len(kept.planner.plans) < 200


@pytest.mark.parametrize(
    "ip", ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.4.5", "1.2.3", "256.1.1.1", "a.b.c.d",
           "1.2.3.4\x00", ""],
)
def test_the_ipv4_text_of_a_list_lookup_is_the_decimal_of_ipv4_int(ip):
    from fengkong.features.plan import ipv4_int, ipv4_text

    assert ipv4_text(ip) == str(ipv4_int(ip))


@pytest.mark.parametrize("nops", [0, 3, 4, 191, 192, 850, 1700])
def test_the_op_list_reads_the_same_whatever_the_size_of_its_array(store, redis_client, prefix, nops):
    """The script decodes ARGV[3] as a stream of the array's items (its header cut off: 1
    byte up to 15 items, 3 bytes up to 65535), all on the Lua stack at once, which holds
    8000; from 6000 bytes on (up to an item a byte) as one array. Each way gives the same
    replies. The reply's table is made with room for 192 values (the tag and 191): a reply
    that fills it, one that outgrows it and one that leaves it mostly empty pack only
    their values."""
    import msgpack

    members = f"{prefix}:v1:{{list:t}}:members"
    redis_client.sadd(members, "x")
    ops: list = []
    for i in range(nops):
        ops += ["L", 2, 0, "x" if i % 3 else "y", ""]  # 7 bytes an op
    reply = store._script(keys=[f"{prefix}:v1:{{evt:ops{nops}}}:dedup", members], args=[60, 0, msgpack.packb(ops), "tag"])
    assert reply[0] == b"ok"
    assert msgpack.unpackb(reply[1]) == ["tag"] + [1 if i % 3 else 0 for i in range(nops)]


def test_a_new_entity_is_written_as_the_general_path_writes_it_and_checks_its_keys_of_before_once(
        store, redis_client, prefix):
    """A new entity (no value, no key of before) is read as zeros and written from the event
    alone, with one EXISTS over the keys of before of all its sets; one with a key of before
    goes the general way (reads it, drops its members outside the window). With nothing of
    before inside the window, both ways write the same bytes and read the same features."""
    def exists_calls() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_exists", {}).get("calls", 0))

    def state(ip: str) -> bytes:
        (key,) = redis_client.scan_iter(f"{prefix}:v1:{{ip:{ip}}}:state.*")
        return redis_client.get(key)

    old = f"{prefix}:v1:{{ip:113.87.60.1}}:d:card_fp"
    redis_client.zadd(old, {"c_gone": int((T0 - timedelta(days=3)).timestamp()) * 1_000_000})
    before = exists_calls()
    new = store.process(pay(T0, ip="113.87.50.1", card="c-n", user="u-n", device="d-n")).features
    # the claim's, then one per new entity with sets: card (two groups), user, device, IP, subnet
    assert exists_calls() - before == 6
    # the same card, user and device: the two IPs' values hold the same members
    known = store.process(pay(T0, ip="113.87.60.1", card="c-n", user="u-n", device="d-n")).features
    assert state("113.87.50.1") == state("113.87.60.1")
    assert new["ip.distinct_cards_1h"] == known["ip.distinct_cards_1h"] == 0
    assert {k: v for k, v in new.items() if k.startswith("ip.")} == {
        k: v for k, v in known.items() if k.startswith("ip.")}
    later = store.process(pay(T0 + timedelta(minutes=1), ip="113.87.60.1", card="c-2", user="u-2")).features
    assert later["ip.distinct_cards_1h"] == 1  # c-n, from the state (before the event); not c_gone


def test_a_new_entity_with_only_a_first_use_hash_of_before_reads_it(store, redis_client):
    """A user with no state value whose first uses were kept in a hash of before (the
    format before they moved into the value) reads them: the one EXISTS over the keys of
    before names the hash ("<hash>#<field prefix>" cut at "#"), so the event goes the
    general way and no device's first use starts over."""
    first, seen = T0 - timedelta(minutes=30), T0 - timedelta(minutes=10)
    key = store.key("user", "u-hash", "n:device_id,ip,ip_country")
    redis_client.hset(key, "1:d-old", struct.pack("<dd", int(first.timestamp()) * 1_000_000,
                                                  int(seen.timestamp()) * 1_000_000))
    f = store.process(pay(T0, user="u-hash", card="c-hash", device="d-old")).features
    assert f["user.device_first_seen_min"] == 30.0  # its run began 30 minutes before
    new = store.process(pay(T0, user="u-none", card="c-none", device="d-old")).features
    assert new["user.device_first_seen_min"] is None  # another user: none
