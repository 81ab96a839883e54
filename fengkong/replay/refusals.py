"""Rows of a history that could not be read, counted per field and reason.

A bank's export can hold a few rows a mapping cannot convert (a time in another
layout, an amount with more decimals than the currency has). With the mapping's
``max_bad_share`` (default 0) such rows are skipped and reported instead of
refusing the whole file, as long as their share of the file stays at or under the
threshold; past it the file is refused, naming the first bad row. The event
contract's own refusals (a bad IP, a BIN of the wrong length) are kept here too,
so the CLI and the report show one table of what was not replayed and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np

FIRST_ROWS = 5  # source row numbers listed per field and reason


@dataclass
class Refusal:
    """One kind of refusal: the field, its source column, the reason, how many rows,
    the first few row numbers (1-based) and the first refused value."""

    stage: str  # "mapping" or "event contract"
    field: str
    column: str | None
    reason: str
    count: int = 0
    rows: list[int] = dc_field(default_factory=list)
    example: Any = None

    def message(self) -> str:
        """The first refused row as one line, e.g. ``column 'amt' (amount): row 3 value 'x' is negative``."""
        where = f"column {self.column!r} ({self.field})" if self.column else self.field
        value = f" value {self.example!r}" if self.example is not None else ""
        return f"{where}: row {self.rows[0] if self.rows else '?'}{value} {self.reason}"


@dataclass
class Refusals:
    """Every refusal of one history, keyed by (stage, field, reason)."""

    total_rows: int = 0
    kinds: dict[tuple[str, str, str], Refusal] = dc_field(default_factory=dict)
    bad: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, dtype=bool))  # mapping-refused rows, by position
    rounded: int = 0  # amounts the mapping's `round` changed (accepted, not refused)

    def add(self, field_name: str, column: str | None, reason: str, mask: np.ndarray, values: Any = None,
            *, show_value: bool = True) -> None:
        """Record the rows of ``mask`` (positions in the source) as refused for ``reason``."""
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        if len(self.bad) != len(mask):
            self.bad = np.zeros(len(mask), dtype=bool)
        self.bad |= mask
        key = ("mapping", field_name, reason)
        kind = self.kinds.setdefault(key, Refusal("mapping", field_name, column, reason))
        kind.count += len(idx)
        kind.rows = sorted(set(kind.rows) | {int(i) + 1 for i in idx[:FIRST_ROWS]})[:FIRST_ROWS]
        if show_value and values is not None and kind.example is None:
            kind.example = values[int(idx[0])]

    def add_row(self, stage: str, field_name: str, reason: str, row: int) -> None:
        """One row refused at a later stage (the event contract), source row ``row`` (1-based)."""
        kind = self.kinds.setdefault((stage, field_name, reason), Refusal(stage, field_name, None, reason))
        kind.count += 1
        if len(kind.rows) < FIRST_ROWS:
            kind.rows.append(row)

    def merge(self, other: "Refusals") -> None:
        """Add ``other``'s kinds (a later stage's) to these."""
        for key, k in other.kinds.items():
            mine = self.kinds.setdefault(key, Refusal(k.stage, k.field, k.column, k.reason, example=k.example))
            mine.count += k.count
            mine.rows = (mine.rows + k.rows)[:FIRST_ROWS]

    @property
    def mapping_rows(self) -> int:
        """Source rows the mapping refused (a row with two bad fields counts once)."""
        return int(self.bad.sum())

    @property
    def share(self) -> float:
        """The mapping-refused rows' share of the file."""
        return self.mapping_rows / self.total_rows if self.total_rows else 0.0

    def first(self) -> Refusal | None:
        """The refusal whose first row comes first in the file."""
        kinds = [k for k in self.kinds.values() if k.rows]
        return min(kinds, key=lambda k: k.rows[0]) if kinds else None

    def table(self) -> list[dict[str, Any]]:
        """Rows for the report: stage, field, column, reason, rows refused, first rows."""
        return [{"stage": k.stage, "field": k.field, "column": k.column or "", "reason": k.reason,
                 "rows": k.count, "first rows": ", ".join(map(str, k.rows))}
                for k in sorted(self.kinds.values(), key=lambda k: (-k.count, k.field))]

    def lines(self) -> list[str]:
        """One plain-text line per kind, for the CLI."""
        return [f"{k.count:,} row(s) skipped by the {k.stage}, {k.field}"
                f"{f' (column {k.column!r})' if k.column else ''}: {k.reason}; first rows "
                f"{', '.join(map(str, k.rows))}" for k in sorted(self.kinds.values(), key=lambda k: -k.count)]
