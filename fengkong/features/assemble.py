"""From what the store counted to the features the rules read.

The store keeps integers (minor units, counts, first-seen times); rules read
major units, ratios, ages and flags. The same formulas run per event (online) and
per column (offline twin) side by side here, and `RATIOS` is their shared table,
so the two cannot drift without the equality test noticing.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scipy.special import gammainc

from fengkong.features import definitions as d
from fengkong.features.errors import FeatureDefinitionError
from fengkong.features.lists import ListSpec
from fengkong.features.plan_code import interned_names
from fengkong.features.promotions import promotion_at
from fengkong.features.rows import US_PER_DAY
from fengkong.features.young import censor

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
    "merchant.fraud_report_ratio_24h": ("merchant.fraud_reports_24h", "merchant.count_24h"),
    "merchant.fraud_report_ratio_7d": ("merchant.fraud_reports_7d", "merchant.count_7d"),
    "card.mean_amount_24h": ("card.sum_24h", "card.count_24h"),
    "card.mean_amount_7d": ("card.sum_7d", "card.count_7d"),
    "user.mean_amount_30d": ("user.sum_30d", "user.count_30d"),
}

#: amount-to-mean feature -> (sum, count) of one of the entity's windows: this payment's amount
#: over the entity's mean payment in that window (``amount * count / sum``), so a customer who
#: suddenly spends several times their own usual stands out whatever their usual ticket; missing
#: without an amount or without earlier payments in the window.
AMOUNT_TO_MEAN: dict[str, tuple[str, str]] = {
    "card.amount_to_mean_24h": ("card.sum_24h", "card.count_24h"),
    "card.amount_to_mean_7d": ("card.sum_7d", "card.count_7d"),
    "user.amount_to_mean_30d": ("user.sum_30d", "user.count_30d"),
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
_ROBUST_MIN_COUNT, _MAD_TO_SIGMA, _LOG_SCALE_FLOOR = d.ROBUST_MIN_COUNT, d.MAD_TO_SIGMA, d.ROBUST_LOG_SCALE_FLOOR

#: Raw values that are not features themselves: `derive` turns them into others (ages,
#: the amount's mean, std and z-score, the merchant's limit, cap and age, the hour share),
#: and they are not among the features it returns.
FIRST_SEEN_TIMES = ("card.first_seen_us", "user.first_seen_us", "merchant.first_seen_us")
RECENT_AMOUNTS = tuple(tuple(map(sys.intern, (f"{r.entity.name}.recent_amounts", *r.outputs())))
                       for r in d.RECENT_AMOUNTS)
#: (raw first-use time, minutes since it, is new within the session) per entity and member
FIRST_USED = tuple(
    tuple(map(sys.intern, (raw, *outputs)))
    for mf in d.MEMBER_FIRST_SEEN
    for raw, outputs in zip(mf.raw_names(), zip(mf.outputs()[0::2], mf.outputs()[1::2]))
)
INPUTS: frozenset[str] = frozenset((
    *FIRST_SEEN_TIMES, "user.moments", "user.hour_total",
    "merchant.single_limit_minor", "merchant.daily_cap_minor", "merchant.onboarded_day", "merchant.promotions",
    *(raw for raw, *_ in RECENT_AMOUNTS), *(raw for raw, *_ in FIRST_USED),
    f"{d.FIRST_DAY_AT_MERCHANT}.first_day",
))


class _Absent:
    """`ABSENT`'s type: an input the event lacks, where None means something else."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


