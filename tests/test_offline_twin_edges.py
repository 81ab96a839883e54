"""Corners of the offline twin found by splitting histories (the Dask twin's parts).

A part of a history ends its occurrences of some kind long before its last rows; a
query after the last occurrence once took its key past its own entity's keys and
counted the next entity's occurrences too. Held here against the counts by hand
and against the online store's.
"""

from __future__ import annotations

import pandas as pd

from fengkong.events import flat_to_dict, parse_event
from fengkong.features.offline import offline_features


def _history() -> pd.DataFrame:
    rows = [  # two sign-ups on two /24s, then logins long after the last sign-up's position
        {"event_id": "s1", "type": "signup", "occurred_at": "2026-11-25T10:00:00+08:00", "user_id": "u1",
         "ip": "1.1.1.5"},
        {"event_id": "s2", "type": "signup", "occurred_at": "2026-11-25T10:01:00+08:00", "user_id": "u2",
         "ip": "2.2.2.5"},
    ]
    rows += [{"event_id": f"l{i}", "type": "login", "occurred_at": f"2026-11-25T10:{2 + i:02d}:00+08:00",
              "user_id": f"v{i}", "ip": "3.3.3.5"} for i in range(4)]
    rows.append({"event_id": "q", "type": "login", "occurred_at": "2026-11-25T11:00:00+08:00", "user_id": "u3",
                 "ip": "1.1.1.9"})
    return pd.DataFrame(rows)


def test_a_query_after_the_last_occurrence_counts_only_its_own_entity(ipintel, list_specs, store) -> None:
    events = _history()
    f = offline_features(events, ipintel=ipintel, lists=list_specs)
    got = f["ip.subnet_signups_24h"].tolist()
    assert got == [0, 0, 0, 0, 0, 0, 1]  # q: the one sign-up on 1.1.1.0/24, not 2.2.2.0/24's too
    online = [store.process(parse_event(flat_to_dict(r))).features["ip.subnet_signups_24h"]
              for r in events.astype(object).where(events.notna(), None).to_dict("records")]
    assert online == got


def test_a_users_amount_moments_do_not_carry_other_users_rounding(ipintel, list_specs) -> None:
    """Running sums restart per entity: a user with large, spread amounts coded first no
    longer drowns the small differences of the users after it. (No payment carries a
    card: the top card's volume is then 0, where it once failed.)"""
    import numpy as np

    rows = [{"event_id": f"b{i}", "type": "payment", "occurred_at": f"2026-11-25T09:{i:02d}:00+08:00",
             "merchant_id": "m1", "user_id": "big", "amount": 400_000_000 + (i % 7) * 90_000_000,
             "channel": "quick_pay"} for i in range(50)]
    small = [10_000, 10_100, 10_200, 10_300]
    rows += [{"event_id": f"s{i}", "type": "payment", "occurred_at": f"2026-11-25T10:{i:02d}:00+08:00",
              "merchant_id": "m1", "user_id": "small", "amount": a, "channel": "quick_pay"}
             for i, a in enumerate(small)]
    f = offline_features(pd.DataFrame(rows), ipintel=ipintel, lists=list_specs)
    last = f.iloc[-1]
    want_std = float(np.std(np.array(small[:3]) / 100, ddof=1))  # 1.0 yuan
    assert abs(last["user.amount_std"] - want_std) < 1e-9
    assert abs(last["user.amount_mean"] - 101.0) < 1e-9
