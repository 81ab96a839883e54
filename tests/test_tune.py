"""`tunable:` in rule files, the candidate writer, and `fengkong tune` on a small simulated history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.cli.tune import tune_history
from fengkong.engine import RuleSetError, load_ruleset
from fengkong.engine.candidate import Change, write_candidate
from fengkong.engine.ruleset import parse_rules
from fengkong.engine.tunable import rewrite_constants
from fengkong.replay.backtest import backtest
from fengkong.training.friction import FRICTION
from fengkong.training.tune import Rows, tune

RULES = Path(__file__).resolve().parents[1] / "rules"

RULE = """\
# a comment the candidate keeps
rules:
  - id: t.z
    description: z
    when: >
      user.amount_robust_z >= 3.5
      and 1 <= card.count_10m < 9     # a chain: two constants of one feature
    tunable: {TUNABLE}
    then: challenge
    score: 10
"""


def _set(tmp_path: Path, tunable: str) -> Path:
    d = tmp_path / "r"
    d.mkdir()
    shutil.copytree(RULES / "lists", d / "lists")
    shutil.copy(RULES / "policy.yaml", d / "policy.yaml")
    (d / "t.yaml").write_text(RULE.replace("{TUNABLE}", tunable), encoding="utf-8")
    return d


def test_tunable_names_a_constant_and_its_range(tmp_path: Path) -> None:
    d = _set(tmp_path, '{user.amount_robust_z: [2.5, 5], "card.count_10m <": [5, 12]}')
    rules, _, _, problems = parse_rules(d)
    assert problems == []
    (rule,) = rules
    got = {t.key: (t.feature, t.op, t.value, t.lo, t.hi) for t in rule.tunables}
    assert got == {"user.amount_robust_z": ("user.amount_robust_z", None, 3.5, 2.5, 5.0),
                   "card.count_10m <": ("card.count_10m", "<", 9.0, 5.0, 12.0)}


@pytest.mark.parametrize("tunable, reason", [
    ("{user.amount_robust_z: [4, 5]}", "the range [4, 5] does not contain the current value 3.5"),
    ("{card.count_10m: [1, 5]}", 'compared with several numbers (1, 9); name the operator, e.g. "card.count_10m <"'),
    ("{user.age_days: [1, 5]}", "`when` compares no feature user.age_days with a number"),
    ("{user.amount_robust_z: [5, 2]}", "must be two finite numbers, low first"),
])
def test_a_bad_tunable_is_refused_with_file_and_line(tmp_path: Path, tunable: str, reason: str) -> None:
    d = _set(tmp_path, tunable)
    with pytest.raises(RuleSetError) as exc:
        load_ruleset(d)
    (p,) = exc.value.problems
    assert (p.file, p.line, p.rule_id) == ("r/t.yaml", 8, "t.z")
    assert reason in p.reason
    out = CliRunner().invoke(app, ["rules", "check", "--rules-dir", str(d)])
    assert out.exit_code == 1 and "r/t.yaml:8 t.z" in out.output


def test_rewrite_changes_only_the_named_numbers() -> None:
    text = "when: x.a >= 3 and x.b >= 3 and 3 < x.a and x.a < 3 * x.c\n"
    want = "when: x.a >= 4.5 and x.b >= 3 and 4.5 < x.a and x.a < 3 * x.c\n"
    assert rewrite_constants(text, "x.a", None, 3.0, 4.5) == want
    assert rewrite_constants(text, "x.a", ">", 3.0, 2) == "when: x.a >= 3 and x.b >= 3 and 2 < x.a and x.a < 3 * x.c\n"
    with pytest.raises(ValueError, match="no number 7"):
        rewrite_constants(text, "x.a", None, 7.0, 2)


def test_candidate_keeps_the_file_and_reads_back(tmp_path: Path) -> None:
    d = _set(tmp_path, '{user.amount_robust_z: [2.5, 5], "card.count_10m <": [5, 12]}')
    rules, policy, _, _ = parse_rules(d)
    t = {t.key: t for t in rules[0].tunables}
    out = write_candidate(d, tmp_path / "cand", [
        Change("t.z", t["card.count_10m <"], 9.0, 11.0), Change(None, ("grade", "A", "review"), 85.0, 95.0),
        Change(None, ("soft", None, "challenge"), 0.2, 0.13)])
    text = (out / "t.yaml").read_text(encoding="utf-8")
    assert text == RULE.replace("{TUNABLE}", '{user.amount_robust_z: [2.5, 5], "card.count_10m <": [5, 12]}') \
        .replace("< 9 ", "< 11 ")
    pol = (out / "policy.yaml").read_text(encoding="utf-8")
    assert "A:   {challenge: 50, review: 95, deny: 120}   # long clean history: looser" in pol
    assert "soft: {challenge: 0.13, review: 0.5, deny: 0.9}" in pol
    got = load_ruleset(out)
    assert got.policy.by_grade["A"]["review"] == 95 and got.policy.soft == {"challenge": 0.13, "review": 0.5,
                                                                               "deny": 0.9}
    got.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    res = CliRunner().invoke(app, ["simulate", "--out", str(out), "--events", "4000", "--days", "10", "--seed", "1"])
    assert res.exit_code == 0, res.output
    return out


#: A budget the default pack is over on this history's tuning days and the search can reach.
#: Rules-only (no model: soft rules decide like hard ones) the pack meets friction on about
#: 1.7% of these 10 days' judged legitimate payments; what its rules that mark nothing tunable
#: fire on (ip.country_mismatch_new_account's young accounts, theft.new_device_country_amount)
#: keeps it above 1.3% whatever the search moves, so 1% would test the floor, not the search.
BUDGET = 0.016


@pytest.fixture(scope="module")
def tuned(sim: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("tuned")
    run = tune_history(sim / "events.parquet", rules_dir=RULES, out=out, budget=BUDGET,
                       merchants=sim / "merchants.parquet", lists=sim / "blacklist.json", passes=2,
                       promotions=sim / "promotions.parquet")
    return run, out


def test_tune_brings_legit_friction_under_the_budget_and_catches_more(tuned: tuple) -> None:
    run, out = tuned
    r = run.result
    # the default pack is over the budget on these tuning days; the candidate is within it
    assert r.train_before["legit_friction"] > BUDGET >= r.train_after["legit_friction"]
    assert r.train_after["fraud_caught"] >= r.train_before["fraud_caught"]
    assert r.changes and r.test_after is not None and r.test_after["payments"] > 0
    assert run.problems == []  # the candidate passes rules check
    assert CliRunner().invoke(app, ["rules", "check", "--rules-dir", str(run.candidate)]).exit_code == 0
    doc = json.loads((out / "tune.json").read_text())
    assert doc["train_after"]["legit_friction"] == r.train_after["legit_friction"]
    assert (out / "tradeoff.png").stat().st_size > 0 and "## Changes" in (out / "report.md").read_text()
    budgets = [p["budget"] for p in r.curve]
    assert budgets == sorted(budgets) and BUDGET in budgets
    # a bigger budget never catches less on the days it was tuned on
    caught = [p["train"]["fraud_caught"] for p in r.curve]
    assert caught == sorted(caught)


def test_backtest_of_the_candidate_gives_tunes_own_figures(tuned: tuple, sim: Path) -> None:
    run, _ = tuned
    bt = backtest(sim / "events.parquet", run.candidate, live_dir=RULES, lists_file=sim / "blacklist.json",
                  merchants_file=sim / "merchants.parquet", promotions_file=sim / "promotions.parquet")
    feats = bt.features
    ev = pd.read_parquet(sim / "events.parquet").drop_duplicates("event_id").set_index("event_id")
    when = pd.to_datetime(ev.loc[feats["event.event_id"], "occurred_at"].astype(str), utc=True, format="ISO8601")
    day = (when + pd.Timedelta(hours=8)).dt.date.to_numpy()
    pay = (feats["event.type"] == "payment").to_numpy() & (day <= run.last_tuning_day)
    y = bt.labels.to_numpy(dtype=bool)[pay]
    fr = np.isin(bt.candidate.decision[pay], FRICTION)
    assert float(fr[~y].mean()) == run.result.train_after["legit_friction"]
    assert float(fr[y].mean()) == run.result.train_after["fraud_caught"]
    fr_live = np.isin(bt.live.decision[pay], FRICTION)
    assert float(fr_live[~y].mean()) == run.result.train_before["legit_friction"]


def test_tune_is_deterministic(sim: Path) -> None:
    from fengkong.training.train import transaction_frame

    events = pd.read_parquet(sim / "events.parquet")
    feats = transaction_frame(events, profiles=pd.read_parquet(sim / "merchants.parquet"), lists_dir=RULES / "lists",
                              promotions=pd.read_parquet(sim / "promotions.parquet"))
    rules, policy, schema, _ = parse_rules(RULES)
    rows = Rows(feats, feats["is_fraud"].to_numpy(dtype=bool), feats["scenario"].to_numpy(dtype=object))
    got = [tune(rules, policy, schema.dtypes, rows, budget=0.02, seed=3, max_passes=1, curve=()) for _ in range(2)]
    assert [(c.label(), c.new) for c in got[0].changes] == [(c.label(), c.new) for c in got[1].changes]
    assert got[0].changes and got[0].train_after == got[1].train_after
    assert got[0].train_after["legit_friction"] < got[0].train_before["legit_friction"]


def test_max_friction_is_a_share() -> None:
    res = CliRunner().invoke(app, ["tune", "x.parquet", "--max-friction", "150%"])
    assert res.exit_code == 2 and "--max-friction" in res.output


def test_label_maturity_leaves_young_tuning_payments_out(tuned: tuple, sim: Path, tmp_path: Path) -> None:
    run, _ = tuned
    young = tune_history(sim / "events.parquet", rules_dir=RULES, out=tmp_path, budget=0.01,
                         merchants=sim / "merchants.parquet", lists=sim / "blacklist.json", passes=1,
                         promotions=sim / "promotions.parquet", label_maturity_days=5, pattern_floor=0.05)
    assert young.last_tuning_day == run.last_tuning_day
    ev = pd.read_parquet(sim / "events.parquet")
    pay = ev[ev["type"] == "payment"]
    when = pd.to_datetime(pay["occurred_at"].astype(str), utc=True, format="ISO8601")
    day = (when + pd.Timedelta(hours=8)).dt.date
    # the history ends on its last business day; payments from its last 5 days are too young to judge
    last_day = day.max()
    old_enough = day < last_day - pd.Timedelta(days=4)
    tuning = day <= run.last_tuning_day
    assert young.result.train_before["payments"] == int((tuning & old_enough).sum())
    assert 0 < young.result.train_before["payments"] < run.result.train_before["payments"]
    assert young.result.test_before["payments"] == run.result.test_before["payments"]  # the later days still measured
