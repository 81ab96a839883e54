"""What a simulated history shows: a legitimate platform (own devices, merchants of every
size, promotions, refunds, disputes, settlements), each fraud scenario's signals against
ordinary traffic, and legitimate behaviour that overlaps those signals. The contract
(valid events, labels, determinism) is in tests/test_simulation.py."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
import pytest
from simulation_world import CONFIG, DAY_S, events_with_ts

from fengkong.simulation import SimConfig, run
from fengkong.simulation import constants as K
from fengkong.simulation.config import OVERLAP_KNOBS


@pytest.fixture(scope="module")
def sim():
    return run(CONFIG)


@pytest.fixture(scope="module")
def df(sim):
    return events_with_ts(sim)


@pytest.fixture(scope="module")
def payments(df):
    return df[df["type"] == "payment"]


def _in_ranges(ips: pd.Series, ranges: np.ndarray) -> np.ndarray:
    as_int = np.array([int(ipaddress.ip_address(x)) for x in ips], dtype=np.int64)
    hit = np.zeros(len(as_int), dtype=bool)
    for base, size in ranges:
        hit |= (as_int >= base) & (as_int < base + size)
    return hit


# ---- the legitimate platform ----------------------------------------------------------
def test_shoppers_keep_their_own_devices_and_home_country(payments):
    legit = payments[~payments["is_fraud"]]
    devices = legit.dropna(subset=["device_id"]).groupby("user_id")["device_id"].nunique()
    assert devices.max() <= 2 and (devices == 2).mean() > 0.1
    assert (legit["card_issuer_country"] == "CN").mean() > 0.9
    assert set(legit["card_type"].dropna()) == {"credit", "debit", "prepaid"}
    # home broadband changes IP often, inside the same /16
    online = legit.dropna(subset=["ip"])
    per_user = online.groupby("user_id")["ip"].nunique()
    heavy = per_user[per_user >= 10].index
    assert len(heavy) > 0
    nets = online[online["user_id"].isin(heavy)]["ip"].str.rsplit(".", n=2).str[0]
    top16 = nets.groupby(online.loc[nets.index, "user_id"]).agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert top16.median() > 0.5
    chinese = np.concatenate([K.CN_BROADBAND, K.CN_MOBILE, K.CN_MOBILE_CGNAT, K.CN_CAMPUS])
    assert _in_ranges(online["ip"].head(3000), chinese).mean() > 0.9


def test_merchants_of_every_size_and_new_ones_wait_for_onboarding(sim, payments):
    m = sim.merchants
    assert set(m["size_class"]) == set(K.SIZE_CLASSES)
    onboard = pd.to_datetime(m.set_index("merchant_id")["onboarded_at"])
    assert (onboard > pd.Timestamp(CONFIG.start)).any()
    first = pd.to_datetime(payments.groupby("merchant_id")["occurred_at"].min().str.slice(0, 10))
    assert (first >= onboard.loc[first.index]).all()


def test_promotion_day_is_a_legitimate_spike(sim, payments):
    legit = payments[~payments["is_fraud"]]
    per_day = legit.groupby(legit["occurred_at"].str.slice(0, 10)).size()
    platform = sim.promotions[sim.promotions["kind"] == "platform"]  # merchants' own: test_simulation_segments
    promo = platform["start"].str.slice(0, 10).unique()
    assert len(promo) >= 1 and legit["note"].eq("promo_day").any()
    for day in promo:
        assert per_day[day] > 1.8 * per_day.median()


def test_refunds_partial_and_repeated_never_exceed_the_payment(df, payments):
    refunds = df[df["type"] == "refund"]
    total = refunds.groupby("refers_to")["amount"].sum()
    paid = payments.set_index("event_id").loc[total.index, "amount"]
    assert (total <= paid).all()
    assert (total < paid).any()  # partial
    assert (refunds.groupby("refers_to").size() >= 2).any()  # repeated


def test_chargebacks_arrive_days_later_for_most_fraud(df, payments):
    disputes = df[df["type"].isin(["chargeback", "fraud_report"])]
    paid = payments.set_index("event_id")
    delay = (disputes["ts"].to_numpy() - paid.loc[disputes["refers_to"], "ts"].to_numpy()) / DAY_S
    assert delay.min() >= 1 and delay.max() <= 60
    declined = set(df.loc[df["type"] == "decline", "refers_to"])
    fraud = payments[payments["is_fraud"] & ~payments["event_id"].isin(declined)]
    reported = fraud["event_id"].isin(set(disputes["refers_to"]))
    assert 0.5 < reported.mean() < 1.0  # most, not all
    friendly = disputes[~disputes["is_fraud"]]
    assert len(friendly) > 0 and (friendly["note"] == "friendly_fraud").all()


def test_settlements_and_withdrawals(df):
    settle = df[df["type"] == "settlement"]
    withdraw = df[df["type"] == "withdrawal"]
    assert len(settle) > 0 and len(withdraw) > 0
    assert settle["user_id"].isna().all()
    assert withdraw["merchant_id"].notna().all()


# ---- the scenarios' signals -----------------------------------------------------------
def test_cash_out_merchants_show_the_signals(sim, df, payments):
    cash = payments[payments["scenario"] == "cash_out"]
    flagged = set(sim.merchants.loc[sim.merchants["is_cash_out"], "merchant_id"])
    assert set(cash["merchant_id"]) == flagged
    ordinary = payments[~payments["is_fraud"]]
    limit = sim.merchants.set_index("merchant_id")["single_limit"]

    def shares(p):
        lim = limit.loc[p["merchant_id"]].to_numpy()
        return {
            "credit": (p["card_type"] == "credit").mean(),
            "round": ((p["amount"] % 10_000) == 0).mean(),
            "near_limit": ((p["amount"] >= 0.9 * lim) & (p["amount"] <= lim)).mean(),
            "night": p["hour"].isin(range(6)).mean(),
        }

    c, o = shares(cash), shares(ordinary)
    assert c["credit"] == 1.0 and o["credit"] < 0.6
    assert c["round"] > 0.5 and c["round"] > 3 * o["round"]
    assert c["near_limit"] > 0.7 > 10 * o["near_limit"]
    assert c["night"] > 0.6 > 5 * o["night"]
    for mer, p in cash.groupby("merchant_id"):
        assert len(p) / p["card_fingerprint"].nunique() >= 3  # the same cards again and again
        # a stretch of ordinary flow before the first cash-out payment
        before = ordinary[(ordinary["merchant_id"] == mer) & (ordinary["ts"] < p["ts"].min())]
        assert len(before) > 0 and (p["ts"].min() - before["ts"].min()) > 10 * DAY_S
        # the takings leave within hours
        w = df[(df["type"] == "withdrawal") & (df["merchant_id"] == mer) & (df["scenario"] == "cash_out")]
        assert len(w) > 0
        last_pay = np.searchsorted(p["ts"].to_numpy(), w["ts"].to_numpy()) - 1
        gap = w["ts"].to_numpy() - p["ts"].to_numpy()[last_pay]
        assert (gap <= 3 * 3600).all()


def test_card_testing_is_many_cards_from_few_devices(df, payments):
    ct = payments[payments["scenario"] == "card_testing"]
    per_device = ct.groupby("device_id")["card_fingerprint"].nunique()
    assert per_device.min() >= 10
    assert ct["ip"].nunique() <= 3 * ct["device_id"].nunique()
    assert (ct["amount"] < 1000).all()
    declined = ct["event_id"].isin(set(df.loc[df["type"] == "decline", "refers_to"]))
    assert declined.mean() > 0.5
    # bursts: most attempts within a minute of the previous one on the same device
    gaps = ct.groupby("device_id")["ts"].diff().dropna()
    assert (gaps < 60).mean() > 0.8


def test_stolen_card_new_device_new_place_unusual_amount(payments):
    legit = payments[~payments["is_fraud"]]
    stolen = payments[payments["scenario"] == "stolen_card"]
    for card, p in stolen.groupby("card_fingerprint"):
        history = legit[(legit["card_fingerprint"] == card) & (legit["ts"] < p["ts"].min())]
        assert len(history) > 0
        assert not set(p["device_id"]) & set(history["device_id"].dropna())
        nets = set(history["ip"].dropna().str.rsplit(".", n=2).str[0])
        assert not set(p["ip"].str.rsplit(".", n=2).str[0]) & nets
        assert p["amount"].median() > 2 * history["amount"].median()


def _daily(payments, merchant):
    p = payments[payments["merchant_id"] == merchant]
    return p.groupby(p["occurred_at"].str.slice(0, 10)).size()


@pytest.mark.parametrize("scenario,lo,hi", [("volume_spike_3x", 2.5, 4.0), ("volume_spike_10x", 8.0, 12.0)])
def test_volume_spikes_against_the_merchants_own_baseline(payments, scenario, lo, hi):
    spikes = payments[payments["scenario"] == scenario]
    days = pd.date_range(CONFIG.start, periods=CONFIG.days).strftime("%Y-%m-%d")
    for (mer, day), _ in spikes.groupby(["merchant_id", spikes["occurred_at"].str.slice(0, 10)]):
        daily = _daily(payments, mer).reindex(days, fill_value=0)
        i = list(days).index(day)
        baseline = np.median(daily.iloc[i - 7:i])
        assert baseline > 0 and i >= 7
        assert lo <= daily.iloc[i] / baseline <= hi, (mer, day, daily.iloc[i], baseline)


def test_proxy_ip_uses_hosting_vpn_and_tor_ranges(payments):
    proxy = payments[payments["scenario"] == "proxy_ip"]
    assert _in_ranges(proxy["ip"], np.concatenate([K.HOSTING, K.TOR])).all()
    assert {"ip:hosting", "ip:vpn", "ip:tor"} <= set(proxy["note"])
    assert (proxy["card_issuer_country"] != "US").any()
    legit = payments[~payments["is_fraud"]].dropna(subset=["ip"])
    assert _in_ranges(legit["ip"], np.concatenate([K.HOSTING, K.TOR])).mean() < 0.01


def test_promotion_abuse_rings_share_devices_or_a_subnet(df):
    signups = df[df["type"] == "signup"].copy()
    signups["day"] = signups["occurred_at"].str.slice(0, 10)
    signups["net"] = signups["ip"].str.rsplit(".", n=1).str[0]
    per_device = signups.groupby(["day", "device_id"])["user_id"].transform("nunique")
    per_net = signups.groupby(["day", "net"])["user_id"].transform("nunique")
    ring = signups["scenario"] == "promotion_abuse"
    assert ring.sum() >= 15
    assert ((per_device[ring] >= 3) | (per_net[ring] >= 10)).all()
    legit = ~signups["is_fraud"]
    assert (per_device[legit] == 1).mean() > 0.95
    abuse_pay = df[(df["type"] == "payment") & (df["scenario"] == "promotion_abuse")]
    assert abuse_pay["user_id"].isin(set(signups.loc[ring, "user_id"])).all()


def test_blacklisted_events_use_listed_entities_and_nothing_else_does(sim, df, payments):
    bl = sim.blacklist
    hit = (payments["card_fingerprint"].isin(bl["blocked_cards"]) | payments["user_id"].isin(bl["blocked_users"])
           | payments["device_id"].isin(bl["blocked_devices"]) | payments["ip"].isin(bl["blocked_ips"])
           | payments["merchant_id"].isin(bl["blocked_merchants"]))
    assert hit[payments["scenario"] == "blacklisted"].all()
    assert not hit[~payments["is_fraud"]].any()
    for key, col in (("blocked_cards", "card_fingerprint"), ("blocked_users", "user_id"),
                     ("blocked_devices", "device_id"), ("blocked_ips", "ip"), ("blocked_merchants", "merchant_id")):
        assert set(bl[key]) <= set(payments.loc[payments["scenario"] == "blacklisted", col]), key


# ---- legitimate behaviour that overlaps the fraud signals -------------------------------
# Each statistic is measured on the default world and on the same config with the overlap knobs
# at 0 (``no_overlap()``, a trivially separable world): it must be
# there in the first and (about) absent in the second.
def _epoch(occurred_at: pd.Series) -> np.ndarray:
    return ((pd.to_datetime(occurred_at) - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy()


def _distinct_in_window(key: pd.Series, user: pd.Series, ts: np.ndarray, window: int = DAY_S) -> np.ndarray:
    """For each row: distinct users of rows with the same key within [ts - window, ts] (0 if no key)."""
    out = np.zeros(len(key), dtype=np.int64)
    ok = key.notna().to_numpy()
    kc = pd.factorize(key[ok])[0].astype(np.int64)
    uc = pd.factorize(user[ok])[0].astype(np.int64)
    t = ts[ok].astype(np.int64)
    order = np.lexsort((t, kc))
    kc, uc, t = kc[order], uc[order], t[order]
    comb = kc * (1 << 40) + t
    lo = np.searchsorted(comb, comb - window, side="left")
    hi = np.searchsorted(comb, comb, side="right") - 1  # rows of the same second count too
    pair = kc * (uc.max() + 1) + uc
    po = np.lexsort((np.arange(len(t)), pair))
    prev = np.full(len(t), -1)
    same = pair[po][1:] == pair[po][:-1]
    prev[po[1:][same]] = po[:-1][same]
    count = np.zeros(len(t), dtype=np.int64)
    for d in range(int((hi - lo).max()) + 1 if len(t) else 0):  # a user counts at its first row in the window
        k = lo + d
        inside = k <= hi
        count += inside & (prev[np.where(inside, k, 0)] < lo)
    res = np.empty(len(t), dtype=np.int64)
    res[order] = count
    out[ok] = res
    return out


def _count_in_window(key_rows: pd.Series, ts_rows: np.ndarray, key_q: pd.Series, ts_q: np.ndarray,
                     window: int = DAY_S) -> np.ndarray:
    """For each query: rows with the same key within [ts - window, ts]."""
    codes, _ = pd.factorize(pd.concat([key_rows, key_q], ignore_index=True))
    kr, kq = codes[: len(key_rows)].astype(np.int64), codes[len(key_rows):].astype(np.int64)
    comb = np.sort(kr[kr >= 0] * (1 << 40) + ts_rows[kr >= 0])
    hi = np.searchsorted(comb, kq * (1 << 40) + ts_q, side="right")
    lo = np.searchsorted(comb, kq * (1 << 40) + ts_q - window, side="left")
    return np.where(kq >= 0, hi - lo, 0)


def overlap_signals(events: pd.DataFrame) -> pd.DataFrame:
    """Per payment: the fraud signals the sharing knobs are about, and the payment's label."""
    ts = _epoch(events["occurred_at"])
    active = events["type"].isin(["payment", "login", "signup", "card_bind"]).to_numpy()
    a, ta = events[active], ts[active]
    device_users = _distinct_in_window(a["device_id"], a["user_id"], ta)
    ip_users = _distinct_in_window(a["ip"], a["user_id"], ta)
    pay = (a["type"] == "payment").to_numpy()
    p, tp = a[pay], ta[pay]
    is_signup = (events["type"] == "signup").to_numpy()
    su, ts_su = events[is_signup], ts[is_signup]
    net = lambda ips: ips.str.rsplit(".", n=1).str[0]  # noqa: E731
    signed_up = pd.Series(ts_su, index=su["user_id"].to_numpy()).groupby(level=0).min()
    age = tp - p["user_id"].map(signed_up).to_numpy(dtype=float)
    return pd.DataFrame({
        "is_fraud": p["is_fraud"].to_numpy(),
        "device_users_24h>=2": device_users[pay] >= 2,
        "ip_users_24h>=3": ip_users[pay] >= 3,
        "subnet_signups_24h>=2": _count_in_window(net(su["ip"]), ts_su, net(p["ip"]), tp) >= 2,
        "account_age<1d": age < DAY_S,
    })


