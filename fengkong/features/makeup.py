"""Today's make-up of a merchant's payments: the declaration, and what one payment adds to it.

Why "first seen anywhere" and not "new to this merchant": a promotion draws shoppers who
are new to the shop but long known elsewhere, so newness at the merchant rises on a
genuine promotion day as much as in a ring; a card or account the whole platform met
within the day is what a ring of fresh cards and sign-ups looks like (DOMAIN.md), and what
an established customer is not. "Returning" is per merchant: it is what says a busy day is
the shop's own customers coming back.

Where it is decided: the single-server script inside its call (``op_makeup`` of
`lua/update_read.lua`, from the card, user and merchant x card values read earlier in the
call); on a Redis Cluster those values come from other slots, so the cluster store decides
it here (`makeup_flags`) from the joined reply and counts it after the call
(`cluster_store`); the offline twin column-wise (`offline_merchant.today_makeup`). Tests
hold all three equal. Re-exported by `definitions`, which this module must not import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: The shares need this many payments today: a share of 20 has a standard error of at
#: most 0.11, so "mostly new cards" is not one odd buyer early in the morning (the spike
#: rules need far more payments than this anyway).
TODAY_MAKEUP_MIN_COUNT = 20
#: The entity whose state keeps a card's first business day at a merchant ("returning"):
#: the merchant x card pair, one more number in the value it already keeps.
FIRST_DAY_AT_MERCHANT = "merchant_card"


@dataclass(frozen=True)
class TodayMakeup:
    """How many of a merchant's payments today (the business day of ``merchant.count_today``,
    before this event) came from cards, or accounts, first seen anywhere less than
    ``new_within_s`` before the payment, and from cards that paid this merchant on an
    earlier business day; the shares are missing below ``min_count`` payments today.
    Three counters in a per-day hash of the merchant, counted in the payment's own call."""

    new_within_s: int = 86_400
    min_count: int = TODAY_MAKEUP_MIN_COUNT
    events: tuple[str, ...] = ("payment",)

    def counts(self) -> list[str]:
        """The store's counts (payments today before this one, per kind)."""
        return ["merchant.new_card_count_today", "merchant.new_user_count_today", "merchant.returning_count_today"]

    def outputs(self) -> list[str]:
        """The shares the rules read, in `counts`' order (count / merchant.count_today)."""
        return ["merchant.today_new_card_share", "merchant.today_new_user_share", "merchant.today_returning_share"]


TODAY_MAKEUP = TodayMakeup()
#: a card or account first seen less than this long before the payment is new (microseconds)
NEW_WITHIN_US = TODAY_MAKEUP.new_within_s * 1_000_000
#: the per-day hash's fields, in `TodayMakeup.counts` order (the script writes the same)
FIELDS = ("c", "u", "r")

_NEW = f"first seen anywhere < {TODAY_MAKEUP.new_within_s // 3600}h before them"
_SHARE = f"; missing below {TODAY_MAKEUP.min_count} payments today (TODAY_MAKEUP_MIN_COUNT)"
#: (name, dtype, description, source) of each feature, for `definitions.CATALOG`
MAKEUP_CATALOG: tuple[tuple[str, Literal["number"], str, Literal["store", "derived"]], ...] = (
    ("merchant.new_card_count_today", "number", f"payments today from cards {_NEW}", "store"),
    ("merchant.new_user_count_today", "number", f"payments today from accounts {_NEW}", "store"),
    ("merchant.returning_count_today", "number", "payments today from cards that paid this merchant on an earlier "
     "business day", "store"),
    ("merchant.today_new_card_share", "number", f"share of today's payments (before this one) from cards {_NEW}"
     + _SHARE, "derived"),
    ("merchant.today_new_user_share", "number", f"share of today's payments from accounts {_NEW}" + _SHARE,
     "derived"),
    ("merchant.today_returning_share", "number", "share of today's payments from cards that paid this merchant "
     "on an earlier business day" + _SHARE, "derived"),
)


def is_new(first_us: Any, ts_us: int) -> bool:
    """Whether an entity read as first seen at ``first_us`` (None or False: never before this
    event) is new at ``ts_us``."""
    return first_us is None or first_us is False or ts_us - first_us < NEW_WITHIN_US


def makeup_flags(card_first_us: Any, user_first_us: Any, card_first_day_here: Any, ts_us: int, biz_day: int,
                 has_card: bool, has_user: bool) -> tuple[bool, bool, bool]:
    """(new card, new account, returning card) for one payment: the card's and the account's
    first-seen times and the card's first business day at this merchant as the store read
    them just before the payment (None or False: none); ``has_card``/``has_user``: the
    payment carries one (a payment without a card is neither new nor returning)."""
    new_card = has_card and is_new(card_first_us, ts_us)
    new_user = has_user and is_new(user_first_us, ts_us)
    returning = (has_card and card_first_day_here is not None and card_first_day_here is not False
                 and card_first_day_here < biz_day)
    return new_card, new_user, returning
