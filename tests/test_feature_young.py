"""Ages and "new" flags are missing while the history is younger than their window, online
and in the offline twin alike, and present (as without a start) once it is older."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eventgen import dense_events
from fengkong.features.young import YOUNG_FEATURES, censor, start_us_of
from test_feature_twin import _offline, _same, _stream

WINDOW_US = 90 * 86_400_000_000


def _ts_us(events: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(events["occurred_at"], utc=True, format="ISO8601").astype("datetime64[us, UTC]").astype("int64")


def test_every_age_like_feature_has_its_window() -> None:
    names = dict(YOUNG_FEATURES)
    for name in ("card.age_days", "user.age_days", "merchant.age_days", "user.is_first_seen", "user.is_new_device",
                 "user.device_first_seen_min", "card.is_new_device_1h", "card.days_since_first_seen",
                 "user.account_age_days", "user.country_mismatch_usual"):
        assert names[name] == WINDOW_US, name
    f = {"card.age_days": 3.0, "card.count_1h": 2}
    censor(f, ts_us=WINDOW_US - 1, start_us=0)
    assert f["card.age_days"] is None and f["card.count_1h"] == 2
    f = {"card.age_days": 3.0}
    censor(f, ts_us=WINDOW_US, start_us=0)
    assert f["card.age_days"] == 3.0


def test_history_start_is_the_first_event() -> None:
    assert start_us_of(pd.Series(["2026-01-01T08:00:00+08:00", "2025-12-31T23:00:00Z"])) == \
        pd.Timestamp("2025-12-31T23:00:00Z").value // 1000
    assert start_us_of(pd.Series([], dtype=object)) is None


def test_young_history_online_equals_twin_missing_then_present(store, redis_client, prefix, ipintel, list_specs):
    events = dense_events(4_000, seed=5, days=20)
    ts = _ts_us(events)
    start = int(ts.quantile(0.5)) - WINDOW_US  # the windows close halfway through the stream
    store.history_start_us = start
    online = _stream(store, redis_client, prefix, events)
    offline = _offline(events, ipintel, list_specs, history_start_us=start).set_index("event.event_id", drop=False)
    assert len(online) == len(offline) > 1_000
    bad = [(eid, name) for eid, feats in online.items() for name, value in feats.items()
           if not _same(name, value, offline.loc[eid, name])]
    assert not bad, bad[:5]
    frame = pd.DataFrame.from_dict(online, orient="index")
    young = (ts.set_axis(events["event_id"]).loc[frame.index] - start < WINDOW_US).to_numpy()
    assert young.any() and (~young).any()
    for name in ("card.age_days", "user.age_days", "user.is_first_seen", "user.is_new_device",
                 "user.device_first_seen_min"):
        col = frame[name]
        assert col[young].isna().all(), name
        assert col[~young].notna().any(), name
    # the merchant's onboarding date is a profile fact, not history: its age stays
    m1 = (frame["event.merchant_id"] == "m1").to_numpy() & young
    assert m1.any() and frame.loc[m1, "merchant.age_days"].notna().all()
    # without a start, the same young events have ages
    plain = _offline(events, ipintel, list_specs).set_index("event.event_id")
    ages = np.asarray(plain.loc[frame.index[young], "user.age_days"], dtype=float)
    assert np.isfinite(ages).any()
