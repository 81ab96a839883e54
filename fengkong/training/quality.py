"""Quality on simulated history: rules alone, the model alone, and both together.

Train on the earlier days, evaluate on the later days' payments. Per scenario
(fraudulent payments of that scenario against every legitimate payment):

* recall at a 1% review rate: the share of the scenario's fraudulent payments
  among the top 1% of ALL evaluated payments by score (ties at the cut count
  fractionally). With more frauds than review slots it cannot reach 1: the cap
  is (1% of the payments) / (frauds) on the "(all)" row;
* average precision (sklearn's, ties grouped).

Scorers (every input computed point in time by the offline twin and
`fengkong.engine.vectorized`):

* ``rules``: the decision score of the rules alone: the default pack without the
  rules that read ``model.*`` (that is, without ``rules/models.yaml``);
* ``model``: ``model.txn_risk``, fit on the training days;
* ``pack``: the decision score of the whole pack (rules + `rules/models.yaml`,
  which reads model.txn_risk and model.habit_anomaly), ties broken by
  ``model.txn_risk`` (a reviewer works the highest score first);
* ``fused``: "both together", `fengkong.models.fusion.RiskFusion` fit on the training days only
  (out-of-fold txn_risk and the rules-alone score of the training payments).

Training labels (``labels``): ``reported`` (default) = the chargebacks and fraud
reports that had arrived by the end of the last training day, what a real system
would train on; ``oracle`` = the simulator's ``is_fraud`` (every fraudulent
attempt, at once: an upper bound, not a real setting). Evaluation always uses
``is_fraud``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from fengkong.engine import load_ruleset
from fengkong.models.fusion import RiskFusion
from fengkong.models.transaction_model import (
    fill,
    fit_habit_model,
    fit_txn_model,
    recall_at_rate,
)
from fengkong.models.calibration import PRECISION_FEATURE, SHARE_FEATURE
from fengkong.training.calibration import fit_calibration
from fengkong.training.friction import friction_figures, in_promotion
from fengkong.training.fusion import cutoff_after, out_of_fold, reported_labels, split_rules
from fengkong.training.train import fitted_vectorizers, split_day

SCORERS = ("rules", "model", "pack", "fused")
LABELS = ("reported", "oracle")


def evaluate(feats: pd.DataFrame, scores: dict[str, np.ndarray], rate: float = 0.01) -> pd.DataFrame:
    """One row per (scenario, scorer): recall at ``rate`` and average precision."""
    y = feats["is_fraud"].to_numpy(dtype=bool)
    scen = feats["scenario"].to_numpy()
    rows: list[dict[str, Any]] = []
    scenarios = sorted(set(scen[y]))
    for s in ["(all)", *scenarios]:
        pos = y if s == "(all)" else y & (scen == s)
        keep = ~y | pos
        if pos.sum() == 0:
            continue
        for name, score in scores.items():
            sc = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-1e9)
            # recall at the review rate of ALL payments, counted on this scenario's frauds
            rec = _recall_subset(sc, y, pos, rate)
            ap = float(average_precision_score(pos[keep], sc[keep]))
            rows.append({"scenario": s, "scorer": name, "frauds": int(pos.sum()), "recall_at_1pct": rec,
                         "average_precision": ap})
    return pd.DataFrame(rows)


def _recall_subset(score: np.ndarray, y: np.ndarray, pos: np.ndarray, rate: float) -> float:
    k = rate * len(score)
    order = np.sort(score)[::-1]
    cut = order[max(0, min(int(np.ceil(k)) - 1, len(order) - 1))]
    above = score > cut
    tie = score == cut
    take = min(1.0, max(0.0, (k - above.sum()) / tie.sum())) if tie.sum() else 0.0
    return float((pos[above].sum() + take * pos[tie].sum()) / pos.sum())


def rule_scores(feats: pd.DataFrame, rules_dir: Path, *, with_model_rules: bool = True) -> np.ndarray:
    """Decision score of every row: the whole pack, or the rules alone (no rule reading model.*)."""
    alone, pack = split_rules(load_ruleset(rules_dir))
    vec = pack if with_model_rules else alone
    return np.asarray(vec.evaluate(feats).score, dtype=np.float64)


def rules_auc(feats: pd.DataFrame, rules_dir: Path, *, label: str = "is_fraud") -> float | None:
    """ROC AUC of the rules' score alone (the pack without the rules that read ``model.*``)
    on ``feats``' payments against ``label``: how well the rules rank, ties (most payments
    score 0) counted as half. None when the rows lack either class."""
    from sklearn.metrics import roc_auc_score

    y = feats[label].to_numpy(dtype=bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, rule_scores(feats, rules_dir, with_model_rules=False)))


@dataclass
class QualityResult:
    """What `run` measured: the long table, the eval rows' scores, the fitted fusion."""

    table: pd.DataFrame  # evaluate()'s rows
    scores: dict[str, np.ndarray]
    fusion: RiskFusion
    info: dict[str, Any] = field(default_factory=dict)

    def wide(self) -> pd.DataFrame:
        """Scenario x (metric, scorer), rounded for printing."""
        t = self.table.pivot_table(index=["scenario", "frauds"], columns="scorer",
                                   values=["recall_at_1pct", "average_precision"], sort=False)
        cols = [(m, s) for m in ("recall_at_1pct", "average_precision") for s in self.scores]
        return t[cols].round(3)


