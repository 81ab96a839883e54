"""A compact, deterministic event stream that packs entities densely, so every window,
distinct count and baseline of the feature store is exercised within ~20k events.
(The realistic generator is `fengkong simulate`; this one exists to collide.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from fengkong.events import FLAT_COLUMNS

TYPES = ["payment"] * 14 + ["refund", "chargeback", "fraud_report", "withdrawal", "decline",
                            "signup", "login", "card_bind", "settlement"]


def dense_events(n: int = 20_000, seed: int = 7, days: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    # bursty times: uniform background plus clusters (so 10-minute and 1-hour windows fill)
    base = rng.uniform(0, days * 86400, size=n)
    burst_centers = rng.uniform(0, days * 86400, size=n // 200)
    burst = burst_centers[rng.integers(0, len(burst_centers), size=n // 3)] + rng.exponential(120, size=n // 3)
    secs = np.sort(np.concatenate([base[: n - n // 3], burst]))
    secs = np.round(secs, 3)
    # a few exact ties on purpose
    secs[1::997] = secs[0::997][: len(secs[1::997])]
    secs = np.sort(secs)
    types = np.array(TYPES)[rng.integers(0, len(TYPES), size=n)]
    offsets = np.array([8, 8, 8, 8, 0, -5, 9])[rng.integers(0, 7, size=n)]
    times = [
        (start + timedelta(seconds=float(s))).astimezone(timezone(timedelta(hours=int(o)))).isoformat()
        for s, o in zip(secs, offsets)
    ]
    cards = rng.integers(0, 300, size=n)
    users = rng.integers(0, 250, size=n)
    devices = rng.integers(0, 120, size=n)
    merchants = rng.integers(0, 25, size=n)
    ip_pool = [f"113.{a}.{b}.{c}" for a, b, c in rng.integers(1, 254, size=(150, 3))]
    ip_pool += ["52.1.2.3", "185.220.101.7", "8.8.8.8", "10.0.0.1", "2001:db8::1"]
    ips = np.array(ip_pool)[rng.integers(0, len(ip_pool), size=n)]
    amounts = np.where(
        rng.random(n) < 0.2,
        rng.integers(1, 60, size=n) * 10_000,  # round amounts
        rng.lognormal(9, 1.2, size=n).astype(np.int64) + 1,
    )
    card_types = np.array(["credit", "debit", "prepaid"])[cards % 3]
    countries = np.array(["CN", "CN", "US", "HK"])[cards % 4]
    rows = {
        "event_id": [f"e{i}" for i in range(n)],
        "type": types,
        "occurred_at": times,
        "merchant_id": [f"m{m}" for m in merchants],
        "user_id": [f"u{u}" for u in users],
        "amount": amounts,
        "currency": "CNY",
        "channel": np.array(["quick_pay", "online_banking", "wallet", "pos"])[rng.integers(0, 4, size=n)],
        "card_fingerprint": [f"c{c}" for c in cards],
        "card_bin": [f"{622000 + c % 50}" for c in cards],
        "card_type": card_types,
        "card_issuer_country": countries,
        "ip": ips,
        "device_id": [f"d{x}" for x in devices],
        "merchant_mcc": "5411",
        "refers_to": None,
    }
    df = pd.DataFrame(rows, columns=list(FLAT_COLUMNS))
    # some events lack an entity: no device, no ip, no card, no user
    df.loc[rng.random(n) < 0.05, "device_id"] = None
    df.loc[rng.random(n) < 0.05, "ip"] = None
    df.loc[rng.random(n) < 0.03, "card_fingerprint"] = None
    df.loc[rng.random(n) < 0.03, "user_id"] = None
    signup_like = df["type"].isin(["signup", "login"])
    df.loc[signup_like, "merchant_id"] = None
    df.loc[df["card_fingerprint"].isna(), ["card_bin", "card_type", "card_issuer_country"]] = None
    return df
