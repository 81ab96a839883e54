"""The robust features of issue 14 through the real store, on hand-worked cases: the
robust amount score (log amount, median/MAD, a floor, a minimum count), the merchant's
count significance and floored ratios, and "first used N minutes ago" per user and
card, so a whole stolen session reads "new device"."""

from __future__ import annotations

import math
import struct
from datetime import datetime, timedelta

from test_online_store import CN, pay

from fengkong.features import definitions as d

DAY0 = datetime(2026, 11, 2, 0, 0, 0, tzinfo=CN)  # a business day (UTC+8) starts


def _spend(store, user: str, amounts: list[float], start: datetime, card: str | None = None) -> None:
    for i, amount in enumerate(amounts):
        store.process(pay(start + timedelta(days=i), amount=f"{amount:.2f}", user=user, card=card or f"c-{user}",
                          device=f"d-{user}", merchant="m-shop"))


# -- the robust amount score ----------------------------------------------------------------
def test_the_issues_user_gets_no_robust_score_below_the_minimum_and_a_floored_one_above(store):
    start = DAY0 + timedelta(hours=12)
    habit = [37, 40, 43, 46, 49]  # mean 43, std 4.74: the issue's user
    _spend(store, "u-steady", habit, start)
    f = store.process(pay(start + timedelta(days=5), amount="104.00", user="u-steady", card="c-u-steady")).features
    assert f["user.amount_zscore"] > 12  # the raw z-score the issue complains about
    assert f["user.amount_recent_n"] == 5 and f["user.amount_recent_median"] == 43.0
    assert f["user.amount_robust_z"] is None  # 5 earlier payments: below ROBUST_MIN_COUNT
    assert f["card.amount_robust_z"] is None

    # three more of the same habit: 8 earlier payments, ln-amounts centred on ln 43, a
    # MAD of 0.0575 (x 1.4826 = 0.085), below the floor: 104 is ln(104/43) / 0.25 = 3.53
    other = "u-steady-8"
    _spend(store, other, habit + [41, 45, 43], start)
    f = store.process(pay(start + timedelta(days=8), amount="104.00", user=other, card=f"c-{other}")).features
    assert f["user.amount_recent_n"] == 8 and f["user.amount_recent_median"] == 43.0
    assert math.isclose(f["user.amount_robust_z"], math.log(104 / 43) / d.ROBUST_LOG_SCALE_FLOOR, rel_tol=1e-12)
    assert 3 < f["user.amount_robust_z"] < 4 and f["user.amount_zscore"] > 12
    assert f["card.amount_robust_z"] == f["user.amount_robust_z"]  # the same payments on the card


def test_a_steady_habit_and_a_ten_times_purchase_scores_high_and_a_varied_habit_scales_by_its_mad(store):
    start = DAY0 + timedelta(hours=12)
    _spend(store, "u-ten", [50.0] * 10, start)
    f = store.process(pay(start + timedelta(days=10), amount="500.00", user="u-ten", card="c-u-ten")).features
    assert math.isclose(f["user.amount_robust_z"], math.log(10) / d.ROBUST_LOG_SCALE_FLOOR, rel_tol=1e-12)  # 9.2
    assert f["user.amount_std"] == 0.0 and f["user.amount_zscore"] is None  # the raw score has nothing to say

    # amounts 10..1280 doubling (and back): ln-amounts spread far past the floor
    varied = [10, 20, 40, 80, 160, 320, 640, 1280, 80]
    _spend(store, "u-varied", varied, start)
    f = store.process(pay(start + timedelta(days=9), amount="800.00", user="u-varied", card="c-u-varied")).features
    logs = sorted(math.log(a * 100) for a in varied)
    centre = logs[4]
    devs = sorted(abs(x - centre) for x in logs)
    scale = 1.4826 * devs[4]
    assert scale > d.ROBUST_LOG_SCALE_FLOOR
    assert math.isclose(f["user.amount_robust_z"], (math.log(80_000) - centre) / scale, rel_tol=1e-12)
    assert f["user.amount_robust_z"] < 2  # 800 is within this user's usual range


