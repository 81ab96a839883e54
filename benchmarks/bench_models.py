"""Single-event scoring cost per model: ONNX Runtime (what fengkong serves with) against
scikit-learn's own single-row call, and the whole ``ModelRuntime.score``, in one run.

Trains on a small simulated history (so the features are the real ones; training
converts each model to ONNX and checks it, as `fengkong train` does), loads the
artifacts as the service does (one single-threaded ONNX Runtime session per model),
then scores held-out events one at a time. Last line: one JSON object with
onnx_merchant_p99_us, onnx_txn_p99_us, onnx_habit_p99_us, sklearn_merchant_p99_us,
sklearn_txn_p99_us, sklearn_habit_p99_us (plus p50s, runtime_score_* for the whole
``ModelRuntime.score`` call, and *_max_abs_diff: ONNX against scikit-learn on all the
held-out rows).

    python benchmarks/bench_models.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[Any], Any], rows: Sequence[Any] | np.ndarray) -> tuple[float, float]:
    """p50 and p99 in microseconds of ``fn(row)`` over the rows (the first 5% are warm-up)."""
    ts = []
    for x in rows:
        t = time.perf_counter_ns()
        fn(x)
        ts.append(time.perf_counter_ns() - t)
    a = np.asarray(ts[len(ts) // 20:]) / 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="events timed per model")
    args = ap.parse_args()

    from fengkong.models.merchant_model import design_matrix
    from fengkong.models.onnx_model import load_model
    from fengkong.models.runtime import ModelRuntime
    from fengkong.models.transaction_model import fill, habit_vectorizer, txn_vectorizer
    from fengkong.simulation import SimConfig, run
    from fengkong.training.merchant_features import daily_features
    from fengkong.training.train import train_merchants, train_transactions, transaction_frame

    sim = run(SimConfig(seed=11, days=30, shoppers=6000, merchants=300))
    root = Path(tempfile.mkdtemp(prefix="fk-bench-art-"))
    m_art = train_merchants(sim.events, profiles=sim.merchants, root=root, n_estimators=100)
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=ROOT / "rules" / "lists")
    # HistGradientBoosting, the kind these figures have always named (`fengkong train` compares kinds)
    t_art = train_transactions(feats, root=root, max_iter=200, habit_trees=100, kinds=("hgb",))
    m_est, t_est = m_art.load_estimator(), t_art.load_estimator()
    daily = daily_features(sim.events, profiles=sim.merchants)
    Xm = design_matrix(daily[daily["count"] >= 5])[: args.n]
    held = feats.tail(args.n)
    params = t_art.meta["params"]  # the columns each model was trained on (empty/constant ones are dropped)
    Xt = txn_vectorizer(params["txn_features"]).frame(held)
    Xh = fill(habit_vectorizer(params["habit_features"]).frame(held), t_est["habit_medians"])
    forest, risk, habit = load_model(m_art, "forest"), load_model(t_art, "txn_risk"), load_model(t_art, "habit")
    sk_forest, sk_risk, sk_habit = m_est.forest_, t_est["txn_risk"], t_est["habit_anomaly"]
    res: dict[str, float] = {}
    res["onnx_merchant_p50_us"], res["onnx_merchant_p99_us"] = timed(forest.score_one, Xm)
    res["onnx_txn_p50_us"], res["onnx_txn_p99_us"] = timed(risk.score_one, Xt)
    res["onnx_habit_p50_us"], res["onnx_habit_p99_us"] = timed(habit.score_one, Xh)
    res["sklearn_merchant_p50_us"], res["sklearn_merchant_p99_us"] = timed(
        lambda x: sk_forest.score_samples(x[None, :]), Xm[:300])
    res["sklearn_txn_p50_us"], res["sklearn_txn_p99_us"] = timed(lambda x: sk_risk.predict_proba(x[None, :]), Xt[:300])
    res["sklearn_habit_p50_us"], res["sklearn_habit_p99_us"] = timed(
        lambda x: sk_habit.score_samples(x[None, :]), Xh[:300])
    rt = ModelRuntime.load(root)
    assert not rt.problems, rt.status
    dicts = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
             for r in held.to_dict("records")]
    res["runtime_score_p50_us"], res["runtime_score_p99_us"] = timed(rt.score, dicts)
    res["onnx_merchant_max_abs_diff"] = float(np.max(np.abs(forest.score_many(Xm) - sk_forest.score_samples(Xm))))
    res["onnx_txn_max_abs_diff"] = float(np.max(np.abs(risk.score_many(Xt) - sk_risk.predict_proba(Xt)[:, 1])))
    res["onnx_habit_max_abs_diff"] = float(np.max(np.abs(habit.score_many(Xh) - sk_habit.score_samples(Xh))))
    for k, v in res.items():
        print(f"{k:32s} {v:.3g}" if "diff" in k else f"{k:32s} {v:.1f}")
    print(json.dumps({k: round(v, 12 if "diff" in k else 3) for k, v in res.items()}))


if __name__ == "__main__":
    main()
