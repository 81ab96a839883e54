"""The merchant anomaly model: an IsolationForest over merchant daily features.

Unsupervised on purpose: chargebacks arrive weeks late and cash-out merchants
rarely get any, so the grade policy reads the chargeback ratio directly and the
model looks for days unlike the platform's ordinary merchant days (a high credit
share with round, near-limit amounts from few cards, night volume, fast
withdrawals, a sudden jump against the merchant's own baseline).

It keeps scikit-learn's estimator contract: keyword-only constructor arguments
stored unchanged, validation in ``fit``, learned state ending in ``_``, layered
scoring ``score_samples`` (higher = more normal, as sklearn) -> ``decision_function``
(minus ``offset_``) -> ``predict`` (-1 anomaly, 1 normal). ``anomaly_score`` is the
0-1 score the grade policy and the rules read (``model.merchant_anomaly``):
``-score_samples``, Liu et al.'s ``s = 2 ** (-E[h] / c(n))``; about 0.5 is
ordinary, towards 1 anomalous.

Input: the daily feature frame of `fengkong.training.merchant_features` (or an array of its
`INPUTS` columns in that order). Days with fewer than ``min_payments`` payments
are left out of training and get no score (too few payments to judge).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.ensemble import IsolationForest
from sklearn.utils.validation import check_is_fitted

#: Daily features the model reads (columns of `fengkong.training.merchant_features.daily_features`).
INPUTS: tuple[str, ...] = (
    "volume", "count", "avg_ticket", "growth_7d",
    "credit_share", "round_share", "near_limit_share", "night_share",
    "repeat_card_rate", "top_card_share",
    "refund_ratio_30d", "chargeback_ratio_30d", "withdrawal_ratio_7d",
)
_LOG = ("volume", "count", "avg_ticket")


def design_matrix(X: Any) -> np.ndarray:
    """The model's numeric matrix: logs of sizes, log growth, ratios capped, missing -> neutral."""
    if isinstance(X, pd.DataFrame):
        missing = [c for c in INPUTS if c not in X.columns]
        if missing:
            raise ValueError(f"merchant features missing: {', '.join(missing)}")
        A = X.loc[:, list(INPUTS)].to_numpy(dtype=np.float64)
    else:
        A = np.asarray(X, dtype=np.float64)
        if A.ndim != 2 or A.shape[1] != len(INPUTS):
            raise ValueError(f"expected {len(INPUTS)} columns ({', '.join(INPUTS)}), got shape {A.shape}")
    A = A.copy()
    for i, name in enumerate(INPUTS):
        col = A[:, i]
        if name in _LOG:
            col = np.log1p(np.clip(np.nan_to_num(col, nan=0.0), 0, None))
        elif name == "growth_7d":
            col = np.log(np.clip(np.nan_to_num(col, nan=1.0), 1e-3, 1e4))
        else:
            col = np.clip(np.nan_to_num(col, nan=0.0), 0.0, 10.0)
        A[:, i] = col
    return A


class MerchantAnomalyModel(OutlierMixin, BaseEstimator):
    """IsolationForest on merchant days; ``anomaly_score`` in (0, 1)."""

    def __init__(self, *, n_estimators: int = 100, max_samples: int | str = 256, contamination: float | str = "auto",
                 min_payments: int = 5, random_state: int | None = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.contamination = contamination
        self.min_payments = min_payments
        self.random_state = random_state

    def _scored(self, X: Any) -> np.ndarray:
        if isinstance(X, pd.DataFrame) and "count" in X.columns:
            return X["count"].to_numpy(dtype=np.float64) >= self.min_payments
        return np.ones(len(X), dtype=bool)

    def fit(self, X: Any, y: Any = None) -> "MerchantAnomalyModel":
        if self.min_payments < 0:
            raise ValueError("min_payments must be >= 0")
        A = design_matrix(X)[self._scored(X)]
        if len(A) < 2:
            raise ValueError(f"need at least 2 merchant days with >= {self.min_payments} payments to fit")
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                                       contamination=self.contamination, random_state=self.random_state).fit(A)
        self.offset_ = float(self.forest_.offset_)
        self.n_features_in_ = len(INPUTS)
        self.feature_names_in_ = np.array(INPUTS, dtype=object)
        self.n_train_days_ = int(len(A))
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """sklearn's convention: higher is more normal (NaN where the day is too thin to score)."""
        check_is_fitted(self, "forest_")
        A = design_matrix(X)
        out = np.full(len(A), np.nan)
        ok = self._scored(X)
        if ok.any():
            out[ok] = self.forest_.score_samples(A[ok])
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        dec = self.decision_function(X)
        return np.where(np.isnan(dec), 1, np.where(dec < 0, -1, 1))

    def anomaly_score(self, X: Any) -> np.ndarray:
        """0-1, higher = more anomalous (NaN on days with too few payments)."""
        return -self.score_samples(X)
