"""`fengkong rules backtest`: a candidate that adds one rule shows exactly that rule's changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fengkong.replay.backtest import backtest
from fengkong.replay.rulegen import copy_rules_dir, write_rules_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    from fengkong.simulation import SimConfig, run, write_outputs

    out = tmp_path_factory.mktemp("sim")
    write_outputs(run(SimConfig.for_events(8_000, seed=5, days=21)), out, formats=("parquet",))
    return out


NEW_RULE = {"id": "trial.big_new_card", "description": "large amount on a card first seen today",
            "when": "event.amount >= 2000 and card.age_days < 1", "then": "review", "score": 10}


def _run(sim_dir: Path, candidate: Path):
    return backtest(sim_dir / "events.parquet", candidate, live_dir=ROOT / "rules",
                    lists_file=sim_dir / "blacklist.json", merchants_file=sim_dir / "merchants.parquet")


def test_a_candidate_that_adds_one_rule_shows_exactly_that_rules_changes(sim_dir, tmp_path) -> None:
    cand = copy_rules_dir(ROOT / "rules", tmp_path / "cand")
    write_rules_file(cand / "trial.yaml", [NEW_RULE])
    result = _run(sim_dir, cand)
    t = result.table.set_index("rule")
    overall, new = t.loc["(all)"], t.loc[NEW_RULE["id"]]
    assert new["status"] == "added" and new["fires_live"] is None or np.isnan(new["fires_live"])
    fires = int(new["fires_candidate"])
    assert fires == int(result.candidate.fired[:, result.candidate.rule_ids.index(NEW_RULE["id"])].sum()) > 0
    assert new["events_affected"] == fires
    # every change is the new rule's: same counts overall and on its row, nothing elsewhere
    for col in ("decisions_changed", "fraud_newly_caught", "fraud_lost", "good_newly_stopped", "good_released"):
        assert new[col] == overall[col], col
    assert int(overall["decisions_changed"]) > 0
    others = t.drop(index=["(all)", NEW_RULE["id"]])
    assert (others["events_affected"] == 0).all() and (others["decisions_changed"] == 0).all()
    assert set(others.drop(index="(policy)")["status"]) == {"same"}
    # adding a review rule can only stop more: nothing is released, no fraud lost
    assert overall["fraud_lost"] == 0 and overall["good_released"] == 0
    assert overall["fraud_newly_caught"] + overall["good_newly_stopped"] <= overall["decisions_changed"]
    assert overall["review_rate_change_pp"] > 0
    # the changed events are exactly where the decision differs, and the new rule fired on each
    changed = result.changed_events()
    assert len(changed) == overall["decisions_changed"]
    assert changed["candidate_rules"].str.contains(NEW_RULE["id"], regex=False).all()
    # labels came through: the simulated history has fraud
    assert result.labels is not None and result.labels.sum() > 0


def test_an_unchanged_candidate_changes_nothing(sim_dir, tmp_path) -> None:
    cand = copy_rules_dir(ROOT / "rules", tmp_path / "same")
    result = _run(sim_dir, cand)
    assert (result.table["decisions_changed"] == 0).all()
    assert (result.table["events_affected"][1:] == 0).all()
    assert set(result.table["status"][2:]) == {"same"}


def test_a_policy_change_is_counted_under_policy(sim_dir, tmp_path) -> None:
    cand = copy_rules_dir(ROOT / "rules", tmp_path / "strict")
    text = (cand / "policy.yaml").read_text(encoding="utf-8")
    (cand / "policy.yaml").write_text(text.replace("default: {challenge: 40, review: 70, deny: 100}",
                                                   "default: {challenge: 20, review: 30, deny: 100}"))
    t = _run(sim_dir, cand).table.set_index("rule")
    assert t.loc["(policy)", "decisions_changed"] == t.loc["(all)", "decisions_changed"] > 0


def test_cli_backtest_prints_the_table_and_writes_csv_and_html(sim_dir, tmp_path) -> None:
    from html.parser import HTMLParser

    from fengkong.cli import app

    cand = copy_rules_dir(ROOT / "rules", tmp_path / "cand<b>&")  # a folder name that must be escaped
    write_rules_file(cand / "trial.yaml", [NEW_RULE])
    out = tmp_path / "out"
    report = tmp_path / "data" / "reports" / "trial.html"
    res = CliRunner().invoke(app, ["rules", "backtest", str(sim_dir / "events.parquet"), "--candidate", str(cand),
                                   "--live", str(ROOT / "rules"), "--lists", str(sim_dir / "blacklist.json"),
                                   "--merchants", str(sim_dir / "merchants.parquet"), "--out", str(out),
                                   "--html", str(report)])
    assert res.exit_code == 0, res.output
    assert NEW_RULE["id"] in res.output and "(all)" in res.output
    table = pd.read_csv(out / "backtest.csv")
    assert list(table["rule"][:2]) == ["(all)", "(policy)"]
    # the HTML report: the new rule's row carries its figures; self-contained and escaped
    page = report.read_text(encoding="utf-8")
    assert page == (out / "backtest.html").read_text(encoding="utf-8")

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):  # noqa: ANN001
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):  # noqa: ANN001
            if tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append("".join(self.cell))
                self.cell = None

        def handle_data(self, data):  # noqa: ANN001
            if self.cell is not None:
                self.cell.append(data)

    parsed = Rows()
    parsed.feed(page)
    row = next(r for r in parsed.rows if r and r[0] == NEW_RULE["id"])
    new = table.set_index("rule").loc[NEW_RULE["id"]]
    assert row[1] == "added" and row[2] == ""  # not fired live: it is not in the live rules
    assert row[3] == f"{int(new['fires_candidate']):,}" and row[5] == f"{int(new['decisions_changed']):,}"
    assert row[-1] == f"{new['review_rate_change_pp']:+.3f}"
    assert ["Candidate rules", str(cand)] in parsed.rows  # the folder's name, unescaped by the parser
    assert "cand&lt;b&gt;&amp;" in page and "<b>&" not in page
    assert "src=" not in page and "href=" not in page and "<script" not in page
    bad = copy_rules_dir(ROOT / "rules", tmp_path / "bad")
    write_rules_file(bad / "broken.yaml", [dict(NEW_RULE, when="event.amount >= ")])
    res = CliRunner().invoke(app, ["rules", "backtest", str(sim_dir / "events.parquet"), "--candidate", str(bad),
                                   "--live", str(ROOT / "rules")])
    assert res.exit_code == 2 and "trial.big_new_card" in res.output
    json.dumps({})
