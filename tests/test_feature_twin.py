"""The offline twin equals the online store, feature by feature, on a generated stream."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from eventgen import dense_events
from fengkong.events import flat_to_dict, parse_event
from fengkong.features import promotions
from fengkong.features.lists import ListStore
from fengkong.features.offline import offline_features

# running mean/std: Welford (online, Lua doubles) vs shifted sums (offline, numpy)
FLOAT_TOLERANT = {"user.amount_mean", "user.amount_std", "user.amount_zscore"}

LIST_ENTRIES = {"blocked_ips": ["10.0.0.0/8", "8.8.8.8"], "blocked_cards": ["c7", "c8"], "trusted_users": ["u3"]}
PROFILES = pd.DataFrame(
    {
        "merchant_id": ["m1", "m2", "m3"],
        "grade": ["A", "D", None],
        "single_limit": [None, None, 300_000],
        "daily_cap": [None, 5_000_000, None],
        "onboarded_at": ["2026-01-15", None, "2026-08-20"],
        "anomaly": [0.42, None, 0.91],
    }
)


def _same(name: str, online, offline) -> bool:
    off_missing = offline is None or (isinstance(offline, float) and math.isnan(offline))
    if online is None:
        return off_missing
    if off_missing:
        return False
    if isinstance(online, bool) or isinstance(offline, (bool, np.bool_)):
        return bool(online) == bool(offline)
    if isinstance(online, str):
        return online == offline
    if name in FLOAT_TOLERANT:
        return math.isclose(online, offline, rel_tol=1e-6, abs_tol=1e-9)
    return float(online) == float(offline)


def _promotions(events: pd.DataFrame) -> pd.DataFrame:
    """Planned campaigns over parts of the stream's span: two windows for m1 (one overlapping
    a window of m2), one for m2, none for m3; times in the simulator's file shape."""
    t = pd.to_datetime(events["occurred_at"], utc=True, format="ISO8601")
    lo, hi = t.min(), t.max()
    span = hi - lo
    at = lambda share: (lo + span * share).floor("s").tz_convert("Asia/Shanghai").isoformat()  # noqa: E731
    return pd.DataFrame({"merchant_id": ["m1", "m1", "m2"], "start": [at(0.1), at(0.5), at(0.55)],
                         "end": [at(0.3), at(0.7), at(0.6)], "expected_multiple": [3.0, 5.0, 2.5]})


def _stream(store, redis_client, prefix, events: pd.DataFrame) -> dict[str, dict]:
    lists = ListStore(redis_client, store.lists, prefix=prefix)
    for name, entries in LIST_ENTRIES.items():
        lists.add(name, entries)
    for p in PROFILES.astype(object).where(PROFILES.notna(), None).to_dict("records"):
        store.set_merchant_profile(
            p["merchant_id"],
            grade=p["grade"],
            single_limit_minor=int(p["single_limit"]) if p["single_limit"] is not None else None,
            daily_cap_minor=int(p["daily_cap"]) if p["daily_cap"] is not None else None,
            onboarded_at=p["onboarded_at"],
        )
        if p["anomaly"] is not None:
            redis_client.hset(store.profile_key(p["merchant_id"]), "anomaly", p["anomaly"])
    promos = _promotions(events)
    for merchant, rows in promos.groupby("merchant_id"):
        items = rows[["start", "end", "expected_multiple"]].to_dict("records")
        assert promotions.problems(items) == []
        store.profiles.set_promotions(merchant, promotions.parse(items))
    got = {}
    for row in events.to_dict("records"):
        result = store.process(parse_event(flat_to_dict(row)))
        if result.features:
            got[row["event_id"]] = result.features
    return got


def _offline(events, ipintel, list_specs, history_start_us=None):
    return offline_features(
        events, ipintel=ipintel, lists=list_specs, list_entries=LIST_ENTRIES, profiles=PROFILES,
        promotions=_promotions(events), history_start_us=history_start_us,
    )


def test_offline_twin_equals_online_store_on_20k_events(store, redis_client, prefix, ipintel, list_specs):
    events = dense_events(20_000, seed=11)
    assert_twin(_stream(store, redis_client, prefix, events), events, ipintel, list_specs)


