"""What to simulate: sizes, span, seed and the fraud mix."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Mapping

from fengkong.simulation.constants import SCENARIOS

#: Measured on the default mix (60 days): events per shopper and merchants per shopper.
_EVENTS_PER_SHOPPER_60D = 26.0
_SHOPPERS_PER_MERCHANT = 20


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulated history. The same config and seed give the same frame.

    ``payments_per_shopper_day`` is the mean legitimate payment rate of a shopper
    (heavy-tailed across shoppers). ``fraud_scale`` multiplies every scenario's
    incidence; ``mix`` multiplies single scenarios (0 switches one off).
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
        return replace(self, **changes)  # type: ignore[arg-type]
