"""What to simulate: sizes, span, seed and the fraud mix."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Mapping

from fengkong.simulation.constants import SCENARIOS

#: Measured on the default mix (60 days): events per shopper and merchants per shopper.
_EVENTS_PER_SHOPPER_60D = 28.0
_SHOPPERS_PER_MERCHANT = 20


#: Knobs of the legitimate behaviour that overlaps fraud signals (see SimConfig).
OVERLAP_KNOBS: tuple[str, ...] = (
    "household_share", "family_device_share", "family_device_use", "family_card_share", "campus_share",
    "cgnat_share", "cgnat_users_per_ip", "promo_signup_wave", "street_signup_share", "first_order_share",
    "multi_card_share", "merchant_promo_share", "early_morning_share", "habit_share", "pos_small_share",
)


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulated history. The same config and seed give the same frame.

    ``payments_per_shopper_day`` is the mean legitimate payment rate of a shopper
    (heavy-tailed across shoppers). ``fraud_scale`` multiplies every scenario's
    incidence; ``mix`` multiplies single scenarios (0 switches one off).
    The second group of knobs adds legitimate behaviour that overlaps fraud signals, so that
    shared devices, shared IPs, young accounts and many cards are not proof of fraud on their own:

    - ``household_share``: share of (Chinese) shoppers living in a household of 2-4 shoppers that
      shares one home broadband line (the same public IP at the same time, the same /16);
      ``family_device_share`` of households also share a family phone or tablet that every member
      uses for ``family_device_use`` of their online payments; in ``family_card_share`` of
      households one member's card is also used by the others, on their own devices.
    - ``campus_share``: share of shoppers on a campus or company network, whose online payments
      (company: working hours) leave through a few addresses of one shared /24.
    - ``cgnat_share``: share of shoppers whose mobile-network payments leave through China Mobile
      carrier-grade NAT, about ``cgnat_users_per_ip`` shoppers per public address.
    - ``promo_signup_wave``: genuine sign-ups on each promotion day, as a share of shoppers, in a
      burst (families together, classmates on one campus network, many over CGNAT); they mostly
      pay within the hour; ``street_signup_share`` of them are signed up at a street-promotion
      booth (地推): 4-15 on one promoter's tablet and connection within two hours.
    - ``first_order_share``: share of other new shoppers who pay within a day of signing up.
    - ``multi_card_share``: share of shoppers with 3-5 cards who spread payments over them and
      sometimes split one purchase over two or three cards within minutes.
    - ``merchant_promo_share``: share of merchants that run a promotion of their own (1-3 days at a
      planned 3-10x their usual daily volume), bought mostly by their earlier customers.
    - ``early_morning_share``: breakfast stalls and commuter kiosks added (as a share of
      ``merchants``): open at 5-6:30 a.m., a handful of payments a day, most in the first hours.
    - ``habit_share``: share of shoppers with a steady small habit (about 40 yuan, low variance)
      who now and then buy something 2-10x bigger, on their own card, device and network.
    - ``pos_small_share``: small card-present (POS) shops added (as a share of ``merchants``), a
      handful of payments a day and an occasional busy day.

    ``no_overlap()`` sets all of them to 0: a trivially separable world, a baseline.

    ``promo_days`` are day offsets of legitimate promotion days; ``None`` picks
    the calendar days 06-18, 11-11 and 12-12 that fall in the span, or one day
    at 70% of a span of two weeks or more if none does.
    """

    seed: int = 0
    days: int = 60
    start: date = date(2025, 10, 1)
    shoppers: int = 20_000
    merchants: int = 1_000
    payments_per_shopper_day: float = 0.3
    new_shopper_share: float = 0.08
    new_merchant_share: float = 0.12
    promo_days: tuple[int, ...] | None = None
    promo_boost: float = 3.0
    fraud_scale: float = 1.0
    mix: Mapping[str, float] = field(default_factory=dict)
    # legitimate behaviour that looks like fraud signals (OVERLAP_KNOBS; 0 switches each off)
    household_share: float = 0.35
    family_device_share: float = 0.70
    family_device_use: float = 0.60
    family_card_share: float = 0.40
    campus_share: float = 0.10
    cgnat_share: float = 0.70
    cgnat_users_per_ip: float = 60.0
    promo_signup_wave: float = 0.03
    street_signup_share: float = 0.05
    first_order_share: float = 0.60
    multi_card_share: float = 0.03
    merchant_promo_share: float = 0.05
    early_morning_share: float = 0.02
    habit_share: float = 0.05
    pos_small_share: float = 0.03

    def __post_init__(self) -> None:
        if self.days < 7:
            raise ValueError("days: need at least 7 days (merchant baselines need a week)")
        if self.shoppers < 200:
            raise ValueError("shoppers: need at least 200")
        if self.merchants < 30:
            raise ValueError("merchants: need at least 30")
        unknown = set(self.mix) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"mix: unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        if any(v < 0 for v in self.mix.values()) or self.fraud_scale < 0:
            raise ValueError("mix / fraud_scale must not be negative")
        for name in OVERLAP_KNOBS:
            v = getattr(self, name)
            if v < 0 or (name.endswith(("_share", "_use", "_wave")) and v > 1):
                raise ValueError(f"{name}: expected a share between 0 and 1, got {v}")
        if 0 < self.cgnat_users_per_ip < 1:
            raise ValueError("cgnat_users_per_ip: at least 1 shopper per address (or 0 for no CGNAT)")

    def no_overlap(self) -> "SimConfig":
        """This config without the legitimate behaviour that overlaps fraud signals."""
        return replace(self, **{name: 0 for name in OVERLAP_KNOBS})  # type: ignore[arg-type]

    def weight(self, scenario: str) -> float:
        """Incidence multiplier of one scenario."""
        return self.fraud_scale * float(self.mix.get(scenario, 1.0))

    @classmethod
    def for_events(cls, events: int, *, days: int = 60, **kwargs: object) -> "SimConfig":
        """A config sized to produce about ``events`` events (within a few percent, usually above)."""
        rate = float(kwargs.get("payments_per_shopper_day", 0.3))  # type: ignore[arg-type]
        per_shopper = _EVENTS_PER_SHOPPER_60D * (days / 60.0) * (rate / 0.3)
        shoppers = max(200, int(round(events * 1.03 / per_shopper)))
        merchants = max(30, shoppers // _SHOPPERS_PER_MERCHANT)
        return cls(days=days, shoppers=shoppers, merchants=merchants, **kwargs)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> "SimConfig":
        """A copy with some knobs changed (the config is frozen, so runs cannot share a mutated one)."""
        return replace(self, **changes)  # type: ignore[arg-type]
