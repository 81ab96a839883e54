"""Converting fitted tree models to ONNX at training time, checked against scikit-learn.

The service scores through ONNX Runtime (`fengkong.models.onnx_model`); this module
writes what it loads. `export` converts a model, scores the given rows (the
validation days, else the training rows) through ONNX Runtime and refuses
(`OnnxMismatchError`, so nothing is saved) when any output differs from
scikit-learn's by more than `TOLERANCE`; it keeps a spread of those rows and
scikit-learn's answers so that every load checks the model again.

* HistGradientBoostingClassifier: skl2onnx's converter (output ``probabilities``,
  column 1). skl2onnx 1.20 with onnx 1.23 fails on it ("Expected an int, got a
  boolean": numpy bools and integers reach ``onnx.helper.make_attribute``), so
  `_plain_attributes` casts them to ``int`` while it converts, then restores skl2onnx.
* IsolationForest: skl2onnx's graph has a node per tree node and runs far slower
  than one ``TreeEnsembleRegressor`` (ai.onnx.ml) holding the whole forest, built
  here from the fitted trees (`iforest_to_onnx`). Each leaf holds its path length,
  ``depth + c(n_node_samples)`` (Liu et al.'s average path length correction for
  the samples left unseparated, as scikit-learn's ``score_samples``); the ensemble
  sums them; then ``-(2 ** (-sum / (n_trees * c(max_samples_))))``, three ONNX ops,
  so the output ``score`` is ``score_samples`` itself. Thresholds and leaf values
  are doubles and the float32 input is cast to double before comparing, exactly
  as scikit-learn's trees compare float32 features with float64 thresholds.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fengkong.models.artifacts import ArtifactError
from fengkong.models.onnx_model import CHECK_ROWS, TOLERANCE, OnnxModel, OnnxSpec, max_abs_diff

#: Opsets of the graphs written: ai.onnx.ml 3 has double thresholds (``*_as_tensor``).
OPSETS = {"": 17, "ai.onnx.ml": 3}


class OnnxMismatchError(ArtifactError):
    """The ONNX conversion does not reproduce scikit-learn within the tolerance: not saved."""


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of Liu et al.: the average path length of an unsuccessful search in a binary
    search tree of n points (0 for n <= 1, 1 for n = 2), as scikit-learn's IsolationForest."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + np.euler_gamma) - 2.0 * (nb - 1.0) / nb
    return out


def _node_depths(children_left: np.ndarray, children_right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(children_left), dtype=np.int64)
    for node in range(len(children_left)):  # scikit-learn numbers children after their parent
        for child in (children_left[node], children_right[node]):
            if child != -1:
                depth[child] = depth[node] + 1
    return depth


def iforest_to_onnx(forest: Any) -> bytes:
    """One TreeEnsembleRegressor graph of a fitted IsolationForest; output ``score`` [N, 1]
    equals ``forest.score_samples``."""
    attrs: dict[str, Any] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_modes", "nodes_featureids", "nodes_truenodeids",
        "nodes_falsenodeids", "target_treeids", "target_nodeids")}
    thresholds: list[float] = []
    weights: list[float] = []
    for t, (est, features) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        tree = est.tree_
        left, right = tree.children_left, tree.children_right
        leaf = left == -1
        path = _node_depths(left, right) + average_path_length(tree.n_node_samples)
        features = np.asarray(features)
        for node in range(tree.node_count):
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(node)
            attrs["nodes_modes"].append("LEAF" if leaf[node] else "BRANCH_LEQ")
            attrs["nodes_featureids"].append(0 if leaf[node] else int(features[tree.feature[node]]))
            attrs["nodes_truenodeids"].append(0 if leaf[node] else int(left[node]))
            attrs["nodes_falsenodeids"].append(0 if leaf[node] else int(right[node]))
            thresholds.append(0.0 if leaf[node] else float(tree.threshold[node]))
            if leaf[node]:
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(node)
                weights.append(float(path[node]))
    denominator = len(forest.estimators_) * float(average_path_length(np.array([forest.max_samples_]))[0])
    nodes = [
        helper.make_node("Cast", ["X"], ["X64"], to=TensorProto.DOUBLE),
        helper.make_node(
            "TreeEnsembleRegressor", ["X64"], ["path_sum"], domain="ai.onnx.ml", n_targets=1,
            aggregate_function="SUM", target_ids=[0] * len(weights),
            nodes_values_as_tensor=numpy_helper.from_array(np.asarray(thresholds, dtype=np.float64)),
            target_weights_as_tensor=numpy_helper.from_array(np.asarray(weights, dtype=np.float64)), **attrs),
        helper.make_node("Div", ["path_sum", "minus_denominator"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["normality"]),
        helper.make_node("Neg", ["normality"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "isolation_forest",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, int(forest.n_features_in_)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(np.array([-denominator], dtype=np.float32), "minus_denominator"),
                     numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSETS.items()],
                              producer_name="fengkong")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@contextlib.contextmanager
def _plain_attributes() -> Iterator[None]:
    """While converting, numpy bools and integers reach onnx as ``int`` (the skl2onnx 1.20 +
    onnx 1.23 workaround of the module docstring); skl2onnx is restored afterwards."""
    from skl2onnx.common import _container

    original = _container.make_node

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (bool, np.bool_, np.integer)):
            return int(value)
        return value

    def make_node(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{k: plain(v) for k, v in kwargs.items()})

    _container.make_node = make_node
    try:
        yield
    finally:
        _container.make_node = original


def hgb_to_onnx(model: Any) -> bytes:
    """skl2onnx's graph of a binary HistGradientBoostingClassifier: outputs ``label`` and
    ``probabilities`` [N, 2] (no ZipMap)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    if getattr(model, "n_trees_per_iteration_", 1) != 1:
        raise ValueError("only binary HistGradientBoostingClassifiers are served (one tree per iteration)")
    with _plain_attributes():
        onx = to_onnx(model, initial_types=[("X", FloatTensorType([None, int(model.n_features_in_)]))],
                      options={id(model): {"zipmap": False}}, target_opset=OPSETS)
    return bytes(onx.SerializeToString())


