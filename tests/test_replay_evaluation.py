"""Honest figures in the replay report: an evaluation window, the fraud team's daily top-k,
recall per pattern as friction and as stopped, fraud only a stopping rule caught.

Hand-built decision frames whose every figure can be checked by eye, then one replay of
a small simulated history through the CLI with ``--evaluate-from``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fengkong.replay.evaluation import Window, business_days
from fengkong.replay.report import compute

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """(event_id, day of October 2025, card, score, decision, fraud, type, scenario, rules) rows."""
    return pd.DataFrame({
        "event_id": [r[0] for r in rows], "type": [r[6] for r in rows],
        "occurred_at": [f"2025-10-{r[1]:02d}T12:00:00+08:00" for r in rows],
        "card_fingerprint": [r[2] for r in rows], "score": [float(r[3]) for r in rows],
        "decision": [r[4] for r in rows], "rules": [r[8] for r in rows], "shadow_rules": [""] * len(rows),
        "is_fraud": pd.array([r[5] for r in rows], dtype="boolean"), "scenario": [r[7] for r in rows],
    })


P = "payment"
DAYS = _frame([
    # day 1: c1 top (fraud) -> found; c2 fraud but ranked third
    ("a1", 1, "c1", 90, "deny", True, P, "stolen_card", "r_deny"),
    ("a2", 1, "c3", 50, "review", False, P, "", "r_review"),
    ("a3", 1, "c2", 10, "allow", True, P, "stolen_card", ""),
    # day 2: c1 again (found on day 1: left out); c2 reported on day 2 at 09:00, which counts from day 3 on,
    # and scored too low for the top-2
    ("b1", 2, "c1", 99, "deny", True, P, "stolen_card", "r_deny"),
    ("b2", 2, "c2", 3, "challenge", True, P, "cash_out", "r_chal"),
    ("b3", 2, "c4", 70, "allow", False, P, "", ""),
    ("b4", 2, "c5", 5, "allow", False, P, "", ""),
    # day 3: c2 now known (reported on day 2); c4 and c5 remain, no fraud among them
    ("c1", 3, "c2", 95, "deny", True, P, "cash_out", "r_deny;r_review"),
    ("c2", 3, "c4", 60, "allow", False, P, "", ""),
    ("c3", 3, "c5", 40, "allow", False, P, "", ""),
    ("c4", 3, None, 0, "deny", True, "signup", "fake_signup", "r_deny"),
])
REPORTS = pd.DataFrame({"occurred_at": ["2025-10-02T09:00:00+08:00"], "card_fingerprint": [None],
                        "refers_to": ["a3"], "type": ["chargeback"]})
INFO = {"r_deny": {"mode": "enforce", "then": "deny"}, "r_review": {"mode": "enforce", "then": "review"},
        "r_chal": {"mode": "enforce", "then": "challenge"}}


def test_daily_top_k_leaves_out_cards_already_known_compromised() -> None:
    m = compute(DAYS, top_k=2, rule_info=INFO, card_reports=REPORTS)
    t = m.daily_top_k.set_index("day")
    # day 1: c1 (90, fraud), c3 (50) -> 1/2; c1 is found
    assert t.loc["2025-10-01", "precision"] == 0.5 and t.loc["2025-10-01", "known_left_out"] == 0
    # day 2: c1 left out (found on day 1); c2 reported that day only at 09:00: still a candidate, but the
    # top-2 is c4 (70), c5 (5) -> 0 of 2 on a day with fraud
    assert t.loc["2025-10-02", "known_left_out"] == 1 and t.loc["2025-10-02", "compromised"] == 0
    assert t.loc["2025-10-02", "precision"] == 0.0 and t.loc["2025-10-02", "candidates"] == 3
    assert t.loc["2025-10-02", "had_fraud"]
    # day 3: c2 known (the chargeback of a3, its card found through refers_to) -> c4, c5 -> 0, no fraud
    assert t.loc["2025-10-03", "known_left_out"] == 1 and t.loc["2025-10-03", "precision"] == 0.0
    assert not t.loc["2025-10-03", "had_fraud"]
    # the mean is over the days that had fraud: (0.5 + 0) / 2, not (0.5 + 0 + 0) / 3
    assert m.top_k_days_with_fraud == 2 and m.card_precision_top_k == 0.25
    # without the chargeback, c2 stays a candidate on day 3 and tops it
    m2 = compute(DAYS, top_k=2, rule_info=INFO)
    t2 = m2.daily_top_k.set_index("day")
    assert t2.loc["2025-10-03", "precision"] == 0.5 and t2.loc["2025-10-03", "known_left_out"] == 0
    assert m2.card_precision_top_k == pytest.approx(1 / 3)


def test_the_window_scores_only_its_days_but_knows_what_came_before() -> None:
    w = Window(date(2025, 10, 2), date(2025, 10, 3))
    m = compute(DAYS, top_k=2, rule_info=INFO, window=w, card_reports=REPORTS)
    assert m.events == 8 and m.outside_window == 3
    assert m.payments == 7 and m.fraud_payments == 3  # the signup is no payment
    assert list(m.daily_top_k["day"]) == ["2025-10-02", "2025-10-03"]
    # c1 was found on day 1, before the window: still left out on day 2
    assert m.daily_top_k.set_index("day").loc["2025-10-02", "known_left_out"] == 1
    assert int(m.by_outcome["all"].sum()) == 8
    r = m.per_rule.set_index("rule")
    assert r.loc["r_deny", "fires"] == 3 and r.loc["r_review", "fires"] == 1  # a1, a2 are outside
    only_day3 = compute(DAYS, rule_info=INFO, window=Window(date(2025, 10, 3), None))
    assert only_day3.events == 4 and only_day3.recall == 1.0  # c1 (fraud payment) denied


def test_recall_per_pattern_is_per_payment_as_friction_and_stopped() -> None:
    m = compute(DAYS, top_k=2, rule_info=INFO)
    sc = m.by_scenario.set_index("scenario")
    assert set(sc.index) == {"stolen_card", "cash_out"}  # the fake signup is no payment
    assert sc.loc["stolen_card", "fraud_payments"] == 3 and sc.loc["stolen_card", "stopped"] == 2
    assert sc.loc["stolen_card", "recall_stopped"] == pytest.approx(2 / 3)
    assert sc.loc["stolen_card", "recall_friction"] == pytest.approx(2 / 3)
    # cash_out: b2 challenged (friction, not stopped), c1 denied
    assert sc.loc["cash_out", "friction"] == 2 and sc.loc["cash_out", "stopped"] == 1
    assert sc.loc["cash_out", "recall_friction"] == 1.0 and sc.loc["cash_out", "recall_stopped"] == 0.5


def test_fraud_only_it_caught_counts_only_rules_that_stop() -> None:
    r = compute(DAYS, top_k=2, rule_info=INFO).per_rule.set_index("rule")
    # r_deny: a1, b1 alone among stopping rules (fraud payments); c1 with r_review; c4 a signup
    assert r.loc["r_deny", "fraud_only_it_caught"] == 2
    assert r.loc["r_review", "fraud_only_it_caught"] == 0  # a2 good; c1 shared with r_deny
    assert r.loc["r_chal", "fraud_only_it_caught"] is pd.NA  # a challenge stops nothing
    assert r.loc["r_chal", "fires_alone"] == 1


def test_business_days_and_window_parsing() -> None:
    days = business_days(pd.Series(["2025-10-01T16:30:00+00:00", "2025-10-01T15:59:59+00:00",
                                    "2025-10-02T00:10:00+08:00"]))
    assert list(days) == ["2025-10-02", "2025-10-01", "2025-10-02"]  # UTC+08:00 business days
    w = Window.parse("2025-10-02", "2025-10-02")
    assert list(w.mask(np.array(["2025-10-01", "2025-10-02", "2025-10-03"], dtype=object))) == [False, True, False]
    assert Window.parse(None, None).whole
    with pytest.raises(ValueError, match="--evaluate-from: 'tomorrow' is not a date"):
        Window.parse("tomorrow", None)
    with pytest.raises(ValueError, match="is after --evaluate-until"):
        Window.parse("2025-10-05", "2025-10-01")


def test_cli_evaluate_from_scores_only_the_window(tmp_path, redis_server) -> None:
    from fengkong.cli import app
    from fengkong.simulation import SimConfig, run, write_outputs

    sim = tmp_path / "sim"
    write_outputs(run(SimConfig.for_events(1_500, seed=5, days=10, fraud_scale=2.0)), sim, formats=("parquet",))
    ev = pd.read_parquet(sim / "events.parquet")
    days = sorted(set(business_days(ev.loc[ev["type"] == "payment", "occurred_at"])))
    start = days[len(days) // 2]
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["replay", str(sim / "events.parquet"), "--out", str(out), "--rules-dir",
                                   str(RULES), "--lists", str(sim / "blacklist.json"), "--redis-url",
                                   redis_server.url, "--evaluate-from", start, "--top-k", "10", "--no-progress"])
    assert res.exit_code == 0, res.output
    d = pd.read_parquet(out / "decisions.parquet")
    inside = business_days(d["occurred_at"]) >= start
    assert 0 < inside.sum() < len(d)  # the decisions file holds the whole history
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"business days {start} to last" in md and f"({(~inside).sum():,} outside the window" in md
    pay = d[inside & (d["type"] == "payment").to_numpy() & d["is_fraud"].notna().to_numpy()]
    assert f"labelled payments: {len(pay):,}, of them fraud: {int(pay['is_fraud'].sum()):,}" in md
    assert f"evaluated: business days {start} to last" in res.output
    bad = CliRunner().invoke(app, ["replay", str(sim / "events.parquet"), "--rules-dir", str(RULES),
                                   "--evaluate-until", "2025-13-01", "--no-progress"])
    assert bad.exit_code == 2 and "error: --evaluate-until: '2025-13-01' is not a date" in bad.output
