"""Today's make-up of a merchant's payments (definitions.TodayMakeup), checked by hand on a
short story, on one Redis and on a Redis Cluster (where the card's and the account's facts
live on other slots than the merchant's counts)."""

from __future__ import annotations

from datetime import datetime

import pytest

from fengkong.events import parse_event
from fengkong.features import keys
from fengkong.features.definitions import DEFAULT_BUSINESS_UTC_OFFSET_MIN


def _pay(event_id: str, when: str, merchant: str, card: str, user: str) -> dict:
    return {"event_id": event_id, "type": "payment", "occurred_at": when, "merchant_id": merchant,
            "user_id": user, "amount": "88.00", "currency": "CNY", "channel": "quick_pay",
            "card": {"fingerprint": card, "bin": "622202", "type": "debit", "issuer_country": "CN"}}


MAKEUP = ("merchant.count_today", "merchant.new_card_count_today", "merchant.new_user_count_today",
          "merchant.returning_count_today", "merchant.today_new_card_share", "merchant.today_new_user_share",
          "merchant.today_returning_share")


@pytest.mark.parametrize("which", ["store", "cluster_store"])
def test_the_make_up_counts_new_cards_new_accounts_and_returning_cards(which, request) -> None:
    store = request.getfixturevalue(which)
    got = {}

    def send(event: dict) -> None:
        result = store.process(parse_event(event))
        got[event["event_id"]] = (result.duplicate, tuple(result.features[name] for name in MAKEUP))

    # day 1 (business day, UTC+8): fifteen customers pay shop m; k0 pays another shop
    for i in range(15):
        send(_pay(f"d1-{i}", f"2026-11-10T10:{i:02d}:00+08:00", "m", f"c{i}", f"u{i}"))
    send(_pay("d1-k", "2026-11-10T10:30:00+08:00", "m2", "k0", "uk"))
    # day 2: card j0 of the same old account is first seen, at the other shop
    send(_pay("d2-j", "2026-11-11T11:00:00+08:00", "m2", "j0", "uk"))
    # day 3: ten customers come back, then eight brand-new cards of brand-new accounts
    for i in range(10):
        send(_pay(f"d3-back-{i}", f"2026-11-12T09:{i:02d}:00+08:00", "m", f"c{i}", f"u{i}"))
    for i in range(8):
        send(_pay(f"d3-new-{i}", f"2026-11-12T09:{30 + i:02d}:00+08:00", "m", f"n{i}", f"v{i}"))
    send(_pay("d3-c10-new-account", "2026-11-12T09:40:00+08:00", "m", "c10", "w0"))  # returning card, new account
    send(_pay("d3-k0", "2026-11-12T09:45:00+08:00", "m", "k0", "uk"))  # old card, first time here: neither
    send(_pay("d3-j0", "2026-11-12T09:50:00+08:00", "m", "j0", "uk"))  # card seen 22h50 ago: new
    send(_pay("d3-new-0", "2026-11-12T09:30:00+08:00", "m", "n0", "v0"))  # a retry: counts nothing
    send(_pay("d3-probe", "2026-11-12T10:00:00+08:00", "m", "c11", "u11"))
    send(_pay("d4-probe", "2026-11-13T08:00:00+08:00", "m", "c12", "u12"))

    assert got["d3-back-0"] == (False, (0, 0, 0, 0, None, None, None))  # a new day starts at zero
    assert got["d3-c10-new-account"][1][:4] == (18, 8, 8, 10)
    # 19 payments today: the counts are there, the shares missing below TODAY_MAKEUP_MIN_COUNT
    assert got["d3-k0"][1] == (19, 8, 9, 11, None, None, None)
    assert got["d3-j0"][1] == (20, 8, 9, 11, 8 / 20, 9 / 20, 11 / 20)
    assert got["d3-new-0"][0] is True
    assert got["d3-probe"][1] == (21, 9, 9, 11, 9 / 21, 9 / 21, 11 / 21)
    assert got["d4-probe"][1] == (0, 0, 0, 0, None, None, None)


@pytest.mark.parametrize("which", ["store", "cluster_store"])
def test_the_day_s_make_up_hash_holds_the_counts_and_gets_its_ttl_when_made(which, request) -> None:
    """The script writes the new counts in one HSET and sets the TTL only when the day's hash
    is made (the cluster store the same from its joined reply): the hash must still hold every
    count, and never be left without a TTL."""
    store = request.getfixturevalue(which)
    for i in range(3):  # three new cards of new accounts
        store.process(parse_event(_pay(f"a{i}", f"2026-11-10T10:0{i}:00+08:00", "m", f"c{i}", f"u{i}")))
    store.process(parse_event(_pay("b0", "2026-11-11T10:00:00+08:00", "m", "c0", "u0")))  # returning
    store.process(parse_event(_pay("b1", "2026-11-11T10:01:00+08:00", "m", "c1", "u1")))
    store.process(parse_event(_pay("b1", "2026-11-11T10:01:00+08:00", "m", "c1", "u1")))  # a retry
    ts = datetime.fromisoformat("2026-11-10T10:00:00+08:00").timestamp()
    first = (int(ts) + DEFAULT_BUSINESS_UTC_OFFSET_MIN * 60) // 86400  # its business day
    for day, counts in ((first, {b"c": b"3", b"u": b"3"}), (first + 1, {b"r": b"2"})):
        key = keys.entity_key(store.prefix, "merchant", "m", f"mix:{day}")
        assert store.client.hgetall(key) == counts
        assert 0 < store.client.ttl(key) <= 2 * 86400
