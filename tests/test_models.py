"""Merchant and transaction models: compiled trees equal scikit-learn, artifacts, runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.models import artifacts
from fengkong.models.fast import CompiledTrees, compile_model
from fengkong.models.merchant_model import MerchantAnomalyModel, design_matrix
from fengkong.models.runtime import ModelRuntime
from fengkong.models.transaction_model import habit_vectorizer, txn_vectorizer
from fengkong.training.merchant_features import FEATURES, daily_features
from fengkong.training.train import train_merchants, train_transactions, transaction_frame

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim():
    from fengkong.simulation import SimConfig, run

    s = run(SimConfig(seed=5, days=21, shoppers=1500, merchants=60))
    return s.events, s.merchants


@pytest.fixture(scope="module")
def txn_frame(sim):
    events, merchants = sim
    return transaction_frame(events, profiles=merchants, lists_dir=ROOT / "rules" / "lists")


@pytest.fixture(scope="module")
def trained(sim, txn_frame, tmp_path_factory):
    events, merchants = sim
    root = tmp_path_factory.mktemp("artifacts")
    m = train_merchants(events, profiles=merchants, root=root, n_estimators=30)
    t = train_transactions(txn_frame, root=root, max_iter=40, habit_trees=30)
    return root, m, t


def test_daily_features_columns_and_shares(sim) -> None:
    events, merchants = sim
    f = daily_features(events, profiles=merchants)
    assert list(f.columns) == ["merchant_id", "day", *FEATURES]
    active = f[f["count"] > 0]
    for col in ("credit_share", "round_share", "near_limit_share", "night_share", "top_card_share"):
        assert active[col].between(0, 1).all(), col
    # volume and count agree with a plain groupby of the payments
    pays = events[events["type"] == "payment"]
    assert active["count"].sum() == len(pays)
    assert abs(active["volume"].sum() - pays["amount"].sum() / 100) < 1e-6 * pays["amount"].sum()


def test_cash_out_merchants_score_higher(sim) -> None:
    events, merchants = sim
    f = daily_features(events, profiles=merchants)
    model = MerchantAnomalyModel(n_estimators=50).fit(f)
    f["anomaly"] = model.anomaly_score(f)
    cash = set(merchants.loc[merchants["is_cash_out"], "merchant_id"])
    if not cash:
        pytest.skip("no cash-out merchant in this small history")
    peak = f.groupby("merchant_id")["anomaly"].max()
    assert peak[peak.index.isin(cash)].median() > peak[~peak.index.isin(cash)].median()


def test_compiled_forest_equals_sklearn_on_held_out_rows(sim) -> None:
    events, merchants = sim
    f = daily_features(events, profiles=merchants)
    cut = sorted(f["day"].unique())[14]
    model = MerchantAnomalyModel(n_estimators=40).fit(f[f["day"] < cut])
    held = f[(f["day"] >= cut) & (f["count"] >= 5)]
    X = design_matrix(held)
    c = compile_model(model.forest_)
    ref = model.forest_.score_samples(X)
    assert np.max(np.abs(c.score_many(X) - ref)) < 1e-5
    assert max(abs(c.score_one(x) - r) for x, r in zip(X[:200], ref[:200])) < 1e-5


def test_compiled_hgb_and_habit_equal_sklearn(trained, txn_frame) -> None:
    root, _, t = trained
    est = t.load_estimator()
    held = txn_frame[txn_frame["day"] > pd.to_datetime(t.meta["training_window"]["to"]).date()]
    X = txn_vectorizer().frame(held)
    assert np.isnan(X).any(), "held-out rows should exercise missing values"
    c = CompiledTrees.load(t.file("txn_risk.npz"))
    ref = est["txn_risk"].predict_proba(X)[:, 1]
    assert np.max(np.abs(c.score_many(X) - ref)) < 1e-5
    assert max(abs(c.score_one(x) - r) for x, r in zip(X[:300], ref[:300])) < 1e-5
    H = np.where(np.isnan(hv := habit_vectorizer().frame(held)), est["habit_medians"], hv)
    ch = CompiledTrees.load(t.file("habit.npz"))
    assert np.max(np.abs(ch.score_many(H) - est["habit_anomaly"].score_samples(H))) < 1e-5


def test_runtime_scores_one_event_like_the_batch(trained, txn_frame) -> None:
    root, m, t = trained
    rt = ModelRuntime.load(root)
    assert rt.available and set(rt.loaded) == {"merchants", "transactions"}
    assert t.version in rt.status
    est = t.load_estimator()
    rows = txn_frame.head(50)
    X = txn_vectorizer().frame(rows)
    ref = est["txn_risk"].predict_proba(X)[:, 1]
    for (_, row), r in zip(rows.iterrows(), ref):
        features = {k: (None if (isinstance(v, float) and np.isnan(v)) else v) for k, v in row.items()}
        out = rt.score(features)
        assert abs(out["model.txn_risk"] - r) < 1e-5
        assert 0 < out["model.habit_anomaly"] < 1
        assert out["model.merchant_anomaly"] is None
    assert rt.score({"event.type": "payment", "merchant.anomaly": 0.8})["model.merchant_anomaly"] == 0.8


def test_serving_loads_and_scores_without_sklearn_engine_or_training(trained) -> None:
    """What the service imports to score: the artifacts' compiled trees, not scikit-learn (no
    pickle, no version coupling), nor the rules engine or the training package."""
    root, _, _ = trained
    code = (
        "import sys; from pathlib import Path\n"
        "from fengkong.models.runtime import ModelRuntime\n"
        "rt = ModelRuntime.load(Path(sys.argv[1]))\n"
        "assert set(rt.loaded) == {'merchants', 'transactions'}, rt.status\n"
        "out = rt.score({'event.type': 'payment', 'event.amount': 10.0})\n"
        "assert 0 <= out['model.txn_risk'] <= 1, out\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')\n"
        "             or m.startswith(('fengkong.engine', 'fengkong.training'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_rules_only_without_artifacts(tmp_path: Path) -> None:
    rt = ModelRuntime.load(tmp_path)
    assert not rt.available
    assert rt.status.startswith("rules-only")
    assert rt.score({"event.amount": 10.0}) == {}


def test_artifact_metadata(trained) -> None:
    _, m, t = trained
    for art in (m, t):
        meta = json.loads((art.path / "meta.json").read_text())
        assert meta["features"] and meta["training_window"]["to"]
        assert meta["libraries"]["scikit-learn"]
        assert meta["metrics"]
    assert "valid_txn_average_precision" in t.meta["metrics"]


def test_artifact_with_unknown_feature_is_refused(trained, tmp_path: Path) -> None:
    root, _, t = trained
    bad_root = tmp_path / "bad"
    import shutil

    shutil.copytree(t.path, bad_root / "transactions" / t.path.name)
    meta_path = bad_root / "transactions" / t.path.name / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["features"].append("card.favourite_colour")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(artifacts.ArtifactError, match="card.favourite_colour"):
        artifacts.latest(bad_root, "transactions")
    rt = ModelRuntime.load(bad_root)
    assert not rt.available
    assert "card.favourite_colour" in rt.status and "refused" in rt.status


def test_latest_version_wins(trained) -> None:
    root, m, _ = trained
    assert artifacts.latest(root, "merchants").version == m.version
    older = root / "merchants" / "19990101T000000Z-00000000"
    older.mkdir()
    (older / "meta.json").write_text(json.dumps({**m.meta, "version": older.name}))
    assert artifacts.latest(root, "merchants").version == m.version
