"""Tune's labels (only what could be known when it runs) and its per-pattern floor."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.engine.ruleset import parse_rules
from fengkong.training.tune import Rows, tune
from fengkong.training.tune_labels import known_labels

RULES = Path(__file__).resolve().parents[1] / "rules"
NOW = pd.Timestamp("2025-11-01T00:00:00Z")


def _payments() -> pd.DataFrame:
    return pd.DataFrame({
        "event.event_id": ["old_cb", "old_late", "young", "young_case", "old_friendly", "old_clean"],
        "occurred_at": [str(NOW - pd.Timedelta(days=d)) for d in (30, 30, 2, 2, 30, 30)],
    })


def _events() -> pd.DataFrame:
    rows = [("chargeback", "old_cb", NOW - pd.Timedelta(days=10)),
            ("fraud_report", "old_late", NOW + pd.Timedelta(days=5)),  # arrives after tune runs
            ("chargeback", "old_friendly", NOW - pd.Timedelta(days=20))]
    return pd.DataFrame({"type": [r[0] for r in rows], "refers_to": [r[1] for r in rows],
                         "occurred_at": [str(r[2]) for r in rows]})


def test_only_matured_or_analyst_labels_are_known() -> None:
    lab = known_labels(_payments(), cutoff=NOW, maturity=timedelta(days=14), events=_events(),
                       analyst={"young_case": True, "old_friendly": False})
    got = dict(zip(_payments()["event.event_id"], zip(lab.known, lab.is_fraud)))
    assert got["old_cb"] == (True, True)           # matured, reported before the cut-off
    assert got["old_late"] == (True, False)        # its report is not known yet: legitimate as far as tune knows
    assert got["young"][0] is np.False_            # too young to say: left out, not legitimate
    assert got["young_case"] == (True, True)       # an analyst's conclusion counts at any age
    assert got["old_friendly"] == (True, False)    # the analyst cleared the chargeback
    assert got["old_clean"] == (True, False)
    assert lab.summary() == {"known": 5, "left_out": 1, "fraud": 2, "matured": 4, "analyst": 2}


def test_without_maturity_everything_before_the_cutoff_counts() -> None:
    lab = known_labels(_payments(), cutoff=NOW, maturity=timedelta(0), events=_events())
    assert lab.known.all() and lab.is_fraud.tolist() == [True, False, False, False, True, False]


def test_labels_need_the_payments_time() -> None:
    with pytest.raises(ValueError, match="occurred_at"):
        known_labels(_payments().drop(columns="occurred_at"), cutoff=NOW, maturity=timedelta(days=1),
                     events=_events())


# -- the per-pattern floor ------------------------------------------------------------------------
PACK = """\
rules:
  - id: t.velocity
    description: many payments of one card within minutes
    when: card.count_10m >= 3
    tunable: {card.count_10m: [3, 8]}
    then: review
    score: 10
  - id: t.amount
    description: an amount far above the user's habit
    when: user.amount_robust_z >= 3
    tunable: {user.amount_robust_z: [3, 8]}
    then: review
    score: 10
"""


@pytest.fixture()
def pack(tmp_path: Path) -> tuple:
    d = tmp_path / "r"
    d.mkdir()
    shutil.copytree(RULES / "lists", d / "lists")
    shutil.copy(RULES / "policy.yaml", d / "policy.yaml")
    (d / "t.yaml").write_text(PACK, encoding="utf-8")
    rules, policy, schema, problems = parse_rules(d)
    assert not problems
    return rules, policy, schema.dtypes


def _rows() -> Rows:
    """1,000 legitimate payments, 30 of them in a 4-payment burst, 5 a little above habit; fraud of
    pattern "burst" looks exactly like those bursts, fraud of pattern "amount" is far above habit."""
    n_legit, n_burst, n_amount = 1000, 10, 40
    count = np.r_[np.where(np.arange(n_legit) < 30, 4, 0), np.full(n_burst, 4), np.zeros(n_amount)]
    z = np.r_[np.where((np.arange(n_legit) >= 30) & (np.arange(n_legit) < 35), 4.0, 0.0), np.zeros(n_burst),
              np.full(n_amount, 6.0)]
    y = np.r_[np.zeros(n_legit, bool), np.ones(n_burst + n_amount, bool)]
    scen = np.array([""] * n_legit + ["burst"] * n_burst + ["amount"] * n_amount, dtype=object)
    frame = pd.DataFrame({"card.count_10m": count, "user.amount_robust_z": z, "event.type": "payment",
                          "merchant.grade": "B"})
    return Rows(frame, y, scen)


def test_without_a_floor_the_search_trades_a_pattern_away(pack: tuple) -> None:
    rules, policy, dtypes = pack
    res = tune(rules, policy, dtypes, _rows(), budget=0.01, curve=(), thresholds=False)
    assert res.train_before["legit_friction"] > 0.01 >= res.train_after["legit_friction"]
    assert res.train_after["per_pattern"]["burst"] == 0.0


def test_the_floor_keeps_every_pattern_and_says_the_budget_was_not_met(pack: tuple) -> None:
    rules, policy, dtypes = pack
    res = tune(rules, policy, dtypes, _rows(), budget=0.01, curve=(), thresholds=False, pattern_floor=0.05)
    assert res.train_after["per_pattern"] == {"amount": 1.0, "burst": 1.0}
    # what could be cut without losing a pattern was: the habit rule's threshold moved above the legit 4.0
    assert res.train_after["legit_friction"] == pytest.approx(0.03)
    assert [c.new for c in res.changes if c.rule_id == "t.amount"][0] > 4.0
    assert "budget not met within the pattern floor" in res.log[-1]


def test_pattern_floor_is_a_share(pack: tuple) -> None:
    rules, policy, dtypes = pack
    with pytest.raises(ValueError, match="pattern_floor"):
        tune(rules, policy, dtypes, _rows(), budget=0.01, curve=(), pattern_floor=1.5)
