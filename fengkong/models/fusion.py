"""The fused fraud risk at decision time: rules and the transaction model together.

The rules' decision score (a sum of analyst-set points) and ``model.txn_risk`` (a
probability) rank payments differently and catch different things: the rules know
the analyst lists and hand-written patterns, the model the learned ones. Adding
points for model bands (``rules/models.yaml``) mixes the two coarsely. The fused
score is a logistic regression on two inputs::

    risk = expit(intercept + a * logit(model.txn_risk) + b * rules_score / 100)

* ``rules_score``: the decision score of the rules that read no ``model.*``
  feature ("rules alone": the pack without ``rules/models.yaml``), i.e. the sum
  of the scores of the enforced rules that fired. Two coefficients, not one per
  rule: analysts add and edit rules daily, and a weight per rule id would go
  stale with every edit, while "the pack's own score" keeps its meaning.

This module is what serving needs: the estimator (`RiskFusion`, stored as plain
numbers in the artifact) and `base_score`, which reads the rules-alone score off a
live decision's reasons (every rule that fired records the features it read), so
nothing is evaluated twice. Fitting it on history (out-of-fold ``txn_risk``, labels
known at the cutoff, the rules-alone score of a pack) is `fengkong.training.fusion`.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

#: Features the models supply; a rule reading one is not part of "rules alone".
MODEL_PREFIX = "model."
_EPS = 1e-6
_ONE_LESS = 1 - _EPS
_MAX = sys.float_info.max


# -- the rules-alone score of a live decision ---------------------------------------------------
class Fired(Protocol):
    """What `base_score` reads of a rule that fired (`fengkong.engine.decision.FiredRule`): typed
    here, not imported, because models never import the engine."""

    @property
    def score(self) -> float: ...

    @property
    def values(self) -> Mapping[str, Any]: ...


class Decided(Protocol):
    """What `base_score` reads of a decision (`fengkong.engine.decision.Decision`): its enforced fires."""

    @property
    def reasons(self) -> Sequence[Fired]: ...


#: Whether a feature name is a model's (``model.*``), remembered per name: the names a fired rule
#: read are the rule set's few (interned, so a lookup finds its key by identity), and
#: ``str.startswith`` parses its arguments at every call. Forgotten past `_NAMES_KEPT` names.
_IS_MODEL: dict[str, bool] = {}
_NAMES_KEPT = 4096


def _is_model(name: str) -> bool:
    """`_IS_MODEL` of a name met for the first time."""
    if len(_IS_MODEL) >= _NAMES_KEPT:
        _IS_MODEL.clear()
    known = _IS_MODEL[name] = name.startswith(MODEL_PREFIX)
    return known


def base_score(decision: Decided) -> float:
    """Rules-alone score of one live decision: enforced rules that fired and read no model.*
    (summed in the reasons' order from 0, as ``sum`` would: loops, not generators, because
    the decision path asks for it per payment)."""
    total: float = 0  # an int until a float is added, as sum's start
    is_model = _IS_MODEL
    for r in decision.reasons:
        for name in r.values:
            try:
                model = is_model[name]
            except KeyError:
                model = _is_model(name)
            if model:
                break
        else:
            total += r.score
    return float(total)


# -- the fused score ------------------------------------------------------------------------------
def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _monotone_logistic(X: np.ndarray, y: np.ndarray, *, C: float) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (scikit-learn's objective: C * log-loss + |w|^2 / 2)
    with non-negative weights: more model risk or more rule points never lower the fused
    risk, even when the labels are too few to say so (a negative weight fit on a handful
    of positives is noise)."""
    from scipy.optimize import minimize

    yy = y.astype(np.float64)
    k = X.shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ w[:k] + w[k]
        p = 1.0 / (1.0 + np.exp(-z))
        value = C * float(np.sum(np.logaddexp(0.0, z) - yy * z)) + 0.5 * float(w[:k] @ w[:k])
        g = C * (p - yy)
        return value, np.concatenate([X.T @ g + w[:k], [g.sum()]])

    base = float(np.clip(yy.mean(), _EPS, 1 - _EPS))
    w0 = np.concatenate([np.zeros(k), [np.log(base / (1 - base))]])
    res = minimize(loss, w0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * k + [(None, None)],
                   options={"maxiter": 1000})
    return res.x[:k].astype(np.float64), float(res.x[k])


