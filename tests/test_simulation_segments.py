"""Legitimate segments that look like the signals a merchant's or a shopper's own baseline feeds
(docs/simulation.md, "Legitimate look-alikes"): merchants' own promotions bought by established
customers, early-morning merchants with tiny baselines, shoppers with a steady small habit who
sometimes buy bigger, and small card-present shops. Each must be in the history with its shape,
labelled legitimate, and gone when its knob is 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from simulation_world import CONFIG, events_with_ts

from fengkong.simulation import SimConfig, run

SEGMENT_KNOBS = {"merchant_promo_share": "promo_day", "early_morning_share": "early_morning",
                 "habit_share": "habit", "pos_small_share": "pos_small"}
DAYS = pd.date_range(CONFIG.start, periods=CONFIG.days).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def sim():
    return run(CONFIG)


@pytest.fixture(scope="module")
def payments(sim):
    df = events_with_ts(sim)
    pay = df[df["type"] == "payment"]
    return pay.assign(day=pay["occurred_at"].str.slice(0, 10))


@pytest.fixture(scope="module")
def legit(payments):
    return payments[~payments["is_fraud"]]


def _daily(rows: pd.DataFrame, key: str = "merchant_id") -> pd.DataFrame:
    """Payments per key (rows) and day (columns), every day of the span."""
    return rows.groupby([key, "day"]).size().unstack(fill_value=0).reindex(columns=DAYS, fill_value=0)


def test_segments_are_legitimate(payments):
    notes = ("promo_day", "early_morning", "habit", "habit_bigger", "pos_small")
    rows = payments[payments["note"].isin(notes)]
    assert set(rows["note"]) == set(notes)
    assert not rows["is_fraud"].any() and (rows["scenario"] == "").all()


def test_merchant_promotions_are_planned_and_bought_by_established_customers(sim, payments, legit):
    own = sim.promotions[sim.promotions["kind"] == "merchant"]
    assert len(own) >= 3
    assert own["expected_multiple"].between(3.0, 10.0).all()
    daily = _daily(legit)
    ratios, seen, card_seen, at_merchant = [], [], [], []
    for promo in own.itertuples():
        start, end = pd.Timestamp(promo.start).timestamp(), pd.Timestamp(promo.end).timestamp()
        i = list(DAYS).index(promo.start[:10])
        baseline = np.median(daily.loc[promo.merchant_id].iloc[i - 7:i])
        on_days = daily.loc[promo.merchant_id, promo.start[:10]:promo.end[:10]].iloc[: int((end - start) // 86400)]
        ratios.extend((on_days / baseline).tolist())
        before = legit[legit["ts"] < start]
        buyers = legit[(legit["merchant_id"] == promo.merchant_id) & legit["ts"].between(start, end - 1)]
        extra = buyers[buyers["note"] == "promo_day"]
        assert len(extra) > 0
        seen.append(buyers["user_id"].isin(before["user_id"]).mean())
        card_seen.append(extra["card_fingerprint"].isin(before["card_fingerprint"]).mean())
        at_merchant.append(extra["user_id"].isin(before.loc[before["merchant_id"] == promo.merchant_id,
                                                            "user_id"]).mean())
        # a merchant's own promotion is not where brushing is injected
        fraud = payments[(payments["merchant_id"] == promo.merchant_id) & payments["ts"].between(start, end - 1)]
        assert not fraud["scenario"].str.startswith("volume_spike").any()
    assert min(ratios) >= 2.0 and np.median(ratios) >= 3.0, ratios   # 3-10x its usual day
    assert min(seen) >= 0.85, seen                  # the buyers are customers with a history
    assert np.mean(card_seen) >= 0.85, card_seen    # on cards seen before
    assert np.mean(at_merchant) >= 0.5, at_merchant  # most of them this merchant's own customers


def test_early_morning_merchants_open_before_seven_with_a_handful_of_payments(legit):
    rows = legit[legit["note"] == "early_morning"]
    assert rows["merchant_id"].nunique() >= 2
    by_day = rows.groupby(["merchant_id", "day"])
    assert (by_day["hour"].min() < 7).mean() >= 0.75   # the day's first payments come before 7 a.m.
    assert rows["hour"].between(5, 18).all()
    median = _daily(rows).median(axis=1)
    assert median.between(1, 10).all(), median        # a tiny baseline
    assert rows["amount"].median() <= 2500              # breakfast tickets
    # early in the day the same-period baseline is a payment or two: the ratio is large with no fraud
    shops = legit["merchant_id"].isin(set(rows["merchant_id"]))
    ratios, no_baseline = _same_period_ratio(legit[shops], before_hour=7)
    assert len(ratios) >= 20
    large = ((ratios >= 2).sum() + no_baseline) / (len(ratios) + no_baseline)
    assert large >= 0.3, (large, np.percentile(ratios, [10, 50, 90]))


def _same_period_ratio(payments: pd.DataFrame, before_hour: int) -> tuple[np.ndarray, int]:
    """For each payment before ``before_hour`` (local) from the eighth day on: payments so far that
    day at its merchant over the median of the same period's count on the previous 7 days (the
    engine's "today so far vs 7-day median"); and how many had a median of 0."""
    local = payments["ts"].to_numpy() + 8 * 3600
    frame = payments.assign(eday=local // 86400, tod=local % 86400)
    first_day = (pd.Timestamp(CONFIG.start) - pd.Timestamp("1970-01-01")).days
    ratios, zero = [], 0
    for _, g in frame.groupby("merchant_id"):
        by_day = {d: np.sort(x["tod"].to_numpy()) for d, x in g.groupby("eday")}
        for day, tod in g.loc[(g["tod"] < before_hour * 3600) & (g["eday"] >= first_day + 7), ["eday", "tod"]].to_numpy():
            base = np.median([np.searchsorted(by_day.get(day - k, np.zeros(0)), tod, side="right")
                              for k in range(1, 8)])
            today = np.searchsorted(by_day[day], tod, side="right")
            if base == 0:
                zero += 1
            else:
                ratios.append(today / base)
    return np.array(ratios), zero


def _previous_habit_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """For each row, mean and std of the same user's earlier ``habit`` amounts (and how many)."""
    rows = rows.sort_values(["user_id", "ts"])
    a = rows["amount"].astype(float).where(rows["note"] == "habit", 0.0)
    k = (rows["note"] == "habit").astype(float)
    g = rows["user_id"]
    n = k.groupby(g).cumsum() - k
    s1 = a.groupby(g).cumsum() - a
    s2 = (a * a).groupby(g).cumsum() - a * a
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0) * n / np.maximum(n - 1, 1))
    return pd.DataFrame({"n": n, "mean": mean, "std": std, "amount": rows["amount"].astype(float),
                         "note": rows["note"], "card": rows["card_fingerprint"]}, index=rows.index)


