"""Fitting the fused risk (`fengkong.models.fusion.RiskFusion`) on history.

The regression is fit on the training days only, on two inputs:

* ``model.txn_risk`` taken out of fold (`out_of_fold`: contiguous blocks of
  training days, each scored by a model fit on the other blocks), so the
  regression learns how far to trust the model on payments it has not seen, not
  on its own training rows;
* the rules-alone score of the pack (`split_rules`: the rules that read no
  ``model.*`` feature, evaluated by the vectorised evaluator on the offline twin).

Labels: a real system trains on what it has been told by the training cutoff:
chargebacks and fraud reports received by then (`reported_labels`, `cutoff_after`),
not the simulator's ``is_fraud``, which marks every fraudulent attempt, declined
or not, reported or never, at once.

This lives apart from the scoring half because it reads rule packs (the engine),
which serving code never imports.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from fengkong.engine import load_ruleset
from fengkong.engine.rule import Rule
from fengkong.engine.ruleset import RuleSet
from fengkong.engine.vectorized import VectorizedRules
from fengkong.features.definitions import DEFAULT_BUSINESS_UTC_OFFSET_MIN
from fengkong.models.calibration import Calibration
from fengkong.models.fusion import MODEL_PREFIX, RiskFusion
from fengkong.training.candidates import fit_kind

#: Outcome events that tell the platform a payment was fraudulent.
REPORT_TYPES: tuple[str, ...] = ("chargeback", "fraud_report")
#: The outcome an analyst's `legit` resolution sends: a confirmed negative.
LEGIT_TYPE = "legit_confirmed"


# -- the rules-alone score ------------------------------------------------------------------------
def reads_model(rule: Rule) -> bool:
    """Whether a rule reads a ``model.*`` feature (those are not "rules alone")."""
    return any(name.startswith(MODEL_PREFIX) for name in rule.reads)


def split_rules(ruleset: RuleSet) -> tuple[VectorizedRules, VectorizedRules]:
    """Vectorised evaluators of (rules alone, the whole pack), sharing the policy."""
    alone = [r for r in ruleset.rules if not reads_model(r)]
    return (VectorizedRules(alone, ruleset.policy, ruleset.schema.dtypes),
            VectorizedRules.from_ruleset(ruleset))


# -- labels as known at the cutoff ----------------------------------------------------------------
def cutoff_after(last_day: date, utc_offset_min: int | None = None) -> pd.Timestamp:
    """The end of business day ``last_day`` (local midnight after it), in UTC."""
    offset = DEFAULT_BUSINESS_UTC_OFFSET_MIN if utc_offset_min is None else utc_offset_min
    local_midnight = pd.Timestamp(last_day + timedelta(days=1))
    return (local_midnight - pd.Timedelta(minutes=offset)).tz_localize("UTC")


def reported_labels(events: pd.DataFrame, payment_ids: Iterable[str], cutoff: pd.Timestamp) -> np.ndarray:
    """1 for each payment with a chargeback or fraud report that occurred before ``cutoff``,
    unless an analyst confirmed it legitimate (``legit_confirmed``, a confirmed negative:
    the analyst saw the case, reports included).

    What the platform knows when it trains: late reports are not known yet, unreported
    fraud never is, declined attempts are never disputed, and a friendly-fraud
    chargeback looks like fraud until an analyst clears it."""
    ids = pd.Index(pd.Series(list(payment_ids), dtype=object).astype(str))
    rep = events[events["type"].isin(REPORT_TYPES + (LEGIT_TYPE,))]
    when = pd.to_datetime(rep["occurred_at"], utc=True, format="ISO8601")
    known = rep.loc[(when < cutoff).to_numpy()]
    legit = set(known.loc[known["type"] == LEGIT_TYPE, "refers_to"].dropna().astype(str))
    reported = set(known.loc[known["type"] != LEGIT_TYPE, "refers_to"].dropna().astype(str))
    return np.asarray(ids.isin(reported - legit))


# -- out-of-fold model scores ---------------------------------------------------------------------
def out_of_fold(X: np.ndarray, y: np.ndarray, days: Sequence[Any] | np.ndarray, *, blocks: int = 4,
                max_iter: int = 200, random_state: int = 0, kind: str = "hgb") -> np.ndarray:
    """``txn_risk`` of every row from a model (of ``kind``, `candidates.KINDS`) that did not train on
    that row's block of days.

    Days are cut into ``blocks`` contiguous blocks; a block whose complement has no
    positive (or no negative) gets the complement's base rate."""
    day_arr = np.asarray(days)
    order = np.array(sorted(set(day_arr.tolist())), dtype=object)
    out = np.full(len(y), np.nan)
    for part in np.array_split(order, min(blocks, len(order))):
        inside = np.isin(day_arr, part)
        rest = ~inside
        yr = y[rest]
        if 0 < yr.sum() < len(yr):
            out[inside] = fit_kind(kind, X[rest], yr, max_iter=max_iter, random_state=random_state).predict_proba(
                X[inside])[:, 1]
        else:
            out[inside] = float(yr.mean()) if len(yr) else 0.0
    return out


