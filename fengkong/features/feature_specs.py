"""The specs of features the store does not count: read from the event itself, from the
IP database, or derived at decision time from other features and the merchant's profile.

They are kept apart from `fengkong.features.definitions` (which declares what the store
counts) and re-exported there, so every reader keeps one name for the whole catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DType = Literal["number", "string", "bool"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature the rules may read: its name, type, what it means and where its value comes from."""

    name: str
    dtype: DType
    description: str = ""
    source: Literal["store", "event", "ip", "derived", "model", "list"] = "store"


def _spec(name: str, dtype: DType, description: str = "", source: str = "store") -> FeatureSpec:
    return FeatureSpec(name, dtype, description, source)  # type: ignore[arg-type]


# Features read straight from the event (the "current event's own attributes").
EVENT_FEATURES: tuple[FeatureSpec, ...] = (
    _spec("event.event_id", "string", "", "event"),
    _spec("event.type", "string", "payment, refund, ...", "event"),
    _spec("event.amount", "number", "amount in major units (yuan)", "event"),
    _spec("event.amount_minor", "number", "amount in minor units (fen)", "event"),
    _spec("event.currency", "string", "", "event"),
    _spec("event.channel", "string", "quick_pay, online_banking, wallet, pos, card_not_present, withholding", "event"),
    _spec("event.hour", "number", "local hour of day 0-23 (event's own offset)", "event"),
    _spec("event.is_night", "bool", "local 00:00-05:59", "event"),
    _spec("event.is_round_amount", "bool", "a positive multiple of 100 major units", "event"),
    _spec("event.near_limit", "bool", "amount within 10% below the merchant's single-payment limit", "event"),
    _spec("event.over_limit", "bool", "amount above the merchant's single-payment limit", "event"),
    _spec("event.merchant_id", "string", "", "event"),
    _spec("event.user_id", "string", "", "event"),
    _spec("event.device_id", "string", "", "event"),
    _spec("event.ip", "string", "", "event"),
    _spec("event.merchant_mcc", "string", "", "event"),
    _spec("card.fingerprint", "string", "", "event"),
    _spec("card.bin", "string", "", "event"),
    _spec("card.type", "string", "credit, debit, prepaid", "event"),
    _spec("card.issuer_country", "string", "ISO alpha-2", "event"),
)

IP_FEATURES: tuple[FeatureSpec, ...] = (
    _spec("ip.country", "string", "from geoip2fast's bundled database", "ip"),
    _spec("ip.asn", "string", "AS name from geoip2fast's bundled database", "ip"),
    _spec("ip.is_hosting", "bool", "AS is a hosting/datacenter provider (rules/lists/hosting_asns.txt)", "ip"),
    _spec("ip.is_tor", "bool", "in a known Tor-exit range (rules/lists/tor_exit_ranges.txt)", "ip"),
    _spec("ip.is_listed_proxy", "bool", "in rules/lists/proxy_ips.txt", "ip"),
    _spec("ip.is_private", "bool", "private, loopback or reserved address", "ip"),
    _spec("ip.country_mismatch_card", "bool", "IP country differs from the card's issuer country (both known)", "ip"),
)

DERIVED_FEATURES: tuple[FeatureSpec, ...] = (
    _spec("card.days_since_first_seen", "number", "alias of card.age_days", "derived"),
    _spec("merchant.in_promotion", "bool", "inside one of the merchant's planned promotions (features/promotions.py)",
          "derived"),
    _spec("merchant.promotion_multiple", "number", "the current promotion's expected volume multiple", "derived"),
    _spec("user.account_age_days", "number", "alias of user.age_days (first activity or signup)", "derived"),
    _spec("user.country_mismatch_usual", "bool", "IP country never seen for this user in 90d (user known)", "derived"),
    _spec("merchant.has_baseline", "bool", "the merchant has 7 days of history for a volume baseline", "derived"),
    _spec("merchant.volume_ratio_today", "number", "volume so far today / 7-day median for the same period", "derived"),
    _spec("merchant.volume_ratio_today_28d", "number", "volume so far today / 28-day median", "derived"),
    _spec("merchant.volume_ratio_hour", "number", "volume this hour / 7-day median of this hour", "derived"),
    _spec("merchant.count_ratio_today", "number", "payments so far today / 7-day median count", "derived"),
    _spec("merchant.count_today_poisson", "number", "-log10 P(X >= payments so far today), X ~ Poisson(7-day "
          "median count by the end of this hour); missing without a baseline or below MERCHANT_MIN_EXPECTED_COUNT "
          "expected (assumes independent arrivals: read it with a ratio on large merchants)", "derived"),
    _spec("merchant.count_ratio_today_floored", "number", "payments so far today / max(7-day median count, "
          "MERCHANT_MIN_EXPECTED_COUNT); missing without a baseline", "derived"),
    _spec("merchant.volume_ratio_today_floored", "number", "volume so far today / max(7-day median, "
          "MERCHANT_MIN_EXPECTED_COUNT x the 30-day mean payment); missing without a baseline", "derived"),
    _spec("merchant.credit_share_24h", "number", "share of 24h payments paid by credit card", "derived"),
    _spec("merchant.round_share_24h", "number", "share of 24h payments in round amounts", "derived"),
    _spec("merchant.near_limit_share_24h", "number", "share of 24h payments just under the limit", "derived"),
    _spec("merchant.night_share_24h", "number", "share of 24h payments at night", "derived"),
    _spec("merchant.top_card_share_today", "number", "largest share of today's volume from one card", "derived"),
    _spec("merchant.refund_ratio_30d", "number", "refunded amount / paid amount over 30d", "derived"),
    _spec("merchant.chargeback_ratio_30d", "number", "chargebacks and fraud reports / payments over 30d", "derived"),
    _spec("merchant.fraud_report_ratio_24h", "number", "fraud reports received in 24h / payments in 24h (reports "
          "arrive late, so this is the merchant's fraud of some days ago over today's volume)", "derived"),
    _spec("merchant.fraud_report_ratio_7d", "number", "fraud reports received in 7d / payments in 7d", "derived"),
    _spec("card.mean_amount_24h", "number", "mean payment of the card over 24h (major units; missing if none)",
          "derived"),
    _spec("card.mean_amount_7d", "number", "mean payment of the card over 7d (major units; missing if none)",
          "derived"),
    _spec("user.mean_amount_30d", "number", "mean payment of the user over 30d (major units; missing if none)",
          "derived"),
    *(_spec(f"{ns}.amount_to_mean_{w}", "number", f"this amount / the {ns}'s mean payment over {w} "
            "(missing without earlier payments in the window)", "derived")
      for ns, w in (("card", "24h"), ("card", "7d"), ("user", "30d"))),
    _spec("merchant.withdrawal_ratio_7d", "number", "withdrawn amount / paid amount over 7d", "derived"),
    _spec("merchant.grade", "string", "NEW, A, B, C, D (written by `fengkong rescore`)", "derived"),
    _spec("merchant.single_limit", "number", "single-payment limit in major units", "derived"),
    _spec("merchant.daily_cap", "number", "daily volume cap in major units (missing if none)", "derived"),
    _spec("merchant.cap_used_today", "number", "volume today / daily cap", "derived"),
    _spec("merchant.anomaly", "number", "the nightly merchant anomaly score (0-1) `fengkong rescore` wrote", "derived"),
)