def run(feats: pd.DataFrame, *, rules_dir: Path, events: pd.DataFrame | None = None, until: date | None = None,
        labels: str = "reported", max_iter: int = 200, habit_trees: int = 100, oof_blocks: int = 4,
        random_state: int = 0, promotions: pd.DataFrame | None = None, calibrate: bool = True,
        tune_budget: float | None = None, tune_passes: int = 3, tune_maturity_days: float = 10.0,
        tune_analyst: bool = True, tune_pattern_floor: float | None = 0.05) -> QualityResult:
    """Fit on the days up to ``until`` (default 70% of the span), evaluate on the later days.

    ``feats``: `fengkong.training.train.transaction_frame` output (offline-twin features plus
    ``is_fraud``, ``scenario``, ``day``). ``events``: the history, needed for
    ``labels="reported"``. ``promotions``: the merchants' planned promotions, for the
    promotion-day friction (`fengkong.training.friction`).

    ``info["friction"]`` holds the friction figures of the evaluated payments' decisions
    under the pack's policy, ``rules`` (the model's features in, no fused risk: soft rules
    count as hard) and ``soft`` (the fused risk given: the policy's soft step). With ``calibrate``
    (default) ``model.txn_risk`` is calibrated as training does (`fengkong.training.calibration`)
    and ``info["calibration"]`` records the map and its reliability table.

    ``tune_budget`` (e.g. 0.01): `fengkong.training.tune` fits the policy and the tunable constants
    to that legitimate-friction budget on the training days (their out-of-fold model scores and
    fused risk, the training labels), and ``info["friction"]["tuned"]`` holds the candidate's
    figures on the evaluated days, its fused risk recomputed from its own rules' score;
    ``info["tune"]`` what changed. The search holds each training payment's fused risk fixed
    (that of the original rules), an approximation when a tunable rule feeds the score.

    Tune judges the training payments by the labels known at the end of the history
    (`fengkong.training.tune_labels`, never the evaluated days' labels): payments at least
    ``tune_maturity_days`` old then, by their chargebacks and fraud reports; with ``tune_analyst``
    also the training payments the starting pack stopped (review or deny), as an analyst
    working those cases concludes (the simulator's truth for those payments only); the rest are
    left out. ``tune_pattern_floor``: `fengkong.training.tune`'s per-pattern floor."""
    if labels not in LABELS:
        raise ValueError(f"labels: expected one of {LABELS}, got {labels!r}")
    last = split_day(feats["day"], until)
    days = feats["day"].to_numpy()
    train_mask = days <= last
    train, valid = feats[train_mask], feats[~train_mask]
    if len(valid) == 0:
        raise ValueError(f"no payments after {last}: nothing to evaluate")
    if labels == "reported":
        if events is None:
            raise ValueError("labels='reported' needs the events (chargebacks and fraud reports)")
        y = reported_labels(events, train["event.event_id"], cutoff_after(last))
    else:
        y = train["is_fraud"].to_numpy(dtype=bool)
    if y.sum() == 0 or y.all():
        raise ValueError(f"the training days (to {last}) need both fraudulent and legitimate labelled payments")

    tv, hv, dropped = fitted_vectorizers(train)  # features empty or constant on the training days left out
    X_train, X_valid = tv.frame(train), tv.frame(valid)
    hgb = fit_txn_model(X_train, y, max_iter=max_iter, random_state=random_state)
    risk = hgb.predict_proba(X_valid)[:, 1]
    cal, cal_record = (fit_calibration(X_train, y, days[train_mask], max_iter=max_iter, random_state=random_state)
                       if calibrate else (None, {"skipped": "calibrate=False"}))
    model_extra: dict[str, np.ndarray] = {}
    if cal is not None:  # as serving: the stored map after the model's score (fengkong.models.calibration)
        risk = cal.apply(risk)
        model_extra = {PRECISION_FEATURE: cal.precision_at(risk), SHARE_FEATURE: cal.share_at(risk)}
    habit, medians = fit_habit_model(hv.frame(train), n_estimators=habit_trees, random_state=random_state)
    habit_valid = -habit.score_samples(fill(hv.frame(valid), medians))

    alone, pack = split_rules(load_ruleset(rules_dir))
    base_train = np.asarray(alone.evaluate(train).score, dtype=np.float64)
    base_valid = np.asarray(alone.evaluate(valid).score, dtype=np.float64)
    # the offline twin's frame keeps its columns unconsolidated; join, don't insert
    model_cols = pd.DataFrame({"model.txn_risk": risk, "model.habit_anomaly": habit_valid, **model_extra},
                              index=valid.index)
    with_model = pd.concat([valid.drop(columns=model_cols.columns, errors="ignore"), model_cols], axis=1)
    pack_valid = np.asarray(pack.evaluate(with_model).score, dtype=np.float64)

    oof = out_of_fold(X_train, y, days[train_mask], blocks=oof_blocks, max_iter=max_iter, random_state=random_state)
    if cal is not None:
        oof = cal.apply(oof)
    fusion = RiskFusion().fit(oof, base_train, y)
    fused = fusion.predict_proba(risk, base_valid)

    decided = {"rules": pack.evaluate(with_model).decision, "soft": pack.evaluate(with_model, risk=fused).decision}
    promo = promo_train = None
    if events is not None and promotions is not None and "merchant_id" in events.columns:
        src = events.loc[valid.index]
        promo = in_promotion(src["merchant_id"].to_numpy(), src["occurred_at"], promotions)
        src_train = events.loc[train.index]
        promo_train = in_promotion(src_train["merchant_id"].to_numpy(), src_train["occurred_at"], promotions)
    tuned_info: dict[str, Any] = {}
    if tune_budget is not None:
        habit_train = -habit.score_samples(fill(hv.frame(train), medians))
        train_extra = {PRECISION_FEATURE: cal.precision_at(oof), SHARE_FEATURE: cal.share_at(oof)} if cal else {}
        train_cols = pd.DataFrame({"model.txn_risk": oof, "model.habit_anomaly": habit_train, **train_extra},
                                  index=train.index)
        train_with = pd.concat([train.drop(columns=train_cols.columns, errors="ignore"), train_cols], axis=1)
        cutoff = cutoff_after(max(feats["day"]))  # "now": the end of the history's last payment day
        labelling = TuneLabelling(events if labels == "reported" else None, cutoff,
                                  timedelta(days=tune_maturity_days), tune_analyst, y)
        decided["tuned"], tuned_info = _tuned(rules_dir, train_with, labelling, fusion.predict_proba(oof, base_train),
                                              promo_train, with_model, risk, fusion, tune_budget, tune_passes,
                                              random_state, tune_pattern_floor)
    friction = {name: friction_figures(d, valid["is_fraud"].to_numpy(dtype=bool), valid["scenario"].to_numpy(), promo)
                for name, d in decided.items()}

    scores = {"rules": base_valid, "model": risk, "pack": pack_valid + np.clip(risk, 0, 1) * 1e-3, "fused": fused}
    table = evaluate(valid, scores)
    yv = valid["is_fraud"].to_numpy(dtype=bool)
    info = {"labels": labels, "last_train_day": str(last), "train_payments": int(len(train)),
            "train_labelled_fraud": int(y.sum()), "train_true_fraud": int(train["is_fraud"].sum()),
            "eval_payments": int(len(valid)), "eval_fraud": int(yv.sum()),
            "recall_cap_at_1pct": float(min(1.0, 0.01 * len(valid) / max(1, yv.sum()))),
            "fusion": fusion.to_params(), "dropped_features": dropped,
            "rules_alone": len(alone.rules), "model_rules": len(pack.rules) - len(alone.rules),
            "friction": friction, "calibration": cal_record, **({"tune": tuned_info} if tuned_info else {})}
    return QualityResult(table=table, scores=scores, fusion=fusion, info=info)


