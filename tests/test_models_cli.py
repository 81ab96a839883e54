"""`fengkong train transactions`: --rules (the fused score in the artifact) and --labels
(reported by the cutoff, or the simulator's oracle), on a small simulated history."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.models.runtime import ModelRuntime
from fengkong.training.fusion import cutoff_after, reported_labels

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from fengkong.simulation import SimConfig, run, write_outputs

    sim = run(SimConfig(seed=3, days=14, shoppers=800, merchants=40))
    out = tmp_path_factory.mktemp("sim")
    write_outputs(sim, out, formats=("parquet",))
    return out, sim.events


def _train(history_dir: Path, artifacts: Path, *extra: str):
    args = ["train", "transactions", "--history", str(history_dir / "events.parquet"),
            "--merchants", str(history_dir / "merchants.parquet"), "--artifacts", str(artifacts),
            "--max-iter", "20", *extra]
    return CliRunner().invoke(app, args)


def _meta(artifacts: Path) -> dict:
    (version,) = sorted((artifacts / "transactions").iterdir())
    return json.loads((version / "meta.json").read_text())


def test_defaults_train_on_reported_labels_and_store_the_fusion(history, tmp_path, monkeypatch) -> None:
    hist, events = history
    monkeypatch.chdir(ROOT)  # the default --rules is ./rules
    res = _train(hist, tmp_path, "--until", "2025-10-10")
    assert res.exit_code == 0, res.output
    meta = _meta(tmp_path)
    m, p = meta["metrics"], meta["params"]
    assert p["labels"] == m["train_labels"] == "reported"
    # the labels are the reports known by the end of the last training day, far fewer than is_fraud
    pays = events[events["type"] == "payment"]
    train_ids = pays.loc[pays["occurred_at"].str[:10] <= "2025-10-10", "event_id"]  # local (+08:00) days
    known = reported_labels(events, train_ids, cutoff_after(date(2025, 10, 10)))
    assert m["train_fraud"] == int(known.sum()) > 0
    assert m["train_fraud"] < m["train_true_fraud"]
    assert p["fusion"]["positives"] == m["train_fraud"] and p["fusion"]["rows"] == m["train_payments"]
    assert m["valid_label"] == "is_fraud" and "valid_fused_average_precision" in m
    rt = ModelRuntime.load(tmp_path)
    assert rt.fusion is not None and not rt.problems


def test_oracle_labels_and_an_explicit_rules_dir(history, tmp_path) -> None:
    hist, _ = history
    res = _train(hist, tmp_path, "--labels", "oracle", "--rules", str(RULES), "--until", "2025-10-10")
    assert res.exit_code == 0, res.output
    meta = _meta(tmp_path)
    m, p = meta["metrics"], meta["params"]
    assert p["labels"] == "oracle" and "train_true_fraud" not in m
    assert p["fusion"]["positives"] == m["train_fraud"] > 0
    assert p["fusion"]["ruleset"]


def test_bad_labels_or_rules_are_refused_before_any_work(history, tmp_path) -> None:
    hist, _ = history
    res = _train(hist, tmp_path, "--labels", "guessed")
    assert res.exit_code == 2 and "--labels" in res.output
    res = _train(hist, tmp_path, "--rules", str(tmp_path / "no-such-rules"))
    assert res.exit_code == 2 and "--rules" in res.output
    assert not (tmp_path / "transactions").exists()