#: a first-seen time the event lacks (no such entity): its None is a first sighting
ABSENT = _Absent()
#: `INPUTS` in the order `derive_from` reads them, as one tuple: a plan's reader builds it
#: from the reply's values in locals, one tuple display rather than a dict of names
INPUT_ORDER: tuple[str, ...] = tuple(map(sys.intern, (
    *FIRST_SEEN_TIMES, *(raw for raw, *_ in FIRST_USED), *(raw for raw, *_ in RECENT_AMOUNTS),
    "user.moments", "user.hour_total", "merchant.single_limit_minor", "merchant.daily_cap_minor",
    "merchant.onboarded_day", "merchant.promotions", f"{d.FIRST_DAY_AT_MERCHANT}.first_day",
)))
#: what each of `INPUT_ORDER` reads as when the event lacks it: None, a first-seen time `ABSENT`
INPUT_ABSENT: tuple[Any, ...] = tuple(ABSENT if name in FIRST_SEEN_TIMES else None for name in INPUT_ORDER)
if set(INPUT_ORDER) != INPUTS or len(INPUT_ORDER) != len(INPUTS):
    raise FeatureDefinitionError("INPUT_ORDER must hold every input once")
_AT = {name: at for at, name in enumerate(INPUT_ORDER)}
_AT_MOMENTS, _AT_SINGLE_LIMIT, _AT_DAILY_CAP, _AT_ONBOARDED, _AT_PROMOTIONS = (
    _AT[name] for name in ("user.moments", "merchant.single_limit_minor", "merchant.daily_cap_minor",
                           "merchant.onboarded_day", "merchant.promotions"))
#: (position in `INPUT_ORDER`, n, median and robust-z features) of each entity's recent amounts
_RECENT_AT: tuple[tuple[int, str, str, str], ...] = tuple(
    (_AT[raw], n_name, median_name, z_name) for raw, n_name, median_name, z_name in RECENT_AMOUNTS)


def input_values(inputs: dict[str, Any]) -> tuple[Any, ...]:
    """The inputs of a dict by name (those an event has) as the tuple `derive_from` reads."""
    return tuple(map(inputs.get, INPUT_ORDER, INPUT_ABSENT))


#: (share, count) of today's make-up (`definitions.TodayMakeup`): count / merchant.count_today
MAKEUP_SHARES = tuple(zip(map(sys.intern, d.TODAY_MAKEUP.outputs()), map(sys.intern, d.TODAY_MAKEUP.counts())))
_US_PER_MIN = 60_000_000

# Precomputed once for `derive` (it runs once per decision): every store feature missing
# to start with, each first-seen entity's names, the ratios as flat triples, the event's
# own attributes as one itemgetter; copying ready ones is cheaper than building them per
# event (see docs/benchmarks.md).
_BLANK: dict[str, Any] = dict.fromkeys(_STORE_NAMES)
_FIRST_SEEN = tuple(
    tuple(map(sys.intern, (f"{ns}.first_seen_us", f"{ns}.age_days", f"{ns}.is_first_seen")))
    for ns in ("card", "user", "merchant")
)
_RATIO_TRIPLES = tuple(
    (name, num, den) for name, (num, den) in RATIOS.items() if num not in INPUTS and den not in INPUTS
)
#: the ratios of two raw features: the online store's plan readers compute them from the
#: reply as they read it (`plan_code.compile_reader`), and `derive` told so leaves them be
RAW_RATIOS = _RATIO_TRIPLES
_INPUT_RATIOS = tuple(  # user.hour_share: its denominator, the hour habit's total, is an input
    (name, num, den) for name, (num, den) in RATIOS.items() if num in INPUTS or den in INPUTS
)
_AMOUNT_TO_MEAN = tuple(tuple(map(sys.intern, (name, total, count))) for name, (total, count) in AMOUNT_TO_MEAN.items())
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


def _straight_line(name: str, params: str, body: list[str]) -> Callable[..., None]:
    """A function of ``body``'s statements (feature and column names as literals, from the
    tables above): `derive` runs once per decision, and one statement per name costs less
    than an ``itemgetter``, a ``zip`` and a dict update over them."""
    source = f"def {name}({params}):\n" + "".join(f"    {line}\n" for line in body)
    namespace: dict[str, Any] = {"ABSENT": ABSENT}
    exec(compile(source, f"<assemble.{name}>", "exec"), namespace)
    function = namespace[name]
    function.__code__ = interned_names(function.__code__)
    function.__doc__ = f"Generated by `assemble._straight_line`:\n\n{source}"
    return function  # type: ignore[no-any-return]