def export(name: str, model: Any, X: np.ndarray) -> OnnxSpec:
    """Convert ``model`` (IsolationForest or binary HistGradientBoostingClassifier), check it on
    the rows ``X`` (float64) against scikit-learn (``score_samples``, the positive-class
    probability) and return what `fengkong.models.artifacts.save` writes; `OnnxMismatchError`
    if it differs by more than `TOLERANCE` (or ``X`` has no row)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

    X = np.asarray(X, dtype=np.float64)
    if isinstance(model, IsolationForest):
        data, output, column = iforest_to_onnx(model), "score", 0
        expected = model.score_samples(X) if len(X) else np.empty(0)
    elif isinstance(model, HistGradientBoostingClassifier):
        data, output, column = hgb_to_onnx(model), "probabilities", 1
        expected = model.predict_proba(X)[:, 1] if len(X) else np.empty(0)
    else:
        raise TypeError(f"{name}: no ONNX export for {type(model).__name__}")
    if not len(X):
        raise OnnxMismatchError(f"{name}: no rows to check the ONNX conversion on; not saved")
    onnx_model = OnnxModel(data, output=output, column=column, n_features=int(model.n_features_in_))
    return checked(name, onnx_model, data, X, expected)


def checked(name: str, onnx_model: OnnxModel, data: bytes, X: np.ndarray, expected: np.ndarray) -> OnnxSpec:
    """`OnnxSpec` of a converted model whose scores on ``X`` match ``expected`` (scikit-learn's)
    within `TOLERANCE`; `OnnxMismatchError` naming the model, the rows and the difference otherwise."""
    diff = max_abs_diff(onnx_model.score_many(X), expected)
    if not diff <= TOLERANCE:
        raise OnnxMismatchError(f"{name}: the ONNX conversion differs from scikit-learn on {len(X)} rows "
                                f"(max abs difference {diff:.3g} > tolerance {TOLERANCE:g}); not saved")
    keep = np.unique(np.linspace(0, len(X) - 1, min(len(X), CHECK_ROWS)).astype(np.int64))
    return OnnxSpec(model=data, output=onnx_model.output, column=onnx_model.column,
                    n_features=onnx_model.n_features, check_X=X[keep], check_expected=np.asarray(expected)[keep],
                    validated_rows=int(len(X)), max_abs_diff=diff)


__all__ = ["OPSETS", "OnnxMismatchError", "average_path_length", "checked", "export", "hgb_to_onnx",
           "iforest_to_onnx"]
