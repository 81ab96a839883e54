"""Which kind of model ``model.txn_risk`` is: candidates compared on later days, the best kept.

`fengkong train transactions` fits each kind on the training days and scores the
validation days (the later ones) with the same figures, then keeps the kind with the
highest validation average precision (`SELECTED_BY`): AP ranks every validation
payment and exists on any history with labels, while the daily top-k card precision
needs card ids and a fraud team's k. Ties keep the earlier kind of `KINDS`, and a
history without usable validation labels keeps the first kind (``hgb``), saying so.

Kinds (each exported to ONNX and checked equal to scikit-learn at save,
`fengkong.training.onnx_export`):

* ``hgb``: HistGradientBoostingClassifier, which branches on missing values itself;
  a slower rate on smaller trees with at least `HGB_MIN_LEAF` payments a leaf (`HGB_PARAMS`):
  with about 1% positives, leaves of 20 fit single fraud bursts, and the defaults ranked an
  export's test week worse than the forest (docs/benchmarks.md);
* ``logreg``: a calibrated logistic regression on scaled features: Pipeline of a
  median SimpleImputer with missing-value indicators, StandardScaler and
  LogisticRegression, inside CalibratedClassifierCV (sigmoid, one model fit on all the
  rows and calibrated on 3-fold out-of-fold decisions, ``ensemble=False``: one graph);
* ``forest``: RandomForestClassifier (missing values routed by the learned
  ``missing_go_to_left``), depth and leaf size bounded so the served graph stays small.

A column empty on every row a kind is fit on is fit as zeros for every kind (as
`fit_txn_model` does), so an out-of-fold block of days without some source still fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from fengkong.models.transaction_model import recall_at_rate

#: The candidate kinds, in the order ties are broken.
KINDS: tuple[str, ...] = ("hgb", "logreg", "forest")
#: Payments a leaf of the ``hgb`` kind holds at least (see the module docstring).
HGB_MIN_LEAF = 100
#: The ``hgb`` kind's HistGradientBoostingClassifier parameters besides ``max_iter`` and the seed.
HGB_PARAMS: dict[str, Any] = {"learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": HGB_MIN_LEAF,
                              "l2_regularization": 1.0, "early_stopping": False}
#: The validation figure the kept kind has the highest value of.
SELECTED_BY = "valid_average_precision"

#: Daily top-k card precision of validation payments (columns ``event_id``, ``card_fingerprint``,
#: ``day`` as YYYY-MM-DD business dates, ``score``, ``is_fraud``), or None when no day had fraud;
#: the CLI passes the replay report's own (`fengkong.replay.evaluation.daily_top_k`), so training
#: and the report say the same (training may not import replay).
CardPrecision = Callable[[pd.DataFrame], "float | None"]


def _zero_empty(X: np.ndarray) -> np.ndarray:
    empty = np.isnan(X).all(axis=0) if len(X) else np.zeros(X.shape[1], dtype=bool)
    if empty.any():
        X = X.copy()
        X[:, empty] = 0.0
    return X


def fit_kind(kind: str, X: np.ndarray, y: np.ndarray, *, max_iter: int = 200, random_state: int = 0) -> Any:
    """A fitted estimator of ``kind`` (one of `KINDS`) with ``predict_proba``."""
    X = _zero_empty(X)
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=max_iter, random_state=random_state, **HGB_PARAMS).fit(X, y)
    if kind == "logreg":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        # keep_empty_features: a calibration fold may lack every value of a sparse column
        imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
        pipe = Pipeline([("impute", imputer), ("scale", StandardScaler()),
                         ("logreg", LogisticRegression(C=1.0, max_iter=2000))])
        cv = 3 if min(int(y.sum()), int(len(y) - y.sum())) >= 3 else 2
        return CalibratedClassifierCV(pipe, method="sigmoid", cv=cv, ensemble=False).fit(X, y)
    if kind == "forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=100, max_depth=12, min_samples_leaf=20, n_jobs=1,
                                      random_state=random_state).fit(X, y)
    raise ValueError(f"model: expected one of {', '.join(KINDS)}, got {kind!r}")


def validation_figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AP, ROC AUC and recall at a 1% review rate of scores ``p`` on labels ``y`` (both classes needed)."""
    return {"valid_average_precision": float(average_precision_score(y, p)),
            "valid_roc_auc": float(roc_auc_score(y, p)),
            "valid_recall_at_1pct": recall_at_rate(y, p, 0.01)}


@dataclass
class Choice:
    """The comparison: each kind's fitted estimator and figures, the kept kind and why."""

    estimators: dict[str, Any]
    figures: dict[str, dict[str, Any]]
    selected: str
    reason: str
    valid_scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def estimator(self) -> Any:
        return self.estimators[self.selected]

    def table(self) -> str:
        """The comparison as a printed table (the training report), the kept kind marked."""
        cols = ("valid_average_precision", "valid_roc_auc", "valid_recall_at_1pct", "valid_topk_card_precision",
                "fit_seconds")
        heads = ("model", "AP", "ROC AUC", "recall@1%", "top-k card prec.", "fit s")
        rows: list[tuple[str, ...]] = [heads]
        for kind, f in self.figures.items():
            cells = [f"{kind}{' *' if kind == self.selected else ''}"]
            for c in cols:
                v = f.get(c)
                cells.append("-" if v is None else f"{v:.3f}" if c != "fit_seconds" else f"{v:.1f}")
            rows.append(tuple(cells))
        widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], f"* kept: {self.reason}"])

    def meta(self) -> dict[str, Any]:
        """What the artifact's metrics record of the comparison."""
        return {"candidates": self.figures, "selected": self.selected, "selected_by": SELECTED_BY,
                "selection": self.reason}


def compare(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, *, kinds: tuple[str, ...] = KINDS,
            valid_rows: pd.DataFrame | None = None, card_precision: CardPrecision | None = None,
            max_iter: int = 200, random_state: int = 0) -> Choice:
    """Fit every kind on (``X``, ``y``), score the validation rows ``Xv`` and keep the kind with the
    highest `SELECTED_BY` on ``yv``. ``valid_rows`` and ``card_precision``: the validation payments'
    frame and the daily top-k card precision to record for each kind as well."""
    if not kinds:
        raise ValueError("model: no candidate kind to fit")
    estimators: dict[str, Any] = {}
    figures: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}
    judged = len(Xv) > 0 and 0 < int(yv.sum()) < len(yv)
    for kind in kinds:
        t0 = time.process_time()
        est = fit_kind(kind, X, y, max_iter=max_iter, random_state=random_state)
        f: dict[str, Any] = {"fit_seconds": round(time.process_time() - t0, 2)}
        if len(Xv):
            p = est.predict_proba(Xv)[:, 1]
            scores[kind] = p
            if judged:
                f.update(validation_figures(yv, p))
            if valid_rows is not None and card_precision is not None:
                f["valid_topk_card_precision"] = card_precision(valid_rows.assign(score=p))
        estimators[kind] = est
        figures[kind] = f
    if judged:
        best = max(kinds, key=lambda k: (figures[k][SELECTED_BY], -kinds.index(k)))
        reason = f"{best}: highest {SELECTED_BY} ({figures[best][SELECTED_BY]:.4f}) on the validation days"
    else:
        best = kinds[0]
        reason = f"{best}: no validation days with both fraudulent and legitimate payments to compare on"
    return Choice(estimators, figures, best, reason, scores)


__all__ = ["HGB_MIN_LEAF", "HGB_PARAMS", "KINDS", "SELECTED_BY", "CardPrecision", "Choice", "compare", "fit_kind", "validation_figures"]
