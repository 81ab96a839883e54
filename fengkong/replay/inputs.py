"""The static inputs a replay or backtest shares with the live service: analyst list
entries and merchant profiles.

* Lists: every list's ``seed`` file from ``rules/lists`` (as `fengkong serve` loads
  them) plus a JSON file ``{"list_name": [entries...]}`` such as the simulator's
  ``blacklist.json``.
* Merchant profiles: a Parquet/CSV/JSONL file with ``merchant_id`` and any of
  ``grade``, ``single_limit`` (minor units), ``daily_cap`` (minor units),
  ``onboarded_at`` (ISO date), ``mcc`` (the simulator's ``merchants.parquet``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fengkong.features.lists import ListSpec, read_entries
from fengkong.replay.mapping import MappingError

PROFILE_COLUMNS = ("merchant_id", "grade", "single_limit", "daily_cap", "onboarded_at", "mcc")


def list_entries(lists_dir: Path, specs: dict[str, ListSpec], extra: Path | None = None) -> dict[str, list[str]]:
    """Seed entries of each list, plus the entries of a ``{list: [entries]}`` JSON file."""
    out: dict[str, list[str]] = {}
    for spec in specs.values():
        if spec.seed and (Path(lists_dir) / spec.seed).exists():
            out[spec.name] = read_entries(Path(lists_dir) / spec.seed)
    if extra is not None:
        try:
            data: Any = json.loads(Path(extra).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MappingError(f"{extra}: lists file not found") from None
        except json.JSONDecodeError as exc:
            raise MappingError(f"{extra}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise MappingError(f"{extra}: expected {{\"list_name\": [entries, ...]}}")
        for name, entries in data.items():
            if name not in specs:
                raise MappingError(f"{extra}: list {name!r} is not declared in lists.yaml "
                                   f"(declared: {', '.join(sorted(specs))})")
            if not isinstance(entries, list):
                raise MappingError(f"{extra}: list {name!r} must be a JSON array of entries")
            out[name] = sorted(set(out.get(name, [])) | {str(e) for e in entries})
    return out


def load_profiles(path: Path | None) -> pd.DataFrame | None:
    """Merchant profiles (the columns in PROFILE_COLUMNS that the file has)."""
    if path is None:
        return None
    from fengkong.replay.reader import read_table

    frame = read_table(path)
    if "merchant_id" not in frame.columns:
        raise MappingError(f"{path}: merchant profiles need a merchant_id column (columns: {', '.join(frame.columns)})")
    keep = [c for c in PROFILE_COLUMNS if c in frame.columns]
    frame = frame[keep].copy()
    for col in ("single_limit", "daily_cap"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return frame


def load_promotions(path: Path | None) -> dict[str, str] | None:
    """Merchants' planned campaigns (``merchant_id, start, end, expected_multiple``: the simulator's
    promotions.parquet, or a CSV) as each merchant's profile text (`fengkong.features.promotions`);
    a bad row is a `MappingError` naming the row and the field."""
    if path is None:
        return None
    from fengkong.features.promotions import texts_by_merchant
    from fengkong.replay.reader import read_table

    frame = read_table(path)
    missing = [c for c in ("merchant_id", "start", "end", "expected_multiple") if c not in frame.columns]
    if missing:
        raise MappingError(f"{path}: promotions need the columns merchant_id, start, end, expected_multiple "
                           f"(missing: {', '.join(missing)})")
    try:
        return texts_by_merchant(frame)
    except ValueError as exc:
        raise MappingError(f"{path}: {exc}") from None
