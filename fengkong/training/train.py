"""`fengkong train merchants|transactions`: fit, validate on later days, save an artifact.

Training reads histories through the offline twin (`fengkong.features.offline`) and,
for the fused risk, a rule pack; what it saves is all serving loads
(`fengkong.models.artifacts`, `fengkong.models.runtime`): each model converted to
ONNX and checked equal to scikit-learn on the validation rows (the training rows
when there are no later days) by `fengkong.training.onnx_export.export`, which
refuses to save a conversion that differs.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import load_list_specs
from fengkong.features.offline import offline_features
from fengkong.models import artifacts
from fengkong.models.calibration import Calibration, reliability
from fengkong.models.joint import union_names
from fengkong.models.merchant_model import INPUTS, MerchantAnomalyModel, design_matrix
from fengkong.models.transaction_model import (
    HABIT_FEATURES,
    TXN_FEATURES,
    Vectorizer,
    fill,
    fit_habit_model,
    habit_vectorizer,
    recall_at_rate,
    txn_vectorizer,
    usable_columns,
)
from fengkong.training.candidates import KINDS, CardPrecision, compare
from fengkong.training.calibration import fit_calibration
from fengkong.training.fusion import cutoff_after, fit_fusion, reported_labels
from fengkong.training.merchant_features import FEATURES as DAILY_FEATURES
from fengkong.training.merchant_features import business_days, daily_features
from fengkong.training.joint_export import export_joint
from fengkong.training.onnx_export import export


def _biz_dates(occurred: pd.Series) -> pd.Series:
    day, _ = business_days(occurred)
    return pd.Series(pd.Timestamp("1970-01-01") + pd.to_timedelta(day, unit="D"), index=occurred.index).dt.date


def split_day(days: pd.Series, until: date | None, train_share: float = 0.7) -> date:
    """The last training day: ``until``, else the day at ``train_share`` of the span."""
    if until is not None:
        return until
    lo, hi = min(days), max(days)
    return lo + (hi - lo) * train_share  # type: ignore[operator,no-any-return]


def train_merchants(events: pd.DataFrame, *, profiles: pd.DataFrame | None, root: Path, until: date | None = None,
                    n_estimators: int = 100, min_payments: int = 5, random_state: int = 0) -> artifacts.Artifact:
    daily = daily_features(events, profiles=profiles)
    payday = daily[daily["count"] > 0]
    last_train = split_day(payday["day"], until)
    train = daily[daily["day"] <= last_train]
    valid = daily[daily["day"] > last_train]
    model = MerchantAnomalyModel(n_estimators=n_estimators, min_payments=min_payments,
                                 random_state=random_state).fit(train)
    metrics: dict[str, Any] = {"train_days_scored": model.n_train_days_}
    scored = valid.assign(anomaly=model.anomaly_score(valid)).dropna(subset=["anomaly"])
    if len(scored):
        metrics["valid_anomaly_quantiles"] = {q: float(scored["anomaly"].quantile(q)) for q in (0.5, 0.9, 0.99)}
    if "is_fraud" in events.columns and len(scored):
        pays = events[(events["type"] == "payment") & events["merchant_id"].notna()]
        share = pd.DataFrame({"merchant_id": pays["merchant_id"].astype(str), "day": _biz_dates(pays["occurred_at"]),
                              "fraud": pays["is_fraud"].astype(bool)}).groupby(["merchant_id", "day"])["fraud"].mean()
        lab = scored.set_index(["merchant_id", "day"]).index.map(share).to_numpy(dtype=np.float64)
        y = np.nan_to_num(lab) >= 0.2
        metrics["valid_label"] = "merchant-day with >= 20% fraudulent payments"
        metrics["valid_positive_days"] = int(y.sum())
        metrics["valid_days"] = int(len(y))
        if 0 < y.sum() < len(y):
            metrics["valid_roc_auc"] = float(roc_auc_score(y, scored["anomaly"]))
            metrics["valid_average_precision"] = float(average_precision_score(y, scored["anomaly"]))
    window = {"from": str(min(daily["day"])), "to": str(last_train), "validated_to": str(max(daily["day"]))}
    check = valid if (valid["count"] >= min_payments).any() else train
    forest = export("merchants forest", model.forest_, design_matrix(check[check["count"] >= min_payments]))
    return artifacts.save(
        root, "merchants", estimator=model, features=list(INPUTS), window=window, metrics=metrics,
        params=model.get_params(), rows=model.n_train_days_, onnx={"forest": forest},
    )


def transaction_frame(events: pd.DataFrame, *, profiles: pd.DataFrame | None, lists_dir: Path,
                      list_entries: Mapping[str, Iterable[str]] | None = None,
                      promotions: pd.DataFrame | None = None, history_start_us: int | None = None) -> pd.DataFrame:
    """Offline-twin features of every payment, with ``is_fraud``, ``scenario`` and the business day
    (``promotions``: the merchants' planned campaigns, `fengkong.features.promotions`;
    ``history_start_us``: when the history's past begins, as replay's, `fengkong.features.young`)."""
    ipintel = IpIntel.load(lists_dir)
    specs = load_list_specs(lists_dir) if (lists_dir / "lists.yaml").exists() else None
    feats = offline_features(events, ipintel=ipintel, lists=specs, list_entries=list_entries, profiles=profiles,
                             promotions=promotions, history_start_us=history_start_us)
    pay = feats["event.type"] == "payment"
    feats = feats[pay.to_numpy()]
    src = events.loc[feats.index]
    extra = pd.DataFrame({
        "is_fraud": src["is_fraud"].fillna(False).astype(bool).to_numpy() if "is_fraud" in src.columns else False,
        "occurred_at": pd.to_datetime(src["occurred_at"].astype(str), utc=True, format="ISO8601").to_numpy(),
        "scenario": src["scenario"].fillna("").astype(str).to_numpy() if "scenario" in src.columns else "",
        "day": _biz_dates(src["occurred_at"]).to_numpy(),
    }, index=feats.index)
    # one concat, not three inserts into the twin's (deliberately unconsolidated) frame
    return pd.concat([feats, extra], axis=1)


#: Training labels of `train_transactions` (see `fengkong.training.fusion`).
LABELS: tuple[str, ...] = ("reported", "oracle")


def train_transactions(feats: pd.DataFrame, *, root: Path, until: date | None = None, max_iter: int = 200,
                       habit_trees: int = 100, random_state: int = 0, rules_dir: Path | None = None,
                       labels: str = "oracle", events: pd.DataFrame | None = None,
                       kinds: tuple[str, ...] = KINDS, card_precision: CardPrecision | None = None,
                       label_maturity: timedelta | None = None,
                       history_start_us: int | None = None) -> artifacts.Artifact:
    """Fit both transaction models on the payments up to ``until``; validate on the later ones.

    txn_risk's kind is chosen (`fengkong.training.candidates`): each of ``kinds`` is fit and
    scored on the validation days, the one with the highest validation average precision is
    kept; the comparison goes to ``metrics`` (``candidates``, ``selected``, ``selected_by``,
    and the printed ``table``) and the kind to ``params["txn_model"]``. ``card_precision``
    adds each kind's daily top-k card precision (the CLI passes the replay report's).

    ``label_maturity`` (with ``reported`` labels): how long after a payment its fraud report
    or chargeback can arrive. Training payments younger than that at the cutoff (the end of
    the last training day) are left out, not labelled legitimate: their label could not be
    known yet (`mature`). Counted in ``metrics["train_immature_left_out"]``.

    ``labels``: ``oracle`` (the default, for old callers) trains on ``is_fraud``, the
    simulator's truth; ``reported`` trains on what a real platform knows by the end of
    the last training day: payments with a chargeback or fraud report that occurred
    before it (`fusion.reported_labels`; needs ``events``, the history). Validation
    uses ``is_fraud`` when the history has it, else every report in the history.

    With ``rules_dir``, also fit the fused score (`fusion.RiskFusion`: out-of-fold
    txn_risk and the rules-alone score of that pack, training days only, on the same
    labels) and store it in the artifact's ``params["fusion"]`` for `ModelRuntime.fuse`.

    ``history_start_us``: the history start ``feats`` were computed with
    (`fengkong.features.young`), recorded as ``params["history_start"]`` (ISO 8601, or None)."""
    if labels not in LABELS:
        raise ValueError(f"labels: expected one of {', '.join(LABELS)}, got {labels!r}")
    if labels == "oracle" and "is_fraud" not in feats.columns:
        raise ValueError("is_fraud: the history carries no labels; the supervised model needs them")
    if labels == "reported" and (events is None or "event.event_id" not in feats.columns):
        raise ValueError("labels: 'reported' needs the events (chargebacks and fraud reports) and event ids")
    last_train = split_day(feats["day"], until)
    train = feats[feats["day"] <= last_train]
    valid = feats[feats["day"] > last_train]
    immature = 0
    if labels == "reported" and label_maturity is not None and label_maturity > timedelta(0):
        keep = mature(train, cutoff_after(last_train), label_maturity)
        immature = int((~keep).sum())
        train = train[keep]
        if not len(train):
            raise ValueError(f"labels: every training payment is younger than the label maturity "
                             f"({label_maturity}) at the end of {last_train}: train on a later --until")
    if labels == "reported":
        assert events is not None
        cutoff = cutoff_after(last_train)
        y = np.asarray(reported_labels(events, train["event.event_id"], cutoff), dtype=bool)
        if y.sum() == 0 or y.all():
            raise ValueError(f"labels: the training days (to {last_train}) need both reported (a chargeback or "
                             f"fraud report before {cutoff.isoformat()}) and unreported payments")
    else:
        y = train["is_fraud"].to_numpy(dtype=bool)
        if y.sum() == 0 or y.all():
            raise ValueError("is_fraud: the training window needs both fraudulent and legitimate payments")
    simulated = "is_fraud" in feats.columns and (events is None or "is_fraud" in events.columns)
    if simulated:
        yv = valid["is_fraud"].to_numpy(dtype=bool)
    else:  # a real history: the reports it holds, whenever they arrived
        assert events is not None
        yv = np.asarray(reported_labels(events, valid["event.event_id"], pd.Timestamp.max.tz_localize("UTC")),
                        dtype=bool)
    tv, hv, dropped = fitted_vectorizers(train)
    valid_rows = pd.DataFrame({
        "event_id": valid["event.event_id"].to_numpy() if "event.event_id" in valid.columns else None,
        "card_fingerprint": valid["card.fingerprint"].to_numpy() if "card.fingerprint" in valid.columns else None,
        "day": valid["day"].astype(str).to_numpy(), "is_fraud": yv})
    choice = compare(tv.frame(train), y, tv.frame(valid), yv, kinds=kinds, valid_rows=valid_rows,
                     card_precision=card_precision, max_iter=max_iter, random_state=random_state)
    model = choice.estimator
    # a Platt map of the kept kind, fit on the later training days (fengkong.training.calibration);
    # serving applies it after the ONNX graph's score
    calibration, cal_record = fit_calibration(tv.frame(train), y, train["day"].to_numpy(), max_iter=max_iter,
                                              random_state=random_state, kind=choice.selected)
    calibrated = calibration.apply if calibration is not None else (lambda raw: raw)
    habit, medians = fit_habit_model(hv.frame(train), n_estimators=habit_trees, random_state=random_state)
    metrics: dict[str, Any] = {"train_labels": labels, "train_payments": int(len(train)), "train_fraud": int(y.sum()),
                               "dropped_features": dropped, **choice.meta(), "table": choice.table()}
    if simulated and labels != "oracle":
        metrics["train_true_fraud"] = int(train["is_fraud"].sum())
    if label_maturity is not None and labels == "reported":
        metrics["label_maturity_days"] = label_maturity / timedelta(days=1)
        metrics["train_immature_left_out"] = immature
    if len(valid):
        p = calibrated(choice.valid_scores[choice.selected])
        h = -habit.score_samples(fill(hv.frame(valid), medians))
        metrics.update({"valid_label": "is_fraud" if simulated else "reported (whole history)",
                        "valid_payments": int(len(valid)), "valid_fraud": int(yv.sum())})
        if 0 < yv.sum() < len(yv):
            metrics["valid_txn_average_precision"] = float(average_precision_score(yv, p))
            metrics["valid_txn_roc_auc"] = float(roc_auc_score(yv, p))
            metrics["valid_txn_recall_at_1pct"] = recall_at_rate(yv, p, 0.01)
            metrics["valid_habit_roc_auc"] = float(roc_auc_score(yv, h))
            if calibration is not None:
                metrics["valid_txn_reliability"] = reliability(p, yv)
    fusion_params: dict[str, Any] = {}
    if rules_dir is not None:
        fusion_params = _fit_fusion(train, valid, y, yv, tv, p if len(valid) else None, choice.selected, rules_dir,
                                    metrics, max_iter=max_iter, random_state=random_state, calibration=calibration)
    window = {"from": str(min(feats["day"])), "to": str(last_train), "validated_to": str(max(feats["day"]))}
    check = valid if len(valid) else train
    onnx = {"txn_risk": export(f"transactions txn_risk ({choice.selected})", model, tv.frame(check)),
            "habit": export("transactions habit", habit, fill(hv.frame(check), medians))}
    joint = (export_joint(onnx["txn_risk"], onnx["habit"], risk_names=tv.names, habit_names=hv.names,
                          medians=medians), list(union_names(tv.names, hv.names)))
    return artifacts.save(
        root, "transactions", estimator={"txn_risk": model, "habit_anomaly": habit, "habit_medians": medians},
        features=sorted(set(tv.names) | set(hv.names)), window=window, metrics=metrics,
        params={"txn_features": list(tv.names), "habit_features": list(hv.names), "dropped_features": dropped,
                "vocab": {k: list(v) for k, v in {**tv.vocab, **hv.vocab}.items()},
                "habit_medians": medians.tolist(),
                "txn_model": choice.selected, "txn_candidates": list(kinds),
                "history_start": (pd.Timestamp(history_start_us, unit="us", tz="UTC").isoformat()
                                  if history_start_us is not None else None),
                "max_iter": max_iter, "habit_trees": habit_trees, "random_state": random_state, "labels": labels,
                "calibration": cal_record, **({"fusion": fusion_params} if fusion_params else {})},
        rows=len(train), onnx=onnx, joint=joint,
    )


def mature(rows: pd.DataFrame, cutoff: pd.Timestamp, maturity: timedelta) -> np.ndarray:
    """Which payments of ``rows`` (``occurred_at``, UTC) are at least ``maturity`` old at ``cutoff``:
    a report or chargeback about them would have arrived by then, so no report means legitimate."""
    return np.asarray(pd.to_datetime(rows["occurred_at"], utc=True) <= cutoff - pd.Timedelta(maturity), dtype=bool)


def fitted_vectorizers(train: pd.DataFrame) -> tuple[Vectorizer, Vectorizer, dict[str, dict[str, str]]]:
    """The vectorizers of the features worth fitting on (`usable_columns`: not empty or constant
    on the training rows) for txn_risk and the habit model, and the features each left out, with
    the reason: an export without IP or device data trains on the rest instead of failing."""
    txn_names, txn_dropped = usable_columns(txn_vectorizer().frame(train), TXN_FEATURES, missing_counts=True)
    habit_names, habit_dropped = usable_columns(habit_vectorizer().frame(train), HABIT_FEATURES,
                                                missing_counts=False)
    for model, names in (("txn_risk", txn_names), ("habit", habit_names)):
        if not names:
            raise ValueError(f"features: every {model} feature is empty or constant on the training rows")
    return (txn_vectorizer(txn_names), habit_vectorizer(habit_names),
            {"txn_risk": txn_dropped, "habit": habit_dropped})


def _fit_fusion(train: pd.DataFrame, valid: pd.DataFrame, y: np.ndarray, yv: np.ndarray, tv: Vectorizer,
                p: np.ndarray | None, kind: str, rules_dir: Path, metrics: dict[str, Any], *, max_iter: int,
                random_state: int, calibration: Calibration | None = None) -> dict[str, Any]:
    """The fused score on out-of-fold txn_risk of the kept ``kind`` (through ``calibration``, as
    served); ``p``: its validation scores, calibrated."""
    fusion, alone, ruleset, record = fit_fusion(
        train, y, tv.frame(train), rules_dir, max_iter=max_iter, random_state=random_state, kind=kind,
        calibration=calibration, valid=(p, valid, yv) if p is not None else None)
    if p is not None and 0 < yv.sum() < len(yv):
        metrics["valid_fused_average_precision"] = float(average_precision_score(
            yv, fusion.predict_proba(p, np.asarray(alone.evaluate(valid).score))))
    if record:
        metrics["fusion_rules"] = record
    return {**fusion.to_params(), "ruleset": ruleset.content_hash[:12]}


__all__ = ["DAILY_FEATURES", "LABELS", "fitted_vectorizers", "mature", "train_merchants", "train_transactions", "transaction_frame", "split_day"]
