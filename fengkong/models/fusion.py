"""Rules and the transaction model together: one fused fraud probability.

The rules' decision score (a sum of analyst-set points) and ``model.txn_risk`` (a
probability) rank payments differently and catch different things: the rules know
the analyst lists and hand-written patterns, the model the learned ones. Adding
points for model bands (``rules/models.yaml``) mixes the two coarsely. The fused
score is a logistic regression on two inputs, fit on the training days only::

    risk = expit(intercept + a * logit(model.txn_risk) + b * rules_score / 100)

* ``rules_score``: the decision score of the rules that read no ``model.*``
  feature ("rules alone": the pack without ``rules/models.yaml``), i.e. the sum
  of the scores of the enforced rules that fired. Two coefficients, not one per
  rule: analysts add and edit rules daily, and a weight per rule id would go
  stale with every edit, while "the pack's own score" keeps its meaning.
* ``model.txn_risk`` on the training rows is taken out of fold (contiguous blocks
  of training days, each scored by a model fit on the other blocks), so the
  regression learns how far to trust the model on payments it has not seen, not
  on its own training rows.

At decision time nothing is evaluated twice: the model scores first (as now),
the whole pack decides, then `base_score` reads the rules-alone score off the
decision's reasons (every rule that fired records the features it read), and
`RiskFusion.score_one` (or `ModelRuntime.fuse`) gives the fused risk, 0-1: the
review queue's priority.

Labels: a real system trains on what it has been told by the training cutoff:
chargebacks and fraud reports received by then (`reported_labels`), not the
simulator's ``is_fraud``, which marks every fraudulent attempt, declined or not,
reported or never, at once.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

MODEL_PREFIX = "model."
#: Outcome events that tell the platform a payment was fraudulent.
REPORT_TYPES: tuple[str, ...] = ("chargeback", "fraud_report")
_EPS = 1e-6


# -- the rules-alone score ------------------------------------------------------------------------
def reads_model(rule: Any) -> bool:
    """Whether a rule reads a ``model.*`` feature (those are not "rules alone")."""
    return any(name.startswith(MODEL_PREFIX) for name in rule.reads)


def split_rules(ruleset: Any) -> tuple[Any, Any]:
    """Vectorised evaluators of (rules alone, the whole pack), sharing the policy."""
    from fengkong.engine.vectorized import VectorizedRules

    alone = [r for r in ruleset.rules if not reads_model(r)]
    return (VectorizedRules(alone, ruleset.policy, ruleset.schema.dtypes),
            VectorizedRules.from_ruleset(ruleset))


def base_score(decision: Any) -> float:
    """Rules-alone score of one live `Decision`: enforced rules that fired and read no model.*."""
    return float(sum(r.score for r in decision.reasons
                     if not any(name.startswith(MODEL_PREFIX) for name in r.values)))


# -- labels as known at the cutoff ----------------------------------------------------------------
def cutoff_after(last_day: date, utc_offset_min: int | None = None) -> pd.Timestamp:
    """The end of business day ``last_day`` (local midnight after it), in UTC."""
    from fengkong.features.definitions import DEFAULT_BUSINESS_UTC_OFFSET_MIN

    offset = DEFAULT_BUSINESS_UTC_OFFSET_MIN if utc_offset_min is None else utc_offset_min
    local_midnight = pd.Timestamp(last_day + timedelta(days=1))
    return (local_midnight - pd.Timedelta(minutes=offset)).tz_localize("UTC")


def reported_labels(events: pd.DataFrame, payment_ids: Iterable[str], cutoff: pd.Timestamp) -> np.ndarray:
    """1 for each payment with a chargeback or fraud report that occurred before ``cutoff``.

    What the platform knows when it trains: late reports are not known yet, unreported
    fraud never is, declined attempts are never disputed, and a friendly-fraud
    chargeback looks like fraud."""
    ids = pd.Index(pd.Series(list(payment_ids), dtype=object).astype(str))
    rep = events[events["type"].isin(REPORT_TYPES)]
    when = pd.to_datetime(rep["occurred_at"], utc=True, format="ISO8601")
    known = set(rep.loc[(when < cutoff).to_numpy(), "refers_to"].dropna().astype(str))
    return ids.isin(known)


# -- out-of-fold model scores ---------------------------------------------------------------------
def out_of_fold(X: np.ndarray, y: np.ndarray, days: Sequence[Any], *, blocks: int = 4, max_iter: int = 200,
                random_state: int = 0) -> np.ndarray:
    """``txn_risk`` of every row from a model that did not train on that row's block of days.

    Days are cut into ``blocks`` contiguous blocks; a block whose complement has no
    positive (or no negative) gets the complement's base rate."""
    from fengkong.models.transaction_model import fit_txn_model

    days = np.asarray(days)
    order = np.array(sorted(set(days.tolist())), dtype=object)
    out = np.full(len(y), np.nan)
    for part in np.array_split(order, min(blocks, len(order))):
        inside = np.isin(days, part)
        rest = ~inside
        yr = y[rest]
        if 0 < yr.sum() < len(yr):
            out[inside] = fit_txn_model(X[rest], yr, max_iter=max_iter, random_state=random_state).predict_proba(
                X[inside])[:, 1]
        else:
            out[inside] = float(yr.mean()) if len(yr) else 0.0
    return out


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
        """The fused risk (0-1) of one decision."""
        r = np.nan if txn_risk is None else float(txn_risk)
        return float(self.predict_proba(np.array([r]), np.array([rules_score]))[0])

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


__all__ = ["RiskFusion", "base_score", "cutoff_after", "out_of_fold", "reads_model", "reported_labels",
           "split_rules", "REPORT_TYPES"]