def assert_twin(online: dict[str, dict], events: pd.DataFrame, ipintel, list_specs) -> None:
    """The online store's features (`_stream`) equal the offline twin's, and the stream
    exercised every kind of feature (also run against a Redis Cluster: test_cluster_store)."""
    offline = _offline(events, ipintel, list_specs)
    offline = offline.set_index("event.event_id", drop=False)
    assert len(online) == len(offline) > 10_000
    names = set(next(iter(online.values())))
    assert names == set(offline.columns), names ^ set(offline.columns)
    mismatches: dict[str, list] = {}
    for event_id, feats in online.items():
        off = offline.loc[event_id]
        for name, value in feats.items():
            if not _same(name, value, off[name]):
                mismatches.setdefault(name, []).append((event_id, value, off[name]))
    assert not mismatches, {k: (len(v), v[:3]) for k, v in mismatches.items()}
    # the stream really exercised the windows: not everything is zero
    frame = pd.DataFrame.from_dict(online, orient="index")
    for name in ("card.count_10m", "ip.distinct_users_1h", "merchant.baseline_today_28d",
                 "user.amount_zscore", "merchant.top_card_share_today", "card.declines_1h",
                 "merchant.chargeback_count_30d", "merchant.withdrawal_sum_7d", "device.signups_24h",
                 "merchant.fraud_reports_24h", "merchant.fraud_reports_7d", "merchant.fraud_report_ratio_7d",
                 "card.fraud_reports_7d", "card.mean_amount_7d", "card.amount_to_mean_24h", "user.amount_to_mean_30d"):
        assert pd.to_numeric(frame[name], errors="coerce").fillna(0).abs().sum() > 0, name
    assert frame["lists.blocked_ips"].astype(bool).any() and frame["lists.blocked_cards"].astype(bool).any()
    assert frame["user.is_new_device"].dropna().astype(bool).any()
    assert (~frame["user.is_new_device"].dropna().astype(bool)).any()
    _robust_features_took_every_kind_of_value(frame)
    _makeup_took_every_kind_of_value(frame)
    # the planned promotions were read at each event's time: inside and outside, both multiples
    inside = frame["merchant.in_promotion"].dropna().astype(bool)
    assert inside.any() and (~inside).any()
    assert set(pd.to_numeric(frame["merchant.promotion_multiple"], errors="coerce").dropna()) == {3.0, 5.0, 2.5}


def _num(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(frame[name], errors="coerce").astype(float)


def _robust_features_took_every_kind_of_value(frame: pd.DataFrame) -> None:
    """The stream gave each robust feature its cases, so the equality above covers them."""
    for ns in ("user", "card"):
        n, z = _num(frame, f"{ns}.amount_recent_n"), _num(frame, f"{ns}.amount_robust_z")
        assert ((n > 0) & (n < 8) & z.isna()).any() and (n == 32).any()  # below the minimum count; a full ring
        assert (z > 3).any() and (z < -3).any() and z.between(-1, 1).any()
        assert _num(frame, f"{ns}.amount_recent_median").notna().any()
        for label in ("device", "ip", "country"):
            minutes = _num(frame, f"{ns}.{label}_first_seen_min")
            new = frame[f"{ns}.is_new_{label}_1h"]
            # used before within the hour (still new), used before long ago (not new), never used (new)
            assert ((minutes < 60) & (new == True)).any(), (ns, label)  # noqa: E712
            assert ((minutes >= 60) & (new == False)).any(), (ns, label)  # noqa: E712
            assert (minutes.isna() & (new == True)).any(), (ns, label)  # noqa: E712
    score = _num(frame, "merchant.count_today_poisson")
    has_baseline = frame["merchant.has_baseline"] == True  # noqa: E712
    assert (score > 2).any() and (score == 0).any()
    assert (has_baseline & score.isna()).any()  # a baseline below the minimum expected count
    assert (~has_baseline).any() and not (~has_baseline & score.notna()).any()  # short histories: missing
    for name in ("merchant.count_ratio_today_floored", "merchant.volume_ratio_today_floored"):
        assert (_num(frame, name) > 1).any(), name


def _makeup_took_every_kind_of_value(frame: pd.DataFrame) -> None:
    """Today's make-up was counted (each kind), shared out, and missing on quiet days."""
    today = _num(frame, "merchant.count_today")
    for count, share in (("merchant.new_card_count_today", "merchant.today_new_card_share"),
                         ("merchant.new_user_count_today", "merchant.today_new_user_share"),
                         ("merchant.returning_count_today", "merchant.today_returning_share")):
        n, s = _num(frame, count), _num(frame, share)
        assert (n > 0).any() and (n[today.notna()] <= today[today.notna()]).all(), count
        assert s.between(0.01, 0.99).any(), share
        assert s[today < 20].isna().all() and s[today >= 20].notna().all(), share  # TODAY_MAKEUP_MIN_COUNT


def test_offline_twin_ignores_input_order_and_counts_a_repeated_event_once(ipintel, list_specs):
    events = dense_events(3_000, seed=5)
    baseline = _offline(events, ipintel, list_specs).set_index("event.event_id")
    shuffled = events.sample(frac=1.0, random_state=1)
    repeated = pd.concat([shuffled, events.iloc[[100, 200, 300]]])
    again = _offline(repeated, ipintel, list_specs)
    dedup = again.drop_duplicates("event.event_id").set_index("event.event_id").loc[baseline.index]
    pd.testing.assert_frame_equal(dedup, baseline, check_dtype=False)
