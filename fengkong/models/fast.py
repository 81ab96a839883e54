"""Single-row scoring without scikit-learn's per-call overhead.

scikit-learn's ``predict`` on one row costs milliseconds (input validation, thread
pools, one Cython call per tree). The decision path scores one event at a time,
so the trees of a fitted model are compiled here into flat numpy arrays (one
array per node attribute, every tree side by side) and walked level by level for
all trees at once: ``depth`` numpy steps per row, whatever the number of trees.

Leaves point to themselves with threshold +inf, so a walk simply runs ``depth``
steps. The arithmetic is scikit-learn's own:

* IsolationForest: a leaf holds ``depth + c(n_samples) - 1`` (sklearn's
  ``_decision_path_lengths + _average_path_length_per_tree - 1``); the input is
  cast to float32 before comparing, as sklearn's trees do; the score is
  ``-2 ** (-sum / (n_trees * c(max_samples)))`` (= ``score_samples``).
* HistGradientBoostingClassifier (binary): ``x <= threshold`` goes left, a missing
  value follows ``missing_go_to_left``; raw = baseline + sum of leaf values;
  probability = ``expit(raw)``.

A test holds both equal to scikit-learn within 1e-5 on held-out rows (they agree to
float rounding). The compiled arrays are saved beside the artifact (``.npz``), so the
service needs neither the pickle nor the same scikit-learn version to score.
ONNX Runtime is the alternative benchmarks/bench_models.py compares (see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of Liu et al., as sklearn.ensemble._iforest._average_path_length."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    small = n <= 1
    two = n == 2
    big = ~(small | two)
    out[two] = 1.0
    nb = n[big]
    out[big] = 2.0 * (np.log(nb - 1.0) + np.euler_gamma) - 2.0 * (nb - 1.0) / nb
    return out


@dataclass
class CompiledTrees:
    """A tree ensemble as flat arrays. ``kind`` is ``iforest`` or ``hgb``."""

    kind: str
    feature: np.ndarray  # int64 per node
    threshold: np.ndarray  # float64 per node (+inf on leaves)
    left: np.ndarray  # int64 per node (self on leaves)
    right: np.ndarray
    missing_left: np.ndarray  # bool per node
    value: np.ndarray  # float64 per node (leaf contribution; 0 inside)
    roots: np.ndarray  # int64 per tree
    depth: int
    n_features: int
    offset: float  # hgb: baseline raw score; iforest: n_trees * c(max_samples)

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_iforest(cls, forest: Any) -> "CompiledTrees":
        feats, thrs, lefts, rights, vals, roots = [], [], [], [], [], []
        base = 0
        depth = 0
        for i, (est, features) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
            t = est.tree_
            n = t.node_count
            leaf = t.children_left == -1
            path = forest._decision_path_lengths[i] + forest._average_path_length_per_tree[i] - 1.0
            feats.append(np.where(leaf, 0, np.asarray(features)[np.maximum(t.feature, 0)]))
            thrs.append(np.where(leaf, np.inf, t.threshold))
            idx = np.arange(n)
            lefts.append(np.where(leaf, idx, t.children_left) + base)
            rights.append(np.where(leaf, idx, t.children_right) + base)
            vals.append(np.where(leaf, path, 0.0))
            roots.append(base)
            depth = max(depth, int(t.max_depth))
            base += n
        n_trees = len(forest.estimators_)
        offset = float(n_trees * _average_path_length(np.array([forest._max_samples]))[0])
        total = base
        return cls("iforest", np.concatenate(feats).astype(np.int64), np.concatenate(thrs).astype(np.float64),
                   np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64),
                   np.zeros(total, dtype=bool), np.concatenate(vals).astype(np.float64),
                   np.asarray(roots, dtype=np.int64), depth, int(forest.n_features_in_), offset)

    @classmethod
    def from_hgb(cls, model: Any) -> "CompiledTrees":
        if getattr(model, "n_trees_per_iteration_", 1) != 1:
            raise ValueError("only binary classifiers and regressors compile (one tree per iteration)")
        feats, thrs, lefts, rights, mls, vals, roots = [], [], [], [], [], [], []
        base = 0
        depth = 0
        for predictors in model._predictors:
            nodes = predictors[0].nodes
            if np.any(nodes["is_categorical"]):
                raise ValueError("categorical splits are not supported by the compiled evaluator")
            n = len(nodes)
            leaf = nodes["is_leaf"].astype(bool)
            idx = np.arange(n)
            feats.append(np.where(leaf, 0, nodes["feature_idx"]))
            thrs.append(np.where(leaf, np.inf, nodes["num_threshold"]))
            lefts.append(np.where(leaf, idx, nodes["left"]) + base)
            rights.append(np.where(leaf, idx, nodes["right"]) + base)
            mls.append(np.where(leaf, False, nodes["missing_go_to_left"].astype(bool)))
            vals.append(np.where(leaf, nodes["value"], 0.0))
            roots.append(base)
            depth = max(depth, int(nodes["depth"].max()))
            base += n
        baseline = float(np.ravel(model._baseline_prediction)[0])
        return cls("hgb", np.concatenate(feats).astype(np.int64), np.concatenate(thrs).astype(np.float64),
                   np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64),
                   np.concatenate(mls).astype(bool), np.concatenate(vals).astype(np.float64),
                   np.asarray(roots, dtype=np.int64), depth, int(model.n_features_in_), baseline)

    # -- scoring ------------------------------------------------------------------------------
    def _leaf_sum(self, x: np.ndarray) -> float:
        node = self.roots
        feature, threshold, left, right = self.feature, self.threshold, self.left, self.right
        if self.kind == "iforest":
            x = x.astype(np.float32).astype(np.float64)
            for _ in range(self.depth):
                node = np.where(x[feature[node]] <= threshold[node], left[node], right[node])
        else:
            ml = self.missing_left
            if np.isnan(x).any():
                for _ in range(self.depth):
                    v = x[feature[node]]
                    go = (v <= threshold[node]) | (np.isnan(v) & ml[node])
                    node = np.where(go, left[node], right[node])
            else:
                for _ in range(self.depth):
                    node = np.where(x[feature[node]] <= threshold[node], left[node], right[node])
        return float(self.value[node].sum())

    def _leaf_sums(self, X: np.ndarray, chunk: int = 20_000) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "iforest":
            X = X.astype(np.float32).astype(np.float64)
        out = np.empty(len(X))
        for s in range(0, len(X), chunk):
            xb = X[s:s + chunk]
            rows = np.arange(len(xb))[:, None]
            node = np.broadcast_to(self.roots, (len(xb), len(self.roots))).copy()
            for _ in range(self.depth):
                v = xb[rows, self.feature[node]]
                go = (v <= self.threshold[node]) | (np.isnan(v) & self.missing_left[node])
                node = np.where(go, self.left[node], self.right[node])
            out[s:s + chunk] = self.value[node].sum(axis=1)
        return out

    def score_one(self, x: np.ndarray) -> float:
        """iforest: sklearn's ``score_samples`` (negative; higher = more normal);
        hgb: the positive-class probability."""
        total = self._leaf_sum(x)
        if self.kind == "iforest":
            return -(2.0 ** (-total / self.offset))
        return 1.0 / (1.0 + np.exp(-(total + self.offset)))

    def score_many(self, X: np.ndarray) -> np.ndarray:
        total = self._leaf_sums(X)
        if self.kind == "iforest":
            return -(2.0 ** (-total / self.offset))
        return 1.0 / (1.0 + np.exp(-(total + self.offset)))

    # -- storage ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez(path, kind=np.array(self.kind), feature=self.feature, threshold=self.threshold, left=self.left,
                 right=self.right, missing_left=self.missing_left, value=self.value, roots=self.roots,
                 depth=np.array(self.depth), n_features=np.array(self.n_features), offset=np.array(self.offset))

    @classmethod
    def load(cls, path: Path) -> "CompiledTrees":
        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["kind"]), z["feature"], z["threshold"], z["left"], z["right"],
                       z["missing_left"].astype(bool), z["value"], z["roots"], int(z["depth"]),
                       int(z["n_features"]), float(z["offset"]))


def compile_model(model: Any) -> CompiledTrees:
    """Compile a fitted IsolationForest or binary HistGradientBoostingClassifier."""
    from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

    if isinstance(model, IsolationForest):
        return CompiledTrees.from_iforest(model)
    if isinstance(model, HistGradientBoostingClassifier):
        return CompiledTrees.from_hgb(model)
    raise TypeError(f"cannot compile {type(model).__name__}")


# -- ONNX Runtime (the compared alternative) -------------------------------------------------------
def onnx_session(model: Any, n_features: int) -> Any:
    """An ONNX Runtime session for the model (benchmark comparison; needs skl2onnx + onnxruntime).

    HGB goes through skl2onnx (numpy scalars cast to int first: skl2onnx 1.20 with
    onnx 1.23 otherwise fails with "Expected an int, got a boolean"). IsolationForest
    is written as one TreeEnsembleRegressor whose leaves hold the path lengths
    (skl2onnx's own IsolationForest graph has a node per tree node and runs far slower): the session's output is
    the leaf sum, turned into the score as `CompiledTrees.score_one` does.
    """
    from sklearn.ensemble import IsolationForest

    if isinstance(model, IsolationForest):
        return _iforest_onnx(CompiledTrees.from_iforest(model))
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    _cast_hgb_scalars(model)
    onx = to_onnx(model, initial_types=[("X", FloatTensorType([None, n_features]))],
                  options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    return ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])


def _cast_hgb_scalars(model: Any) -> None:
    """Make skl2onnx pass plain ints: wrap the node factory its container calls once."""
    from skl2onnx.common import _container

    if getattr(_container.make_node, "_fengkong_cast", False):
        return
    original = _container.make_node

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, np.integer):
            return int(value)
        return value

    def make_node(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{k: plain(v) for k, v in kwargs.items()})

    make_node._fengkong_cast = True  # type: ignore[attr-defined]
    _container.make_node = make_node


def _iforest_onnx(c: CompiledTrees) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    tree_ids, node_ids, modes, feats, vals, trues, falses = [], [], [], [], [], [], []
    t_ids, t_nodes, t_w = [], [], []
    bounds = list(c.roots) + [len(c.feature)]
    for t in range(len(c.roots)):
        lo, hi = bounds[t], bounds[t + 1]
        for n in range(lo, hi):
            leaf = c.left[n] == n
            tree_ids.append(t)
            node_ids.append(n - lo)
            modes.append("LEAF" if leaf else "BRANCH_LEQ")
            feats.append(int(c.feature[n]))
            vals.append(0.0 if leaf else float(np.float32(c.threshold[n])))
            trues.append(0 if leaf else int(c.left[n] - lo))
            falses.append(0 if leaf else int(c.right[n] - lo))
            if leaf:
                t_ids.append(t)
                t_nodes.append(n - lo)
                t_w.append(float(c.value[n]))
    node = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1, aggregate_function="SUM",
        nodes_treeids=tree_ids, nodes_nodeids=node_ids, nodes_modes=modes, nodes_featureids=feats,
        nodes_values=vals, nodes_truenodeids=trues, nodes_falsenodeids=falses,
        nodes_missing_value_tracks_true=[0] * len(tree_ids),
        target_treeids=t_ids, target_nodeids=t_nodes, target_ids=[0] * len(t_ids), target_weights=t_w,
    )
    graph = helper.make_graph(
        [node], "iforest",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, c.n_features])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    onx.ir_version = 8
    return ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
