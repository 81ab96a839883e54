"""Merchant daily features (商户日特征): one row per merchant and business day.

Pure pandas/numpy and engine-agnostic: `daily_features` needs every event of the
merchants it is given (and nothing of other merchants), plus the global day range,
so Dask runs the very same function on partitions split by merchant
(`fengkong.training.rescore`). A merchant's row for day D uses events up to the end
of day D only (the nightly job scores the day that just closed).

Days are business days in the business time zone (UTC+08:00 by default, as the
online store's merchant days: `definitions.DEFAULT_BUSINESS_UTC_OFFSET_MIN`). Every
merchant gets a row for every day from its start (onboarding, else first payment)
to the last day of the history, active or not, so trailing windows and "clean
stretches" count calendar days.

Columns (money in major units, yuan):

==========================  =====================================================
volume, count, avg_ticket   payments of the day (sum, number, mean amount)
growth_7d                   volume / median daily volume of the previous 7 days
                            (missing before the merchant has 7 days of history,
                            or when that median is 0)
credit_share                share of the day's payments paid by credit card
round_share                 ... in round amounts (multiples of 100 yuan)
near_limit_share            ... within 10% below the single-payment limit
night_share                 ... at business-local 00:00-05:59
distinct_cards              distinct cards that paid the merchant that day
repeat_card_rate            1 - distinct_cards / count (the same few cards again)
top_card_share              largest share of the day's volume from one card
refund_ratio_30d            refunded amount / paid amount, trailing 30 days
chargebacks_30d             chargebacks and fraud reports, trailing 30 days
payments_30d                payments, trailing 30 days
chargeback_ratio_30d        chargebacks_30d / payments_30d
withdrawal_ratio_7d         withdrawn amount / paid amount, trailing 7 days
age_days                    days since onboarding (else first payment)
==========================  =====================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fengkong.events import DEFAULT_CURRENCY, currency_exponent
from fengkong.features import definitions as d
from fengkong.models.artifacts import MERCHANT_FEATURES

#: The columns `daily_features` returns besides merchant_id and day: the names a merchants
#: artifact may ask for, owned by `fengkong.models.artifacts` (serving checks artifacts against them).
FEATURES: tuple[str, ...] = MERCHANT_FEATURES
#: The flat-event columns `daily_features` reads (the last three optional): a history read
#: for the nightly job needs no others.
READS: tuple[str, ...] = ("merchant_id", "occurred_at", "type", "amount", "currency", "card_type", "card_fingerprint")
US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
_CHARGEBACK_TYPES = ("chargeback", "fraud_report")
_NUM, _DEN = d.NEAR_LIMIT_FRACTION


def _epoch_us(occurred: pd.Series) -> np.ndarray:
    """Event times as integer microseconds since the epoch (UTC)."""
    if pd.api.types.is_datetime64_any_dtype(occurred):
        if getattr(occurred.dt, "tz", None) is None:
            raise ValueError("occurred_at: times must carry a UTC offset")
        return occurred.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()
    parsed = pd.to_datetime(occurred.astype(str), utc=True, format="ISO8601")
    return parsed.astype("datetime64[us, UTC]").astype("int64").to_numpy()


def business_days(occurred: pd.Series, biz_offset_min: int = d.DEFAULT_BUSINESS_UTC_OFFSET_MIN) -> tuple[np.ndarray, np.ndarray]:
    """(business day number since the epoch, business hour) of each time."""
    t = _epoch_us(occurred) + biz_offset_min * 60_000_000
    return t // US_PER_DAY, (t // US_PER_HOUR) % 24


def day_range(events: pd.DataFrame, biz_offset_min: int = d.DEFAULT_BUSINESS_UTC_OFFSET_MIN) -> tuple[int, int]:
    """First and last business day of a history (pass it to every partition)."""
    day, _ = business_days(events["occurred_at"], biz_offset_min)
    return int(day.min()), int(day.max())


def _limits(merchants: pd.Index, profiles: pd.DataFrame | None, default_limit: int) -> np.ndarray:
    limit = pd.Series(float(default_limit), index=merchants)
    if profiles is not None and "single_limit" in profiles.columns:
        own = pd.to_numeric(profiles.set_index("merchant_id")["single_limit"], errors="coerce")
        own = own[~own.index.duplicated()].reindex(merchants)
        limit = own.where(own.notna(), limit)
    return limit.to_numpy(dtype=np.float64)


def _onboarded_days(merchants: pd.Index, profiles: pd.DataFrame | None) -> np.ndarray:
    out = np.full(len(merchants), np.nan)
    if profiles is not None and "onboarded_at" in profiles.columns:
        p = profiles.drop_duplicates("merchant_id").set_index("merchant_id")["onboarded_at"]
        when = pd.to_datetime(p.astype(str).str.slice(0, 10), errors="coerce", format="%Y-%m-%d")
        days = ((when - pd.Timestamp("1970-01-01")).dt.days).reindex(merchants)
        out = days.to_numpy(dtype=np.float64)
    return out


def _trailing(mat: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` columns up to and including each column (rows = merchants)."""
    cs = np.cumsum(mat, axis=1)
    out = cs.copy()
    out[:, window:] -= cs[:, :-window]
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def daily_features(
    events: pd.DataFrame,
    *,
    profiles: pd.DataFrame | None = None,
    days: tuple[int, int] | None = None,
    default_limit: int | None = None,
    biz_offset_min: int = d.DEFAULT_BUSINESS_UTC_OFFSET_MIN,
) -> pd.DataFrame:
    """Daily features of every merchant in ``events`` (flat events, `FLAT_COLUMNS`).

    ``profiles`` (merchant_id, onboarded_at, single_limit) is optional; ``days`` is
    the (first, last) business day number to cover, by default the history's own
    (give the global range when the history is split by merchant). The result is
    sorted by (merchant_id, day) with a fresh index; ``day`` is a date.
    """
    if default_limit is None:
        default_limit = d.DEFAULT_GRADE_LIMITS[d.DEFAULT_GRADE]
    ev = events[events["merchant_id"].notna()]
    if len(ev) == 0:
        return pd.DataFrame(columns=["merchant_id", "day", *FEATURES])
    day, hour = business_days(ev["occurred_at"], biz_offset_min)
    first_day, last_day = (int(day.min()), int(day.max())) if days is None else days
    n_days = last_day - first_day + 1
    m_code, merchants = pd.factorize(ev["merchant_id"].astype(str), sort=True)
    merchants = pd.Index(merchants, name="merchant_id")
    n_m = len(merchants)
    rel = np.clip(day - first_day, 0, n_days - 1)
    key = m_code.astype(np.int64) * n_days + rel
    size = n_m * n_days

    typ = ev["type"].astype(str)
    t_code, t_names = pd.factorize(typ)
    t_index = {name: i for i, name in enumerate(t_names)}

    def mask(*names: str) -> np.ndarray:
        lut = np.zeros(len(t_names) + 1, dtype=bool)
        for name in names:
            if name in t_index:
                lut[t_index[name]] = True
        return lut[t_code]

    amount = pd.to_numeric(ev["amount"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
    pay = mask("payment")
    kp = key[pay]
    a = amount[pay]
    count = np.bincount(kp, minlength=size).astype(np.float64)
    volume = np.bincount(kp, weights=a, minlength=size)

    card_type = ev["card_type"].astype(str).to_numpy()[pay] if "card_type" in ev.columns else np.array([""] * len(kp))
    credit = np.bincount(kp, weights=(card_type == "credit"), minlength=size)
    if "currency" in ev.columns:
        cur_code, cur_names = pd.factorize(ev["currency"].fillna(DEFAULT_CURRENCY).astype(str))
        steps = np.array([d.ROUND_MAJOR_UNITS * 10 ** currency_exponent(c) for c in cur_names] + [100])
        step = steps[cur_code][pay]
    else:
        step = np.full(len(kp), d.ROUND_MAJOR_UNITS * 100)
    round_ = np.bincount(kp, weights=((a > 0) & (a % step == 0)), minlength=size)
    limit = _limits(merchants, profiles, default_limit)[m_code[pay]]
    near = (a * _DEN >= limit * _NUM) & (a <= limit)
    near_limit = np.bincount(kp, weights=near, minlength=size)
    night = np.bincount(kp, weights=(hour[pay] < d.NIGHT_HOURS.stop), minlength=size)

    # distinct cards and the top card's volume per merchant-day
    distinct = np.zeros(size)
    top_card = np.zeros(size)
    if "card_fingerprint" in ev.columns:
        card = ev["card_fingerprint"].to_numpy()[pay]
        c_code, c_names = pd.factorize(card)
        ok = c_code >= 0
        pair = kp[ok] * np.int64(len(c_names) + 1) + c_code[ok]
        upair, inv = np.unique(pair, return_inverse=True)
        pair_sum = np.bincount(inv, weights=a[ok])
        pair_key = upair // np.int64(len(c_names) + 1)
        distinct = np.bincount(pair_key, minlength=size).astype(np.float64)
        if len(pair_key):
            starts = np.flatnonzero(np.r_[True, pair_key[1:] != pair_key[:-1]])
            top_card[pair_key[starts]] = np.maximum.reduceat(pair_sum, starts)

    refund = np.bincount(key[mask("refund")], weights=amount[mask("refund")], minlength=size)
    cb_mask = mask(*_CHARGEBACK_TYPES)
    chargebacks = np.bincount(key[cb_mask], minlength=size).astype(np.float64)
    wd_mask = mask("withdrawal")
    withdrawal = np.bincount(key[wd_mask], weights=amount[wd_mask], minlength=size)

    shape = (n_m, n_days)
    M = {name: arr.reshape(shape) for name, arr in (
        ("count", count), ("volume", volume), ("refund", refund), ("chargebacks", chargebacks),
        ("withdrawal", withdrawal))}
    vol30 = _trailing(M["volume"], 30)
    cnt30 = _trailing(M["count"], 30)
    vol7 = _trailing(M["volume"], 7)
    refund30 = _trailing(M["refund"], 30)
    cb30 = _trailing(M["chargebacks"], 30)
    wd7 = _trailing(M["withdrawal"], 7)

    # the merchant's start: onboarding day, else its first payment (or any event)
    first_seen = pd.Series(day).groupby(m_code).min().reindex(range(n_m)).to_numpy(dtype=np.float64)
    onboarded = _onboarded_days(merchants, profiles)
    start = np.where(np.isnan(onboarded), first_seen, onboarded)
    day_abs = first_day + np.arange(n_days)
    age = day_abs[None, :] - start[:, None]

    # baseline: median of the previous 7 days' volume, once 7 days of history exist
    padded = np.concatenate((np.full((n_m, 7), np.nan), M["volume"]), axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 7, axis=1)[:, :n_days, :]
    with np.errstate(invalid="ignore"):
        baseline = np.median(windows, axis=2)
    baseline = np.where(age >= 7, baseline, np.nan)

    scale = d.MINOR_PER_MAJOR
    cnt = M["count"]
    out: dict[str, Any] = {
        "volume": M["volume"] / scale,
        "count": cnt,
        "avg_ticket": _ratio(M["volume"], cnt) / scale,
        "growth_7d": _ratio(M["volume"], np.nan_to_num(baseline, nan=0.0)),
        "credit_share": _ratio(credit.reshape(shape), cnt),
        "round_share": _ratio(round_.reshape(shape), cnt),
        "near_limit_share": _ratio(near_limit.reshape(shape), cnt),
        "night_share": _ratio(night.reshape(shape), cnt),
        "distinct_cards": distinct.reshape(shape),
        "repeat_card_rate": np.where(cnt > 0, 1.0 - _ratio(distinct.reshape(shape), cnt), np.nan),
        "top_card_share": _ratio(top_card.reshape(shape), M["volume"]),
        "refund_ratio_30d": _ratio(refund30, vol30),
        "chargebacks_30d": cb30,
        "payments_30d": cnt30,
        "chargeback_ratio_30d": _ratio(cb30, cnt30),
        "withdrawal_ratio_7d": _ratio(wd7, vol7),
        "age_days": age.astype(np.float64),
    }
    out["growth_7d"] = np.where(np.isnan(baseline), np.nan, out["growth_7d"])
    keep = (age >= 0).ravel()
    frame = pd.DataFrame({name: np.asarray(v, dtype=np.float64).ravel()[keep] for name, v in out.items()})
    frame.insert(0, "day", (pd.Timestamp("1970-01-01") + pd.to_timedelta(np.tile(day_abs, n_m)[keep], unit="D")).date)
    frame.insert(0, "merchant_id", np.repeat(merchants.to_numpy(dtype=object), n_days)[keep])
    frame["merchant_id"] = frame["merchant_id"].astype(str)
    return frame.reset_index(drop=True)