def test_habit_shoppers_have_a_steady_small_habit_and_sometimes_buy_bigger(legit):
    rows = legit[legit["note"].isin(["habit", "habit_bigger"])]
    steady = rows[rows["note"] == "habit"].groupby("user_id")["amount"].agg(["mean", "std", "count"])
    steady = steady[steady["count"] >= 5]
    assert len(steady) >= 20
    assert (steady["std"] / steady["mean"]).median() <= 0.15       # low variance
    assert steady["mean"].median() <= 6000                          # a small habit (about 40 yuan)
    bigger = rows[rows["note"] == "habit_bigger"]
    assert 0.01 <= len(bigger) / len(rows) <= 0.1                   # now and then
    ratio = bigger["amount"].to_numpy() / steady["mean"].reindex(bigger["user_id"]).to_numpy()
    ratio = ratio[~np.isnan(ratio)]
    assert len(ratio) >= 10 and np.all((ratio > 1.7) & (ratio < 11.0)), ratio  # 2-10x the habit
    # the z-score a raw amount rule sees: large, though the purchase is genuine
    stats = _previous_habit_stats(rows)
    b = stats[(stats["note"] == "habit_bigger") & (stats["n"] >= 5)]
    z = (b["amount"] - b["mean"]) / b["std"].clip(lower=100.0)
    assert len(z) >= 10 and z.median() > 5, z.describe()
    # on their own card and device
    habit_cards = rows[rows["note"] == "habit"].groupby("user_id")["card_fingerprint"].agg(set)
    own_card = [c in habit_cards.get(u, set()) for u, c in zip(bigger["user_id"], bigger["card_fingerprint"])]
    assert np.mean(own_card) >= 0.8
    devices = legit.dropna(subset=["device_id"]).groupby("user_id")["device_id"].agg(set)
    online = bigger.dropna(subset=["device_id"])
    assert all(d in devices[u] for u, d in zip(online["user_id"], online["device_id"]))
    assert online.groupby("user_id")["device_id"].nunique().max() <= 2


def test_small_pos_merchants_take_a_handful_of_card_present_payments(legit):
    rows = legit[legit["note"] == "pos_small"]
    assert rows["merchant_id"].nunique() >= 2
    assert (rows["channel"] == "pos").all()
    assert rows["device_id"].isna().all() and rows["ip"].isna().all()  # the shop's terminal, not a phone
    assert rows["card_fingerprint"].notna().all()
    daily = _daily(rows)
    median = daily.median(axis=1)
    assert median.between(1, 8).all(), median                          # a handful a day
    assert (daily.max(axis=1) >= 2.5 * median).any()                   # and the occasional busy day


@pytest.mark.parametrize("knob,note", sorted(SEGMENT_KNOBS.items()))
def test_a_knob_at_zero_removes_its_segment(sim, knob, note):
    other = run(CONFIG.with_(**{knob: 0}))
    notes = set(other.events["note"])
    assert note in set(sim.events["note"])
    if knob == "merchant_promo_share":
        assert "merchant" not in set(other.promotions["kind"])
        platform = set(other.promotions["start"].str.slice(0, 10))
        promo = other.events[other.events["note"] == "promo_day"]
        assert set(promo["occurred_at"].str.slice(0, 10)) <= platform
    else:
        assert note not in notes
        if note == "habit":
            assert "habit_bigger" not in notes
    # the other segments stay
    assert {n for k, n in SEGMENT_KNOBS.items() if k != knob} <= notes


def test_all_segment_knobs_at_zero_give_the_history_without_them():
    off = CONFIG.with_(**{k: 0 for k in SEGMENT_KNOBS})
    a, b = run(off), run(off)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not a.events["note"].isin(["early_morning", "pos_small", "habit", "habit_bigger"]).any()
    assert len(a.merchants) < len(run(CONFIG).merchants)  # the segments' shops are not there
    assert all(getattr(SimConfig().no_overlap(), k) == 0 for k in SEGMENT_KNOBS)
    with pytest.raises(ValueError, match="habit_share"):
        SimConfig(habit_share=1.5)