@dataclass(frozen=True)
class TuneLabelling:
    """How `_tuned` labels the training payments (see `run`): the history, the time tune runs at,
    the label maturity, whether analysts' dispositions of stopped payments count, and the
    model's training labels, used as they are (every one known) when there is no history
    (``labels="oracle"``: the upper bound)."""

    events: pd.DataFrame | None
    cutoff: pd.Timestamp
    maturity: timedelta
    analyst: bool
    reported: np.ndarray | None = None


def _tuned(rules_dir: Path, train: pd.DataFrame, labelling: TuneLabelling, fused_train: np.ndarray,
           promo_train: Any, valid: pd.DataFrame, risk: np.ndarray, fusion: RiskFusion, budget: float, passes: int,
           seed: int, pattern_floor: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The decisions on the evaluated days of the set tuned on the training days (see `run`)."""
    from fengkong.engine.vectorized import VectorizedRules
    from fengkong.training.friction import STOPPED
    from fengkong.training.fusion import reads_model
    from fengkong.training.tune import Rows, tune
    from fengkong.training.tune_labels import KnownLabels, known_labels

    rs = load_ruleset(rules_dir)
    try:
        analyst: dict[str, bool] = {}
        if labelling.analyst and labelling.events is not None:  # the cases the starting pack opened on the training days, worked
            start = VectorizedRules.from_ruleset(rs).evaluate(train, risk=fused_train).decision
            worked = np.isin(np.asarray(start, dtype=object), STOPPED)
            analyst = dict(zip(train["event.event_id"].astype(str).to_numpy()[worked],
                               train["is_fraud"].to_numpy(dtype=bool)[worked]))
        if labelling.events is None:
            lab = KnownLabels(np.asarray(labelling.reported, dtype=bool), np.ones(len(train), dtype=bool), 0, 0)
        else:
            lab = known_labels(train, cutoff=labelling.cutoff, maturity=labelling.maturity,
                               events=labelling.events, analyst=analyst)
        scen = train["scenario"].to_numpy(dtype=object) if "scenario" in train.columns else None
        rows = Rows(train, lab.is_fraud, scen, fused_train, promo_train).subset(lab.known)
        res = tune(rs.rules, rs.policy, rs.schema.dtypes, rows, budget=budget, seed=seed, max_passes=passes,
                   curve=(), pattern_floor=pattern_floor)
        alone = VectorizedRules([r for r in res.rules if not reads_model(r)], res.policy, rs.schema.dtypes)
        fused = fusion.predict_proba(risk, np.asarray(alone.evaluate(valid).score, dtype=np.float64))
        decision = VectorizedRules(res.rules, res.policy, rs.schema.dtypes).evaluate(valid, risk=fused).decision
    finally:
        rs.close()
    return decision, {"budget": budget, "labels": {**lab.summary(), "cutoff": str(labelling.cutoff),
                                                   "maturity_days": labelling.maturity / timedelta(days=1)},
                      "pattern_floor": pattern_floor, "changes": [{"what": c.label(), "old": c.old, "new": c.new}
                                                    for c in res.changes],
                      "train_before": {k: v for k, v in res.train_before.items() if k != "per_grade"},
                      "train_after": {k: v for k, v in res.train_after.items() if k != "per_grade"},
                      "log": res.log, "evaluations": res.evaluations}


def summary(result: QualityResult) -> dict[str, Any]:
    """The "(all)" row per scorer and whether fused beats both rules and model on AP."""
    t = result.table
    allrow = t[t["scenario"] == "(all)"].set_index("scorer")
    ap = allrow["average_precision"].to_dict()
    per = t.pivot_table(index="scenario", columns="scorer", values="average_precision")
    per = per.drop(index="(all)", errors="ignore")
    wins = per[(per["fused"] > per["rules"]) & (per["fused"] > per["model"])].index.tolist()
    return {"ap": {k: round(float(v), 4) for k, v in ap.items()},
            "recall_at_1pct": {k: round(float(v), 4) for k, v in allrow["recall_at_1pct"].to_dict().items()},
            "target_met": bool(ap["fused"] > ap["rules"] and ap["fused"] > ap["model"]),
            "scenarios_fused_beats_both": wins, "scenarios": int(len(per)), **{
                k: v for k, v in result.info.items() if k != "fusion"}}


__all__ = ["run", "evaluate", "rule_scores", "rules_auc", "summary", "QualityResult", "recall_at_rate", "SCORERS", "LABELS"]