#: the event's own features from its row
_copy_row = _straight_line("copy_row", "f, row", [f"f[{name!r}] = row[{column!r}]" for name, column in _ROW_FEATURES])
#: `_ratio` of ``num`` and ``den`` as an expression, for the generated functions
_RATIO_OF = "None if num is None or den is None or den == 0 else num / den"
#: the ratios of `_RATIO_TRIPLES`, missing when either side is or the denominator is 0
_ratios = _straight_line("ratios", "f", [
    line for name, num, den in _RATIO_TRIPLES
    for line in (f"num = f[{num!r}]", f"den = f[{den!r}]", f"f[{name!r}] = {_RATIO_OF}")])
_IP_FIELDS = ("country", "asn", "is_hosting", "is_tor", "is_listed_proxy", "is_private")
_IP_NAMES = tuple(sys.intern(f"ip.{name}") for name in _IP_FIELDS)
#: the IP's features from its `IpInfo`
_copy_ip = _straight_line("copy_ip", "f, info",
                          [f"f[{name!r}] = info.{field}" for name, field in zip(_IP_NAMES, _IP_FIELDS)])
#: from the inputs (``t``: the event's time; ``inputs`` in `INPUT_ORDER`): the first-seen
#: entities' ages and "first seen" flags, then the minutes since each first use and whether
#: it is new in the session (an input missing: no such entity or member in the event)
_from_inputs = _straight_line("from_inputs", "f, inputs, t", [
    *(line for key, age_name, first_name in _FIRST_SEEN
      for line in (f"first = inputs[{_AT[key]!r}]", "if first is not ABSENT:",
                   f"    f[{age_name!r}] = (t - first) / {US_PER_DAY!r} if first is not None else 0.0",
                   f"    f[{first_name!r}] = first is None")),
    *(line for raw, minutes_name, new_name in FIRST_USED
      for line in (f"began = inputs[{_AT[raw]!r}]", "if began is not None:",
                   f"    minutes = (t - began) / {_US_PER_MIN!r} if began else None",
                   f"    f[{minutes_name!r}] = minutes",
                   f"    f[{new_name!r}] = minutes is None or minutes < {d.NEW_SESSION_MINUTES!r}"))])
#: the ratios with an input on a side (`_INPUT_RATIOS`, as `_ratio` computes them), then each
#: amount-to-mean (``amount``: the event's amount in major units)
_last_ratios = _straight_line("last_ratios", "f, inputs, amount", [
    *(line for name, num, den in _INPUT_RATIOS
      for line in (f"num = inputs[{_AT[num]!r}]" if num in INPUTS else f"num = f.get({num!r})",
                   f"den = inputs[{_AT[den]!r}]" if den in INPUTS else f"den = f.get({den!r})",
                   f"f[{name!r}] = {_RATIO_OF}")),
    *(line for name, total, count in _AMOUNT_TO_MEAN
      for line in (f"total = f[{total!r}]", f"paid = f[{count!r}]",
                   f"f[{name!r}] = None if amount is None or not total or not paid else amount * paid / total"))])
#: what `derive` writes whatever the store returned: a raw value of one of these names would be overwritten
_DERIVED_ONLY = frozenset(
    [*_ROW_NAMES, *_IP_NAMES, "event.amount", "event.amount_minor", "ip.country_mismatch_card"]
)


def _ratio(num: Any, den: Any) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def median_of_sorted(s: Sequence[float]) -> float:
    """The median of a sorted, non-empty sequence (the mean of the middle two of an even count)."""
    n = len(s)
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def log_amount(amount_minor: int) -> float:
    """The natural log of an amount in minor units (an amount of 0 reads as 1): the scale on
    which the robust amount score measures, the same function online and offline."""
    return math.log(max(amount_minor, 1))