@pytest.fixture(scope="module")
def plain(sim):
    """The same world without the legitimate overlap (``no_overlap()``)."""
    return run(CONFIG.no_overlap()).events


@pytest.fixture(scope="module")
def overlap(sim, plain):
    return {"default": overlap_signals(sim.events), "plain": overlap_signals(plain)}


@pytest.mark.parametrize("signal,at_least,plain_at_most,still_a_signal", [
    ("device_users_24h>=2", 0.01, 0.0, True),     # family devices
    ("ip_users_24h>=3", 0.05, 0.0, False),        # carrier CGNAT, campus/company egress: weak on its own
    ("subnet_signups_24h>=2", 0.005, 0.0, True),  # sign-up waves over CGNAT / campus networks
    ("account_age<1d", 0.01, 0.006, True),        # newcomers paying right away
])
def test_legitimate_payments_overlap_the_fraud_signals(overlap, signal, at_least, plain_at_most, still_a_signal):
    on, off = overlap["default"], overlap["plain"]
    legit_on = on.loc[~on["is_fraud"], signal].mean()
    legit_off = off.loc[~off["is_fraud"], signal].mean()
    assert legit_on >= at_least, (signal, legit_on)
    assert legit_off <= plain_at_most, (signal, legit_off)
    # still a signal: fraud shows it more often than legitimate traffic does
    assert not still_a_signal or on.loc[on["is_fraud"], signal].mean() > 1.5 * legit_on, signal


