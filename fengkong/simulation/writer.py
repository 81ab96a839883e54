"""Writing a simulation to disk and summarising it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pandas as pd

from fengkong.simulation.config import SimConfig
from fengkong.simulation.constants import EVENT_TYPES, SCENARIOS
from fengkong.simulation.frame import Framing, Simulation, _blacklist, _merchant_frame, _promotion_frame, generate

if TYPE_CHECKING:
    import pyarrow as pa

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


def write_run(config: SimConfig, out_dir: str | Path, *, chunk_rows: int = 1_000_000) -> dict[str, Path]:
    """`run` then `write_outputs` (Parquet only), without ever holding the whole events frame:
    the history is generated as numeric blocks, then framed and written ``chunk_rows`` sorted
    rows at a time. For histories whose frame of Python strings would not fit in memory; the
    file reads back equal to the one `write_outputs` writes (row groups aside)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: must be at least 1, got {chunk_rows}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world, rows, _ = generate(config)
    framing = Framing(world, rows)
    paths = {"events.parquet": out / "events.parquet"}
    with tempfile.TemporaryDirectory(prefix="fk-sim-", dir=out) as tmp:
        chunks: list[Path] = []
        schemas: list[pa.Schema] = []
        for lo in range(0, framing.n, chunk_rows):
            table = pa.Table.from_pandas(framing.frame(lo, min(lo + chunk_rows, framing.n)), preserve_index=False)
            chunks.append(Path(tmp) / f"{len(chunks):05d}.parquet")
            pq.write_table(table, chunks[-1])
            schemas.append(table.schema)
            del table
        del framing, rows
        schema = _unified(schemas)
        with pq.ParquetWriter(paths["events.parquet"], schema, compression="zstd") as writer:
            for chunk in chunks:
                writer.write_table(pq.read_table(chunk).cast(schema))
    paths["merchants.parquet"] = out / "merchants.parquet"
    _merchant_frame(world).to_parquet(paths["merchants.parquet"], index=False)
    paths["blacklist.json"] = out / "blacklist.json"
    paths["blacklist.json"].write_text(json.dumps(_blacklist(world), indent=1) + "\n")
    paths["promotions.parquet"] = out / "promotions.parquet"
    _promotion_frame(world).to_parquet(paths["promotions.parquet"], index=False)
    return paths


def _unified(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for every chunk: a column that is all missing in one chunk (Arrow's null
    type) takes the type the other chunks give it; the first chunk's metadata."""
    import pyarrow as pa

    fields = []
    for i, field in enumerate(schemas[0]):
        types = {s.field(i).type for s in schemas} - {pa.null()}
        if len(types) > 1:
            raise ValueError(f"events: column {field.name} has types {sorted(map(str, types))} in different chunks")
        fields.append(field.with_type(types.pop() if types else pa.null()))
    return pa.schema(fields, metadata=schemas[0].metadata)


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
