"""Merchant and transaction models: ONNX scoring equals scikit-learn, artifacts, runtime."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.models import artifacts
from fengkong.models.merchant_model import MerchantAnomalyModel, design_matrix
from fengkong.models.onnx_model import TOLERANCE, OnnxModel, load_model
from fengkong.models.runtime import ModelRuntime
from fengkong.models.transaction_model import fit_txn_model, habit_vectorizer, txn_vectorizer
from fengkong.training.merchant_features import FEATURES, daily_features
from fengkong.training.onnx_export import OnnxMismatchError, checked, export, hgb_to_onnx
from fengkong.models.calibration import Calibration
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
    # HistGradientBoosting only: these tests read its graph (hgb_to_onnx); the kinds compared are
    # tested in test_models_selection.py
    t = train_transactions(txn_frame, root=root, max_iter=40, habit_trees=30, kinds=("hgb",))
    return root, m, t


def _tv(art: artifacts.Artifact):
    """The vectorizer of the features the artifact's txn_risk was trained on."""
    return txn_vectorizer(art.meta["params"]["txn_features"])


def _hv(art: artifacts.Artifact):
    return habit_vectorizer(art.meta["params"]["habit_features"])


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


def test_onnx_forest_equals_sklearn_on_held_out_rows(sim) -> None:
    events, merchants = sim
    f = daily_features(events, profiles=merchants)
    cut = sorted(f["day"].unique())[14]
    model = MerchantAnomalyModel(n_estimators=40).fit(f[f["day"] < cut])
    held = f[(f["day"] >= cut) & (f["count"] >= 5)]
    X = design_matrix(held)
    spec = export("forest", model.forest_, X)
    onnx_model = OnnxModel(spec.model, output=spec.output, column=spec.column, n_features=spec.n_features)
    ref = model.forest_.score_samples(X)
    assert len(X) > 100 and spec.validated_rows == len(X)
    assert np.max(np.abs(onnx_model.score_many(X) - ref)) < TOLERANCE
    assert max(abs(onnx_model.score_one(x) - r) for x, r in zip(X[:200], ref[:200])) < TOLERANCE
    # the save-time check measured the same thing, and keeps rows to check again at load
    assert spec.max_abs_diff < TOLERANCE and len(spec.check_X) == min(len(X), 256)
    assert np.array_equal(spec.check_expected, model.forest_.score_samples(spec.check_X))


def test_onnx_txn_risk_and_habit_equal_sklearn(trained, txn_frame) -> None:
    root, _, t = trained
    est = t.load_estimator()
    held = txn_frame[txn_frame["day"] > pd.to_datetime(t.meta["training_window"]["to"]).date()]
    X = _tv(t).frame(held)
    assert np.isnan(X).any(), "held-out rows should exercise missing values"
    risk = load_model(t, "txn_risk")
    ref = est["txn_risk"].predict_proba(X)[:, 1]
    assert np.max(np.abs(risk.score_many(X) - ref)) < TOLERANCE
    assert max(abs(risk.score_one(x) - r) for x, r in zip(X[:300], ref[:300])) < TOLERANCE
    H = np.where(np.isnan(hv := _hv(t).frame(held)), est["habit_medians"], hv)
    habit = load_model(t, "habit")
    assert np.max(np.abs(habit.score_many(H) - est["habit_anomaly"].score_samples(H))) < TOLERANCE
    # the artifact records the check made at save, on every validation row
    for name in ("txn_risk", "habit"):
        entry = t.meta["onnx"][name]
        assert entry["validated_rows"] == len(held) and entry["max_abs_diff"] <= entry["tolerance"] == TOLERANCE


def test_a_conversion_that_disagrees_is_not_saved(trained, txn_frame) -> None:
    """`checked` compares ONNX Runtime with scikit-learn's answers: another model's answers fail it."""
    _, _, t = trained
    est = t.load_estimator()
    X = _tv(t).frame(txn_frame.tail(500))
    y = txn_frame["is_fraud"].to_numpy(dtype=bool)
    other = fit_txn_model(_tv(t).frame(txn_frame), ~y, max_iter=10)
    data = hgb_to_onnx(est["txn_risk"])
    onnx_model = OnnxModel(data, output="probability", column=0, n_features=X.shape[1])
    with pytest.raises(OnnxMismatchError, match=r"txn_risk: the ONNX conversion differs from scikit-learn on 500 rows"):
        checked("txn_risk", onnx_model, data, X, other.predict_proba(X)[:, 1])
    assert checked("txn_risk", onnx_model, data, X, est["txn_risk"].predict_proba(X)[:, 1]).validated_rows == 500


