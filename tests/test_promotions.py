"""Merchants' planned promotions as data: checking, storage with the profile, replay's file, the features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fengkong.events import parse_event
from fengkong.features import promotions
from fengkong.replay.mapping import MappingError

ROOT = Path(__file__).resolve().parent.parent


def _item(start: str = "2026-11-11T00:00:00+08:00", end: str = "2026-11-12T00:00:00+08:00", m: object = 5.0):
    return {"start": start, "end": end, "expected_multiple": m}


@pytest.mark.parametrize("items, field, words", [
    ([_item(end="2026-11-10T00:00:00+08:00")], "promotions[0].end", "after start"),
    ([_item(), _item(m=0.5)], "promotions[1].expected_multiple", "from 1 to 100"),
    ([_item(m=1000)], "promotions[0].expected_multiple", "from 1 to 100"),
    ([_item(m=True)], "promotions[0].expected_multiple", "from 1 to 100"),
    ([_item(start="2026-11-11T00:00:00")], "promotions[0].start", "with an offset"),
    ([_item(start="tomorrow")], "promotions[0].start", "ISO 8601"),
    ([_item(end="2026-12-30T00:00:00+08:00")], "promotions[0].end", "at most 31 days"),
    ([_item()] * 51, "promotions", "at most 50"),
    ([{**_item(), "multiple": 3}], "promotions[0].multiple", "unknown field"),
    ("not a list", "promotions", "must be a list"),
])
def test_a_bad_campaign_names_its_field(items, field, words) -> None:
    bad = promotions.problems(items)
    assert bad and bad[0][0] == field and words in bad[0][1], bad


def test_encoding_round_trips_and_reads_the_window_at_event_time() -> None:
    items = [_item(), _item("2026-11-11T12:00:00+08:00", "2026-11-11T18:00:00+08:00", 8)]
    assert promotions.problems(items) == []
    text = promotions.encode(promotions.parse(items))
    back = promotions.from_text(text)
    assert [(p.start, p.end, p.expected_multiple) for p in back] == [
        (p.start, p.end, p.expected_multiple) for p in promotions.parse(items)]
    us = lambda iso: int(pd.Timestamp(iso).timestamp() * 1_000_000)  # noqa: E731
    assert promotions.promotion_at(text, us("2026-11-10T23:59:59+08:00")) == (False, None)
    assert promotions.promotion_at(text, us("2026-11-11T00:00:00+08:00")) == (True, 5.0)
    assert promotions.promotion_at(text, us("2026-11-11T13:00:00+08:00")) == (True, 8.0)  # overlap: the larger
    assert promotions.promotion_at(text, us("2026-11-12T00:00:00+08:00")) == (False, None)  # end is exclusive
    assert promotions.promotion_at(None, us("2026-11-11T13:00:00+08:00")) == (False, None)


def _payment(merchant: str, when: str, n: int) -> dict:
    return {"event_id": f"promo-{n}", "type": "payment", "occurred_at": when, "merchant_id": merchant,
            "user_id": f"u{n}", "amount": "88.00", "currency": "CNY", "channel": "quick_pay",
            "card": {"fingerprint": f"c{n}", "bin": "622202", "type": "debit", "issuer_country": "CN"}}


def test_replay_reads_a_promotions_file_into_the_store_and_the_features(tmp_path: Path, redis_server) -> None:
    from fengkong.replay.runner import setup

    f = tmp_path / "promotions.csv"
    pd.DataFrame({"merchant_id": ["m-sale", "m-sale"], "start": ["2026-11-11T00:00:00+08:00"] * 2,
                  "end": ["2026-11-12T00:00:00+08:00", "2026-11-11T06:00:00+08:00"],
                  "expected_multiple": [4.0, 9.0], "kind": ["own", "platform"]}).to_csv(f, index=False)
    env = setup(rules_dir=ROOT / "rules", redis_url=redis_server.url, prefix="tpromo", promotions_file=f)
    try:
        stored = env.store.profiles.get_promotions("m-sale")
        assert [p.expected_multiple for p in stored] == [9.0, 4.0]  # by start, then end
        inside = env.store.process(parse_event(_payment("m-sale", "2026-11-11T10:00:00+08:00", 1))).features
        early = env.store.process(parse_event(_payment("m-sale", "2026-11-11T03:00:00+08:00", 2))).features
        after = env.store.process(parse_event(_payment("m-sale", "2026-11-12T10:00:00+08:00", 3))).features
        other = env.store.process(parse_event(_payment("m-plain", "2026-11-11T10:00:00+08:00", 4))).features
    finally:
        env.close()
    assert (inside["merchant.in_promotion"], inside["merchant.promotion_multiple"]) == (True, 4.0)
    assert (early["merchant.in_promotion"], early["merchant.promotion_multiple"]) == (True, 9.0)
    assert (after["merchant.in_promotion"], after["merchant.promotion_multiple"]) == (False, None)
    assert (other["merchant.in_promotion"], other["merchant.promotion_multiple"]) == (False, None)


def test_a_bad_promotions_file_names_the_row_and_field(tmp_path: Path) -> None:
    from fengkong.replay.inputs import load_promotions

    f = tmp_path / "p.csv"
    pd.DataFrame({"merchant_id": ["m1", "m2"], "start": ["2026-11-11T00:00:00+08:00"] * 2,
                  "end": ["2026-11-12T00:00:00+08:00", "2026-11-10T00:00:00+08:00"],
                  "expected_multiple": [3, 3]}).to_csv(f, index=False)
    with pytest.raises(MappingError, match=r"p.csv: promotions row 2: end: must be after start"):
        load_promotions(f)
    pd.DataFrame({"merchant_id": ["m1"], "start": ["2026-11-11T00:00:00+08:00"]}).to_csv(f, index=False)
    with pytest.raises(MappingError, match="missing: end, expected_multiple"):
        load_promotions(f)
