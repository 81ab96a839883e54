"""The offline twin's output frame: per-event columns and the assembly of every kind's.

The feature kinds (`offline_kinds`, `offline_merchant`) write their values straight
into output order (`offline_history.Layout`), so the ~130 columns are computed once
at their final length and never gathered again. Strings and flags that repeat (IP intelligence, merchant profiles, list
membership) are answered once per distinct value and spread to the rows by code.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.features.assemble import (
    AMOUNT_FEATURES,
    AMOUNT_TO_MEAN,
    FIRST_USED,
    MAKEUP_SHARES,
    RATIOS,
    poisson_score,
)
from fengkong.features.lists import KIND_COLUMN, ListSpec, StaticLists
from fengkong.features.promotions import decode
from fengkong.features.offline_history import History, Layout
from fengkong.features.rows import US_PER_DAY
from fengkong.features.young import censor_columns

_SCALE = d.MINOR_PER_MAJOR
_NUM, _DEN = d.NEAR_LIMIT_FRACTION
_BOOL_OR_NONE = np.array([False, True, None, None], dtype=object)  # by value | (missing << 1)
_FIRST_USED_RAW = frozenset(raw for raw, _, _ in FIRST_USED)
_PROFILE_COLUMNS = ("grade", "single_limit", "daily_cap", "onboarded_at", "anomaly", "promotions")


def merchant_table(
    merchants: Any,
    profiles: pd.DataFrame | None,
    grade_limits: Mapping[str, int],
    default_limit: int,
) -> pd.DataFrame:
    """Profile columns and single-payment limit (minor units) of each distinct merchant.

    One row per value of ``merchants`` (in first-appearance order, so that
    ``to_datetime`` infers its format from the same first date as over all rows),
    plus a last row for events without a merchant: a row's profile is
    ``table.iloc[merchant_code]``, code -1 picking the last.
    """
    ids = pd.Series(list(merchants) + [None], dtype=object)
    prof = pd.DataFrame(index=ids.index)
    if profiles is not None and len(profiles):
        p = profiles.set_index("merchant_id")
        for col in _PROFILE_COLUMNS:
            if col in p.columns:
                prof[col] = ids.map(p[col]).to_numpy()
    for col in _PROFILE_COLUMNS:
        if col not in prof.columns:
            prof[col] = None
    grade = prof["grade"].where(prof["grade"].notna(), None)
    by_grade = grade.map(lambda g: grade_limits.get(g) if g is not None else None)
    own = pd.to_numeric(prof["single_limit"], errors="coerce")
    limit = own.where(own.notna(), pd.to_numeric(by_grade, errors="coerce")).fillna(default_limit)
    onboarded = pd.to_datetime(prof["onboarded_at"], errors="coerce")
    return pd.DataFrame(
        {
            "grade": prof["grade"].to_numpy(dtype=object),
            "limit": limit.to_numpy(dtype=np.int64),
            "daily_cap": pd.to_numeric(prof["daily_cap"], errors="coerce").to_numpy(dtype=np.float64),
            "onboarded_day": ((onboarded - pd.Timestamp("1970-01-01")).dt.days).to_numpy(dtype=np.float64),
            "anomaly": pd.to_numeric(prof["anomaly"], errors="coerce").to_numpy(dtype=np.float64),
            "promotions": np.array([t if isinstance(t, str) and t else None for t in prof["promotions"]],
                                   dtype=object),
        }
    )


def _nullable_bool(values: np.ndarray, present: np.ndarray) -> pd.Series:
    """Python bools where ``present``, None elsewhere (an object column, as the online store's
    dicts)."""
    index = np.asarray(values, dtype=bool).view(np.int8) | ((~present).view(np.int8) << 1)
    return pd.Series(_BOOL_OR_NONE[index], dtype=object, copy=False)


def _nullable(values: np.ndarray, present: np.ndarray) -> pd.Series:
    """Values where ``present``, None elsewhere (an object column)."""
    out = np.asarray(values).astype(object)
    out[~present] = None
    return pd.Series(out, dtype=object, copy=False)


def _spread(values: np.ndarray, codes: np.ndarray, missing: Any) -> np.ndarray:
    """``values[code]`` per row (an object array), ``missing`` where the code is -1."""
    return np.append(np.asarray(values, dtype=object), np.array([missing], dtype=object))[codes]


def event_columns(
    h: History,
    lay: Layout,
    merchants: pd.DataFrame,
    lists: dict[str, ListSpec],
    entries: StaticLists,
) -> dict[str, Any]:
    """The output columns read from the event and its static context alone (the event, its IP,
    the merchant's profile, list membership): they need no store feature, so they are
    built while the feature tasks run."""
    f: dict[str, Any] = {}
    src = lay.src
    amount = h.amount[src]
    has_amount = h.rows["has_amount"].to_numpy()[src]
    _event_attributes(f, h, src, amount, has_amount)
    _ip_columns(f, h, src)
    _merchant_profile(f, h, src, merchants, amount, has_amount)
    for spec in lists.values():
        column = KIND_COLUMN[spec.kind]
        hit = np.append(entries.contains_many(spec.name, pd.Series(h.distinct(column))), False)
        codes = h.code(column)[src]
        f[spec.feature] = _nullable_bool(hit[codes], codes >= 0)
    return f


#: event_columns' outputs, by where they stand among the features (assemble's order)
_EARLY_EVENT_COLUMNS = (
    "event.event_id", "event.type", "event.amount", "event.amount_minor", "event.currency",
    "event.channel", "event.hour", "event.is_night", "event.is_round_amount", "event.merchant_id",
    "event.user_id", "event.device_id", "event.ip", "event.merchant_mcc", "card.fingerprint",
    "card.bin", "card.type", "card.issuer_country", "ip.country", "ip.asn", "ip.is_hosting",
    "ip.is_tor", "ip.is_listed_proxy", "ip.is_private", "ip.country_mismatch_card",
)
_LATE_EVENT_COLUMNS = ("merchant.grade", "merchant.single_limit", "merchant.daily_cap", "merchant.in_promotion",
                       "merchant.promotion_multiple")
_FLAG_COLUMNS = ("event.near_limit", "event.over_limit")


def assemble_frame(
    h: History, raw: dict[str, np.ndarray], event: dict[str, Any], lay: Layout, lists: dict[str, ListSpec],
    history_start_us: int | None = None,
) -> pd.DataFrame:
    """The column-wise twin of `assemble.assemble` (same names, same formulas, same column
    order), in output order: ``event`` from `event_columns`, ``raw`` from the feature tasks."""
    src = lay.src
    f: dict[str, Any] = {name: event[name] for name in _EARLY_EVENT_COLUMNS}
    for name, values in raw.items():
        if name.endswith(".__has") or ".moments_" in name or name.endswith(".first_seen_us") or name in _FIRST_USED_RAW:
            continue
        f[name] = np.divide(values, _SCALE, out=values) if name in AMOUNT_FEATURES else values
    _ages(f, raw, h.ts[src])
    _amount_moments(f, raw, h.amount[src], h.rows["has_amount"].to_numpy()[src])
    is_new_country = f["user.is_new_country"]
    seen_countries = f["user.countries_seen_90d"]
    mismatch_usual = (is_new_country == True) & (np.nan_to_num(seen_countries) > 0)  # noqa: E712
    f["user.country_mismatch_usual"] = _nullable_bool(mismatch_usual, ~np.isnan(seen_countries))
    _first_used(f, raw, h.ts[src])
    censor_columns(f, h.ts[src], history_start_us)  # before the profile's onboarding date, as online
    _merchant_features(f, event, h.rows["biz_day"].to_numpy(dtype=np.float64)[src])
    _ratios(f)
    _significance(f)
    _makeup(f)
    del f["user.hour_total"]  # only the share is a feature, as online
    for spec in lists.values():
        f[spec.feature] = event[spec.feature]
    return pd.DataFrame(f, copy=False)  # no consolidation: ~130 columns stay as computed


def _merchant_features(f: dict[str, Any], event: dict[str, Any], biz_day: np.ndarray) -> None:
    """The merchant's profile columns, and what combines them with the store's counts."""
    for name in _LATE_EVENT_COLUMNS:
        f[name] = event[name]
    has_m = event["merchant.__has"]
    onboarded_day = event["merchant.__onboarded_day"]
    onboarded = has_m & ~np.isnan(onboarded_day)
    f["merchant.age_days"] = np.where(onboarded, biz_day - onboarded_day, f["merchant.age_days"])
    f["merchant.anomaly"] = event["merchant.anomaly"]
    f["merchant.has_baseline"] = _nullable_bool(~np.isnan(f["merchant.baseline_today_7d"]), has_m)
    for name in _FLAG_COLUMNS:
        f[name] = event[name]
    cap = event["merchant.__cap"]
    with np.errstate(invalid="ignore", divide="ignore"):
        f["merchant.cap_used_today"] = np.where(
            cap > 0, f["merchant.volume_today"] / np.where(cap > 0, cap / _SCALE, 1), np.nan
        )


def _makeup(f: dict[str, Any]) -> None:
    """Today's make-up shares (`assemble.MAKEUP_SHARES`): missing below the minimum count."""
    today = np.asarray(f["merchant.count_today"], dtype=np.float64)
    enough = today >= d.TODAY_MAKEUP.min_count  # NaN compares false
    for share, count in MAKEUP_SHARES:
        f[share] = np.where(enough, np.asarray(f[count], dtype=np.float64) / np.where(enough, today, 1), np.nan)


def _first_used(f: dict[str, Any], raw: dict[str, np.ndarray], ts: np.ndarray) -> None:
    """Minutes since first use and "new within the session", as `assemble.derive` makes them."""
    for raw_name, minutes_name, new_name in FIRST_USED:
        began = raw[raw_name]
        present = ~np.isnan(began)
        used = present & (began != 0)
        minutes = np.where(used, (ts - np.where(used, began, 0)) / 60_000_000, np.nan)
        f[minutes_name] = minutes
        f[new_name] = _nullable_bool(~used | (minutes < d.NEW_SESSION_MINUTES), present)


def _significance(f: dict[str, Any]) -> None:
    """The merchant's count significance and floored ratios (`assemble.merchant_significance`,
    column by column; the Poisson score by the very same function per distinct pair)."""
    count = np.asarray(f["merchant.count_today"], dtype=np.float64)
    base = np.asarray(f["merchant.baseline_count_today_7d"], dtype=np.float64)
    floor = d.MERCHANT_MIN_EXPECTED_COUNT
    has = ~np.isnan(base) & ~np.isnan(count)
    score = np.full(len(count), np.nan)
    eligible = has & (base >= floor)
    if eligible.any():
        pairs, inverse = np.unique(np.stack((count[eligible], base[eligible]), axis=1), axis=0, return_inverse=True)
        scores = np.array([poisson_score(float(k), float(lam)) for k, lam in pairs], dtype=np.float64)
        score[eligible] = scores[inverse.ravel()]
    f["merchant.count_today_poisson"] = score
    with np.errstate(invalid="ignore", divide="ignore"):
        f["merchant.count_ratio_today_floored"] = np.where(has, count / np.maximum(base, floor), np.nan)
        volume = np.asarray(f["merchant.volume_today"], dtype=np.float64)
        base_volume = np.asarray(f["merchant.baseline_today_7d"], dtype=np.float64)
        count_30d = np.asarray(f["merchant.count_30d"], dtype=np.float64)
        sum_30d = np.asarray(f["merchant.sum_30d"], dtype=np.float64)
        ok30 = has & (np.nan_to_num(count_30d) > 0) & ~np.isnan(sum_30d) & ~np.isnan(volume) & ~np.isnan(base_volume)
        den = np.maximum(base_volume, floor * (sum_30d / np.where(ok30, count_30d, 1)))
        ok = ok30 & (den > 0)
        f["merchant.volume_ratio_today_floored"] = np.where(ok, volume / np.where(ok, den, 1), np.nan)


def _event_attributes(
    f: dict[str, Any], h: History, src: np.ndarray, amount: np.ndarray, has_amount: np.ndarray
) -> None:
    rows = h.rows

    def col(name: str) -> Any:
        series = rows[name]
        if series.dtype == object or str(series.dtype) == "str":
            return series.take(src).reset_index(drop=True)
        return series.to_numpy()[src]

    amount_f = amount.astype(np.float64)
    f["event.event_id"] = col("event_id")
    f["event.type"] = col("type")
    f["event.amount"] = np.where(has_amount, amount_f / _SCALE, np.nan)
    f["event.amount_minor"] = np.where(has_amount, amount_f, np.nan)
    f["event.currency"] = col("currency")
    f["event.channel"] = col("channel")
    f["event.hour"] = col("hour")
    f["event.is_night"] = col("is_night")
    f["event.is_round_amount"] = col("is_round")
    f["event.merchant_id"] = col("merchant_id")
    f["event.user_id"] = col("user_id")
    f["event.device_id"] = col("device_id")
    f["event.ip"] = col("ip")
    f["event.merchant_mcc"] = col("mcc")
    f["card.fingerprint"] = col("card_fp")
    f["card.bin"] = col("card_bin")
    f["card.type"] = col("card_type")
    f["card.issuer_country"] = col("card_country")


def _ip_columns(f: dict[str, Any], h: History, src: np.ndarray) -> None:
    """IP intelligence: ``frame_rows`` keeps country and AS name as categoricals (one entry
    per value)."""
    rows = h.rows
    has_ip = h.code("ip")[src] >= 0
    country = rows["ip_country"].cat
    country_code = country.codes.to_numpy()[src]
    for name in ("country", "asn"):
        # an address without a country (AS name) reads NaN, as the text column it replaces did
        cat = rows[f"ip_{name}"].cat
        values = _spread(cat.categories.to_numpy(dtype=object), cat.codes.to_numpy()[src], np.nan)
        f[f"ip.{name}"] = _nullable(values, has_ip)
    for name in ("is_hosting", "is_tor", "is_listed_proxy", "is_private"):
        f[f"ip.{name}"] = _nullable_bool(rows[f"ip_{name}"].to_numpy()[src], has_ip)
    # the card's country among the IP countries (-1: missing, -2: no IP has it), one lookup
    # per distinct value
    card_code, card_values = pd.factorize(rows["card_country"].take(src), use_na_sentinel=True)
    as_ip = pd.Index(country.categories).get_indexer(card_values)
    card_as_ip = np.append(np.where(as_ip >= 0, as_ip, -2), [-1])[card_code]
    mismatch = (country_code >= 0) & (card_as_ip != -1) & (card_as_ip != country_code)
    f["ip.country_mismatch_card"] = _nullable_bool(mismatch, has_ip)


def _ages(f: dict[str, Any], raw: dict[str, np.ndarray], ts: np.ndarray) -> None:
    for ns in ("card", "user", "merchant"):
        has = raw[f"{ns}.__has"]
        first = raw[f"{ns}.first_seen_us"]
        age = np.where(np.isnan(first), 0.0, (ts - np.nan_to_num(first)) / US_PER_DAY)
        f[f"{ns}.age_days"] = np.where(has, age, np.nan)
        f[f"{ns}.is_first_seen"] = _nullable_bool(np.isnan(first), has)
    f["card.days_since_first_seen"] = f["card.age_days"]
    f["user.account_age_days"] = f["user.age_days"]


def _amount_moments(
    f: dict[str, Any], raw: dict[str, np.ndarray], amount: np.ndarray, has_amount: np.ndarray
) -> None:
    cnt, mean, m2 = raw["user.moments_n"], raw["user.moments_mean"], raw["user.moments_m2"]
    with np.errstate(invalid="ignore", divide="ignore"):
        f["user.amount_n"] = cnt
        f["user.amount_mean"] = np.where(cnt > 0, mean / _SCALE, np.nan)
        std = np.where(cnt >= 2, np.sqrt(m2 / np.where(cnt >= 2, cnt - 1, 1)) / _SCALE, np.nan)
        f["user.amount_std"] = std
        amount_major = np.where(has_amount, amount / _SCALE, np.nan)
        f["user.amount_zscore"] = np.where(
            (std > 0) & has_amount, (amount_major - mean / _SCALE) / np.where(std > 0, std, 1), np.nan
        )


def _merchant_profile(
    f: dict[str, Any],
    h: History,
    src: np.ndarray,
    merchants: pd.DataFrame,
    amount: np.ndarray,
    has_amount: np.ndarray,
) -> None:
    """The merchant's grade, limit, cap and score, and the event against its limit (``merchant.__*``:
    what `assemble_frame` still needs)."""
    code = h.code("merchant_id")[src]
    has_m = code >= 0
    grade = merchants["grade"].to_numpy(dtype=object)[code]
    grade[pd.isna(grade)] = d.DEFAULT_GRADE
    f["merchant.grade"] = _nullable(grade, has_m)
    limit = merchants["limit"].to_numpy()[code]
    f["merchant.single_limit"] = np.where(has_m, limit / _SCALE, np.nan)
    cap = merchants["daily_cap"].to_numpy()[code]
    f["merchant.daily_cap"] = np.where(has_m, cap / _SCALE, np.nan)
    f["merchant.anomaly"] = np.where(has_m, merchants["anomaly"].to_numpy()[code], np.nan)
    payment_m = has_m & h.type_mask(("payment",), src) & has_amount
    near = (amount * _DEN >= limit * _NUM) & (amount <= limit)
    f["event.near_limit"] = _nullable_bool(near, payment_m)
    f["event.over_limit"] = _nullable_bool(amount > limit, payment_m)
    f["merchant.__has"] = has_m
    f["merchant.__cap"] = cap
    f["merchant.__onboarded_day"] = merchants["onboarded_day"].to_numpy()[code]
    # planned promotions at the event's time (features/promotions.py), per merchant that has some
    texts = merchants["promotions"].to_numpy(dtype=object)[code]
    ts = h.ts[src]
    inside = np.zeros(len(code), dtype=bool)
    multiple = np.full(len(code), np.nan)
    for text in {t for t in texts[has_m] if isinstance(t, str)}:
        mine = has_m & (texts == text)
        for start, end, mult in decode(text):
            hit = mine & (ts >= start) & (ts < end)
            inside |= hit
            multiple[hit] = np.fmax(multiple[hit], mult)
    f["merchant.in_promotion"] = _nullable_bool(inside, has_m)
    f["merchant.promotion_multiple"] = multiple


def _ratios(f: dict[str, Any]) -> None:
    """Missing where the denominator is 0 or missing, or the numerator missing."""
    for name, (num, den) in RATIOS.items():
        a = np.asarray(f[num], dtype=np.float64)
        b = np.asarray(f[den], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = a / b  # NaN already where either is NaN
        out[b == 0] = np.nan
        f[name] = out
    amount = np.asarray(f["event.amount"], dtype=np.float64)
    for name, (sum_name, count_name) in AMOUNT_TO_MEAN.items():
        total = np.asarray(f[sum_name], dtype=np.float64)
        count = np.asarray(f[count_name], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = amount * count / total  # as `assemble.derive`: the same order of operations
        out[(total == 0) | (count == 0)] = np.nan
        f[name] = out
