"""Quality report and the fused score: hand-computed metrics, no evaluation-day leak."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.engine import load_ruleset
from fengkong.models.fusion import RiskFusion, base_score
from fengkong.models.runtime import ModelRuntime
from fengkong.models.transaction_model import HABIT_FEATURES, TXN_FEATURES
from fengkong.training import quality
from fengkong.training.fusion import cutoff_after, reported_labels, split_rules

RULES = Path(__file__).resolve().parents[1] / "rules"


def _frame(y: list[int], scen: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"is_fraud": np.asarray(y, dtype=bool), "scenario": scen})


def test_evaluate_matches_hand_computed_recall_and_ap() -> None:
    y = [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    scen = ["a", "", "b", "", "", "", "", "", "", "a"]
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    t = quality.evaluate(_frame(y, scen), {"s": score}, rate=0.2).set_index("scenario")
    # top 20% of 10 payments = rows 0 and 1: one of three frauds; one of a's two; none of b's
    assert t.loc["(all)", "recall_at_1pct"] == pytest.approx(1 / 3)
    assert t.loc["a", "recall_at_1pct"] == pytest.approx(1 / 2)
    assert t.loc["b", "recall_at_1pct"] == pytest.approx(0.0)
    # AP: frauds at ranks 1, 3, 10 -> (1/1 + 2/3 + 3/10) / 3
    assert t.loc["(all)", "average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 10) / 3)
    # scenario a against the legitimate rows only (b's fraud left out): ranks 1 and 9
    assert t.loc["a", "average_precision"] == pytest.approx((1 + 2 / 9) / 2)
    # scenario b: its fraud is second behind one legitimate payment
    assert t.loc["b", "average_precision"] == pytest.approx(1 / 2)
    assert t.loc["a", "frauds"] == 2


def test_recall_counts_ties_at_the_cut_fractionally() -> None:
    y = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    score = np.array([1.0, 0.5, 0.5, 0.5, 0, 0, 0, 0, 0, 0])
    t = quality.evaluate(_frame(y, ["", "", "x"] + [""] * 7), {"s": score}, rate=0.2).set_index("scenario")
    # two slots: row 0, then one of the three tied rows at random -> expected recall 1/3
    assert t.loc["(all)", "recall_at_1pct"] == pytest.approx(1 / 3)


def test_rules_alone_is_the_pack_without_models_yaml() -> None:
    rs = load_ruleset(RULES)
    alone, pack = split_rules(rs)
    model_file = {r.id for r in rs.rules if r.file.endswith("models.yaml")}
    assert model_file, "rules/models.yaml holds the model rules"
    assert set(pack.rule_ids) - set(alone.rule_ids) == model_file
    assert len(pack.rule_ids) == len(rs.rules)


def test_base_score_of_a_live_decision_leaves_out_model_rules() -> None:
    rs = load_ruleset(RULES)
    d = rs.evaluate({"merchant.grade": "B", "ip.is_tor": True, "model.txn_risk": 0.95})
    fired = {r.id for r in d.reasons}
    assert {"ip.tor_exit", "model.txn_risk_high"} <= fired
    alone, _ = split_rules(rs)
    expected = sum(r.score for r in d.reasons if r.id in set(alone.rule_ids))
    assert base_score(d) == expected == d.score - rs.by_id["model.txn_risk_high"].score


def test_reported_labels_only_count_reports_before_the_cutoff() -> None:
    cutoff = cutoff_after(date(2025, 10, 31))
    assert cutoff == pd.Timestamp("2025-10-31T16:00:00Z")  # local midnight at +08:00
    events = pd.DataFrame({
        "type": ["payment", "payment", "payment", "chargeback", "fraud_report", "refund"],
        "occurred_at": ["2025-10-20T10:00:00+08:00"] * 3
        + ["2025-10-31T23:59:00+08:00", "2025-11-01T00:00:01+08:00", "2025-10-25T00:00:00+08:00"],
        "refers_to": [None, None, None, "p1", "p2", "p3"],
    })
    assert reported_labels(events, ["p1", "p2", "p3"], cutoff).tolist() == [True, False, False]


def _synthetic(days: int = 10, per_day: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    fraud = rng.random(n) < 0.06
    tor = np.where(fraud, rng.random(n) < 0.5, rng.random(n) < 0.01)
    # every model input present (an all-missing column is not what the twin gives), most of them noise
    base = {name: rng.integers(0, 3, n).astype(float) for name in TXN_FEATURES + HABIT_FEATURES}
    base.update({"event.channel": "quick_pay", "card.type": "credit"})
    # no fraud report in this history: noise in the report counts would fire theft.reported_card (deny)
    base.update({name: 0.0 for name in base if "fraud_report" in name})
    return pd.DataFrame({**base,
        "event.event_id": [f"ev{i}" for i in range(n)],
        "event.amount": np.where(fraud, rng.lognormal(6.5, 0.6, n), rng.lognormal(5.0, 0.8, n)),
        "user.age_days": np.where(fraud, rng.uniform(0, 3, n), rng.uniform(0, 400, n)),
        "ip.is_tor": pd.Series(tor, dtype=object),
        "merchant.grade": "B",
        "is_fraud": fraud,
        "scenario": np.where(fraud, np.where(tor, "tor", "other"), ""),
        "day": np.repeat([date(2025, 10, 1 + d) for d in range(days)], per_day),
    })


def test_fusion_and_model_are_fit_on_training_days_only() -> None:
    feats = _synthetic()
    kw = dict(rules_dir=RULES, until=date(2025, 10, 7), labels="oracle", max_iter=20, habit_trees=10)
    a = quality.run(feats, **kw)
    # scramble every evaluation-day label: nothing fitted may change, only the measurement
    later = feats["day"] > date(2025, 10, 7)
    scrambled = feats.copy()
    scrambled.loc[later, "is_fraud"] = ~feats.loc[later, "is_fraud"]
    b = quality.run(scrambled, **kw)
    assert a.info["fusion"] == b.info["fusion"]
    assert a.info["calibration"] == b.info["calibration"]  # the map is fit on training days only too
    assert a.info["calibration"]["calibration_days"][1] <= "2025-10-07"
    for name in quality.SCORERS:
        np.testing.assert_array_equal(a.scores[name], b.scores[name])
    assert not a.table["average_precision"].equals(b.table["average_precision"])
    # and the fused score uses both inputs: the Tor rule's points and the model
    assert (a.fusion.coef_ > 0).all()
    s = quality.summary(a)
    assert s["eval_payments"] == int(later.sum()) and s["train_payments"] == int((~later).sum())
    assert set(s["ap"]) == set(quality.SCORERS)


def test_fusion_weights_never_go_negative_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random(n) < 0.05
    risk = np.clip(np.where(y, 0.6, 0.1) + rng.normal(0, 0.1, n), 0.01, 0.99)
    rules = rng.choice([0.0, 30.0], size=n)  # rule points unrelated to the labels, or worse
    rules[y] = 0.0
    f = RiskFusion().fit(risk, rules, y)
    assert f.coef_[0] > 0 and f.coef_[1] == 0.0  # clipped at 0, not negative
    g = RiskFusion.from_params(f.to_params())
    np.testing.assert_allclose(g.predict_proba(risk, rules), f.predict_proba(risk, rules))
    assert f.score_one(None, 30.0) == pytest.approx(f.score_one(None, 0.0))  # missing risk: base rate
    rt = ModelRuntime()
    assert rt.fuse({"model.txn_risk": 0.5}, None) is None  # no fusion loaded
    rt.fusion = g
    d = load_ruleset(RULES).evaluate({"merchant.grade": "B", "ip.is_tor": True, "model.txn_risk": 0.7})
    assert rt.fuse({"model.txn_risk": 0.7}, d) == pytest.approx(f.score_one(0.7, base_score(d)))
    assert rt.fuse({"model.txn_risk": None}, d) is None


def test_trained_artifact_serves_the_fused_score(tmp_path: Path) -> None:
    from fengkong.training.train import train_transactions

    feats = _synthetic(days=8, per_day=300, seed=2)
    art = train_transactions(feats, root=tmp_path, until=date(2025, 10, 6), max_iter=20, habit_trees=10,
                             rules_dir=RULES)
    params = art.meta["params"]["fusion"]
    assert params["rows"] == int((feats["day"] <= date(2025, 10, 6)).sum())
    assert "valid_fused_average_precision" in art.meta["metrics"]
    rt = ModelRuntime.load(tmp_path)
    assert rt.fusion is not None and not rt.problems
    row = {"event.type": "payment", "event.amount": 900.0, "user.age_days": 1.0, "merchant.grade": "B",
           "ip.is_tor": True, "event.channel": "quick_pay", "card.type": "credit"}
    out = rt.score(row)
    d = load_ruleset(RULES).evaluate({**row, **out})
    fused = rt.fuse(out, d)
    assert fused == pytest.approx(RiskFusion.from_params(params).score_one(out["model.txn_risk"], base_score(d)))
    assert 0.0 < fused < 1.0


def test_friction_figures_count_friction_and_stopped_per_pattern_and_promotion_days() -> None:
    from fengkong.training.friction import friction_figures, in_promotion

    decision = np.array(["allow", "challenge", "review", "deny", "allow", "challenge", "allow", "deny"], dtype=object)
    fraud = np.array([False, False, False, False, True, True, True, True])
    scen = np.array(["", "", "", "", "a", "a", "b", "b"], dtype=object)
    when = pd.Series(["2026-11-11T10:00:00+08:00", "2026-11-12T10:00:00+08:00", "2026-11-11T11:00:00+08:00",
                      "2026-11-11T12:00:00+08:00"] + ["2026-11-11T10:00:00+08:00"] * 4)
    merchants = np.array(["m1", "m1", "m2", "m1", "m1", "m1", "m1", "m1"], dtype=object)
    promos = pd.DataFrame({"merchant_id": ["m1"], "start": ["2026-11-11T00:00:00+08:00"],
                           "end": ["2026-11-12T00:00:00+08:00"], "expected_multiple": [5.0]})
    promo = in_promotion(merchants, when, promos)
    assert promo.tolist() == [True, False, False, True, True, True, True, True]
    f = friction_figures(decision, fraud, scen, promo)
    assert f["legit_friction"] == 0.75 and f["legit_stopped"] == 0.5
    assert f["promo_legit_payments"] == 2 and f["promo_legit_friction"] == 0.5  # allow and deny
    assert f["per_pattern"] == {"a": {"payments": 2, "friction": 0.5, "stopped": 0.0},
                                "b": {"payments": 2, "friction": 0.5, "stopped": 0.5}}
    assert (f["min_pattern_friction"], f["min_pattern_stopped"]) == (0.5, 0.0)


def test_rules_auc_is_the_auc_of_the_summed_rule_score_without_model_rules(tmp_path: Path) -> None:
    d = tmp_path / "rules"
    (d / "lists").mkdir(parents=True)
    (d / "lists" / "lists.yaml").write_text((RULES / "lists" / "lists.yaml").read_text())
    (d / "policy.yaml").write_text("severity: [allow, challenge, review, deny]\n"
                                   "thresholds:\n  default: {challenge: 40, review: 70, deny: 100}\n")
    (d / "r.yaml").write_text("""rules:
  - id: big
    description: big amount
    when: event.amount >= 100
    then: challenge
    score: 30
  - id: night
    description: at night
    when: event.is_night
    then: challenge
    score: 20
  - id: model_high
    description: reads the model, so not among the rules alone
    when: model.txn_risk >= 0.5
    then: deny
    score: 100
