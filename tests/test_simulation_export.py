"""The simulated bank export (`fengkong.simulation.export`): its shape, its fraud, its mapping's
delayed reports, and `fengkong train transactions --mapping` training on it as it is."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fengkong.cli import app
from fengkong.cli.models import mapped_history
from fengkong.simulation.export import COLUMNS, ExportConfig, simulate_export, write_export

ROOT = Path(__file__).resolve().parents[1]
SMALL = ExportConfig(customers=400, terminals=800, days=42, seed=4)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank_export")
    return write_export(SMALL, out, until_day=35), simulate_export(SMALL)


def test_columns_are_customers_terminals_amounts_times_and_a_flag_only(export) -> None:
    paths, rows = export
    assert tuple(pd.read_csv(paths["export.csv"], nrows=2).columns) == COLUMNS
    assert not {"ip", "device", "device_id"} & {c.lower() for c in rows.columns}
    assert rows["TX_DATETIME"].is_monotonic_increasing
    again = simulate_export(SMALL)
    pd.testing.assert_frame_equal(rows, again)  # seeded: the same history
    assert not rows.equals(simulate_export(ExportConfig(customers=400, terminals=800, days=42, seed=5)))


def test_fraud_share_and_its_three_sources(export) -> None:
    _, rows = export
    share = rows["TX_FRAUD"].mean()
    assert 0.004 < share < 0.016, share
    assert (rows["TX_FRAUD"] == (rows["TX_FRAUD_SCENARIO"] > 0)).all()
    assert set(rows.loc[rows["TX_FRAUD"] == 1, "TX_FRAUD_SCENARIO"]) == {1, 2, 3}
    assert (rows.loc[rows["TX_AMOUNT"] > SMALL.large_amount, "TX_FRAUD"] == 1).all()
    # a compromised terminal: every later payment on it within its window is fraud, whatever the card
    term = rows[rows["TX_FRAUD_SCENARIO"] == 2]
    day = pd.to_datetime(rows["TX_DATETIME"]).dt.normalize()
    busiest = term["TERMINAL_ID"].value_counts().index[0]
    on = rows[rows["TERMINAL_ID"] == busiest].assign(day=day)
    first = on.loc[on["TX_FRAUD_SCENARIO"] == 2, "day"].min()
    window = on[(on["day"] >= first) & (on["day"] < first + pd.Timedelta(days=SMALL.terminal_days))]
    assert (window["TX_FRAUD"] == 1).all() and window["CUSTOMER_ID"].nunique() > 1
    # a compromised customer's fraud is several times their usual amount
    cust = rows[rows["TX_FRAUD_SCENARIO"] == 3]
    c = cust["CUSTOMER_ID"].value_counts().index[0]
    legit = rows[(rows["CUSTOMER_ID"] == c) & (rows["TX_FRAUD"] == 0)]["TX_AMOUNT"].median()
    assert cust[cust["CUSTOMER_ID"] == c]["TX_AMOUNT"].median() > 2.5 * legit


def test_mapping_reads_customer_as_user_and_card_and_reports_fraud_a_week_late(export) -> None:
    paths, rows = export
    events, delay = mapped_history(paths["export.csv"], paths["mapping.yaml"])
    assert delay == 7 * 86400
    pays = events[events["type"] == "payment"]
    assert len(pays) == len(rows)
    assert (pays["user_id"] == pays["card_fingerprint"]).all() and pays["ip"].isna().all()
    assert pays["device_id"].isna().all()
    reports = events[events["type"] == "fraud_report"]
    t = pd.to_datetime(events["occurred_at"], utc=True, format="ISO8601")
    paid = t[pays.index].set_axis(pays["event_id"].astype(str))
    lag = (t[reports.index].to_numpy() - paid.loc[reports["refers_to"].astype(str)].to_numpy())
    assert len(reports) > 0 and (lag == np.timedelta64(7, "D")).all()
    # none after the history's last event: fewer reports than fraud payments
    assert len(reports) < rows["TX_FRAUD"].sum()


def test_cli_trains_on_the_export_as_it_is(export, tmp_path: Path) -> None:
    paths, _ = export
    res = CliRunner().invoke(app, [
        "train", "transactions", "--history", str(paths["export_train.csv"]), "--mapping", str(paths["mapping.yaml"]),
        "--artifacts", str(tmp_path / "art"), "--rules", str(ROOT / "rules"), "--max-iter", "20",
        "--until", (SMALL.start + timedelta(days=27)).isoformat()])
    assert res.exit_code == 0, res.output
    meta = json.loads(next((tmp_path / "art" / "transactions").iterdir()).joinpath("meta.json").read_text())
    dropped = meta["params"]["dropped_features"]["txn_risk"]
    # no IP or device in the export, and a history younger than the age windows: left out, noted
    assert dropped["ip.is_tor"] == dropped["device.count_1h"] == "empty on every training row"
    assert dropped["card.age_days"] == dropped["user.is_new_device"] == "empty on every training row"
    assert "card.age_days" not in meta["features"] and "event.amount" in meta["features"]
    first = pd.read_csv(paths["export_train.csv"], nrows=1)["TX_DATETIME"][0]  # local, +08:00
    assert meta["params"]["history_start"] == pd.Timestamp(first, tz="Asia/Shanghai").tz_convert("UTC").isoformat()
    m = meta["metrics"]
    assert m["train_fraud"] > 0 and m["label_maturity_days"] == 7 and m["valid_txn_roc_auc"] > 0.7
