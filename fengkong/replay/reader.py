"""Read a history file (CSV, Parquet or JSON lines) and turn it into flat events.

`load_history(path, mapping)` reads the file, applies the mapping (or, without one,
takes the file as the flat form `fengkong simulate` writes), and sorts the events by
event time (ties keep the file's order). CSV cells are read as text so that ids
keep their leading zeros; the mapping's types convert them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fengkong.replay.mapping import Mapping, MappingError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}


def file_format(path: Path) -> str:
    """The reader format of ``path``: its last known suffix (``events.csv.gz`` is csv); MappingError if none."""
    suffixes = [s.lower() for s in path.suffixes]
    for s in reversed(suffixes):
        if s in FORMATS:
            return FORMATS[s]
    raise MappingError(f"{path}: unknown file type {''.join(path.suffixes) or '(none)'}; "
                       "use .csv, .parquet or .jsonl (JSON lines)")


def read_table(path: Path | str) -> pd.DataFrame:
    """The file's rows as they are (no mapping applied)."""
    path = Path(path)
    if not path.exists():
        raise MappingError(f"{path}: file not found")
    fmt = file_format(path)
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=True, na_values=[""], encoding="utf-8-sig")
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True, dtype=False)


@dataclass
class History:
    """Flat events in event-time order (see `Mapping.apply` for the columns)."""

    events: pd.DataFrame
    mapping: Mapping
    path: Path | None = None

    @property
    def labelled(self) -> bool:
        """Whether any event carries an ``is_fraud`` label (the report's label metrics need one)."""
        return "is_fraud" in self.events.columns and bool(self.events["is_fraud"].notna().any())

    @property
    def has_scenarios(self) -> bool:
        """Whether any event names its fraud scenario (for recall per scenario)."""
        return "scenario" in self.events.columns and bool(self.events["scenario"].notna().any())


def prepare(raw: pd.DataFrame, mapping: Mapping | None, *, source: str = "the file") -> History:
    """Map a raw table to flat events (identity mapping if None), sorted by event time (stable)."""
    if mapping is None:
        mapping = Mapping.identity([str(c) for c in raw.columns], source=source)
    events = mapping.apply(raw, source=source)
    order = np.argsort(events["ts"].to_numpy(), kind="stable")
    events = events.iloc[order].reset_index(drop=True)
    return History(events, mapping)


def load_history(path: Path | str, mapping: Mapping | None = None) -> History:
    """Read and `prepare` a history file (CSV, Parquet or JSON lines)."""
    path = Path(path)
    history = prepare(read_table(path), mapping, source=str(path))
    history.path = path
    return history
