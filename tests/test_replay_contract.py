"""Replay reads the event contract's own shape, says what it did not read, and writes every score.

* JSON lines in the nested shape ``POST /v1/decisions`` takes (``"card": {...}``) read
  without a mapping to the same events as the flat file; a mapping addresses nested
  fields with dots (``card.fingerprint``); a source field nothing reads is listed;
* the decisions file carries every model score as its own float column and the
  scenario as text; without models the score columns are there and empty;
* errors reach a pipe as plain text (no rich markup).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fengkong.events import flat_to_dict, parse_event
from fengkong.replay.mapping import Mapping, MappingError
from fengkong.replay.reader import load_history
from fengkong.replay.runner import MODEL_COLUMNS, run_replay

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    from fengkong.simulation import SimConfig, run, write_outputs

    out = tmp_path_factory.mktemp("contract_sim")
    write_outputs(run(SimConfig.for_events(1_200, seed=4, days=10, fraud_scale=2.0)), out, formats=("parquet",))
    return out


def _contract_lines(sim: Path, path: Path, *, extra: bool = True, decimal_amounts: bool = False) -> None:
    """The simulator's events as the API's nested JSON, one a line, with the labels beside them."""
    flat = pd.read_parquet(sim / "events.parquet")
    with path.open("w", encoding="utf-8") as f:
        for row in flat.astype(object).where(flat.notna(), None).to_dict("records"):
            event = flat_to_dict(row)
            parse_event(event)  # each line is a valid event of the contract
            if decimal_amounts and isinstance(event.get("amount"), int):
                event["amount"] = f"{event['amount'] // 100}.{event['amount'] % 100:02d}"
            event["is_fraud"] = bool(row["is_fraud"])
            if row.get("scenario"):
                event["scenario"] = row["scenario"]
            if extra:
                event["gateway_note"] = "from the gateway log"
            f.write(json.dumps(event) + "\n")


def _norm(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return frame[cols].astype(object).where(frame[cols].notna(), None)


COLS = ["event_id", "type", "occurred_at", "merchant_id", "amount", "card_fingerprint", "card_bin", "card_type",
        "card_issuer_country", "ip", "refers_to", "is_fraud"]


def test_nested_json_lines_read_like_the_flat_file_and_unread_fields_are_listed(sim, tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    _contract_lines(sim, path, decimal_amounts=True)
    nested = load_history(path)
    flat = load_history(sim / "events.parquet")
    assert nested.events["card_fingerprint"].notna().sum() > 1000  # the cards are read, not dropped
    pd.testing.assert_frame_equal(_norm(nested.events, COLS), _norm(flat.events, COLS))
    assert nested.unused == ["gateway_note"]  # said, not silently dropped
    assert flat.unused == ["note"]  # the simulator's own annotation, which no event field takes


def test_a_mapping_addresses_nested_fields_with_dots(tmp_path) -> None:
    path = tmp_path / "gateway.jsonl"
    rows = [{"id": "g1", "at": "2025-10-01T10:00:00+08:00", "shop": {"no": "m1"},
             "pay": {"card": {"token": "tok1", "kind": "C"}, "yuan": "12.50"}, "junk": {"a": 1}},
            {"id": "g2", "at": "2025-10-01T10:05:00+08:00", "shop": {"no": "m2"},
             "pay": {"card": {"token": "tok2", "kind": "D"}, "yuan": "7"}, "junk": {"a": 2}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    mapping = Mapping.from_dict({
        "columns": {"event_id": "id", "occurred_at": "at", "merchant_id": "shop.no",
                    "card_fingerprint": "pay.card.token",
                    "card_type": {"column": "pay.card.kind", "map": {"C": "credit", "D": "debit"}},
                    "amount": {"column": "pay.yuan", "type": "decimal"}},
        "constants": {"type": "payment"}})
    h = load_history(path, mapping)
    assert list(h.events["card_fingerprint"]) == ["tok1", "tok2"]
    assert list(h.events["card_type"]) == ["credit", "debit"] and list(h.events["amount"]) == [1250, 700]
    assert list(h.events["merchant_id"]) == ["m1", "m2"] and h.unused == ["junk.a"]
    bad = Mapping.from_dict({"columns": {"event_id": "id", "occurred_at": "at", "card_fingerprint": "pay.card.tokn"},
                             "constants": {"type": "payment"}})
    with pytest.raises(MappingError, match="'pay.card.tokn'.*did you mean 'pay.card.token'"):
        load_history(path, bad)


def test_decisions_carry_every_model_score_and_scenario_as_text(sim, redis_server, tmp_path) -> None:
    from fengkong.simulation import SimConfig, run
    from fengkong.training.train import train_transactions, transaction_frame

    train = run(SimConfig(seed=3, days=14, shoppers=800, merchants=40))  # small real artifacts, as test_api_risk
    feats = transaction_frame(train.events, profiles=train.merchants, lists_dir=RULES / "lists")
    models = tmp_path / "models"
    train_transactions(feats, root=models, max_iter=20, habit_trees=20, rules_dir=RULES, labels="reported",
                       events=train.events)
    result = run_replay(sim / "events.parquet", rules_dir=RULES, redis_url=redis_server.url, prefix="tcon1",
                        lists_file=sim / "blacklist.json", merchants_file=sim / "merchants.parquet",
                        models_dir=models)
    path = tmp_path / "decisions.parquet"
    result.decisions.to_parquet(path, index=False)
    d = pd.read_parquet(path)
    for c in (*MODEL_COLUMNS, "risk"):
        assert c in d.columns and d[c].dtype == np.float64, (c, d[c].dtype)
    pay = d[d["type"] == "payment"]
    assert pay["model.txn_risk"].notna().all() and pay["model.habit_anomaly"].notna().all()
    assert pay["model.txn_risk"].between(0, 1).all() and pay["model.txn_risk"].nunique() > 10
    assert pay["risk"].notna().all()
    assert pd.api.types.is_string_dtype(d["scenario"]) and d["scenario"].notna().all()
    assert set(d.loc[~d["is_fraud"].astype(bool), "scenario"]) == {""}
    assert (d.loc[d["is_fraud"].astype(bool) & (d["type"] == "payment"), "scenario"] != "").all()
    # without models the columns are still there, empty
    bare = run_replay(sim / "events.parquet", rules_dir=RULES, redis_url=redis_server.url, prefix="tcon2",
                      lists_file=sim / "blacklist.json").decisions
    assert all(c in bare.columns and bare[c].isna().all() for c in (*MODEL_COLUMNS, "risk"))


def test_cli_errors_reach_a_pipe_as_plain_text(tmp_path) -> None:
    csv, mfile = tmp_path / "x.csv", tmp_path / "m.yaml"
    pd.DataFrame({"id": ["a"], "when": ["2025-10-01T00:00:00+08:00"]}).to_csv(csv, index=False)
    mfile.write_text(yaml.safe_dump({"columns": {"event_id": "idd", "occurred_at": "when"},
                                     "constants": {"type": "payment"}}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    cli = [sys.executable, "-c", "from fengkong.cli import app; app(prog_name='fengkong')", "replay", str(csv),
           "--no-progress"]
    runs = {"rules folder": ["--rules-dir", str(tmp_path / "nowhere")],
            "'idd'": ["--mapping", str(mfile), "--rules-dir", str(RULES)]}
    for words, args in runs.items():
        proc = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 2, text
        assert "[red]" not in text and "[/" not in text and "\x1b[" not in text
        assert proc.stderr.startswith("error: ") and words in proc.stderr, text
    assert "did you mean 'id'" in proc.stderr