def _legit_signups(events: pd.DataFrame) -> pd.DataFrame:
    su = events[(events["type"] == "signup") & ~events["is_fraud"]]
    return su.assign(day=su["occurred_at"].str.slice(0, 10), net=su["ip"].str.rsplit(".", n=1).str[0])


def test_genuine_sign_ups_come_in_waves_on_promotion_days(sim, plain):
    promo = {(CONFIG.start + pd.Timedelta(days=d)).isoformat() for d in sim_promo_days(sim)}
    assert promo
    for events, burst in ((sim.events, True), (plain, False)):
        su = _legit_signups(events)
        per_day = su.groupby("day").size()
        median = per_day.median()
        for day in promo:
            if burst:
                assert per_day.get(day, 0) >= 5 * median, (day, per_day.get(day, 0), median)
            else:
                assert per_day.get(day, 0) <= 3 * median
    # the wave: some newcomers share a /24 with another newcomer that day, most pay within the day
    su = _legit_signups(sim.events)
    wave = su[su["day"].isin(promo)]
    shared = wave.groupby("net")["user_id"].transform("nunique") >= 2
    assert shared.mean() > 0.1
    pay = sim.events[(sim.events["type"] == "payment") & sim.events["user_id"].isin(set(wave["user_id"]))]
    first = _epoch(pay["occurred_at"])
    paid = pd.Series(first, index=pay["user_id"].to_numpy()).groupby(level=0).min()
    joined = pd.Series(_epoch(wave["occurred_at"]), index=wave["user_id"].to_numpy())
    within_day = (paid.reindex(joined.index) - joined) < DAY_S
    assert within_day.mean() > 0.6
    assert (pay["note"] == "new_user").any()


