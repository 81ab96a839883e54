"""Training on a bank's export through a mapping: the features replay computes (the label's
delayed fraud reports included) and a label-maturity window at the training cut-off."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.cli.models import mapped_history
from fengkong.training.fusion import cutoff_after
from fengkong.training.train import mature, transaction_frame

ROOT = Path(__file__).resolve().parents[1]
LISTS = ROOT / "rules" / "lists"
FLAT = ("event_id", "type", "occurred_at", "merchant_id", "user_id", "amount", "currency", "channel",
        "card_fingerprint", "card_bin", "card_type", "card_issuer_country", "ip", "device_id", "merchant_mcc",
        "refers_to")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The simulator's history as an export that holds no outcome reports, only a fraud flag
    per row (as the public data set of issue 15), with a mapping whose label arrives 7 days late."""
    from fengkong.simulation import SimConfig, run

    sim = run(SimConfig(seed=6, days=24, shoppers=900, merchants=40))
    ev = sim.events[~sim.events["type"].isin(["chargeback", "fraud_report"])]
    out = tmp_path_factory.mktemp("export")
    ev[[*FLAT, "is_fraud"]].to_parquet(out / "export.parquet", index=False)
    mapping = {"columns": {c: c for c in FLAT}, "label": {"column": "is_fraud", "delay": "7d"}}
    (out / "mapping.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    return out, ev


def test_training_reads_the_label_reports_replay_sends(export) -> None:
    out, ev = export
    events, delay = mapped_history(out / "export.parquet", out / "mapping.yaml")
    assert delay == 7 * 86400
    reports = events[events["type"] == "fraud_report"]
    assert len(reports) and set(reports["refers_to"]) <= set(ev.loc[ev["is_fraud"].astype(bool), "event_id"])
    feats = transaction_frame(events, profiles=None, lists_dir=LISTS)
    first = feats["day"].min()
    train = feats[feats["day"] <= first + timedelta(days=16)]
    fed = train["merchant.chargeback_ratio_30d"].astype(float).fillna(0.0)
    assert (fed > 0).sum() > 10  # the compromised-terminal signal is there in training rows
    # read without the label's reports, the same export never fills it: what training saw before
    bare = transaction_frame(ev.drop(columns="is_fraud"), profiles=None, lists_dir=LISTS)
    assert (bare["merchant.chargeback_ratio_30d"].astype(float).fillna(0.0) == 0).all()


def test_payments_inside_the_maturity_window_are_left_out(export, tmp_path: Path) -> None:
    out, ev = export
    until = pd.to_datetime(ev["occurred_at"].min(), utc=True).date() + timedelta(days=15)
    res = CliRunner().invoke(app, [
        "train", "transactions", "--history", str(out / "export.parquet"), "--mapping", str(out / "mapping.yaml"),
        "--artifacts", str(tmp_path), "--rules", str(ROOT / "rules"), "--until", until.isoformat(),
        "--max-iter", "20"])
    assert res.exit_code == 0, res.output
    (version,) = sorted((tmp_path / "transactions").iterdir())
    m = json.loads((version / "meta.json").read_text())["metrics"]
    assert m["label_maturity_days"] == 7 and m["train_labels"] == "reported"
    # independently: payments of the training days younger than 7 days at the end of `until`
    pays = ev[ev["type"] == "payment"]
    t = pd.to_datetime(pays["occurred_at"], utc=True, format="ISO8601")
    cutoff = cutoff_after(until)
    day = (t + pd.Timedelta(hours=8)).dt.date
    on_train_days = (day <= until).to_numpy()
    young = on_train_days & (t > cutoff - pd.Timedelta(days=7)).to_numpy()
    assert m["train_immature_left_out"] == int(young.sum()) > 0
    assert m["train_payments"] == int(on_train_days.sum() - young.sum())
    # a fraud payment two days before the cut-off (its report would come 5 days later) is left out
    fraud_late = pays[young & pays["is_fraud"].astype(bool).to_numpy()]
    assert len(fraud_late)
    row = pd.DataFrame({"occurred_at": pd.to_datetime(fraud_late["occurred_at"].head(1), utc=True, format="ISO8601")})
    assert not mature(row, cutoff, timedelta(days=7))[0]
    assert m["train_fraud"] > 0  # the older frauds, reported by the cut-off, are the positives


def test_maturity_option_overrides_the_mapping_delay(export, tmp_path: Path) -> None:
    out, ev = export
    until = pd.to_datetime(ev["occurred_at"].min(), utc=True).date() + timedelta(days=15)
    res = CliRunner().invoke(app, [
        "train", "transactions", "--history", str(out / "export.parquet"), "--mapping", str(out / "mapping.yaml"),
        "--artifacts", str(tmp_path), "--rules", str(ROOT / "rules"), "--until", until.isoformat(),
        "--max-iter", "10", "--label-maturity-days", "2"])
    assert res.exit_code == 0, res.output
    (version,) = sorted((tmp_path / "transactions").iterdir())
    m = json.loads((version / "meta.json").read_text())["metrics"]
    assert m["label_maturity_days"] == 2
    t = pd.to_datetime(ev.loc[ev["type"] == "payment", "occurred_at"], utc=True, format="ISO8601")
    day = (t + pd.Timedelta(hours=8)).dt.date
    young = ((day <= until) & (t > cutoff_after(until) - pd.Timedelta(days=2))).to_numpy()
    assert m["train_immature_left_out"] == int(young.sum()) > 0
    assert m["train_payments"] == int((day <= until).sum() - young.sum())
