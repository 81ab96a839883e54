"""`fengkong train` uses analysts' labels: a case resolved `fraud` adds a positive, one
resolved `legit` clears a reported payment (a confirmed negative), and a case reopened and
resolved the other way counts as its latest resolution (a small real training, labels
read from a real Redis labels stream)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fengkong.cases.labels import StoreLabels
from fengkong.cli import app
from fengkong.events import parse_event
from fengkong.simulation import SimConfig, run
from fengkong.training.analyst_labels import from_stream
from fengkong.training.fusion import cutoff_after, reported_labels
from fengkong.training.train import split_day, train_transactions, transaction_frame

RULES = Path(__file__).resolve().parents[1] / "rules"


def _label(row, kind: str):
    data = {"event_id": f"{row['event_id']}:{kind}", "type": kind, "occurred_at": row["occurred_at"],
            "refers_to": row["event_id"], "merchant_id": row["merchant_id"],
            "card": {"fingerprint": row["card_fingerprint"]}}
    return parse_event(data)


def test_train_counts_analyst_labels_from_the_labels_stream(tmp_path, redis_server, redis_client, store, prefix):
    sim = run(SimConfig(seed=3, days=14, shoppers=800, merchants=40))
    events = sim.events
    feats = transaction_frame(events, profiles=sim.merchants, lists_dir=RULES / "lists")
    base = train_transactions(feats, root=tmp_path / "a0", max_iter=10, habit_trees=10, labels="reported",
                              events=events)
    n0 = base.meta["metrics"]["train_fraud"]
    last = split_day(feats["day"], None)
    train_ids = feats.loc[feats["day"] <= last, "event.event_id"].astype(str).to_numpy()
    reported = reported_labels(events, train_ids, cutoff_after(last))
    assert n0 == int(reported.sum()) > 3
    by_id = events.set_index("event_id", drop=False)
    cleared = [by_id.loc[i] for i in train_ids[reported][:3]]
    added = [by_id.loc[i] for i in train_ids[~reported][:5]]
    flipped = by_id.loc[train_ids[~reported][5]]
    sink = StoreLabels(store, redis_client, prefix=prefix, maxlen=10_000)
    sink.record([_label(r, "fraud_report") for r in added], case_id=1, disposition="fraud", actor="ana")
    sink.record([_label(r, "legit_confirmed") for r in cleared], case_id=2, disposition="legit", actor="ana")
    sink.record([_label(flipped, "legit_confirmed")], case_id=3, disposition="legit", actor="ana")
    sink.record([_label(flipped, "fraud_report")], case_id=3, disposition="fraud", actor="bo")  # after a reopen
    assert len(from_stream(redis_client, prefix)) == 9  # the flipped payment keeps its latest label only

    history = tmp_path / "events.parquet"
    events.to_parquet(history)
    merchants = tmp_path / "merchants.parquet"
    sim.merchants.to_parquet(merchants)
    out = CliRunner().invoke(app, ["train", "transactions", "--history", str(history), "--merchants", str(merchants),
                                   "--artifacts", str(tmp_path / "a1"), "--rules", str(RULES), "--max-iter", "10",
                                   "--labels-stream", redis_server.url, "--key-prefix", prefix])
    assert out.exit_code == 0, out.output
    metrics, _ = json.JSONDecoder().raw_decode(out.output[out.output.index("{"):])  # the candidates' table follows
    assert metrics["train_fraud"] == n0 + len(added) - len(cleared) + 1
    assert np.isfinite(metrics["valid_txn_roc_auc"])
