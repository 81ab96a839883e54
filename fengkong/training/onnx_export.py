"""Converting fitted tree models to ONNX at training time, checked against scikit-learn.

The service scores through ONNX Runtime (`fengkong.models.onnx_model`); this module
writes what it loads. `export` converts a model, scores the given rows (the
validation days, else the training rows) through ONNX Runtime and refuses
(`OnnxMismatchError`, so nothing is saved) when any output differs from
scikit-learn's by more than `TOLERANCE`; it keeps a spread of those rows and
scikit-learn's answers so that every load checks the model again.

The tree kinds become one ``TreeEnsembleRegressor`` (ai.onnx.ml) holding every tree,
built here from the fitted trees with ``onnx.helper`` (`tree_ensemble`), with
double thresholds and leaf values and a double input ``X`` [N, n_features]:

* HistGradientBoostingClassifier (binary): leaves hold the trees' raw values,
  ``base_values`` the baseline, a missing value follows the node's
  ``missing_go_to_left``; ``Sigmoid`` gives ``probability`` [N, 1] =
  ``predict_proba[:, 1]``. scikit-learn compares float64 features with float64
  thresholds, and so does this graph. skl2onnx's converter takes float32 input
  only (its double variant fails to load in ONNX Runtime), so a feature value
  within float32 rounding of a threshold (sums above 2**17 yuan with cents, for
  one) takes the other branch and the save-time check refuses the model: a
  synthetic feature near 1,000,000.00 gave a probability 0.70 away.
* IsolationForest: skl2onnx's graph has a node per tree node and runs far slower.
  Each leaf holds its path length, ``depth + c(n_node_samples)`` (Liu et al.'s
  average path length correction for the samples left unseparated, as
  scikit-learn's ``score_samples``), the ensemble sums them, and three ops give
  ``score`` [N, 1] = ``-(2 ** (-sum / (n_trees * c(max_samples_))))`` =
  ``score_samples``. The input goes through float32 and back to double first,
  exactly as scikit-learn's trees compare float32 features with float64 thresholds.
* RandomForestClassifier (a txn_risk candidate): leaves hold each tree's positive share
  over the number of trees, float32 input as the forest above (`forest_to_onnx`).
* The calibrated logistic regression (the other candidate) is a few standard operators
  in double precision (`calibrated_logreg_to_onnx`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Tree:
    """One fitted tree as arrays per node (children -1 on leaves; ``value`` read on leaves only)."""

    feature: np.ndarray  # column of the model's input
    threshold: np.ndarray  # go left when x <= threshold
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray  # where a missing value goes
    value: np.ndarray


def tree_ensemble(trees: list[Tree], input_name: str, output_name: str, *, base: float = 0.0) -> onnx.NodeProto:
    """One ``TreeEnsembleRegressor`` summing the leaves each row reaches in every tree, plus ``base``."""
    attrs: dict[str, Any] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_modes", "nodes_featureids", "nodes_truenodeids",
        "nodes_falsenodeids", "nodes_missing_value_tracks_true", "target_treeids", "target_nodeids")}
    thresholds: list[float] = []
    weights: list[float] = []
    for t, tree in enumerate(trees):
        for node in range(len(tree.feature)):
            leaf = tree.left[node] == -1
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(node)
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_featureids"].append(0 if leaf else int(tree.feature[node]))
            attrs["nodes_truenodeids"].append(0 if leaf else int(tree.left[node]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(tree.right[node]))
            attrs["nodes_missing_value_tracks_true"].append(0 if leaf else int(bool(tree.missing_left[node])))
            thresholds.append(0.0 if leaf else float(tree.threshold[node]))
            if leaf:
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(node)
                weights.append(float(tree.value[node]))
    return helper.make_node(
        "TreeEnsembleRegressor", [input_name], [output_name], domain="ai.onnx.ml", n_targets=1,
        aggregate_function="SUM", target_ids=[0] * len(weights),
        base_values_as_tensor=numpy_helper.from_array(np.array([base], dtype=np.float64)),
        nodes_values_as_tensor=numpy_helper.from_array(np.asarray(thresholds, dtype=np.float64)),
        target_weights_as_tensor=numpy_helper.from_array(np.asarray(weights, dtype=np.float64)), **attrs)


def _model(nodes: list[onnx.NodeProto], name: str, n_features: int, output: str,
           initializer: list[onnx.TensorProto]) -> bytes:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, 1])], initializer=initializer)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in OPSETS.items()],
                              producer_name="fengkong")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _node_depths(children_left: np.ndarray, children_right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(children_left), dtype=np.int64)
    for node in range(len(children_left)):  # scikit-learn numbers children after their parent
        for child in (children_left[node], children_right[node]):
            if child != -1:
                depth[child] = depth[node] + 1
    return depth


def iforest_to_onnx(forest: Any) -> bytes:
    """The graph of a fitted IsolationForest; output ``score`` [N, 1] equals ``forest.score_samples``."""
    trees = []
    for est, features in zip(forest.estimators_, forest.estimators_features_):
        t = est.tree_
        leaf = t.children_left == -1
        trees.append(Tree(
            feature=np.asarray(features)[np.maximum(t.feature, 0)], threshold=t.threshold, left=t.children_left,
            right=t.children_right, missing_left=np.zeros(t.node_count, dtype=bool),
            value=np.where(leaf, _node_depths(t.children_left, t.children_right)
                           + average_path_length(t.n_node_samples), 0.0)))
    denominator = len(forest.estimators_) * float(average_path_length(np.array([forest.max_samples_]))[0])
    nodes = [
        helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["X32"], ["X64"], to=TensorProto.DOUBLE),
        tree_ensemble(trees, "X64", "path_sum"),
        helper.make_node("Div", ["path_sum", "minus_denominator"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["normality"]),
        helper.make_node("Neg", ["normality"], ["score"]),
    ]
    return _model(nodes, "isolation_forest", int(forest.n_features_in_), "score", [
        numpy_helper.from_array(np.array([-denominator], dtype=np.float32), "minus_denominator"),
        numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")])


def hgb_to_onnx(model: Any) -> bytes:
    """The graph of a fitted binary HistGradientBoostingClassifier (numerical splits); output
    ``probability`` [N, 1] equals ``predict_proba[:, 1]``. Reads the fitted trees from
    scikit-learn's private ``_predictors`` and ``_baseline_prediction`` (as skl2onnx does): a
    change there shows as a refused save, since `export` checks every conversion."""
    if getattr(model, "n_trees_per_iteration_", 1) != 1:
        raise ValueError("only binary HistGradientBoostingClassifiers are served (one tree per iteration)")
    trees = []
    for (predictor,) in model._predictors:
        n = predictor.nodes
        if np.any(n["is_categorical"]):
            raise ValueError("categorical splits have no ONNX export here")
        leaf = n["is_leaf"].astype(bool)
        left, right = n["left"].astype(np.int64), n["right"].astype(np.int64)  # stored unsigned
        trees.append(Tree(feature=n["feature_idx"], threshold=n["num_threshold"], left=np.where(leaf, -1, left),
                          right=np.where(leaf, -1, right), missing_left=n["missing_go_to_left"].astype(bool),
                          value=n["value"]))
    baseline = float(np.ravel(model._baseline_prediction)[0])
    nodes = [tree_ensemble(trees, "X", "raw", base=baseline), helper.make_node("Sigmoid", ["raw"], ["probability"])]
    return _model(nodes, "hist_gradient_boosting", int(model.n_features_in_), "probability", [])


def forest_to_onnx(model: Any) -> bytes:
    """The graph of a fitted binary RandomForestClassifier; output ``probability`` [N, 1] equals
    ``predict_proba[:, 1]``: each leaf holds its tree's positive-class share divided by the
    number of trees, the ensemble sums them. A missing value follows the node's
    ``missing_go_to_left`` (scikit-learn's trees learn it); the input goes through float32
    first, as scikit-learn's trees compare float32 features with float64 thresholds."""
    if len(model.classes_) != 2:
        raise ValueError("only binary RandomForestClassifiers are served")
    n_trees = len(model.estimators_)
    trees = []
    for est in model.estimators_:
        t = est.tree_
        leaf = t.children_left == -1
        counts = t.value[:, 0, :]
        share = counts[:, 1] / np.maximum(counts.sum(axis=1), np.finfo(np.float64).tiny)
        trees.append(Tree(feature=np.maximum(t.feature, 0), threshold=t.threshold, left=t.children_left,
                          right=t.children_right, missing_left=np.asarray(t.missing_go_to_left, dtype=bool),
                          value=np.where(leaf, share / n_trees, 0.0)))
    nodes = [
        helper.make_node("Cast", ["X"], ["X32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["X32"], ["X64"], to=TensorProto.DOUBLE),
        tree_ensemble(trees, "X64", "probability"),
    ]
    return _model(nodes, "random_forest", int(model.n_features_in_), "probability", [])


def calibrated_logreg_to_onnx(model: Any) -> bytes:
    """The graph of a fitted ``CalibratedClassifierCV(method="sigmoid", ensemble=False)`` around a
    Pipeline of SimpleImputer (median, with its missing indicator), StandardScaler and a binary
    LogisticRegression; output ``probability`` [N, 1] equals ``predict_proba[:, 1]``.

    Written with the standard operators in double precision (IsNaN, Where, Gather, Sub, Div,
    MatMul, Sigmoid), not ai.onnx.ml's Imputer/Scaler/LinearClassifier, which compute in
    float32: on amounts of hundreds of thousands of yuan that moves a scaled feature by more
    than the tolerance allows."""
    if len(model.calibrated_classifiers_) != 1 or model.method != "sigmoid":
        raise ValueError("only CalibratedClassifierCV(method='sigmoid', ensemble=False) is exported")
    cal = model.calibrated_classifiers_[0]
    pipe = cal.estimator
    imputer, scaler, lr = (pipe.named_steps[k] for k in ("impute", "scale", "logreg"))
    if lr.coef_.shape[0] != 1:
        raise ValueError("only a binary LogisticRegression is exported")
    sigmoid = cal.calibrators[0]
    indicator = imputer.indicator_.features_ if imputer.indicator_ is not None else np.zeros(0, dtype=np.int64)
    f64 = np.float64
    init = [numpy_helper.from_array(np.asarray(imputer.statistics_, dtype=f64), "medians"),
            numpy_helper.from_array(np.asarray(scaler.mean_, dtype=f64), "mean"),
            numpy_helper.from_array(np.asarray(scaler.scale_, dtype=f64), "scale"),
            numpy_helper.from_array(np.asarray(lr.coef_, dtype=f64).T.copy(), "coef"),
            numpy_helper.from_array(np.asarray(lr.intercept_, dtype=f64), "intercept"),
            numpy_helper.from_array(np.array([-float(sigmoid.a_)], dtype=f64), "minus_a"),
            numpy_helper.from_array(np.array([-float(sigmoid.b_)], dtype=f64), "minus_b")]
    nodes = [helper.make_node("IsNaN", ["X"], ["missing"]),
             helper.make_node("Where", ["missing", "medians", "X"], ["filled"])]
    design = "filled"
    if len(indicator):
        init.append(numpy_helper.from_array(np.asarray(indicator, dtype=np.int64), "indicated"))
        nodes += [helper.make_node("Gather", ["missing", "indicated"], ["flags"], axis=1),
                  helper.make_node("Cast", ["flags"], ["flags64"], to=TensorProto.DOUBLE),
                  helper.make_node("Concat", ["filled", "flags64"], ["design"], axis=1)]
        design = "design"
    nodes += [helper.make_node("Sub", [design, "mean"], ["centred"]),
              helper.make_node("Div", ["centred", "scale"], ["scaled"]),
              helper.make_node("MatMul", ["scaled", "coef"], ["linear"]),
              helper.make_node("Add", ["linear", "intercept"], ["decision"]),
              # scikit-learn's sigmoid calibration: expit(-(a * decision + b))
              helper.make_node("Mul", ["decision", "minus_a"], ["scaled_decision"]),
              helper.make_node("Add", ["scaled_decision", "minus_b"], ["calibrated_logit"]),
              helper.make_node("Sigmoid", ["calibrated_logit"], ["probability64"]),
              helper.make_node("Cast", ["probability64"], ["probability"], to=TensorProto.FLOAT)]
    return _model(nodes, "calibrated_logistic_regression", int(pipe.n_features_in_), "probability", init)


def _positive_probability(model: Any) -> tuple[bytes, str]:
    """The ONNX graph of a supervised model kind served as txn_risk, and its output name."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if isinstance(model, HistGradientBoostingClassifier):
        return hgb_to_onnx(model), "probability"
    if isinstance(model, RandomForestClassifier):
        return forest_to_onnx(model), "probability"
    if isinstance(model, CalibratedClassifierCV):
        return calibrated_logreg_to_onnx(model), "probability"
    raise TypeError(f"no ONNX export for {type(model).__name__}")


def export(name: str, model: Any, X: np.ndarray) -> OnnxSpec:
    """Convert ``model`` (IsolationForest; or a binary HistGradientBoostingClassifier,
    RandomForestClassifier or calibrated logistic regression, `fengkong.training.candidates`),
    check it on the rows ``X`` (float64) against scikit-learn (``score_samples``, the
    positive-class probability) and return what `fengkong.models.artifacts.save` writes;
    `OnnxMismatchError` if it differs by more than `TOLERANCE` (or ``X`` has no row)."""
    from sklearn.ensemble import IsolationForest

    X = np.asarray(X, dtype=np.float64)
    if isinstance(model, IsolationForest):
        data, output, column = iforest_to_onnx(model), "score", 0
        expected = model.score_samples(X) if len(X) else np.empty(0)
    else:
        try:
            data, output = _positive_probability(model)
        except TypeError:
            raise TypeError(f"{name}: no ONNX export for {type(model).__name__}") from None
        column = 0
        expected = model.predict_proba(X)[:, 1] if len(X) else np.empty(0)
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


__all__ = ["OPSETS", "OnnxMismatchError", "average_path_length", "calibrated_logreg_to_onnx", "checked", "export",
           "forest_to_onnx", "hgb_to_onnx", "iforest_to_onnx"]
