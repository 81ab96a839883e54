"""Training on an export without IP or device data: features empty (or constant) on every
training row are left out, named in the artifact and the training report, and serving feeds
each model only the features it was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fengkong.models.runtime import ModelRuntime
from fengkong.models.transaction_model import CONSTANT, EMPTY, fit_txn_model, usable_columns
from fengkong.training.train import LABELS, train_transactions, transaction_frame

ROOT = Path(__file__).resolve().parents[1]
#: Features only IP or device data can fill.
IP_DEVICE = ("ip.count_10m", "ip.distinct_users_24h", "ip.is_tor", "device.count_1h", "device.distinct_cards_1h")


@pytest.fixture(scope="module")
def no_ip_device(tmp_path_factory):
    """A small simulated history with the ``ip`` and ``device_id`` columns removed, and its features."""
    from fengkong.simulation import SimConfig, run

    sim = run(SimConfig(seed=3, days=12, shoppers=600, merchants=30))
    events = sim.events.drop(columns=["ip", "device_id"])
    feats = transaction_frame(events, profiles=sim.merchants, lists_dir=ROOT / "rules" / "lists")
    return events, feats


def test_usable_columns_names_empty_and_constant_columns() -> None:
    nan = np.nan
    X = np.array([[nan, 1.0, 1.0, 2.0], [nan, 1.0, nan, 3.0], [nan, 1.0, 1.0, 2.0]])
    names = ["empty", "const", "one_and_missing", "varies"]
    keep, dropped = usable_columns(X, names, missing_counts=True)
    assert keep == ["one_and_missing", "varies"]  # HGB can branch on missing
    assert dropped == {"empty": EMPTY, "const": CONSTANT}
    keep, dropped = usable_columns(X, names, missing_counts=False)  # median-filled: constant
    assert keep == ["varies"] and dropped["one_and_missing"] == CONSTANT


def test_an_all_missing_column_fits_as_if_absent() -> None:
    """scikit-learn's binning fails on an all-NaN column; `fit_txn_model` fits it as unused."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = X[:, 0] > 0.3
    with_empty = np.column_stack([X, np.full(300, np.nan)])
    model = fit_txn_model(with_empty, y, max_iter=10)
    plain = fit_txn_model(X, y, max_iter=10)
    probe = np.column_stack([X[:50], rng.normal(size=50)])
    assert np.allclose(model.predict_proba(probe)[:, 1], plain.predict_proba(X[:50])[:, 1])


@pytest.mark.parametrize("labels", LABELS)
def test_history_without_ip_or_device_trains_and_serves(no_ip_device, tmp_path, labels) -> None:
    events, feats = no_ip_device
    # oracle as the issue's `--labels oracle` run did, with the fused score (its out-of-fold fits) on the rules
    rules = ROOT / "rules" if labels == "oracle" else None
    art = train_transactions(feats, root=tmp_path, max_iter=20, habit_trees=20, labels=labels, events=events,
                             rules_dir=rules)
    params, metrics = art.meta["params"], art.meta["metrics"]
    dropped = params["dropped_features"]
    assert metrics["dropped_features"] == dropped  # the training report says it too
    for name in IP_DEVICE:
        assert dropped["txn_risk"][name] == EMPTY
        assert name not in params["txn_features"] and name not in art.features
    assert dropped["habit"]["ip.country_mismatch_card"] == EMPTY
    assert "event.amount" in params["txn_features"] and "event.amount" in params["habit_features"]
    assert art.meta["onnx"]["txn_risk"]["n_features"] == len(params["txn_features"])
    assert art.meta["onnx"]["habit"]["n_features"] == len(params["habit_features"]) == len(params["habit_medians"])

    rt = ModelRuntime.load(tmp_path)
    assert rt.loaded.get("transactions") == art.version and not rt.problems
    row = feats.iloc[-1].to_dict()
    est = art.load_estimator()
    out = rt.score(row)
    x = rt.transactions.risk_vectorizer.one(row)
    raw = est["txn_risk"].predict_proba(x.reshape(1, -1))[0, 1]
    if rt.calibration is not None:  # the served value is the ONNX score through the stored map
        raw = float(rt.calibration.apply(raw))
    assert out["model.txn_risk"] == pytest.approx(raw, abs=1e-5)
    assert 0.0 <= out["model.habit_anomaly"] <= 1.0
    assert (rt.fusion is not None) == (rules is not None)
    # an event that does carry an IP and a device is scored on the trained features alone
    assert rt.score({**row, "ip.count_10m": 50, "device.count_1h": 9})["model.txn_risk"] == out["model.txn_risk"]
