"""Nightly rescoring at scale: N payments -> daily features, anomaly, grades, Redis.

Generates the history directly with numpy (the simulator is not built for 10M rows):
merchants of different sizes over --days days, payments plus refunds, withdrawals and
chargebacks, a few cash-out-like merchants. Times the job itself (split by merchant,
daily features, IsolationForest scores, grade policy, Redis write); generating and
fitting the model are not timed. Last line: one JSON object.

    python benchmarks/bench_rescore.py --payments 10000000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def generate(payments: int, merchants: int, days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weight = rng.pareto(1.2, merchants) + 0.05
    m = rng.choice(merchants, size=payments, p=weight / weight.sum())
    start = pd.Timestamp("2025-10-01T00:00:00+08:00").value // 1000
    t = start + rng.integers(0, days * 86_400_000_000, size=payments)
    amount = np.round(rng.lognormal(5.0, 1.0, payments) * 100).astype(np.int64) + 100
    n_out = payments // 20
    kinds = np.concatenate([np.zeros(payments, dtype=np.int8), rng.choice([1, 2, 3], n_out, p=[0.5, 0.45, 0.05])])
    idx = np.concatenate([np.arange(payments), rng.integers(0, payments, n_out)])
    mm = m[idx]
    tt = t[idx] + np.where(kinds > 0, rng.integers(3_600_000_000, 5 * 86_400_000_000, len(idx)), 0)
    cards = rng.integers(0, payments // 4 + 1, len(idx))
    merchant_names = pd.Categorical.from_codes(mm, [f"m_{i:06d}" for i in range(merchants)])
    type_names = pd.Categorical.from_codes(kinds, ["payment", "refund", "withdrawal", "chargeback"])
    card_type = pd.Categorical.from_codes(rng.choice(3, len(idx), p=[0.4, 0.55, 0.05]), ["credit", "debit", "prepaid"])
    return pd.DataFrame({
        "merchant_id": merchant_names,
        "type": type_names,
        "occurred_at": pd.to_datetime(tt, unit="us", utc=True),
        "amount": np.concatenate([amount, amount[idx[payments:]]]),
        "card_type": card_type,
        "card_fingerprint": cards,
        "currency": "CNY",
    })


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--payments", type=int, default=1_000_000)
    ap.add_argument("--merchants", type=int, default=0, help="default: payments / 500")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-redis", action="store_true")
    args = ap.parse_args()
    merchants = args.merchants or max(50, args.payments // 500)

    from fengkong.features.embedded_redis import EmbeddedRedis
    from fengkong.features.ipintel import IpIntel
    from fengkong.features.online import OnlineStore
    from fengkong.models.merchant_model import MerchantAnomalyModel
    from fengkong.training.grade_policy import GradePolicy
    from fengkong.training.merchant_features import daily_features
    from fengkong.training.rescore import rescore, write_to_store

    t0 = time.perf_counter()
    events = generate(args.payments, merchants, args.days, args.seed)
    print(f"generated {len(events):,} events ({args.payments:,} payments, {merchants:,} merchants) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    sample_merchants = events["merchant_id"].cat.categories[:: max(1, merchants // 500)]
    sample = events[events["merchant_id"].isin(sample_merchants)]
    model = MerchantAnomalyModel(n_estimators=100).fit(daily_features(sample))
    policy = GradePolicy.load(ROOT / "rules" / "grades" / "grades.yaml")
    server = None if args.no_redis else EmbeddedRedis(persist=False).start()
    try:
        t1 = time.perf_counter()
        result = rescore(events, policy=policy, model=model, parts=args.parts,
                         progress=lambda done, total: print(f"  partition {done}/{total} "
                                                            f"{time.perf_counter() - t1:.1f} s", flush=True))
        t2 = time.perf_counter()
        if server is not None:
            store = OnlineStore(server.client(), ipintel=IpIntel.load(ROOT / "rules" / "lists"))
            write_to_store(store, result.current, policy)
        t3 = time.perf_counter()
    finally:
        if server is not None:
            server.stop()
    print(f"rescore {t2 - t1:.1f} s, redis {t3 - t2:.1f} s; grades: "
          + ", ".join(f"{g} {n:,}" for g, n in result.current["grade"].value_counts().items()), flush=True)
    print(json.dumps({"payments": args.payments, "merchants": int(len(result.current)),
                      "seconds": round(t3 - t1, 2), "rescore_seconds": round(t2 - t1, 2),
                      "redis_seconds": round(t3 - t2, 2), "merchant_days": int(len(result.daily))}))


if __name__ == "__main__":
    main()