def test_only_the_last_32_amounts_count(store):
    start = DAY0 + timedelta(hours=12)
    _spend(store, "u-ring", [1000.0] * 10 + [20.0] * d.RECENT_AMOUNTS_SIZE, start)
    f = store.process(pay(start + timedelta(days=60), amount="1000.00", user="u-ring", card="c-u-ring")).features
    assert f["user.amount_recent_n"] == 32 and f["user.amount_recent_median"] == 20.0  # the 1000s left the ring
    assert f["user.amount_n"] == 42
    assert math.isclose(f["user.amount_robust_z"], math.log(50) / d.ROBUST_LOG_SCALE_FLOOR, rel_tol=1e-12)


# -- the merchant's count significance -------------------------------------------------------
def _days_of(store, merchant: str, per_day: list[tuple[int, int]], days: int) -> None:
    """``days`` earlier days, each with payments at (hour, minute) of ``per_day``."""
    for k in range(days, 0, -1):
        for hour, minute in per_day:
            store.process(pay(DAY0 - timedelta(days=k) + timedelta(hours=hour, minutes=minute), amount="84.00",
                              merchant=merchant, card=f"c{k}{hour}{minute}", user=None, device=None))


def test_a_tiny_early_morning_baseline_gives_no_significance_and_a_floored_ratio(store):
    _days_of(store, "m-tiny", [(6, 10), (6, 20), (12, 0)], days=8)  # 2 payments by 07:00, a median of 168 yuan
    f = {}
    for minute in range(21, 28):  # 7 payments this morning, the 7th reads 6 before it
        f = store.process(pay(DAY0 + timedelta(hours=6, minutes=minute), amount="84.00", merchant="m-tiny",
                              card=f"c-now{minute}", user=None, device=None)).features
    assert f["merchant.baseline_count_today_7d"] == 2 and f["merchant.baseline_today_7d"] == 168.0
    assert f["merchant.count_ratio_today"] == 3.0  # the unfloored ratio fires on this
    assert f["merchant.count_today_poisson"] is None  # expects 2 < MERCHANT_MIN_EXPECTED_COUNT
    assert f["merchant.count_ratio_today_floored"] == 6 / 5
    # the floor on volume: 5 x the 30-day mean payment (84.00) = 420.00
    assert f["merchant.volume_ratio_today_floored"] == 504.0 / 420.0


def test_a_real_spike_on_a_solid_baseline_is_significant_and_an_ordinary_day_is_not(store):
    minutes = [(h, m) for h in range(9, 11) for m in range(0, 60, 6)]  # 20 payments by 11:00
    _days_of(store, "m-solid", minutes, days=8)
    _days_of(store, "m-quiet", minutes, days=8)
    spike = quiet = {}
    for i in range(200):
        spike = store.process(pay(DAY0 + timedelta(hours=10, seconds=10 * i), amount="84.00", merchant="m-solid",
                                  card=f"c-spike{i}", user=None, device=None)).features
    for i in range(21):
        quiet = store.process(pay(DAY0 + timedelta(hours=10, minutes=2 * i), amount="84.00", merchant="m-quiet",
                                  card=f"c-quiet{i}", user=None, device=None)).features
    assert spike["merchant.baseline_count_today_7d"] == 20 and spike["merchant.count_today"] == 199
    # P(X >= 199 | Poisson(20)): about 1e-119
    assert 110 < spike["merchant.count_today_poisson"] < 130
    assert spike["merchant.count_ratio_today_floored"] == 199 / 20
    assert quiet["merchant.count_today"] == 20 and quiet["merchant.count_today_poisson"] < 1  # P(X >= 20) ~ 0.56


def test_no_significance_without_seven_days_of_history(store):
    _days_of(store, "m-new", [(9, 0)] * 30, days=3)
    f = store.process(pay(DAY0 + timedelta(hours=10), merchant="m-new", user=None, device=None)).features
    assert f["merchant.has_baseline"] is False
    assert (f["merchant.count_today_poisson"], f["merchant.count_ratio_today_floored"],
            f["merchant.volume_ratio_today_floored"]) == (None, None, None)


