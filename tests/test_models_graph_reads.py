"""Which input columns a joint graph reads (`fengkong.models.graph_reads`), and the row writer
that writes only those (`Vectorizer.writer`): the scores stay those of the whole row."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from fengkong.models.graph_reads import read_columns
from fengkong.models.joint import JointModel
from fengkong.models.onnx_model import OnnxModel
from fengkong.models.runtime import TransactionModels
from fengkong.models.transaction_model import Vectorizer
from fengkong.training.joint_export import joint_graph
from fengkong.training.onnx_export import hgb_to_onnx, iforest_to_onnx


def _models(width: int = 6):
    """txn_risk on x0..x4, of which x2 is constant (no split can test it) and x4 noise it may
    skip, and a habit forest on (x5, x1), with x1 missing on some rows."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, width))
    X[:, 2] = 1.0
    X[rng.uniform(size=500) < 0.2, 1] = np.nan
    y = (X[:, 0] + np.nan_to_num(X[:, 1]) + rng.normal(scale=0.5, size=500)) > 1
    hgb = HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X[:, :5], y)
    H = X[:, [5, 1]]
    medians = np.nanmedian(H, axis=0)
    forest = IsolationForest(n_estimators=15, random_state=0).fit(np.where(np.isnan(H), medians, H))
    risk = OnnxModel(hgb_to_onnx(hgb), output="probability", column=0, n_features=5)
    habit = OnnxModel(iforest_to_onnx(forest), output="score", column=0, n_features=2)
    return X, risk, habit, medians


def _split_features(model: onnx.ModelProto) -> set[int]:
    """Every feature id the graph's tree ensembles name, read with the onnx package."""
    ids: set[int] = set()
    for node in model.graph.node:
        if node.op_type.startswith("TreeEnsemble"):
            ids.update(next(a for a in node.attribute if a.name == "nodes_featureids").ints)
    return ids


def test_the_columns_read_are_the_trees_features_and_the_gathered_ones() -> None:
    X, risk, habit, medians = _models()
    data = joint_graph(risk, habit, width=6, risk_cols=range(5), habit_cols=[5, 1], medians=medians)
    got = read_columns(data, 6)
    expected = sorted(_split_features(onnx.load_from_string(risk.model)) | {5, 1})
    assert list(got) == expected
    assert 2 not in got and 0 in got  # the constant feature is read by no split; x0 is


def test_a_slice_of_the_leading_columns_is_followed() -> None:
    X, risk, habit, medians = _models(width=7)  # x6 only in the habit model's list: risk is sliced
    data = joint_graph(risk, habit, width=7, risk_cols=range(5), habit_cols=[6, 1], medians=medians)
    assert "Slice" in {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert set(read_columns(data, 7)) == (_split_features(onnx.load_from_string(risk.model)) | {6, 1})


def _with(data: bytes, node: onnx.NodeProto, output: str) -> bytes:
    model = onnx.load_from_string(data)
    model.graph.node.append(node)
    model.graph.output.append(helper.make_tensor_value_info(output, onnx.TensorProto.DOUBLE, None))
    return model.SerializeToString()


def test_a_path_it_does_not_follow_makes_every_column_read() -> None:
    X, risk, habit, medians = _models()
    data = joint_graph(risk, habit, width=6, risk_cols=range(5), habit_cols=[5, 1], medians=medians)
    assert len(read_columns(data, 6)) < 6
    unknown = _with(data, helper.make_node("Abs", ["X"], ["abs"]), "abs")
    passed_on = _with(data, helper.make_node("Identity", ["X"], ["same"]), "same")
    for graph in (unknown, passed_on):
        assert read_columns(graph, 6) == tuple(range(6))


def test_the_writer_writes_the_chosen_columns_as_write_row_and_zeros_elsewhere() -> None:
    vec = Vectorizer(("a", "b", "event.channel", "d", "e"), {"event.channel": ("web", "app")})
    write = vec.writer([0, 2, 4])
    rows_whole, rows_part = np.full((3, 5), 7.0), np.full((3, 5), 7.0)
    cases = [{"a": 1, "b": 2.5, "event.channel": "app", "d": None, "e": True},
             {"a": None, "b": None, "event.channel": "tv", "d": 3, "e": 10 ** 20},
             {"a": 2.0, "event.channel": None, "e": False}]
    for features in cases:
        vec.write_row(features, rows_whole, 1)
        write(features, rows_part, 1)
        assert np.array_equal(rows_part[1, [0, 2, 4]], rows_whole[1, [0, 2, 4]], equal_nan=True), features
        assert rows_part[1, 1] == 0.0 and rows_part[1, 3] == 0.0
    assert (rows_part[[0, 2]] == 7.0).all()  # only its row
    # a cell the fast path does not write (a numpy scalar, text in a number's place): the whole row
    write({"a": np.float32(1.5), "b": "x", "event.channel": "web", "d": 4, "e": 1}, rows_part, 0)
    assert np.array_equal(rows_part[0], [1.5, np.nan, 0.0, 4.0, 1.0], equal_nan=True)
    assert vec.writer(range(5)) == vec.write_row
    with pytest.raises(ValueError, match="positions"):
        vec.writer([0, 5])


def test_transaction_models_write_only_what_the_joint_graph_reads_and_score_alike() -> None:
    X, risk, habit, medians = _models()
    names = tuple(f"x{j}" for j in range(6))
    risk.check_X, habit.check_X = X[:64, :5], np.where(np.isnan(X[:64][:, [5, 1]]), medians, X[:64][:, [5, 1]])
    txn = TransactionModels(Vectorizer(names[:5], {}), risk, Vectorizer(("x5", "x1"), {}), habit, medians,
                            joint_graph(risk, habit, width=6, risk_cols=range(5), habit_cols=[5, 1], medians=medians))
    assert txn.joint is not None and txn.write != txn.row.write_row
    whole = JointModel(txn.joint_graph)  # type: ignore[arg-type]
    for x in X[:300]:
        features = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, x)}
        assert txn.score_one(features) == whole.score_one(txn.row.cells(features))
