"""Read a history file (CSV, Parquet or JSON lines) and turn it into flat events.

`load_history(path, mapping)` reads the file, applies the mapping (or, without one,
takes the file as the flat form `fengkong simulate` writes, or as the event
contract's own nested JSON), and sorts the events by event time (ties keep the
file's order). CSV cells are read as text so that ids keep their leading zeros; the
mapping's types convert them.

Nested objects (JSON lines, the shape ``POST /v1/decisions`` takes: ``"card":
{"fingerprint": ...}``) become one column per leaf, named with dots
(``card.fingerprint``), which a mapping addresses like any column. A source column
nothing reads is listed in ``History.unused`` (the CLI warns, the report lists it):
a field is never dropped without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fengkong.replay.mapping import Mapping, MappingError
from fengkong.replay.refusals import Refusals

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
        return flatten(pd.read_parquet(path))
    return flatten(pd.read_json(path, lines=True, dtype=False))


def _holds_objects(s: pd.Series) -> bool:
    """Whether a column holds JSON objects (its first present value is a dict)."""
    first = s.first_valid_index()
    return first is not None and isinstance(s[first], dict)


def flatten(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns holding objects (dicts) become one column per leaf, named ``parent.child``;
    rows without the object get missing values. Other columns are left as they are."""
    nested = [c for c in frame.columns if frame[c].dtype == object and _holds_objects(frame[c])]
    if not nested:
        return frame
    parts: list[pd.DataFrame] = []
    for c in frame.columns:
        if c not in nested:
            parts.append(frame[[c]])
            continue
        objs = [v if isinstance(v, dict) else {} for v in frame[c]]
        inner = pd.json_normalize(objs, sep=".")
        inner.index = frame.index
        inner.columns = [f"{c}.{k}" for k in inner.columns]
        parts.append(flatten(inner))
    return pd.concat(parts, axis=1)


@dataclass
class History:
    """Flat events in event-time order (see `Mapping.apply` for the columns)."""

    events: pd.DataFrame
    mapping: Mapping
    path: Path | None = None
    refusals: Refusals = field(default_factory=Refusals)  # rows the mapping skipped (see Mapping.convert)
    unused: list[str] = field(default_factory=list)  # source columns that nothing reads

    @property
    def labelled(self) -> bool:
        """Whether any event carries an ``is_fraud`` label (the report's label metrics need one)."""
        return "is_fraud" in self.events.columns and bool(self.events["is_fraud"].notna().any())

    @property
    def has_scenarios(self) -> bool:
        """Whether any event names its fraud scenario (for recall per scenario)."""
        return "scenario" in self.events.columns and bool(self.events["scenario"].notna().any())


def prepare(raw: pd.DataFrame, mapping: Mapping | None, *, source: str = "the file",
            max_bad_share: float | None = None) -> History:
    """Map a raw table to flat events (identity mapping if None), sorted by event time (stable).
    ``max_bad_share`` overrides the mapping's share of rows that may be skipped."""
    if mapping is None:
        mapping = Mapping.identity([str(c) for c in raw.columns], source=source)
    mapping = mapping.with_max_bad_share(max_bad_share)
    events, refusals = mapping.convert(raw, source=source)
    order = np.argsort(events["ts"].to_numpy(), kind="stable")
    events = events.iloc[order].reset_index(drop=True)
    read = mapping.columns_read()
    unused = [str(c) for c in raw.columns if str(c) not in read]
    return History(events, mapping, refusals=refusals, unused=unused)


def load_history(path: Path | str, mapping: Mapping | None = None, *, max_bad_share: float | None = None) -> History:
    """Read and `prepare` a history file (CSV, Parquet or JSON lines)."""
    path = Path(path)
    history = prepare(read_table(path), mapping, source=str(path), max_bad_share=max_bad_share)
    history.path = path
    return history