# -- first used N minutes ago ----------------------------------------------------------------
def test_a_stolen_session_stays_new_for_the_hour_and_not_after(store):
    home = DAY0 + timedelta(hours=9)
    for k in range(5):  # the owner's own device, IP and country for days
        store.process(pay(home + timedelta(days=k), user="u-owner", card="c-owner", device="d-home",
                          ip="113.87.1.2"))
    burst_at = home + timedelta(days=6)
    burst = []
    for i in range(5):  # a takeover: a new device, from abroad, 5 payments in 20 minutes
        burst.append(store.process(pay(burst_at + timedelta(minutes=5 * i), user="u-owner", card="c-owner",
                                       device="d-stolen", ip="52.1.2.3")).features)
    assert burst[0]["ip.country"] not in (None, "CN")
    for f in burst:
        for ns in ("user", "card"):
            assert f[f"{ns}.is_new_device_1h"] is True
            assert f[f"{ns}.is_new_ip_1h"] is True
            assert f[f"{ns}.is_new_country_1h"] is True
    assert [f["user.is_new_device"] for f in burst] == [True, False, False, False, False]  # "ever seen"
    assert [f["user.device_first_seen_min"] for f in burst] == [None, 5.0, 10.0, 15.0, 20.0]
    assert [f["card.country_first_seen_min"] for f in burst] == [None, 5.0, 10.0, 15.0, 20.0]

    later = store.process(pay(burst_at + timedelta(hours=2), user="u-owner", card="c-owner", device="d-stolen",
                              ip="52.1.2.3")).features
    assert later["user.device_first_seen_min"] == 120.0
    assert later["user.is_new_device_1h"] is False and later["card.is_new_ip_1h"] is False
    home_again = store.process(pay(burst_at + timedelta(hours=3), user="u-owner", card="c-owner", device="d-home",
                                   ip="113.87.1.2")).features
    assert home_again["user.is_new_device_1h"] is False
    assert home_again["user.device_first_seen_min"] == (6 * 24 + 3) * 60.0  # first used on day 0 at 09:00


def test_a_missing_value_is_missing_and_a_retried_event_counts_once(store):
    at = DAY0 + timedelta(hours=9)
    f = store.process(pay(at, user="u-x", card="c-x", device=None, ip=None)).features
    assert f["user.device_first_seen_min"] is None and f["user.is_new_device_1h"] is None
    assert f["user.is_new_ip_1h"] is None and f["user.is_new_country_1h"] is None
    first = store.process(pay(at, user="u-x", card="c-x", device="d-x", event_id="retry-1"))
    again = store.process(pay(at + timedelta(minutes=70), user="u-x", card="c-x", device="d-x",
                              event_id="retry-1"))
    assert again.duplicate and again.raw == first.raw  # the stored reply of the first delivery
    f = store.process(pay(at + timedelta(minutes=30), user="u-x", card="c-x", device="d-x")).features
    assert f["user.device_first_seen_min"] == 30.0  # the retry (70 minutes later) did not move it


def test_a_value_unused_for_the_horizon_starts_over_and_the_hash_stays_bounded(store, redis_client):
    at = DAY0 + timedelta(hours=9)
    store.process(pay(at, user="u-back", card="c-back", device="d-old"))
    back = at + timedelta(days=92)
    f = store.process(pay(back, user="u-back", card="c-back", device="d-old")).features
    assert f["user.device_first_seen_min"] is None and f["user.is_new_device_1h"] is True
    f = store.process(pay(back + timedelta(minutes=10), user="u-back", card="c-back", device="d-old")).features
    assert f["user.device_first_seen_min"] == 10.0

    # one new IP a day for 150 days: the user's state value keeps about the last 90 days
    # of them (its records: ..., u16 length, the member's bytes)
    ips = [f"113.{k // 250 + 1}.{k % 250}.9" for k in range(150)]
    for k, ip in enumerate(ips):
        store.process(pay(at + timedelta(days=k), user="u-rotate", card=None, device=None, ip=ip,
                          merchant="m-shop"))
    suffix = next(op.suffix for op in store.planner.ops if op.entity == "user" and op.suffix.startswith("state."))
    value = redis_client.get(store.key("user", "u-rotate", suffix))
    kept = [k for k, ip in enumerate(ips) if struct.pack("<H", len(ip)) + ip.encode() in value]
    assert 89 <= len(kept) <= 92 and kept == list(range(150 - len(kept), 150)), kept  # the latest ~90
    assert not list(redis_client.scan_iter(store.key("user", "u-rotate", "n:*")))  # no hash of its own
