"""Fitting the transaction model's calibration on days later than the model learned from.

A gradient-boosting model's probability is not a fraud rate: it is fit on reported
labels (late and incomplete) and is over-confident on its own training rows. So the
training days are cut in two: the model of the earlier days scores the later days
(``share`` of them, at least one), and a Platt map (sklearn's
``CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid")``) is fit on those
scores and the labels of those days. The served model is then fit on every training
day (as before) and the map applied to it: the same scheme as sklearn's
``CalibratedClassifierCV(ensemble=False)``, with a time cut instead of folds, so the
map learns how scores of a day the model has not seen turn into outcomes.

The precision and share curves (`fengkong.models.calibration.Calibration`) are taken
over the earlier model's calibrated scores on the calibration days (out of sample),
and the reliability table (bins of calibrated risk: mean predicted, observed rate,
count) is stored beside them; training adds the validation days' table to the metrics.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from fengkong.models.calibration import Calibration, logit, reliability
from fengkong.training.candidates import fit_kind

#: The share of the training days (the latest) the map is fit on.
CALIBRATION_SHARE = 0.3


class _LogitOf(ClassifierMixin, BaseEstimator):
    """A fitted model seen through the logit of its probability, so sklearn's sigmoid
    calibration fits ``expit(a * logit(raw) + b)`` whatever the kind (a forest or a
    calibrated pipeline has no decision_function; HGB's is that logit already)."""

    def __init__(self, model: Any = None) -> None:
        self.model = model

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.model.classes_)

    def fit(self, X: Any, y: Any) -> "_LogitOf":
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        return logit(self.model.predict_proba(X)[:, 1])

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.model.predict(X))


def fit_calibration(X: np.ndarray, y: np.ndarray, days: Sequence[Any] | np.ndarray, *, max_iter: int = 200,
                    random_state: int = 0, share: float = CALIBRATION_SHARE,
                    kind: str = "hgb") -> tuple[Calibration | None, dict[str, Any]]:
    """The calibration of the module docstring and what to record of it; ``None`` (with the
    reason in the record) when the earlier or the later days lack a fraudulent or a legitimate
    payment, so no map can be fit: serving then gives the raw score as before."""
    day_arr = np.asarray(days)
    order = sorted(set(day_arr.tolist()))
    n_cal = max(1, int(round(len(order) * share)))
    if len(order) < 2:
        return None, {"skipped": "calibration needs at least two training days (earlier ones to fit, a later one "
                                 "to calibrate on)"}
    first = order[-n_cal] if n_cal < len(order) else order[-1]
    later = day_arr >= first
    earlier = ~later
    y = np.asarray(y, dtype=bool)
    record: dict[str, Any] = {"kind": kind, "fit_days": [str(order[0]), str(max(day_arr[earlier]))],
                              "calibration_days": [str(first), str(order[-1])],
                              "calibration_rows": int(later.sum()), "calibration_positives": int(y[later].sum())}
    for name, part in (("earlier", earlier), ("calibration", later)):
        if not 0 < y[part].sum() < part.sum():
            return None, {**record, "skipped": f"the {name} training days need both fraudulent and legitimate "
                                               "labelled payments"}
    model = fit_kind(kind, X[earlier], y[earlier], max_iter=max_iter, random_state=random_state)
    ccv = CalibratedClassifierCV(FrozenEstimator(_LogitOf(model)), method="sigmoid").fit(X[later], y[later])
    sig = ccv.calibrated_classifiers_[0].calibrators[0]
    # sklearn: p = 1 / (1 + exp(a_ * f + b_)) with f = decision_function = logit(raw)
    raw = model.predict_proba(X[later])[:, 1]
    cal = Calibration.from_scores(-float(sig.a_), -float(sig.b_), raw)
    risk = cal.apply(raw)
    record.update({**cal.to_params(), "reliability": reliability(risk, y[later])})
    record["check_max_abs_diff"] = float(np.max(np.abs(risk - ccv.predict_proba(X[later])[:, 1])))
    return cal, record


__all__ = ["CALIBRATION_SHARE", "fit_calibration"]