def robust_amount(recent: Sequence[int], amount: int | None) -> tuple[int, float | None, float | None]:
    """(how many recent amounts, their median in major units, the robust score of
    ``amount``) from the entity's last payment amounts in minor units (see
    `definitions.RecentAmounts`). The offline twin's `offline_kinds.recent_amounts` is
    the column-wise form of the same arithmetic, step by step."""
    n = len(recent)
    if n == 0:
        return 0, None, None
    s = sorted(recent)
    lo, hi = (n - 1) // 2, n // 2  # `median_of_sorted`, inline: the middle two
    median = (s[lo] + s[hi]) / 2 / _SCALE
    if n < _ROBUST_MIN_COUNT or amount is None:
        return n, median, None
    # the logs of the sorted amounts are sorted (`log_amount`: an amount of 0 is taken as 1)
    logs = list(map(math.log, s)) if s[0] >= 1 else list(map(log_amount, s))
    centre = (logs[lo] + logs[hi]) / 2
    # |log - centre| without abs: the logs below the middle are at most the centre, the
    # others at least; the two runs, each ascending, are merged by one sort
    deviations = [centre - x for x in logs[hi - 1::-1]]
    deviations += [x - centre for x in logs[hi:]]
    deviations.sort()
    mad = (deviations[lo] + deviations[hi]) / 2
    scale = max(_MAD_TO_SIGMA * mad, _LOG_SCALE_FLOOR)
    return n, median, (log_amount(amount) - centre) / scale


@functools.lru_cache(maxsize=1 << 14)
def poisson_score(count: float, expected: float) -> float:
    """-log10 P(X >= count) for X ~ Poisson(expected), capped at `POISSON_SCORE_CAP`.
    P(X >= k) is the regularized lower incomplete gamma P(k, expected) for k >= 1; the
    offline twin calls this very function per distinct (count, expected). Kept per
    (count, expected): a merchant's pair repeats until its next payment or baseline."""
    p = float(gammainc(count, expected)) if count >= 1 else 1.0
    return min(0.0 - math.log10(p), d.POISSON_SCORE_CAP) if p > 0 else d.POISSON_SCORE_CAP


def merchant_significance(count_today: Any, baseline_count: Any, volume_today: Any, baseline_volume: Any,
                          sum_30d: Any, count_30d: Any) -> tuple[Any, Any, Any]:
    """(count_today_poisson, count_ratio_today_floored, volume_ratio_today_floored) of a
    merchant: see their catalog entries. Missing without a 7-day baseline."""
    if baseline_count is None or count_today is None:
        return None, None, None
    floor = d.MERCHANT_MIN_EXPECTED_COUNT
    score = poisson_score(count_today, baseline_count) if baseline_count >= floor else None
    count_ratio = count_today / max(baseline_count, floor)
    volume_ratio = None
    if count_30d and sum_30d is not None and volume_today is not None and baseline_volume is not None:
        den = max(baseline_volume, floor * (sum_30d / count_30d))
        volume_ratio = volume_today / den if den > 0 else None
    return score, count_ratio, volume_ratio


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


def assemble(row: dict[str, Any], raw: dict[str, Any], default_limit: int, lists: dict[str, ListSpec],
             history_start_us: int | None = None) -> dict[str, Any]:
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
    return derive(f, row, inputs, default_limit, history_start_us)


def derive(f: dict[str, Any], row: dict[str, Any], inputs: dict[str, Any], default_limit: int,
           history_start_us: int | None = None, *, raw_ratios: bool = False) -> dict[str, Any]:
    """Complete ``f``, which holds every feature (missing) and the raw features already,
    with the event's own features and those derived from the raw values: ``inputs`` holds
    the raw values of `INPUTS` that the event has. ``history_start_us``: when the store's
    history began, if known: ages and "new" flags younger than their window are missing
    (`fengkong.features.young`). ``raw_ratios``: ``f`` holds `RAW_RATIOS` already (a plan's
    reader computed them). Returns ``f``."""
    return derive_from(f, row, input_values(inputs), default_limit, history_start_us, raw_ratios)


