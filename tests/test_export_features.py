"""The features a bank's export carries (issue 15): the card's amount against its own mean per
window, and fraud reports per window on the card and the merchant, whose late arrival makes a
window of reports the fraud of some days before. Online store against a real Redis, values
worked out by hand; the offline twin is held equal to it by tests/test_feature_twin.py."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from fengkong.models.fusion import RiskFusion
from fengkong.training.fusion import keeps_rules
from tests.test_online_store import T0, pay


def test_an_amount_is_read_against_the_cards_own_mean_per_window(store) -> None:
    first = store.process(pay(T0, amount="10.00", card="k1", user="w1", merchant="t1")).features
    assert first["card.mean_amount_7d"] is None and first["card.amount_to_mean_7d"] is None  # no earlier payment
    store.process(pay(T0 + timedelta(hours=1), amount="20.00", card="k1", user="w1", merchant="t1"))
    store.process(pay(T0 + timedelta(days=2), amount="30.00", card="k1", user="w1", merchant="t1"))
    f = store.process(pay(T0 + timedelta(days=2, hours=1), amount="120.00", card="k1", user="w1",
                          merchant="t1")).features
    assert f["card.mean_amount_7d"] == 20.0  # (10 + 20 + 30) / 3
    assert f["card.amount_to_mean_7d"] == 6.0  # 120 against 20
    assert f["card.mean_amount_24h"] == 30.0 and f["card.amount_to_mean_24h"] == 4.0  # only the 30 is within 24h
    assert f["user.mean_amount_30d"] == 20.0 and f["user.amount_to_mean_30d"] == 6.0


def test_fraud_reports_count_per_window_on_the_card_and_the_merchant(store) -> None:
    store.process(pay(T0, card="k2", user="w2", merchant="t2", event_id="x1"))
    store.process(pay(T0 + timedelta(minutes=1), card="k3", user="w3", merchant="t2"))
    # the report arrives a week after the payment, as a bank's export labels it
    store.process(pay(T0 + timedelta(days=7), typ="fraud_report", card="k2", user="w2", merchant="t2",
                      refers_to="x1"))
    soon = store.process(pay(T0 + timedelta(days=7, hours=1), card="k2", user="w2", merchant="t2")).features
    assert soon["merchant.fraud_reports_24h"] == 1 and soon["merchant.fraud_reports_7d"] == 1
    assert soon["merchant.count_7d"] == 0  # the two payments are a week old: out of the 7-day window
    assert soon["merchant.fraud_report_ratio_7d"] is None and soon["merchant.fraud_report_ratio_24h"] is None
    assert soon["card.fraud_reports_7d"] == 1 and soon["card.fraud_reports_30d"] == 1
    later = store.process(pay(T0 + timedelta(days=9), card="k4", user="w4", merchant="t2")).features
    assert later["merchant.fraud_reports_24h"] == 0 and later["merchant.fraud_reports_7d"] == 1
    assert later["merchant.count_7d"] == 1 and later["merchant.fraud_report_ratio_7d"] == 1.0
    gone = store.process(pay(T0 + timedelta(days=16), card="k2", user="w2", merchant="t2")).features
    assert gone["card.fraud_reports_7d"] == 0 and gone["card.fraud_reports_30d"] == 1  # 9 days after it
    assert gone["merchant.fraud_reports_7d"] == 0 and gone["merchant.chargeback_count_30d"] == 1


def _fusion(rules: np.ndarray, p: np.ndarray, y: np.ndarray) -> RiskFusion:
    return RiskFusion().fit(p, rules, y)


def test_fusion_keeps_the_rules_only_when_they_rank_the_validation_days_better() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.02
    p = np.clip(np.where(y, 0.3, 0.05) + rng.normal(0, 0.08, len(y)), 0.001, 0.999)  # an informative model
    noise = np.where(rng.random(len(y)) < 0.15, 30.0, 0.0)  # a rule firing at random, as a reported card
    # trained where the noisy rule happened to agree with the labels, it gets a weight...
    fitted = _fusion(np.where(y, 30.0, noise), p, y)
    assert fitted.coef_[1] > 0
    # ...which blurs the model on later days where it fires at random: dropped
    keep, record = keeps_rules(fitted, p, noise, y)
    assert not keep and record["valid_fused_with_rules_average_precision"] < record["valid_txn_average_precision"]
    # a rule that fires on fraud the model misses on those days is kept
    useful = np.where(y & (rng.random(len(y)) < 0.5), 60.0, 0.0)
    keep, record = keeps_rules(_fusion(useful, p, y), p, useful, y)
    assert keep and record["rules_weight"] == "kept"


def test_fusion_without_the_rules_weight_ranks_as_the_model() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(2000) < 0.05
    p = np.clip(np.where(y, 0.4, 0.1) + rng.normal(0, 0.1, len(y)), 0.001, 0.999)
    only = RiskFusion().fit(p, np.zeros(len(y)), y)
    assert only.coef_[1] == 0.0 and only.coef_[0] > 0
    order = np.argsort(p)
    assert np.all(np.diff(only.predict_proba(p, np.full(len(y), 50.0))[order]) >= 0)  # monotone in p: same ranking
