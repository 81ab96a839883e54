"""Choosing txn_risk's kind: every candidate exports to ONNX equal to scikit-learn, and a
training records each candidate's validation figures and keeps the best by its figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fengkong.models.onnx_model import TOLERANCE, OnnxModel
from fengkong.models.runtime import ModelRuntime
from fengkong.training.candidates import KINDS, SELECTED_BY, compare, fit_kind
from fengkong.training.onnx_export import export
from fengkong.training.train import train_transactions, transaction_frame

ROOT = Path(__file__).resolve().parents[1]


def _data(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales (amounts in the hundreds of thousands), missing values
    that carry information, and an all-missing column (as an out-of-fold block can have)."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.lognormal(8, 2, n), rng.normal(size=n), rng.integers(0, 2, n).astype(float),
                         rng.normal(size=n), np.full(n, np.nan)])
    X[rng.uniform(size=n) < 0.25, 1] = np.nan
    logit = -3 + 0.4 * np.log(X[:, 0]) - 2.0 + np.where(np.isnan(X[:, 1]), 1.5, X[:, 1]) + X[:, 2]
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return X, y


@pytest.mark.parametrize("kind", KINDS)
def test_each_candidate_exports_to_onnx_equal_to_sklearn(kind: str) -> None:
    X, y = _data()
    est = fit_kind(kind, X[:1000], y[:1000], max_iter=30)
    held = X[1000:].copy()
    held[:5, 0] = [1e6 + 0.01, 0.0, np.nan, 123456.78, 1e-3]  # extremes and a missing amount
    spec = export(f"test {kind}", est, held)
    assert spec.max_abs_diff <= TOLERANCE
    onnx_model = OnnxModel(spec.model, output=spec.output, column=spec.column, n_features=spec.n_features)
    expected = est.predict_proba(held)[:, 1]
    got = onnx_model.score_many(held)
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    assert abs(onnx_model.score_one(held[2]) - expected[2]) <= TOLERANCE  # the missing amount, one row
    assert np.std(expected) > 0.01  # the model ranks: equality is not that of two constants


def test_compare_keeps_the_kind_with_the_highest_validation_figure() -> None:
    X, y = _data(2400, seed=1)
    choice = compare(X[:1600], y[:1600], X[1600:], y[1600:], max_iter=30,
                     card_precision=lambda rows: float(rows["score"].rank().corr(rows["is_fraud"].astype(float))),
                     valid_rows=__import__("pandas").DataFrame({"is_fraud": y[1600:]}))
    assert set(choice.figures) == set(KINDS)
    ap = {k: f[SELECTED_BY] for k, f in choice.figures.items()}
    assert choice.selected == max(ap, key=ap.get)
    assert all(0 < f["valid_roc_auc"] <= 1 and "valid_topk_card_precision" in f for f in choice.figures.values())
    assert choice.selected in choice.reason and f"{choice.selected} *" in choice.table()


@pytest.fixture(scope="module")
def history():
    from fengkong.simulation import SimConfig, run

    sim = run(SimConfig(seed=4, days=16, shoppers=900, merchants=40))
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=ROOT / "rules" / "lists")
    return sim, feats


def test_training_records_every_candidate_and_serves_the_kept_one(history, tmp_path: Path) -> None:
    sim, feats = history
    art = train_transactions(feats, root=tmp_path, max_iter=40, habit_trees=20, labels="oracle", events=sim.events,
                             card_precision=lambda rows: float(rows.nlargest(20, "score")["is_fraud"].mean()))
    meta = json.loads((art.path / "meta.json").read_text())
    m = meta["metrics"]
    assert set(m["candidates"]) == set(KINDS) and m["selected_by"] == SELECTED_BY
    figures = {k: f[SELECTED_BY] for k, f in m["candidates"].items()}
    assert m["selected"] == max(figures, key=figures.get) == meta["params"]["txn_model"]
    assert all(0 <= f["valid_topk_card_precision"] <= 1 for f in m["candidates"].values())
    for kind in KINDS:
        assert kind in m["table"]
    assert m["valid_txn_average_precision"] == pytest.approx(figures[m["selected"]])
    # serving loads the kept kind through ONNX Runtime and scores as scikit-learn does
    est = art.load_estimator()["txn_risk"]
    rt = ModelRuntime.load(tmp_path)
    assert "transactions" in rt.loaded, rt.status
    names = meta["params"]["txn_features"]
    valid = feats[feats["day"] > feats["day"].min() + (feats["day"].max() - feats["day"].min()) * 0.7].head(40)
    X = rt.transactions.risk_vectorizer.frame(valid)
    ref = est.predict_proba(X)[:, 1]
    if rt.calibration is not None:  # the kept kind's Platt map, fit on the later training days, after the graph
        assert meta["params"]["calibration"]["kind"] == m["selected"]
        ref = rt.calibration.apply(ref)
    for (_, row), r in zip(valid.iterrows(), ref):
        features = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items() if k in names}
        assert abs(rt.score({**features, "event.type": "payment"})["model.txn_risk"] - r) < TOLERANCE