""")
    feats = pd.DataFrame({
        "event.amount": [150.0, 150.0, 10.0, 10.0, 150.0, 10.0],
        "event.is_night": [True, False, True, False, False, False],
        "model.txn_risk": [0.0, 0.0, 0.0, 0.0, 0.9, 0.9],
        "is_fraud": [True, True, False, False, False, True],
    })
    # scores without model_high: 50, 30, 20, 0, 30, 0; frauds {50, 30, 0} vs legit {20, 0, 30}
    # pairs (fraud > legit = 1, tie = 1/2): 50 beats 3; 30: beats 20 and 0, ties 30; 0: ties 0
    assert quality.rules_auc(feats, d) == pytest.approx((3 + 2.5 + 0.5) / 9)
    assert quality.rules_auc(feats.assign(is_fraud=True), d) is None


def test_quality_run_tunes_on_training_days_and_measures_later_days() -> None:
    feats = _synthetic(days=6, per_day=150, seed=4)
    res = quality.run(feats, rules_dir=RULES, until=date(2025, 10, 4), labels="oracle", max_iter=10, habit_trees=5,
                      oof_blocks=2, tune_budget=0.005, tune_passes=1, tune_pattern_floor=None)
    tuned = res.info["tune"]
    # the synthetic noise features make hard rules fire on legitimate payments (about 0.9% of them
    # with this pack): over the budget, the search lowers the
    # training days' legitimate friction (no pattern floor: the noise rules that fire on
    # legitimate payments are the ones that catch the synthetic fraud)
    assert tuned["train_before"]["legit_friction"] > 0.005
    # the noise fires hard rules tune cannot move, so whether a move helps depends on the draw; the
    # search itself is held by tests/test_tune.py: here, it searched and never made the training days worse
    assert tuned["train_after"]["legit_friction"] <= tuned["train_before"]["legit_friction"]
    assert tuned["evaluations"] > len(tuned["changes"]) and tuned["log"][-1].startswith("pass 1:")
    later = feats["day"] > date(2025, 10, 4)
    assert set(res.info["friction"]) == {"rules", "soft", "tuned"}
    assert sum(v["payments"] for v in res.info["friction"]["tuned"]["per_pattern"].values()) == \
        int(feats.loc[later, "is_fraud"].sum())
