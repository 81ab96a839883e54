"""One ONNX Runtime session for both transaction models (`fengkong.models.joint`): every
payment scores as with the two sessions it replaces, and as scikit-learn; a joint session
that cannot be built or differs is not used."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from fengkong.models.joint import JointModel, check_rows
from fengkong.models.onnx_model import TOLERANCE, OnnxModel
from fengkong.models.runtime import ModelRuntime, TransactionModels
from fengkong.models.transaction_model import Vectorizer
from fengkong.training.joint_export import joint_graph
from fengkong.training.onnx_export import hgb_to_onnx, iforest_to_onnx

ROOT = Path(__file__).resolve().parents[1]
PAYMENTS = 2000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A transactions artifact trained on a simulated history, loaded as the service loads
    it, and the feature mappings of simulated payments (plain Python values, None for
    missing, as the store answers)."""
    from fengkong.simulation import SimConfig, run
    from fengkong.training.train import train_transactions, transaction_frame

    sim = run(SimConfig(seed=11, days=14, shoppers=800, merchants=40))
    frame = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=ROOT / "rules" / "lists")
    root = tmp_path_factory.mktemp("artifacts")
    art = train_transactions(frame, root=root, max_iter=40, habit_trees=30, kinds=("hgb",))
    rt = ModelRuntime.load(root)
    rows = frame.tail(PAYMENTS)
    names = list(rt.transactions.row.names) if rt.transactions is not None else []
    cells = rows[names].astype(object).where(rows[names].notna(), None)
    payments = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in zip(names, values)}
                for values in cells.itertuples(index=False)]
    return rt, art, payments


def _apart(rt: ModelRuntime, features: dict) -> dict:
    """What the runtime answers with its two sessions (the way before the joint one)."""
    txn = rt.transactions
    joint = txn.joint
    object.__setattr__(txn, "joint", None)
    try:
        return rt.score(features)
    finally:
        object.__setattr__(txn, "joint", joint)


def test_joint_session_scores_simulated_payments_as_the_two_sessions_and_sklearn(served) -> None:
    rt, art, payments = served
    txn = rt.transactions
    assert txn.joint is not None, txn.joint_problem
    assert len(payments) >= PAYMENTS and all(p.get("event.type", "payment") == "payment" for p in payments)
    joint = [rt.score({**p, "event.type": "payment"}) for p in payments]
    apart = [_apart(rt, {**p, "event.type": "payment"}) for p in payments]
    names = ("model.txn_risk", "model.habit_anomaly") + (
        ("model.txn_precision", "model.txn_share") if rt.calibration is not None else ())
    for name in names:
        got = np.array([j[name] for j in joint])
        before = np.array([a[name] for a in apart])
        assert np.max(np.abs(got - before)) <= 1e-6, name
        assert np.array_equal(got, before), name  # the same nodes on the same values: the same floats
    # and both are what the estimators the artifact was trained as give
    est = art.load_estimator()
    X = np.array([txn.row.one(p) for p in payments])
    raw = np.array([txn.score_one(p)[0] for p in payments])
    assert np.max(np.abs(raw - est["txn_risk"].predict_proba(X[:, txn.risk_cols])[:, 1])) < TOLERANCE
    H = X[:, txn.habit_cols]
    expected = -est["habit_anomaly"].score_samples(np.where(np.isnan(H), txn.habit_medians, H))
    assert np.max(np.abs(np.array([j["model.habit_anomaly"] for j in joint]) - expected)) < TOLERANCE
    assert np.isnan(H).any(), "the payments should exercise the habit model's missing values"
    assert np.ptp(raw) > 0.1  # the payments are scored differently: a constant would pass the rest


def _toy_models(medians_shift: float = 0.0):
    """txn_risk on x0..x2 and a habit forest on (x3, x1): the habit columns neither lead the
    union row nor keep its order, and x1 is missing on some rows."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 4))
    X[rng.uniform(size=400) < 0.2, 1] = np.nan
    y = (X[:, 0] + np.nan_to_num(X[:, 1]) + rng.normal(scale=0.5, size=400)) > 1
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X[:, :3], y)
    H = X[:, [3, 1]]
    medians = np.nanmedian(H, axis=0)
    forest = IsolationForest(n_estimators=20, random_state=0).fit(np.where(np.isnan(H), medians, H))
    risk = OnnxModel(hgb_to_onnx(hgb), output="probability", column=0, n_features=3)
    habit = OnnxModel(iforest_to_onnx(forest), output="score", column=0, n_features=2)
    risk.check_X, habit.check_X = X[:64, :3], np.where(np.isnan(H[:64]), medians, H[:64])
    return X, hgb, forest, risk, habit, medians + medians_shift


def test_joint_graph_gives_each_model_its_columns_and_fills_the_habit_models_missing_values() -> None:
    X, hgb, forest, risk, habit, medians = _toy_models()
    joint = JointModel(joint_graph(risk, habit, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians))
    H = X[:, [3, 1]]
    expected_habit = forest.score_samples(np.where(np.isnan(H), medians, H))
    got_risk, got_habit = joint.score_many(X)
    assert np.max(np.abs(got_risk - hgb.predict_proba(X[:, :3])[:, 1])) < TOLERANCE
    assert np.max(np.abs(got_habit - expected_habit)) < TOLERANCE
    one = np.array([joint.score_one(x) for x in X])
    assert np.array_equal(one[:, 0], got_risk) and np.array_equal(one[:, 1], got_habit)
    rows = check_rows(risk, habit, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1])
    assert rows.shape == (2 + 64 + 64, 4)
    assert joint.differs(risk, habit, rows, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians) == 0.0


def test_the_bound_run_scores_cells_and_rows_alike() -> None:
    """The joint session's bound run (ONNX Runtime's public ``run_with_iobinding``): a list of
    cells, an array row and the batch call answer the same floats."""
    X, _, _, risk, habit, medians = _toy_models()
    joint = JointModel(joint_graph(risk, habit, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians))
    batch = np.column_stack(joint.score_many(X))
    cells = [[None if np.isnan(v) else float(v) for v in x] for x in X]
    assert np.array_equal(np.array([joint.score_one(c) for c in cells]), batch)
    assert np.array_equal(np.array([joint.score_one(x) for x in X]), batch)


def test_a_joint_session_that_differs_from_the_two_is_told_apart() -> None:
    """Medians that are not the habit model's: the check rows with x1 missing score differently."""
    X, _, _, risk, habit, medians = _toy_models()
    wrong = JointModel(joint_graph(risk, habit, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians + 3))
    rows = np.vstack([check_rows(risk, habit, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1]), X])
    assert wrong.differs(risk, habit, rows, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians) > 1e-3


