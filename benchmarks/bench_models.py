"""Single-event scoring cost per model: the compiled evaluator fengkong serves with,
scikit-learn's own single-row predict, and ONNX Runtime (if installed), in one run.

Trains on a small simulated history (so the features are the real ones), then
scores held-out events one at a time. Last line: one JSON object with
merchant_model_p99_us, txn_model_p99_us, sklearn_merchant_p99_us, sklearn_txn_p99_us
(plus p50s, habit model, ONNX and the whole ModelRuntime.score call).

    python benchmarks/bench_models.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, rows, repeat: int = 1) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    ts = []
    for _ in range(repeat):
        for x in rows:
            t = time.perf_counter_ns()
            fn(x)
            ts.append(time.perf_counter_ns() - t)
    a = np.asarray(ts[len(ts) // 20:]) / 1000.0  # drop the warm-up
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="events timed per model")
    args = ap.parse_args()

    from fengkong.models.fast import CompiledTrees
    from fengkong.models.merchant_model import design_matrix
    from fengkong.models.runtime import ModelRuntime
    from fengkong.models.transaction_model import txn_vectorizer
    from fengkong.simulation import SimConfig, run
    from fengkong.training.merchant_features import daily_features
    from fengkong.training.train import train_merchants, train_transactions, transaction_frame

    sim = run(SimConfig(seed=11, days=30, shoppers=6000, merchants=300))
    root = Path(tempfile.mkdtemp(prefix="fk-bench-art-"))
    m_art = train_merchants(sim.events, profiles=sim.merchants, root=root, n_estimators=100)
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=ROOT / "rules" / "lists")
    t_art = train_transactions(feats, root=root, max_iter=200, habit_trees=100)
    m_est, t_est = m_art.load_estimator(), t_art.load_estimator()
    daily = daily_features(sim.events, profiles=sim.merchants)
    Xm = design_matrix(daily[daily["count"] >= 5])[: args.n]
    held = feats.tail(args.n)
    Xt = txn_vectorizer().frame(held)
    mc = CompiledTrees.load(m_art.file("forest.npz"))
    tc = CompiledTrees.load(t_art.file("txn_risk.npz"))
    res: dict[str, float | None] = {}
    res["merchant_model_p50_us"], res["merchant_model_p99_us"] = timed(mc.score_one, Xm)
    res["txn_model_p50_us"], res["txn_model_p99_us"] = timed(tc.score_one, Xt)
    res["sklearn_merchant_p50_us"], res["sklearn_merchant_p99_us"] = timed(
        lambda x: m_est.forest_.score_samples(x[None, :]), Xm[:300])
    res["sklearn_txn_p50_us"], res["sklearn_txn_p99_us"] = timed(
        lambda x: t_est["txn_risk"].predict_proba(x[None, :]), Xt[:300])
    rt = ModelRuntime.load(root)
    dicts = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
             for r in held.to_dict("records")]
    res["runtime_score_p50_us"], res["runtime_score_p99_us"] = timed(rt.score, dicts)
    try:
        from fengkong.models.fast import onnx_session

        so = onnx_session(m_est.forest_, Xm.shape[1])
        st = onnx_session(t_est["txn_risk"], Xt.shape[1])
        name_m, name_t = so.get_inputs()[0].name, st.get_inputs()[0].name
        Xm32, Xt32 = Xm.astype(np.float32), Xt.astype(np.float32)
        res["onnx_merchant_p50_us"], res["onnx_merchant_p99_us"] = timed(
            lambda x: so.run(None, {name_m: x[None, :]}), Xm32)
        res["onnx_txn_p50_us"], res["onnx_txn_p99_us"] = timed(lambda x: st.run(None, {name_t: x[None, :]}), Xt32)
        onnx_p = st.run(None, {name_t: Xt32})[1][:, 1]
        res["onnx_txn_max_abs_diff"] = float(np.max(np.abs(onnx_p - t_est["txn_risk"].predict_proba(Xt)[:, 1])))
    except ImportError:
        res["onnx_merchant_p99_us"] = res["onnx_txn_p99_us"] = None
    res["compiled_txn_max_abs_diff"] = float(np.max(np.abs(tc.score_many(Xt) - t_est["txn_risk"].predict_proba(Xt)[:, 1])))
    for k, v in res.items():
        print(f"{k:32s} {v if v is None else round(v, 3)}")
    print(json.dumps({k: (None if v is None else round(v, 3 if 'diff' not in k else 12)) for k, v in res.items()}))


if __name__ == "__main__":
    main()
