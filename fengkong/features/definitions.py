"""Every feature fengkong computes, declared once.

The online store (`online.py`, one Lua call per event) and the offline twin
(`offline.py`, pandas over a whole history) are both driven from these
declarations, and the rule checker validates feature names and types against
`CATALOG`. Add a feature here and both stores compute it; a test holds them equal.

Window semantics (the same online and offline): a window of W at resolution r
covers the bucket that holds the event (``floor(ts / r)``) and the N-1 buckets
before it, where N = W / r. So ``count_10m`` counts payments in the current
minute and the nine before it: between 9 and 10 minutes of history. Every value
is "as of just before this event": the event itself is never in its own features.
Times are the event's own ``occurred_at``, never the wall clock; "local" hours and
days use the offset the event carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fengkong.features.feature_specs import (  # noqa: F401 (re-exported: read as definitions.<NAME>)
    DERIVED_FEATURES as DERIVED_FEATURES,
    EVENT_FEATURES as EVENT_FEATURES,
    IP_FEATURES as IP_FEATURES,
    DType as DType,
    FeatureSpec as FeatureSpec,
    _spec,
)
from fengkong.features.model_outputs import MODEL_OUTPUTS
from fengkong.features.robust import (  # re-exported: read as definitions.<NAME>
    MAD_TO_SIGMA,
    MERCHANT_MIN_EXPECTED_COUNT,
    NEW_SESSION_MINUTES,
    NEW_SESSION_NAME,
    POISSON_SCORE_CAP,
    RECENT_AMOUNTS_SIZE,
    ROBUST_LOG_SCALE_FLOOR,
    ROBUST_MIN_COUNT,
)
from fengkong.features.makeup import FIRST_DAY_AT_MERCHANT, MAKEUP_CATALOG, TODAY_MAKEUP  # noqa: F401 (re-export)



@dataclass(frozen=True)
class Window:
    name: str
    seconds: int
    resolution: int

    @property
    def buckets(self) -> int:
        return self.seconds // self.resolution


W10M = Window("10m", 600, 60)
W1H = Window("1h", 3600, 300)
W24H = Window("24h", 86400, 3600)
W7D = Window("7d", 7 * 86400, 21600)
W30D = Window("30d", 30 * 86400, 86400)
W90D = Window("90d", 90 * 86400, 86400)


@dataclass(frozen=True)
class Entity:
    """Who a feature is about. ``column`` names the event-row column holding its id."""

    name: str
    column: str


CARD = Entity("card", "card_fp")
USER = Entity("user", "user_id")
DEVICE = Entity("device", "device_id")
IP = Entity("ip", "ip")
SUBNET = Entity("subnet", "subnet")  # the IPv4 /24 (IPv6 /64) of the ip
MERCHANT = Entity("merchant", "merchant_id")
MERCHANT_CARD = Entity("merchant_card", "merchant_card")

# Event-type groups that counters select on.
PAYMENT = ("payment",)
ACTIVITY = ("payment", "signup", "login", "card_bind")


@dataclass(frozen=True)
class Counter:
    """One running total inside a rolling window.

    ``value`` is ``one`` (a count) or ``amount`` (a sum of minor units);
    ``where`` names a boolean event-row column that must be true
    (``near_limit`` is resolved against the merchant's limit inside the store).
    """

    name: str
    events: tuple[str, ...] = PAYMENT
    value: Literal["one", "amount"] = "one"
    where: str | None = None


@dataclass(frozen=True)
class Rolling:
    """Counts and sums over one window for one entity (a ring of buckets in Redis)."""

    entity: Entity
    window: Window
    counters: tuple[Counter, ...]
    namespace: str = ""

    def outputs(self) -> list[str]:
        ns = self.namespace or self.entity.name
        return [f"{ns}.{c.name}_{self.window.name}" for c in self.counters]


@dataclass(frozen=True)
class Distinct:
    """How many distinct ``of`` values the entity saw in each window (exact, a sorted set
    of last-seen times per member, pruned past the longest window)."""

    entity: Entity
    of: str  # event-row column
    label: str  # plural word in the feature name, e.g. "devices"
    windows: tuple[Window, ...]
    events: tuple[str, ...] = ACTIVITY
    namespace: str = ""

    def outputs(self) -> list[str]:
        ns = self.namespace or self.entity.name
        return [f"{ns}.distinct_{self.label}_{w.name}" for w in self.windows]


@dataclass(frozen=True)
class SeenBefore:
    """Whether the entity saw this ``of`` value within ``horizon``, and how many it saw."""

    entity: Entity
    of: str
    label: str  # singular, e.g. "device"
    plural: str
    horizon: Window
    events: tuple[str, ...] = ("payment", "login")

    def outputs(self) -> list[str]:
        ns = self.entity.name
        return [f"{ns}.is_new_{self.label}", f"{ns}.{self.plural}_seen_{self.horizon.name}"]


@dataclass(frozen=True)
class FirstSeen:
    """When the entity first appeared (kept while it stays active within ``ttl``)."""

    entity: Entity
    events: tuple[str, ...]
    ttl: Window = W90D

    def outputs(self) -> list[str]:
        ns = self.entity.name
        return [f"{ns}.age_days", f"{ns}.is_first_seen"]


@dataclass(frozen=True)
class Moments:
    """Running count, mean and standard deviation of the amount (Welford's method)."""

    entity: Entity
    events: tuple[str, ...] = PAYMENT
    ttl: Window = W90D

    def outputs(self) -> list[str]:
        ns = self.entity.name
        return [f"{ns}.amount_n", f"{ns}.amount_mean", f"{ns}.amount_std", f"{ns}.amount_zscore"]


@dataclass(frozen=True)
class RecentAmounts:
    """The entity's last ``size`` payment amounts, and a robust score of this amount.

    Running mean and std (`Moments`) let one outlier or a steady habit make any change
    huge (5 payments of 43 +- 4.7 make 104 a z of 13). The robust score works on the
    log amount (twice the usual is as far as half of it, whatever the ticket size),
    centres on the median, scales by the MAD (x `MAD_TO_SIGMA`) but never below
    `ROBUST_LOG_SCALE_FLOOR`, and is missing below `ROBUST_MIN_COUNT` earlier payments.
    The last ``size`` amounts, not all history: an exact median needs the values.
    """

    entity: Entity
    events: tuple[str, ...] = PAYMENT
    size: int = RECENT_AMOUNTS_SIZE
    ttl: Window = W90D

    def outputs(self) -> list[str]:
        ns = self.entity.name
        return [f"{ns}.amount_recent_n", f"{ns}.amount_recent_median", f"{ns}.amount_robust_z"]


@dataclass(frozen=True)
class MemberFirstSeen:
    """When the entity first used each value (device, IP, IP country) in the value's
    current run of use: a value unused for ``horizon`` starts over, as `SeenBefore`
    forgets it. Per value: minutes since first use (missing if never used, or the event
    lacks the value) and whether it is new (never used, or first used less than
    `NEW_SESSION_MINUTES` ago; missing if the event lacks the value)."""

    entity: Entity
    members: tuple[tuple[str, str], ...]  # (event-row column, label)
    horizon: Window = W90D
    events: tuple[str, ...] = ACTIVITY

    def outputs(self) -> list[str]:
        ns = self.entity.name
        return [name for _, label in self.members
                for name in (f"{ns}.{label}_first_seen_min", f"{ns}.is_new_{label}_{NEW_SESSION_NAME}")]

    def raw_names(self) -> list[str]:
        """The store's first-use time per value (us; 0 never used, None the event lacks it)."""
        return [f"{self.entity.name}.{label}_first_used_us" for _, label in self.members]


@dataclass(frozen=True)
class HourHabit:
    """Share of the entity's earlier payments made in this local hour of day."""

    entity: Entity
    events: tuple[str, ...] = PAYMENT
    ttl: Window = W90D

    def outputs(self) -> list[str]:
        return [f"{self.entity.name}.hour_share", f"{self.entity.name}.hour_count"]


@dataclass(frozen=True)
class PeriodVolume:
    """A merchant's volume today and this hour against its own baseline.

    The baseline for "today so far" is the median, over the previous 7 (and 28)
    local days, of each day's volume up to the end of the same hour; for "this
    hour" it is the median of the same hour's volume. A merchant first seen fewer
    than 7 (28) days ago has no baseline: the values are missing and
    ``merchant.has_baseline`` is false.
    """

    entity: Entity = MERCHANT
    events: tuple[str, ...] = PAYMENT

    def outputs(self) -> list[str]:
        out = ["merchant.volume_today", "merchant.count_today", "merchant.volume_hour", "merchant.count_hour"]
        for d in (7, 28):
            out += [f"merchant.baseline_today_{d}d", f"merchant.baseline_hour_{d}d",
                    f"merchant.baseline_count_today_{d}d"]
        return out


@dataclass(frozen=True)
class TopShare:
    """The largest share of a merchant's volume today that came from one card."""

    entity: Entity = MERCHANT
    of: str = "card_fp"
    events: tuple[str, ...] = PAYMENT

    def outputs(self) -> list[str]:
        return ["merchant.top_card_volume_today"]


ROLLING: tuple[Rolling, ...] = (
    *(
        Rolling(CARD, w, (Counter("count"), Counter("sum", value="amount")))
        for w in (W10M, W1H, W24H, W7D)
    ),
    Rolling(CARD, W1H, (Counter("declines", events=("decline",)),)),
    Rolling(CARD, W30D, (Counter("fraud_reports", events=("fraud_report",)),)),
    # reports arrive late (a bank's export: a week), so a 7-day window of reports is the card's
    # fraud of about [d-14, d-7): sharper than 30 days on a card that keeps paying after one
    Rolling(CARD, W7D, (Counter("fraud_reports", events=("fraud_report",)),)),
    Rolling(
        MERCHANT_CARD, W30D, (Counter("merchant_count"), Counter("merchant_sum", value="amount")), namespace="card"
    ),
    *(
        Rolling(USER, w, (Counter("count"), Counter("sum", value="amount")))
        for w in (W1H, W24H, W30D)
    ),
    Rolling(DEVICE, W1H, (Counter("count"),)),
    Rolling(DEVICE, W24H, (Counter("signups", events=("signup",)),)),
    Rolling(IP, W10M, (Counter("count"),)),
    Rolling(SUBNET, W24H, (Counter("subnet_signups", events=("signup",)),), namespace="ip"),
    Rolling(
        MERCHANT,
        W24H,
        (
            Counter("count"),
            Counter("sum", value="amount"),
            Counter("credit_count", where="is_credit"),
            Counter("round_count", where="is_round"),
            Counter("near_limit_count", where="near_limit"),
            Counter("night_count", where="biz_night"),
            Counter("fraud_reports", events=("fraud_report",)),
        ),
    ),
    Rolling(
        MERCHANT,
        W7D,
        (Counter("sum", value="amount"), Counter("withdrawal_sum", events=("withdrawal",), value="amount"),
         Counter("count"), Counter("fraud_reports", events=("fraud_report",))),
    ),
    Rolling(
        MERCHANT,
        W30D,
        (
            Counter("count"),
            Counter("sum", value="amount"),
            Counter("refund_sum", events=("refund",), value="amount"),
            Counter("chargeback_count", events=("chargeback", "fraud_report")),
        ),
    ),
)

DISTINCT: tuple[Distinct, ...] = (
    Distinct(CARD, "device_id", "devices", (W24H,), events=("payment", "card_bind")),
    Distinct(CARD, "ip", "ips", (W24H,), events=("payment", "card_bind")),
    Distinct(CARD, "merchant_id", "merchants", (W24H,), events=PAYMENT),
    Distinct(DEVICE, "card_fp", "cards", (W1H, W24H), events=("payment", "card_bind")),
    Distinct(DEVICE, "user_id", "users", (W1H, W24H)),
    Distinct(IP, "card_fp", "cards", (W1H, W24H), events=("payment", "card_bind")),
    Distinct(IP, "user_id", "users", (W1H, W24H)),
    Distinct(SUBNET, "user_id", "subnet_users", (W24H,), namespace="ip"),
    Distinct(MERCHANT, "card_fp", "cards", (W24H,), events=PAYMENT),
)

SEEN: tuple[SeenBefore, ...] = (
    SeenBefore(USER, "device_id", "device", "devices", W90D),
    SeenBefore(USER, "ip_country", "country", "countries", W90D),
)

FIRST_SEEN: tuple[FirstSeen, ...] = (
    FirstSeen(CARD, events=("payment", "card_bind")),
    FirstSeen(USER, events=ACTIVITY),
    FirstSeen(MERCHANT, events=PAYMENT),
)

MOMENTS: tuple[Moments, ...] = (Moments(USER),)
RECENT_AMOUNTS: tuple[RecentAmounts, ...] = (RecentAmounts(USER), RecentAmounts(CARD))
_SESSION_VALUES = (("device_id", "device"), ("ip", "ip"), ("ip_country", "country"))
MEMBER_FIRST_SEEN = (MemberFirstSeen(USER, _SESSION_VALUES), MemberFirstSeen(CARD, _SESSION_VALUES))
HOUR_HABITS: tuple[HourHabit, ...] = (HourHabit(USER),)
PERIOD_VOLUME = PeriodVolume()
TOP_SHARE = TopShare()

#: Horizon after which an idle dedup record (event_id -> features it got) is forgotten.
DEDUP_TTL_S = 3 * 86400
#: Grade used when the merchant has none yet (the rescoring job writes grades).
DEFAULT_GRADE = "NEW"
#: Single-payment limit by grade, in minor units; a merchant profile's own limit wins.
DEFAULT_GRADE_LIMITS: dict[str, int] = {
    "NEW": 500_000,  # 5,000.00
    "A": 5_000_000,
    "B": 2_000_000,
    "C": 1_000_000,
    "D": 200_000,
}
#: Night is local 00:00 to 05:59 (the event's own offset for event.is_night; the
#: business offset for a merchant's night share).
NIGHT_HOURS = range(0, 6)
#: Merchant days and hours (today's volume, baselines, night share, top card today)
#: are counted in one business time zone, so every payment of a merchant lands in
#: the same calendar day whatever offset the shopper's device sent. UTC+08:00 by default.
DEFAULT_BUSINESS_UTC_OFFSET_MIN = 480
#: Sums and volumes are kept in integer minor units and reported in major units.
MINOR_PER_MAJOR = 100
#: A round amount is a positive multiple of 100 major units (e.g. 100.00, 5000.00 yuan).
ROUND_MAJOR_UNITS = 100
#: Near-limit: within 10% below the single-payment limit (0.9 x limit <= amount <= limit).
NEAR_LIMIT_FRACTION = (9, 10)


#: Model outputs the rules may read; `fengkong.models` supplies them (missing without a model).
MODEL_FEATURES: tuple[FeatureSpec, ...] = tuple(
    _spec(name, dtype, text, "model") for name, dtype, text in MODEL_OUTPUTS)
MAKEUP_FEATURES: tuple[FeatureSpec, ...] = tuple(FeatureSpec(*entry) for entry in MAKEUP_CATALOG)


def _store_specs() -> list[FeatureSpec]:
    specs: list[FeatureSpec] = []
    for r in ROLLING:
        for c, name in zip(r.counters, r.outputs()):
            unit = "major units" if c.value == "amount" else "count"
            specs.append(_spec(name, "number", f"{r.entity.name} {c.name} over {r.window.name} ({unit})"))
    for d in DISTINCT:
        for w, name in zip(d.windows, d.outputs()):
            specs.append(_spec(name, "number", f"distinct {d.label} of the {d.entity.name} over {w.name}"))
    for s in SEEN:
        new, seen = s.outputs()
        specs.append(_spec(new, "bool", f"{s.label} not seen for this {s.entity.name} in {s.horizon.name}"))
        specs.append(_spec(seen, "number", f"{s.label}s seen for this {s.entity.name} in {s.horizon.name}"))
    for f in FIRST_SEEN:
        age, first = f.outputs()
        specs.append(_spec(age, "number", f"days since the {f.entity.name} was first seen"
                           + (" (or onboarded, from its profile)" if f.entity is MERCHANT else "")))
        specs.append(_spec(first, "bool", f"this is the first event of the {f.entity.name}"))
    for m in MOMENTS:
        for name in m.outputs():
            specs.append(_spec(name, "number", "running statistics of earlier payment amounts (major units)"))
    for ra in RECENT_AMOUNTS:
        n_name, median_name, z_name = ra.outputs()
        specs += [_spec(n_name, "number", f"earlier payments among the last {ra.size} kept"),
                  _spec(median_name, "number", f"median of the last {ra.size} amounts (major units)"),
                  _spec(z_name, "number", "(ln amount - median ln) / max(1.4826 MAD, ROBUST_LOG_SCALE_FLOOR) over the "
                        f"last {ra.size}; missing below ROBUST_MIN_COUNT of them or without an amount")]
    for mf in MEMBER_FIRST_SEEN:
        names = iter(mf.outputs())
        for _, x in mf.members:
            specs += [_spec(next(names), "number", f"minutes since first use of this {x} (missing: never, or none)"),
                      _spec(next(names), "bool", f"{x} never used or first used < NEW_SESSION_MINUTES ago")]
    for h in HOUR_HABITS:
        share, count = h.outputs()
        specs.append(_spec(share, "number", "share of earlier payments in this local hour (missing if none)"))
        specs.append(_spec(count, "number", "earlier payments in this local hour"))
    for name in PERIOD_VOLUME.outputs():
        specs.append(_spec(name, "number", "merchant period volume (major units) or count"))
    for name in TOP_SHARE.outputs():
        specs.append(_spec(name, "number", "largest volume today from one card (major units)"))
    return specs


CATALOG: dict[str, FeatureSpec] = {
    s.name: s
    for s in (*EVENT_FEATURES, *IP_FEATURES, *_store_specs(), *DERIVED_FEATURES, *MAKEUP_FEATURES, *MODEL_FEATURES)
}

NAMESPACES = ("event", "card", "user", "device", "ip", "merchant", "model", "lists")


def feature_names() -> list[str]:
    return sorted(CATALOG)
