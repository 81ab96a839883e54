"""What one payment adds to its merchant's make-up of today (`definitions.TodayMakeup`).

The single-server script decides this inside its call (``op_makeup`` of
`lua/update_read.lua`, from the card, user and merchant x card values read earlier in
the call). On a Redis Cluster those values come back from other slots, so the cluster
store decides it here from the joined reply and counts it after the call
(`cluster_store`); the offline twin does the same arithmetic column-wise
(`offline_merchant.today_makeup`). Tests hold all three equal.
"""

from __future__ import annotations

from typing import Any

from fengkong.features import definitions as d

#: a card or account first seen less than this long before the payment is new (microseconds)
NEW_WITHIN_US = d.TODAY_MAKEUP.new_within.seconds * 1_000_000
#: the per-day hash's fields, in `TodayMakeup.counts` order (the script writes the same)
FIELDS = ("c", "u", "r")


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
