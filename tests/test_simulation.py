"""`fengkong simulate` holds to its contract: valid events, consistent labels, every
scenario present, deterministic by seed, and the command. What the history shows
(the platform, the scenarios' signals, the legitimate look-alikes) is in
tests/test_simulation_signals.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from simulation_world import CONFIG, events_with_ts

from fengkong.events import FLAT_COLUMNS, LABEL_COLUMNS, flat_to_dict, looks_like_pan, parse_event
from fengkong.simulation import SCENARIOS, SimConfig, run, simulate, write_outputs
from fengkong.simulation import constants as K


@pytest.fixture(scope="module")
def sim():
    return run(CONFIG)


@pytest.fixture(scope="module")
def df(sim):
    return events_with_ts(sim)


@pytest.fixture(scope="module")
def payments(df):
    return df[df["type"] == "payment"]


# ---- the contract ---------------------------------------------------------------------
def test_columns_are_the_flat_event_plus_labels(sim):
    cols = list(sim.events.columns)
    assert cols[: len(FLAT_COLUMNS)] == list(FLAT_COLUMNS)
    assert cols[len(FLAT_COLUMNS): len(FLAT_COLUMNS) + 2] == list(LABEL_COLUMNS)
    assert set(cols) - set(FLAT_COLUMNS) - set(LABEL_COLUMNS) == {"note"}
    assert sim.events["is_fraud"].dtype == bool
    assert set(sim.events["type"]) == set(K.EVENT_TYPES)
    assert (sim.events["currency"] == "CNY").all()


def test_every_row_passes_the_event_contract(sim):
    for row in sim.events.to_dict("records"):
        try:
            parse_event(flat_to_dict(row))
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{row['event_id']} ({row['type']}, {row['scenario']}): {exc}")


def test_no_value_looks_like_a_card_number(sim):
    for col in sim.events.columns:
        if sim.events[col].dtype == bool:
            continue
        values = sim.events[col].dropna().astype(str).unique()
        offenders = [v for v in values if looks_like_pan(v)]
        assert not offenders, col
    assert sim.events["card_fingerprint"].dropna().str.match(r"^c_\d+$").all()


def test_written_files_read_back_as_valid_events(sim, tmp_path):
    paths = write_outputs(sim, tmp_path)
    assert set(paths) == {"events.parquet", "events.jsonl", "merchants.parquet", "blacklist.json",
                          "promotions.parquet"}
    back = pd.read_parquet(paths["events.parquet"])
    assert list(back.columns) == list(sim.events.columns)
    assert len(back) == len(sim.events)
    assert str(pq_type(paths["events.parquet"], "amount")) == "int64"
    lines = pd.read_json(paths["events.jsonl"], lines=True, dtype=False)
    assert len(lines) == len(sim.events)
    rng = np.random.default_rng(0)
    for frame in (back, lines):
        for row in frame.iloc[rng.choice(len(frame), 1500, replace=False)].to_dict("records"):
            parse_event(flat_to_dict(row))
    first = json.loads(paths["events.jsonl"].read_text().splitlines()[0])
    assert set(first) == set(sim.events.columns)
    merchants = pd.read_parquet(paths["merchants.parquet"])
    assert {"merchant_id", "mcc", "onboarded_at", "size_class", "single_limit", "is_cash_out"} <= set(merchants)
    blacklist = json.loads(paths["blacklist.json"].read_text())
    assert set(blacklist) == {"blocked_cards", "blocked_users", "blocked_devices", "blocked_ips",
                              "blocked_merchants"}
    assert all(blacklist.values())
    promotions = pd.read_parquet(paths["promotions.parquet"])
    pd.testing.assert_frame_equal(promotions, sim.promotions)
    assert list(promotions.columns) == ["merchant_id", "start", "end", "expected_multiple", "kind"]
    assert set(promotions["merchant_id"]) <= set(merchants["merchant_id"])
    assert set(promotions["kind"]) == {"platform", "merchant"}


def pq_type(path, column):
    import pyarrow.parquet as pq

    return pq.read_schema(path).field(column).type


def test_sorted_by_time_with_unique_ids(df):
    assert df["event_id"].is_unique
    assert df["occurred_at"].str.endswith("+08:00").all()
    assert df["ts"].is_monotonic_increasing
    assert df["occurred_at"].is_monotonic_increasing  # one offset: text order is time order


def test_outcomes_refer_to_an_earlier_payment_of_the_same_merchant(df, payments):
    by_id = payments.set_index("event_id")
    outcome = df[df["type"].isin(["refund", "chargeback", "fraud_report", "decline"])]
    assert outcome["refers_to"].notna().all()
    assert df.loc[~df.index.isin(outcome.index), "refers_to"].isna().all()
    paid = by_id.loc[outcome["refers_to"]]
    assert (paid["merchant_id"].to_numpy() == outcome["merchant_id"].to_numpy()).all()
    assert (paid["ts"].to_numpy() < outcome["ts"].to_numpy()).all()
    assert (paid["scenario"].to_numpy() == outcome["scenario"].to_numpy()).all()
    dec = outcome[outcome["type"] == "decline"]
    p = by_id.loc[dec["refers_to"]]
    assert (p["card_fingerprint"].to_numpy() == dec["card_fingerprint"].to_numpy()).all()
    assert (p["amount"].to_numpy() == dec["amount"].to_numpy()).all()
    money = df[df["type"].isin(["withdrawal", "settlement", "refund", "payment"])]
    assert money["merchant_id"].notna().all() and (money["amount"] > 0).all()


def test_labels_are_consistent(df):
    assert ((df["scenario"] != "") == df["is_fraud"]).all()
    assert set(df.loc[df["is_fraud"], "type"]) <= {"payment", "decline", "chargeback", "fraud_report", "signup",
                                                   "login", "card_bind", "withdrawal"}
    look_alikes = ("promo_day", "early_morning", "pos_small", "habit", "habit_bigger", "travel", "vpn")
    assert not df.loc[df["note"].isin(look_alikes), "is_fraud"].any()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_is_present_and_labelled(payments, scenario):
    rows = payments[payments["scenario"] == scenario]
    assert len(rows) >= 5, scenario
    assert rows["is_fraud"].all()


def test_mix_switches_a_scenario_off():
    df = simulate(SimConfig(seed=2, shoppers=400, merchants=40, days=21, mix={"cash_out": 0, "proxy_ip": 0}))
    assert not df["scenario"].isin(["cash_out", "proxy_ip"]).any()
    assert df["scenario"].eq("stolen_card").any()
    with pytest.raises(ValueError, match="unknown scenario"):
        SimConfig(mix={"cash-out": 1})


# ---- determinism ----------------------------------------------------------------------
def test_same_seed_same_history(sim):
    again = run(CONFIG)
    pd.testing.assert_frame_equal(sim.events, again.events)
    pd.testing.assert_frame_equal(sim.merchants, again.merchants)
    pd.testing.assert_frame_equal(sim.promotions, again.promotions)
    assert sim.blacklist == again.blacklist


def test_different_seed_different_history(sim):
    other = simulate(CONFIG.with_(seed=CONFIG.seed + 1))
    assert not sim.events.equals(other)
    assert not sim.events["occurred_at"].head(1000).equals(other["occurred_at"].head(1000))


def test_for_events_sizes_the_history():
    df = simulate(SimConfig.for_events(20_000, days=30, seed=5))
    assert 17_000 <= len(df) <= 24_000


# ---- the command ----------------------------------------------------------------------
def test_cli_writes_and_summarises(tmp_path):
    from typer.testing import CliRunner

    from fengkong.cli import app

    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--shoppers", "300", "--merchants", "40",
                                      "--days", "21", "--seed", "3", "--format", "parquet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "events.parquet").exists() and not (tmp_path / "events.jsonl").exists()
    assert (tmp_path / "merchants.parquet").exists() and (tmp_path / "blacklist.json").exists()
    for word in ("payment", "chargeback", "cash_out", "card_testing", "fraud rate"):
        assert word in result.output
    bad = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--mix", "nope=1"])
    assert bad.exit_code != 0
    sliced = tmp_path / "sliced"
    again = CliRunner().invoke(app, ["simulate", "--out", str(sliced), "--shoppers", "300", "--merchants", "40",
                                     "--days", "21", "--seed", "3", "--format", "parquet", "--chunk-rows", "500"])
    assert again.exit_code == 0, again.output
    assert again.output.split("fraud rate")[1].split("\n")[0] == result.output.split("fraud rate")[1].split("\n")[0]
    pd.testing.assert_frame_equal(pd.read_parquet(sliced / "events.parquet"), pd.read_parquet(tmp_path / "events.parquet"))
    refused = CliRunner().invoke(app, ["simulate", "--out", str(sliced), "--chunk-rows", "500"])
    assert refused.exit_code == 2 and "--format parquet" in refused.output


def test_written_in_slices_reads_back_as_the_whole_history(tmp_path):
    """`write_run` frames the sorted rows a slice at a time (for histories whose frame would not
    fit in memory): the files read back equal to `write_outputs` of `run`, even where a slice
    has no outcome (its refers_to all missing) or no merchant."""
    import pyarrow.parquet as pq

    from fengkong.simulation.writer import write_run

    config = SimConfig.for_events(3_000, seed=5, days=14)
    whole = write_outputs(run(config), tmp_path / "whole", formats=("parquet",))
    sliced = write_run(config, tmp_path / "sliced", chunk_rows=25)
    assert pq.ParquetFile(sliced["events.parquet"]).metadata.num_row_groups > 10
    first = pq.read_table(sliced["events.parquet"]).slice(0, 25).to_pandas()
    assert first["refers_to"].isna().all()  # the first slice has no outcome: its types come from the others
    for name, path in whole.items():
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(sliced[name]), pd.read_parquet(path))
        else:
            assert sliced[name].read_text() == path.read_text()
    with pytest.raises(ValueError, match="chunk_rows"):
        write_run(config, tmp_path / "none", chunk_rows=0)