# -- the fused score on a pack --------------------------------------------------------------------
def fit_fusion(train: pd.DataFrame, y: np.ndarray, X_train: np.ndarray, rules_dir: Path, *, max_iter: int,
               random_state: int, kind: str = "hgb", calibration: Calibration | None = None,
               valid: tuple[np.ndarray, pd.DataFrame, np.ndarray] | None = None,
               ) -> tuple[RiskFusion, VectorizedRules, RuleSet, dict[str, Any]]:
    """`RiskFusion` fit on the training rows: out-of-fold txn_risk and the rules-alone score of the
    pack in ``rules_dir``; also returns the rules-alone evaluator, the pack (for validation and
    the artifact's record of which pack it was fit on) and what to record of the choice. With
    ``calibration`` the out-of-fold scores go through it first, as the served ``model.txn_risk`` does.

    ``valid``: the validation days' (calibrated txn_risk, rows, labels). When the fused score ranks
    them worse than txn_risk alone (lower average precision), the rules' weight is dropped
    (`keeps_rules`): a pack whose firing rules are low-precision on this history (a reported card
    that keeps paying) would otherwise blur a calibrated model's ranking."""
    ruleset = load_ruleset(rules_dir)
    alone, _ = split_rules(ruleset)
    oof = out_of_fold(X_train, y, train["day"].to_numpy(), max_iter=max_iter, random_state=random_state, kind=kind)
    if calibration is not None:
        oof = calibration.apply(oof)
    rules = np.asarray(alone.evaluate(train).score, dtype=np.float64)
    fusion = RiskFusion().fit(oof, rules, y)
    record: dict[str, Any] = {}
    if valid is not None:
        p, rows, yv = valid
        keep, record = keeps_rules(fusion, p, np.asarray(alone.evaluate(rows).score, dtype=np.float64), yv)
        if not keep:
            fusion = RiskFusion().fit(oof, np.zeros_like(rules), y)
    return fusion, alone, ruleset, record


def keeps_rules(fusion: RiskFusion, p: np.ndarray, rules: np.ndarray, yv: np.ndarray) -> tuple[bool, dict[str, Any]]:
    """Whether the fused score (``fusion`` on validation txn_risk ``p`` and rules score ``rules``)
    ranks the validation labels ``yv`` at least as well as ``p`` alone, by average precision, and
    the two figures (a fused score only of txn_risk is monotone in it, so it ranks as ``p`` does).
    Kept when the validation days cannot say (one class only)."""
    from sklearn.metrics import average_precision_score

    yv = np.asarray(yv, dtype=bool)
    if not 0 < yv.sum() < len(yv):
        return True, {"rules_weight": "kept: no validation days with both classes to compare on"}
    fused = float(average_precision_score(yv, fusion.predict_proba(p, rules)))
    alone = float(average_precision_score(yv, p))
    keep = fused >= alone
    return keep, {"valid_fused_with_rules_average_precision": fused, "valid_txn_average_precision": alone,
                  "rules_weight": "kept" if keep else "dropped: the fused score ranked the validation days "
                                                      "worse than txn_risk alone"}


__all__ = ["LEGIT_TYPE", "REPORT_TYPES", "cutoff_after", "fit_fusion", "keeps_rules", "out_of_fold", "reads_model", "reported_labels",
           "split_rules"]