class RiskFusion:
    """Logistic regression on [logit(txn_risk), rules_score / score_scale] with
    non-negative weights (scikit-learn style).

    A missing ``txn_risk`` (no model loaded) falls back to the base rate the
    regression saw (its mean training logit), so the fused score degrades to a
    function of the rules alone instead of failing."""

    INPUTS = ("logit(model.txn_risk)", "rules_score / score_scale")

    def __init__(self, *, C: float = 1.0, score_scale: float = 100.0) -> None:
        self.C = C
        self.score_scale = score_scale

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"C": self.C, "score_scale": self.score_scale}

    def _design(self, txn_risk: np.ndarray, rules_score: np.ndarray) -> np.ndarray:
        risk = np.asarray(txn_risk, dtype=np.float64)
        lg = _logit(np.nan_to_num(risk, nan=0.5))
        if hasattr(self, "fill_logit_"):
            lg = np.where(np.isnan(risk), self.fill_logit_, lg)
        return np.column_stack([lg, np.nan_to_num(np.asarray(rules_score, dtype=np.float64)) / self.score_scale])

    def fit(self, txn_risk: np.ndarray, rules_score: np.ndarray, y: np.ndarray) -> "RiskFusion":
        y = np.asarray(y, dtype=bool)
        if y.sum() == 0 or y.all():
            raise ValueError("fusion: the training rows need both fraudulent and legitimate payments")
        if np.isnan(np.asarray(txn_risk, dtype=np.float64)).any():
            raise ValueError("fusion: txn_risk must be present on every training row")
        X = self._design(txn_risk, rules_score)
        self.coef_, self.intercept_ = _monotone_logistic(X, y, C=self.C)
        self.fill_logit_ = float(X[:, 0].mean())
        self.n_rows_ = int(len(y))
        self.n_positive_ = int(y.sum())
        return self

    def decision_function(self, txn_risk: np.ndarray, rules_score: np.ndarray) -> np.ndarray:
        return self._design(txn_risk, rules_score) @ self.coef_ + self.intercept_

    def predict_proba(self, txn_risk: np.ndarray, rules_score: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision_function(txn_risk, rules_score)))

    def score_one(self, txn_risk: float | None, rules_score: float) -> float:
        """The fused risk (0-1) of one decision: `predict_proba` on one row, in scalar
        arithmetic (the decision path calls it per payment; numpy's per-call overhead on
        a row of two values is most of what it would cost); a test holds the two equal.
        Comparisons stand for ``np.clip`` / ``np.nan_to_num`` (NaN staying NaN), for the same
        reason."""
        r = math.nan if txn_risk is None else float(txn_risk)
        if r != r:  # missing: the base rate the regression saw, as `_design`
            lg = getattr(self, "fill_logit_", 0.0)
        else:
            q = _EPS if r < _EPS else (_ONE_LESS if r > _ONE_LESS else r)
            lg = math.log(q / (1 - q))
        s = float(rules_score)
        if s != s:  # as np.nan_to_num
            s = 0.0
        elif s < -_MAX:
            s = -_MAX
        elif s > _MAX:
            s = _MAX
        try:
            coef, a, b = self._coef_cache
        except AttributeError:  # the first call
            coef = None
        if coef is not self.coef_:
            _, a, b = self._coef_floats()
        z = lg * a + s / self.score_scale * b + self.intercept_
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def _coef_floats(self) -> tuple[Any, float, float]:
        """(``coef_``, its two weights as Python floats): converted once per fitted ``coef_`` (a
        new fit or `from_params` sets a new array) rather than once per decision."""
        a, b = self.coef_.tolist()
        cached = self._coef_cache = (self.coef_, float(a), float(b))
        return cached

    # -- storage: plain numbers in the artifact's meta.json (no pickle at serve time) --------
    def to_params(self) -> dict[str, Any]:
        return {"inputs": list(self.INPUTS), "coef": self.coef_.tolist(), "intercept": self.intercept_,
                "fill_logit": self.fill_logit_, "score_scale": self.score_scale, "C": self.C,
                "rows": self.n_rows_, "positives": self.n_positive_}

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "RiskFusion":
        if list(p["inputs"]) != list(cls.INPUTS):
            raise ValueError(f"fusion: unknown inputs {p['inputs']} (this version reads {list(cls.INPUTS)})")
        f = cls(C=float(p.get("C", 1.0)), score_scale=float(p["score_scale"]))
        f.coef_ = np.asarray(p["coef"], dtype=np.float64)
        f.intercept_ = float(p["intercept"])
        f.fill_logit_ = float(p["fill_logit"])
        f.n_rows_ = int(p.get("rows", 0))
        f.n_positive_ = int(p.get("positives", 0))
        return f


__all__ = ["MODEL_PREFIX", "RiskFusion", "base_score"]
