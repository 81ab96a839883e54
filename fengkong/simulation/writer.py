"""Writing a simulation to disk and summarising it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from fengkong.simulation.constants import EVENT_TYPES, SCENARIOS
from fengkong.simulation.frame import Simulation

FORMATS = ("parquet", "jsonl")
JSONL_CHUNK = 100_000


def write_outputs(sim: Simulation | pd.DataFrame, out_dir: str | Path, *,
                  formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Write ``events.parquet`` and/or ``events.jsonl`` (flat rows, one JSON object a line),
    plus ``merchants.parquet``, ``blacklist.json`` and ``promotions.parquet`` (the merchants' planned
    promotions) when given a Simulation. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = sim.events if isinstance(sim, Simulation) else sim
    formats = tuple(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"format: unknown {sorted(unknown)}; use parquet, jsonl or both")
    paths: dict[str, Path] = {}
    if "parquet" in formats:
        paths["events.parquet"] = out / "events.parquet"
        events.to_parquet(paths["events.parquet"], index=False, compression="zstd")
    if "jsonl" in formats:
        paths["events.jsonl"] = out / "events.jsonl"
        with open(paths["events.jsonl"], "w", encoding="utf-8") as fh:
            for lo in range(0, len(events), JSONL_CHUNK):  # in chunks: bounded memory
                fh.write(events.iloc[lo:lo + JSONL_CHUNK].to_json(orient="records", lines=True,
                                                                 force_ascii=False))
    if isinstance(sim, Simulation):
        paths["merchants.parquet"] = out / "merchants.parquet"
        sim.merchants.to_parquet(paths["merchants.parquet"], index=False)
        paths["blacklist.json"] = out / "blacklist.json"
        paths["blacklist.json"].write_text(json.dumps(sim.blacklist, indent=1) + "\n")
        paths["promotions.parquet"] = out / "promotions.parquet"
        sim.promotions.to_parquet(paths["promotions.parquet"], index=False)
    return paths


def summary(events: pd.DataFrame) -> dict[str, object]:
    """Counts by type and scenario, and the fraud rate of payments."""
    by_type = events["type"].value_counts()
    payments = events[events["type"] == "payment"]
    fraud = events[events["is_fraud"]]
    fraud_pay = payments[payments["is_fraud"]]
    by_scenario = {
        s: {"events": int((fraud["scenario"] == s).sum()), "payments": int((fraud_pay["scenario"] == s).sum())}
        for s in SCENARIOS
    }
    disputed = events["type"].isin(["chargeback", "fraud_report"])
    return {
        "events": len(events),
        "by_type": {t: int(by_type.get(t, 0)) for t in EVENT_TYPES},
        "by_scenario": by_scenario,
        "payments": len(payments),
        "fraud_payments": len(fraud_pay),
        "fraud_rate": len(fraud_pay) / max(1, len(payments)),
        "fraud_amount_rate": float(fraud_pay["amount"].sum()) / max(1.0, float(payments["amount"].sum())),
        "disputes": int(disputed.sum()),
        "friendly_fraud": int((disputed & ~events["is_fraud"]).sum()),
        "first": events["occurred_at"].iloc[0] if len(events) else None,
        "last": events["occurred_at"].iloc[-1] if len(events) else None,
    }