def derive_from(f: dict[str, Any], row: dict[str, Any], inputs: tuple[Any, ...], default_limit: int,
                history_start_us: int | None = None, raw_ratios: bool = False) -> dict[str, Any]:
    """`derive` of the inputs as a tuple in `INPUT_ORDER` (`input_values`: those the event
    lacks as `INPUT_ABSENT` says), as a plan's reader gives them: read by position, not
    looked up by name."""
    _copy_row(f, row)
    amount = row["amount"] if row["has_amount"] else None
    f["event.amount"] = amount / _SCALE if amount is not None else None
    f["event.amount_minor"] = amount
    info = row["ip_info"]
    if info is not None:
        _copy_ip(f, info)
        f["ip.country_mismatch_card"] = (
            info.country is not None and row["card_country"] is not None and info.country != row["card_country"]
        )
    # else: the IP features stay missing

    t = row["ts_us"]
    _from_inputs(f, inputs, t)
    f["card.days_since_first_seen"] = f["card.age_days"]
    f["user.account_age_days"] = f["user.age_days"]

    moments = inputs[_AT_MOMENTS]
    if moments is not None:
        n, mean, m2 = moments
        f["user.amount_n"] = n
        f["user.amount_mean"] = mean / _SCALE if n else None
        std = math.sqrt(m2 / (n - 1)) / _SCALE if n >= 2 else None
        f["user.amount_std"] = std
        f["user.amount_zscore"] = (
            (amount / _SCALE - mean / _SCALE) / std if std and amount is not None else None
        )
    for at, n_name, median_name, z_name in _RECENT_AT:
        recent = inputs[at]
        if recent is not None:
            f[n_name], f[median_name], f[z_name] = robust_amount(recent, amount)
    if f["user.countries_seen_90d"] is not None:  # the user is known to the store
        f["user.country_mismatch_usual"] = bool(f["user.is_new_country"] and (f["user.countries_seen_90d"] or 0) > 0)
    if history_start_us is not None:
        censor(f, t, history_start_us)

    if row["merchant_id"] is not None:
        limit = inputs[_AT_SINGLE_LIMIT] or default_limit
        f["merchant.grade"] = f["merchant.grade"] or d.DEFAULT_GRADE
        f["merchant.single_limit"] = limit / _SCALE
        cap = inputs[_AT_DAILY_CAP]
        daily_cap = f["merchant.daily_cap"] = cap / _SCALE if cap is not None else None
        onboarded = inputs[_AT_ONBOARDED]
        if onboarded is not None:
            f["merchant.age_days"] = float(row["biz_day"] - onboarded)
        f["merchant.has_baseline"] = f["merchant.baseline_today_7d"] is not None
        f["merchant.in_promotion"], f["merchant.promotion_multiple"] = promotion_at(
            inputs[_AT_PROMOTIONS], t)
        if amount is not None and row["type"] == "payment":
            f["event.near_limit"] = amount * _DEN >= limit * _NUM and amount <= limit
            f["event.over_limit"] = amount > limit
        else:
            f["event.near_limit"] = f["event.over_limit"] = None
        f["merchant.cap_used_today"] = _ratio(f["merchant.volume_today"], daily_cap)
        (f["merchant.count_today_poisson"], f["merchant.count_ratio_today_floored"],
         f["merchant.volume_ratio_today_floored"]) = merchant_significance(
            f["merchant.count_today"], f["merchant.baseline_count_today_7d"], f["merchant.volume_today"],
            f["merchant.baseline_today_7d"], f["merchant.sum_30d"], f["merchant.count_30d"])
        today = f["merchant.count_today"]
        if today is not None and today >= d.TODAY_MAKEUP.min_count:
            for share, count in MAKEUP_SHARES:
                f[share] = f[count] / today if f[count] is not None else None
    else:
        f["event.near_limit"] = f["event.over_limit"] = None

    if not raw_ratios:
        _ratios(f)
    _last_ratios(f, inputs, f["event.amount"])
    return f


derive_from.__code__ = interned_names(derive_from.__code__)  # its feature names, the blank dicts' very keys
