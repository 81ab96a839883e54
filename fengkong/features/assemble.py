"""From what the store counted to the features the rules read.

The store keeps integers (minor units, counts, first-seen times); rules read
major units, ratios, ages and flags. The same formulas run per event (online) and
per column (offline twin) side by side here, and `RATIOS` is their shared table,
so the two cannot drift without the equality test noticing.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Iterable
from typing import Any

from fengkong.features import definitions as d
from fengkong.features.errors import FeatureDefinitionError
from fengkong.features.lists import ListSpec
from fengkong.features.rows import US_PER_DAY

#: ratio feature -> (numerator, denominator); missing when the denominator is 0 or missing.
RATIOS: dict[str, tuple[str, str]] = {
    "merchant.volume_ratio_today": ("merchant.volume_today", "merchant.baseline_today_7d"),
    "merchant.volume_ratio_today_28d": ("merchant.volume_today", "merchant.baseline_today_28d"),
    "merchant.volume_ratio_hour": ("merchant.volume_hour", "merchant.baseline_hour_7d"),
    "merchant.count_ratio_today": ("merchant.count_today", "merchant.baseline_count_today_7d"),
    "merchant.credit_share_24h": ("merchant.credit_count_24h", "merchant.count_24h"),
    "merchant.round_share_24h": ("merchant.round_count_24h", "merchant.count_24h"),
    "merchant.near_limit_share_24h": ("merchant.near_limit_count_24h", "merchant.count_24h"),
    "merchant.night_share_24h": ("merchant.night_count_24h", "merchant.count_24h"),
    "merchant.top_card_share_today": ("merchant.top_card_volume_today", "merchant.volume_today"),
    "merchant.refund_ratio_30d": ("merchant.refund_sum_30d", "merchant.sum_30d"),
    "merchant.chargeback_ratio_30d": ("merchant.chargeback_count_30d", "merchant.count_30d"),
    "merchant.withdrawal_ratio_7d": ("merchant.withdrawal_sum_7d", "merchant.sum_7d"),
    "user.hour_share": ("user.hour_count", "user.hour_total"),
}

#: store outputs kept in minor units that rules read in major units
AMOUNT_FEATURES: frozenset[str] = frozenset(
    [name for r in d.ROLLING for c, name in zip(r.counters, r.outputs()) if c.value == "amount"]
    + [
        "merchant.volume_today", "merchant.volume_hour",
        "merchant.baseline_today_7d", "merchant.baseline_hour_7d",
        "merchant.baseline_today_28d", "merchant.baseline_hour_28d",
        "merchant.top_card_volume_today",
    ]
)
_SCALE = d.MINOR_PER_MAJOR
_STORE_NAMES = tuple(sys.intern(name) for name, spec in d.CATALOG.items() if spec.source != "model")
_NUM, _DEN = d.NEAR_LIMIT_FRACTION

#: Raw values that are not features themselves: `derive` turns them into others (ages,
#: the amount's mean, std and z-score, the merchant's limit, cap and age, the hour share),
#: and they are not among the features it returns.
FIRST_SEEN_TIMES = ("card.first_seen_us", "user.first_seen_us", "merchant.first_seen_us")
INPUTS: frozenset[str] = frozenset((
    *FIRST_SEEN_TIMES, "user.moments", "user.hour_total",
    "merchant.single_limit_minor", "merchant.daily_cap_minor", "merchant.onboarded_day",
))

# Precomputed once for `derive` (it runs once per decision): every store feature missing
# to start with, each first-seen entity's names, the ratios as flat triples, the event's
# own attributes as one itemgetter; copying ready ones is cheaper than building them per
# event (see docs/benchmarks.md).
_BLANK: dict[str, Any] = dict.fromkeys(_STORE_NAMES)
_FIRST_SEEN = tuple(
    (f"{ns}.first_seen_us", f"{ns}.age_days", f"{ns}.is_first_seen") for ns in ("card", "user", "merchant")
)
_RATIO_TRIPLES = tuple(
    (name, num, den) for name, (num, den) in RATIOS.items() if num not in INPUTS and den not in INPUTS
)
_INPUT_RATIOS = tuple(  # user.hour_share: its denominator, the hour habit's total, is an input
    (name, num, den) for name, (num, den) in RATIOS.items() if num in INPUTS or den in INPUTS
)
#: features that are an event-row column as it is: (feature, column)
_ROW_FEATURES = (
    ("event.event_id", "event_id"), ("event.type", "type"), ("event.currency", "currency"),
    ("event.channel", "channel"), ("event.hour", "hour"), ("event.is_night", "is_night"),
    ("event.is_round_amount", "is_round"), ("event.merchant_id", "merchant_id"), ("event.user_id", "user_id"),
    ("event.device_id", "device_id"), ("event.ip", "ip"), ("event.merchant_mcc", "mcc"),
    ("card.fingerprint", "card_fp"), ("card.bin", "card_bin"), ("card.type", "card_type"),
    ("card.issuer_country", "card_country"),
)
_ROW_NAMES = tuple(sys.intern(name) for name, _ in _ROW_FEATURES)  # the blank dicts' very keys
_row_values = operator.itemgetter(*(column for _, column in _ROW_FEATURES))
_IP_FIELDS = ("country", "asn", "is_hosting", "is_tor", "is_listed_proxy", "is_private")
_IP_NAMES = tuple(sys.intern(f"ip.{name}") for name in _IP_FIELDS)
_ip_values = operator.attrgetter(*_IP_FIELDS)
#: what `derive` writes whatever the store returned: a raw value of one of these names would be overwritten
_DERIVED_ONLY = frozenset(
    [*_ROW_NAMES, *_IP_NAMES, "event.amount", "event.amount_minor", "ip.country_mismatch_card"]
)


def _ratio(num: Any, den: Any) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def blank_features(raw_names: Iterable[str]) -> dict[str, Any]:
    """Every feature of an event whose raw values have these names, all missing, in
    `assemble`'s order: the store's features in `CATALOG`'s order, then the raw features
    that the catalog lacks (the lists), in the order given.

    The online store keeps one per plan (event type and entities present) and fills a
    copy of it from its reply, then `derive`: no per-event dict of raw values to build
    and merge, no key added then removed (a dict without removed keys also copies
    faster for the rules).
    """
    names = list(raw_names)
    clash = sorted(set(names) & _DERIVED_ONLY)
    if clash:
        raise FeatureDefinitionError(f"raw values named like the event's own features: {clash}")
    return dict.fromkeys([*_STORE_NAMES, *(n for n in names if n not in _BLANK and n not in INPUTS)])


def assemble(row: dict[str, Any], raw: dict[str, Any], default_limit: int, lists: dict[str, ListSpec]) -> dict[str, Any]:
    """One event's features (dotted names; None = missing).

    ``raw`` comes from the store's readers, amounts already in major units; an
    entity the event lacks (no device, no card...) leaves its features missing.
    This is the per-event form; the online store fills `blank_features` from its reply
    and calls `derive` itself (tests hold the two equal).
    """
    f = _BLANK.copy()
    inputs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in INPUTS:
            inputs[name] = value
        else:
            f[name] = value
    return derive(f, row, inputs, default_limit)


def derive(f: dict[str, Any], row: dict[str, Any], inputs: dict[str, Any], default_limit: int) -> dict[str, Any]:
    """Complete ``f``, which holds every feature (missing) and the raw features already,
    with the event's own features and those derived from the raw values: ``inputs`` holds
    the raw values of `INPUTS` that the event has. Returns ``f``."""
    f.update(zip(_ROW_NAMES, _row_values(row)))
    amount = row["amount"] if row["has_amount"] else None
    f["event.amount"] = amount / _SCALE if amount is not None else None
    f["event.amount_minor"] = amount
    info = row["ip_info"]
    if info is not None:
        f.update(zip(_IP_NAMES, _ip_values(info)))
        f["ip.country_mismatch_card"] = (
            info.country is not None and row["card_country"] is not None and info.country != row["card_country"]
        )
    # else: the IP features stay missing

    t = row["ts_us"]
    for key, age_name, first_name in _FIRST_SEEN:
        if key in inputs:
            first = inputs[key]
            f[age_name] = (t - first) / US_PER_DAY if first is not None else 0.0
            f[first_name] = first is None
    f["card.days_since_first_seen"] = f["card.age_days"]
    f["user.account_age_days"] = f["user.age_days"]

    moments = inputs.get("user.moments")
    if moments is not None:
        n, mean, m2 = moments
        f["user.amount_n"] = n
        f["user.amount_mean"] = mean / _SCALE if n else None
        std = math.sqrt(m2 / (n - 1)) / _SCALE if n >= 2 else None
        f["user.amount_std"] = std
        f["user.amount_zscore"] = (
            (amount / _SCALE - mean / _SCALE) / std if std and amount is not None else None
        )
    if f["user.countries_seen_90d"] is not None:  # the user is known to the store
        f["user.country_mismatch_usual"] = bool(f["user.is_new_country"] and (f["user.countries_seen_90d"] or 0) > 0)

    if row["merchant_id"] is not None:
        limit = inputs.get("merchant.single_limit_minor") or default_limit
        f["merchant.grade"] = f["merchant.grade"] or d.DEFAULT_GRADE
        f["merchant.single_limit"] = limit / _SCALE
        cap = inputs.get("merchant.daily_cap_minor")
        daily_cap = f["merchant.daily_cap"] = cap / _SCALE if cap is not None else None
        onboarded = inputs.get("merchant.onboarded_day")
        if onboarded is not None:
            f["merchant.age_days"] = float(row["biz_day"] - onboarded)
        f["merchant.has_baseline"] = f["merchant.baseline_today_7d"] is not None
        if amount is not None and row["type"] == "payment":
            f["event.near_limit"] = amount * _DEN >= limit * _NUM and amount <= limit
            f["event.over_limit"] = amount > limit
        else:
            f["event.near_limit"] = f["event.over_limit"] = None
        f["merchant.cap_used_today"] = _ratio(f["merchant.volume_today"], daily_cap)
    else:
        f["event.near_limit"] = f["event.over_limit"] = None

    get = f.get
    for name, num_name, den_name in _RATIO_TRIPLES:
        num = get(num_name)
        den = get(den_name)
        f[name] = None if num is None or den is None or den == 0 else num / den
    for name, num_name, den_name in _INPUT_RATIOS:
        f[name] = _ratio(inputs.get(num_name) if num_name in INPUTS else get(num_name),
                         inputs.get(den_name) if den_name in INPUTS else get(den_name))
    return f