def test_models_without_a_joint_graph_or_with_one_that_differs_are_scored_in_two_sessions() -> None:
    X, hgb, forest, risk, habit, medians = _toy_models()
    vectorizers = (Vectorizer(("x0", "x1", "x2"), {}), Vectorizer(("x3", "x1"), {}))
    where = dict(width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1])
    cases = {"none": None, "differs": joint_graph(risk, habit, medians=medians + 3, **where),  # type: ignore[arg-type]
             "joined": joint_graph(risk, habit, medians=medians, **where)}  # type: ignore[arg-type]
    built = {k: TransactionModels(vectorizers[0], risk, vectorizers[1], habit, medians, graph)
             for k, graph in cases.items()}
    assert built["none"].joint is None and "no joint graph" in str(built["none"].joint_problem)
    assert built["differs"].joint is None and "differs from the two models" in str(built["differs"].joint_problem)
    assert built["joined"].joint is not None, built["joined"].joint_problem
    H = X[:, [3, 1]]
    expected = np.column_stack([hgb.predict_proba(X[:, :3])[:, 1],
                                forest.score_samples(np.where(np.isnan(H), medians, H))])
    for models in built.values():
        got = np.array([models.score_one({f"x{j}": (None if np.isnan(v) else float(v)) for j, v in enumerate(x)})
                        for x in X])
        assert np.max(np.abs(got - expected)) < TOLERANCE


def test_graphs_of_two_opsets_are_not_joined() -> None:
    _, _, _, risk, habit, medians = _toy_models()
    proto = onnx.load_from_string(habit.model)
    for opset in proto.opset_import:
        if opset.domain == "":
            opset.version = 16  # still a valid graph on its own, but not the risk graph's opset
    habit16 = OnnxModel(proto.SerializeToString(), output="score", column=0, n_features=2)
    with pytest.raises(ValueError, match="different opsets"):
        joint_graph(risk, habit16, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians)


def test_an_artifact_whose_joint_graph_is_not_the_saved_one_is_served_in_two_sessions(served, tmp_path) -> None:
    rt, art, payments = served
    copy = tmp_path / "transactions" / art.path.name
    shutil.copytree(art.path, copy)
    (copy / "joint.onnx").write_bytes((copy / "joint.onnx").read_bytes() + b"\0")
    apart = ModelRuntime.load(tmp_path)
    assert apart.loaded == {"transactions": art.version} and apart.transactions.joint is None
    assert [apart.score(p) for p in payments[:200]] == [rt.score(p) for p in payments[:200]]


def test_scoring_from_several_threads_answers_as_one_thread(served) -> None:
    """The bound buffers are one session's: a thread that finds them taken scores unbound."""
    rt, _, payments = served
    some = payments[:300]
    expected = [rt.score(p) for p in some]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [rt.score(p) for p in some]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(4))
    # varied enough that a thread reading another thread's buffers would be seen
    assert pd.Series([e["model.txn_risk"] for e in expected]).nunique() > 20


@pytest.mark.parametrize("kind", ["forest", "logreg"])
def test_every_txn_risk_kind_joins_with_the_habit_model(kind: str) -> None:
    """The other candidate kinds' graphs (`fengkong.training.candidates`) name their nodes as the
    habit graph does (Cast X32 / X64 in the forest): the prefixes keep them apart."""
    from fengkong.training.candidates import fit_kind
    from fengkong.training.onnx_export import export

    X, _, forest, _, habit, medians = _toy_models()
    y = (X[:, 0] + np.nan_to_num(X[:, 1])) > 0.5
    model = fit_kind(kind, X[:, :3], y, max_iter=20)
    risk = export(kind, model, X[:, :3])
    joint = JointModel(joint_graph(risk, habit, width=4, risk_cols=[0, 1, 2], habit_cols=[3, 1], medians=medians))
    got_risk, got_habit = joint.score_many(X)
    assert np.max(np.abs(got_risk - model.predict_proba(X[:, :3])[:, 1])) < TOLERANCE
    H = X[:, [3, 1]]
    assert np.max(np.abs(got_habit - forest.score_samples(np.where(np.isnan(H), medians, H)))) < TOLERANCE
