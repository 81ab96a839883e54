"""The per-payment scoring path: one row for both transaction models, the fused risk in
scalar arithmetic, each equal to what scikit-learn / numpy give on the same input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from fengkong.models.fusion import RiskFusion
from fengkong.models.onnx_model import TOLERANCE, OnnxModel
from fengkong.models.runtime import ModelRuntime, TransactionModels
from fengkong.models.transaction_model import VOCAB, Vectorizer
from fengkong.training.onnx_export import hgb_to_onnx, iforest_to_onnx


def test_fused_risk_of_one_decision_equals_predict_proba() -> None:
    rng = np.random.default_rng(3)
    risk = rng.uniform(0, 1, 600)
    rules = rng.choice([0.0, 15.0, 30.0, 70.0], 600)
    y = rng.uniform(0, 1, 600) < 0.05 + 0.3 * risk + rules / 400
    f = RiskFusion().fit(risk, rules, y)
    assert (f.coef_ > 0).all()  # both inputs carry weight, so each branch below is exercised
    g = RiskFusion.from_params(f.to_params())
    for r in (None, math.nan, 0.0, 1e-12, 0.02, 0.5, 1 - 1e-12, 1.0, math.inf):
        for s in (0.0, 15.0, 100.0, -50.0, 1e6, -1e6, math.nan, math.inf):
            with np.errstate(over="ignore"):  # numpy overflows to 0 on the extreme scores, as score_one
                expected = float(f.predict_proba(np.array([math.nan if r is None else r]), np.array([s]))[0])
            for fusion in (f, g):
                assert fusion.score_one(r, s) == pytest.approx(expected, rel=1e-12, abs=1e-300), (r, s)
    assert f.score_one(None, 30.0) > f.score_one(None, 0.0)  # missing risk: the base rate, rules still count
    before = f.score_one(0.3, 15.0)
    f.coef_ = f.coef_ * 2  # new coefficients (as a new fit sets): the scalar path must not keep the old ones
    assert f.score_one(0.3, 15.0) == pytest.approx(float(f.predict_proba(np.array([0.3]), np.array([15.0]))[0]),
                                                   rel=1e-12) and f.score_one(0.3, 15.0) != before


def test_rules_alone_score_sums_the_fires_that_read_no_model_feature_in_order() -> None:
    from types import SimpleNamespace as NS

    from fengkong.models.fusion import base_score

    reasons = [NS(score=0.1, values={"card.count_1h": 3}), NS(score=50, values={"model.txn_risk": 0.9}),
               NS(score=0.2, values={}), NS(score=7, values={"ip.is_tor": True, "model.habit_anomaly": 0.7}),
               NS(score=0.3, values={"user.amount_zscore": 2.0, "event.amount": 10})]
    got = base_score(NS(reasons=reasons))
    assert got == float(sum(r.score for r in reasons if not any(n.startswith("model.") for n in r.values)))
    assert got == 0.1 + 0.2 + 0.3 and got != 0.6  # the reasons' order (0.1 + 0.2 + 0.3 is not 0.6 in floats)
    assert base_score(NS(reasons=[])) == 0.0 and isinstance(base_score(NS(reasons=[NS(score=3, values={})])), float)


def test_one_row_converts_cells_as_the_cell_rule_does() -> None:
    names = ("a", "b", "c", "d", "e", "event.channel", "card.type", "f")
    vec = Vectorizer(names, {k: VOCAB[k] for k in ("event.channel", "card.type")})
    pos = VOCAB["event.channel"].index("pos")
    credit = VOCAB["card.type"].index("credit")
    plain = {"a": 3, "b": True, "c": None, "d": 2.5, "event.channel": "pos", "card.type": "credit", "f": False}
    expected = np.array([3.0, 1.0, np.nan, 2.5, np.nan, pos, credit, 0.0])
    assert np.array_equal(vec.one(plain), expected, equal_nan=True)
    # unknown or non-text codes are missing; numpy scalars count, a stray string does not
    odd = {**plain, "a": np.int64(3), "d": "2.5", "event.channel": "fax", "card.type": 1, "f": np.float32(0.5)}
    expected_odd = np.array([3.0, 1.0, np.nan, np.nan, np.nan, np.nan, np.nan, 0.5])
    assert np.array_equal(vec.one(odd), expected_odd, equal_nan=True)


def test_the_cells_of_a_row_convert_as_the_row_whatever_the_mapping() -> None:
    """`Vectorizer.cells` (what the joint session copies into its bound row) converts as
    `one`, cell by cell as `_cell`: a plain dict holding every name (read with one
    ``itemgetter``), a dict missing some names, and a mapping whose ``[]`` is not ``get``
    (a defaultdict: reading it must neither add keys nor see the default)."""
    from collections import defaultdict

    names = ("a", "b", "c", "event.channel", "card.type", "d", "e")
    vec = Vectorizer(names, {k: VOCAB[k] for k in ("event.channel", "card.type")})
    pos, credit = VOCAB["event.channel"].index("pos"), VOCAB["card.type"].index("credit")
    full = {"a": 3, "b": True, "c": None, "event.channel": "pos", "card.type": "credit", "d": 2 ** 70, "e": -0.5,
            "other": "x"}
    expected = np.array([3.0, 1.0, np.nan, pos, credit, 2.0 ** 70, -0.5])
    partial = {k: v for k, v in full.items() if k not in ("c", "e")}
    expected_partial = expected.copy()
    expected_partial[6] = np.nan
    odd = {**full, "a": np.int64(3), "d": "7", "e": np.bool_(True)}  # numpy scalars and a stray string: by `_cell`
    expected_odd = np.array([3.0, 1.0, np.nan, pos, credit, np.nan, np.nan])
    fallback = defaultdict(lambda: 99.0, partial)
    for features, want in ((full, expected), (partial, expected_partial), (odd, expected_odd),
                           (fallback, expected_partial)):
        cells = vec.cells(features)
        assert np.array_equal(np.array(cells, dtype=np.float64), want, equal_nan=True), features
        assert np.array_equal(vec.one(features), want, equal_nan=True), features
        bound = np.zeros((1, len(names)))
        bound[0] = cells  # what `JointModel.score_one` does with them
        assert np.array_equal(bound[0], want, equal_nan=True)
    assert set(fallback) == set(partial)  # no key added by the read


def test_both_transaction_models_score_from_one_row_of_their_union() -> None:
    """The habit model may read a feature txn_risk dropped (and not all of txn_risk's): each
    ONNX model still gets its own columns in its own order."""
    rng = np.random.default_rng(7)
    n = 400
    X = rng.normal(size=(n, 4))
    X[rng.uniform(size=n) < 0.2, 1] = np.nan
    y = (X[:, 0] + np.nan_to_num(X[:, 1]) + rng.normal(scale=0.5, size=n)) > 1
    risk_names, habit_names = ("x0", "x1", "x2"), ("x3", "x1")
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X[:, :3], y)
    H = X[:, [3, 1]]
    medians = np.nanmedian(H, axis=0)
    forest = IsolationForest(n_estimators=20, random_state=0).fit(np.where(np.isnan(H), medians, H))
    txn = TransactionModels(
        Vectorizer(risk_names, {}), OnnxModel(hgb_to_onnx(hgb), output="probability", column=0, n_features=3),
        Vectorizer(habit_names, {}), OnnxModel(iforest_to_onnx(forest), output="score", column=0, n_features=2),
        medians)
    assert txn.row.names == ("x0", "x1", "x2", "x3") and txn.risk_cols == slice(0, 3)
    assert list(txn.habit_cols) == [3, 1]
    rt = ModelRuntime()
    rt.transactions, rt.loaded = txn, {"transactions": "test"}
    ref_risk = hgb.predict_proba(X[:50, :3])[:, 1]
    ref_habit = -forest.score_samples(np.where(np.isnan(H[:50]), medians, H[:50]))
    for row, r, h in zip(X[:50], ref_risk, ref_habit):
        features = {f"x{j}": (None if np.isnan(v) else float(v)) for j, v in enumerate(row)}
        out = rt.score({**features, "event.type": "payment"})
        assert abs(out["model.txn_risk"] - r) < TOLERANCE
        assert abs(out["model.habit_anomaly"] - h) < TOLERANCE