def test_hgb_graph_branches_on_float64_like_sklearn() -> None:
    """Amounts near 1,000,000.00 in cents: float32 cannot tell neighbours apart (a graph
    taking float32, as skl2onnx's does, scores them 0.7 away); this graph compares in float64."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    amount = 1_000_000 + np.round(rng.uniform(0, 2, size=4000), 2)
    X = np.column_stack([amount, rng.normal(size=4000)])
    X[::9, 1] = np.nan
    y = ((amount * 100).round().astype(int) % 2 == 0) ^ (rng.random(4000) < 0.1)
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
    rounded = X.astype(np.float32).astype(np.float64)
    assert np.max(np.abs(model.predict_proba(rounded)[:, 1] - model.predict_proba(X)[:, 1])) > 0.1
    spec = export("dense", model, X)
    assert spec.max_abs_diff < TOLERANCE


def test_forest_on_feature_subsets_and_hgb_on_missing_values_unseen_in_training() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 6))
    y = X[:, 0] + X[:, 2] + rng.normal(size=3000) > 0.5
    held = rng.normal(size=(800, 6)) * np.array([1, 1, 1, 1e6, 1, 1])
    holes = held.copy()
    holes[rng.random(800) < 0.3, 2] = np.nan  # column 2 had no missing value in training
    hgb = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X, y)
    forest = IsolationForest(n_estimators=20, max_features=0.5, max_samples=300, bootstrap=True,
                             random_state=0).fit(X)
    for name, model, rows in (("hgb", hgb, holes), ("forest", forest, held)):
        spec = export(name, model, rows)
        onnx_model = OnnxModel(spec.model, output=spec.output, column=spec.column, n_features=6)
        ref = model.predict_proba(rows)[:, 1] if name == "hgb" else model.score_samples(rows)
        assert np.max(np.abs(onnx_model.score_many(rows) - ref)) < TOLERANCE, name


def _copy(art: artifacts.Artifact, root: Path) -> Path:
    import shutil

    dest = root / art.kind / art.path.name
    shutil.copytree(art.path, dest)
    return dest


def _refused(root: Path, kind: str) -> str:
    rt = ModelRuntime.load(root)
    assert kind not in rt.loaded and not rt.available
    assert rt.status.startswith("rules-only") and "refused" in rt.status
    return rt.status


def test_artifact_whose_onnx_file_is_missing_is_refused(trained, tmp_path: Path) -> None:
    _, _, t = trained
    (_copy(t, tmp_path) / "habit.onnx").unlink()
    assert "habit.onnx is missing" in _refused(tmp_path, "transactions")


def test_artifact_written_before_onnx_serving_is_refused(trained, tmp_path: Path) -> None:
    _, m, _ = trained
    path = _copy(m, tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    del meta["onnx"]
    (path / "forest.onnx").unlink()
    (path / "meta.json").write_text(json.dumps(meta))
    status = _refused(tmp_path, "merchants")
    assert "no ONNX model 'forest'" in status and "fengkong train merchants" in status


def test_artifact_whose_onnx_disagrees_is_refused(trained, txn_frame, tmp_path: Path) -> None:
    _, _, t = trained
    path = _copy(t, tmp_path)
    y = txn_frame["is_fraud"].to_numpy(dtype=bool)
    other = hgb_to_onnx(fit_txn_model(_tv(t).frame(txn_frame), y, max_iter=5))
    (path / "txn_risk.onnx").write_bytes(other)
    assert "txn_risk.onnx is not the file saved with it" in _refused(tmp_path, "transactions")
    # the same file with its hash recorded: the check rows saved with the artifact still catch it
    meta = json.loads((path / "meta.json").read_text())
    meta["onnx"]["txn_risk"]["sha256"] = hashlib.sha256(other).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))
    status = _refused(tmp_path, "transactions")
    assert "txn_risk.onnx disagrees with scikit-learn on its 256 check rows" in status


def test_runtime_scores_one_event_like_the_batch(trained, txn_frame) -> None:
    root, m, t = trained
    rt = ModelRuntime.load(root)
    assert rt.available and set(rt.loaded) == {"merchants", "transactions"}
    assert t.version in rt.status
    est = t.load_estimator()
    rows = txn_frame.head(50)
    X = _tv(t).frame(rows)
    ref = est["txn_risk"].predict_proba(X)[:, 1]
    # the served txn_risk is the ONNX score through the artifact's stored calibration map
    cal = Calibration.from_params(t.meta["params"]["calibration"])
    assert rt.calibration is not None
    ref = cal.apply(ref)
    H = _hv(t).frame(rows)
    ref_habit = -est["habit_anomaly"].score_samples(np.where(np.isnan(H), est["habit_medians"], H))
    for (_, row), r, rh in zip(rows.iterrows(), ref, ref_habit):
        features = {k: (None if (isinstance(v, float) and np.isnan(v)) else v) for k, v in row.items()}
        out = rt.score(features)
        assert abs(out["model.txn_risk"] - r) < TOLERANCE
        assert out["model.txn_precision"] == pytest.approx(float(cal.precision_at(out["model.txn_risk"])))
        assert 0 < out["model.txn_share"] <= 1
        assert abs(out["model.habit_anomaly"] - rh) < TOLERANCE
        assert out["model.merchant_anomaly"] is None
    assert rt.score({"event.type": "payment", "merchant.anomaly": 0.8})["model.merchant_anomaly"] == 0.8


def test_serving_loads_and_scores_without_sklearn_engine_or_training(trained) -> None:
    """What the service imports to score: ONNX Runtime and the artifacts' ONNX models, not
    scikit-learn or the onnx package (no pickle, no version coupling), nor the rules engine or
    the training package."""
    root, _, _ = trained
    code = (
        "import sys; from pathlib import Path\n"
        "from fengkong.models.runtime import ModelRuntime\n"
        "rt = ModelRuntime.load(Path(sys.argv[1]))\n"
        "assert set(rt.loaded) == {'merchants', 'transactions'}, rt.status\n"
        "out = rt.score({'event.type': 'payment', 'event.amount': 10.0})\n"
        "assert 0 <= out['model.txn_risk'] <= 1, out\n"
        "assert 'onnxruntime' in sys.modules\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'onnx')\n"
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
        assert all(meta["libraries"][lib] not in ("", "unknown") for lib in ("onnx", "onnxruntime"))
        for entry in meta["onnx"].values():
            assert entry["file"] in meta["files"] and entry["check_file"] in meta["files"]
        assert meta["metrics"]
    assert "valid_txn_average_precision" in t.meta["metrics"]
    assert set(m.meta["onnx"]) == {"forest"} and set(t.meta["onnx"]) == {"txn_risk", "habit"}


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


def test_txn_risk_is_calibrated_on_later_days_with_a_reliability_table(trained, txn_frame) -> None:
    """Training fits a Platt map on the later training days (a model of the earlier days scores
    them), records it with its reliability table, and the map equals scikit-learn's
    CalibratedClassifierCV on those days."""
    _, _, t = trained
    cal = t.meta["params"]["calibration"]
    assert "skipped" not in cal, cal
    assert cal["method"] == "sigmoid" and cal["a"] > 0  # increasing: the ranking is kept
    assert cal["fit_days"][1] < cal["calibration_days"][0] <= cal["calibration_days"][1] <= t.meta["training_window"]["to"]
    assert cal["check_max_abs_diff"] < 1e-9
    rel = cal["reliability"]
    assert sum(r["count"] for r in rel) == cal["calibration_rows"]
    assert sum(r["observed"] * r["count"] for r in rel) == pytest.approx(cal["calibration_positives"])
    assert [r["mean_predicted"] for r in rel] == sorted(r["mean_predicted"] for r in rel)
    # calibrated: the predicted total is close to the observed total on the days it was fit on
    predicted = sum(r["mean_predicted"] * r["count"] for r in rel)
    assert abs(predicted - cal["calibration_positives"]) <= 0.25 * cal["calibration_positives"] + 2
    c = Calibration.from_params(cal)
    p = np.asarray(c.curve_precision)
    assert (np.diff(p) >= -1e-12).all() and (np.diff(c.curve_share) <= 1e-12).all()
    assert c.max_precision == pytest.approx(p.max(), rel=0.5)
    assert "valid_txn_reliability" in t.meta["metrics"]