def sim_promo_days(sim) -> tuple[int, ...]:
    from fengkong.simulation.population import World

    return World(sim.config).promo_days


def test_families_share_cards_and_some_shoppers_juggle_many(sim, plain):
    for events, on in ((sim.events, True), (plain, False)):
        legit = events[(events["type"] == "payment") & ~events["is_fraud"]]
        users_per_card = legit.groupby("card_fingerprint")["user_id"].nunique()
        cards_per_user = legit.groupby("user_id")["card_fingerprint"].nunique()
        if on:
            assert (users_per_card >= 2).sum() >= 10   # a family card, on each member's own phone
            assert (cards_per_user >= 5).sum() >= 3    # multi-card shoppers use all their cards
            split = legit[legit["note"] == "split_payment"]
            assert len(split) > 0
        else:
            assert (users_per_card >= 2).sum() == 0
            assert (cards_per_user >= 5).sum() == 0


def test_overlap_knobs_are_validated():
    with pytest.raises(ValueError, match="household_share"):
        SimConfig(household_share=1.5)
    with pytest.raises(ValueError, match="cgnat_users_per_ip"):
        SimConfig(cgnat_users_per_ip=0.5)
    assert all(getattr(SimConfig().no_overlap(), k) == 0 for k in OVERLAP_KNOBS)
