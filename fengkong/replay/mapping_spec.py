"""What a replay mapping file may say, checked in one pass (see `fengkong.replay.mapping`).

`MappingSpec` (pydantic) checks keys and types; `meaning_problems` checks what the
names mean for the event (event fields, the types amount and occurred_at allow,
offsets, the required fields). `validate_mapping` raises one `MappingError` that
lists every problem with its line (when the document came from `yamlio.load_yaml`)
and field, so an analyst fixes a mapping file in one round.
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fengkong.engine.validation import field_errors
from fengkong.engine.yamlio import line_of
from fengkong.events import FLAT_COLUMNS

TYPES = ("string", "minor", "decimal", "datetime", "epoch_s", "epoch_ms")
REQUIRED = ("event_id", "type", "occurred_at")
DEFAULT_TRUE = ("true", "1", "yes", "y", "t", "1.0")
DEFAULT_DELAY = "7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class MappingError(ValueError):
    """A mapping the source cannot satisfy; names the event field and/or the source column."""

    def __init__(self, message: str, *, field: str | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.column = column


def suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_delay(value: Any) -> float:
    """``7d``, ``36h``, ``90m``, ``30s``, ``2w`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise MappingError(f"label.delay: {value!r} is not a duration (e.g. 7d, 36h, 3600)", field="label.delay")
    if isinstance(value, (int, float)):
        if value < 0:
            raise MappingError("label.delay: must not be negative", field="label.delay")
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value))
    if not m:
        raise MappingError(f"label.delay: {value!r} is not a duration (e.g. 7d, 36h, 90m, 3600)",
                           field="label.delay")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_offset(text: str, where: str) -> timezone:
    if str(text).upper() in ("UTC", "Z"):
        return timezone.utc
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", str(text).strip())
    if not m:
        raise MappingError(f"{where}: timezone {text!r} must be an offset like +08:00 or UTC", field=where)
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return timezone(-delta if m.group(1) == "-" else delta)


def _column_spec(value: Any) -> Any:
    """``amount: amt_yuan`` is short for ``amount: {column: amt_yuan}``."""
    return {"column": value} if isinstance(value, str) else value


def _delay(value: Any) -> Any:
    try:
        parse_delay(value)
    except MappingError as exc:
        raise ValueError(str(exc).removeprefix("label.delay: ")) from None
    return value


class ColumnModel(BaseModel):
    """One event field's source: a column, how to read it, and values to rename."""

    model_config = ConfigDict(extra="forbid")

    column: str
    type: Literal["string", "minor", "decimal", "datetime", "epoch_s", "epoch_ms"] | None = None
    format: str | None = None
    timezone: str | None = None
    map: dict[Any, Any] | None = None
    round: Annotated[int, Field(ge=0, le=12)] | None = None
    rounding: Literal["half_even", "half_up"] | None = None


class LabelModel(BaseModel):
    """The truth column, when a file carries one."""

    model_config = ConfigDict(extra="forbid")

    column: str
    true_values: list[Any] | None = None
    delay: Annotated[Any, AfterValidator(_delay)] = DEFAULT_DELAY
    scenario_column: str | None = None
    emit_reports: bool = True


class MappingSpec(BaseModel):
    """A mapping file as written: every key and type checked in one pass (what the
    names mean for the event is checked by `meaning_problems`)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[Any, Annotated[ColumnModel, BeforeValidator(_column_spec)]] | None = None
    constants: dict[Any, Any] | None = None
    label: LabelModel | None = None
    max_bad_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


DEFAULT_TYPES = {"amount": "minor", "occurred_at": "datetime"}


def meaning_problems(data: dict[str, Any]) -> list[tuple[int | None, str, str | None, str]]:
    """What the model cannot see: event field names, the types amount and occurred_at
    allow, offsets, a field given twice, the required fields."""
    out: list[tuple[int | None, str, str | None, str]] = []
    columns: dict[Any, Any] = data["columns"] if isinstance(data.get("columns"), dict) else {}
    constants: dict[Any, Any] = data["constants"] if isinstance(data.get("constants"), dict) else {}
    for name, spec in columns.items():
        fname, line = str(name), line_of(columns, str(name))
        spec = _column_spec(spec)
        column = spec.get("column") if isinstance(spec, dict) else None
        if fname not in FLAT_COLUMNS:
            out.append((line, fname, column, f"columns.{fname}: {fname!r} is not an event field"
                        f"{suggest(fname, list(FLAT_COLUMNS))} (fields: {', '.join(FLAT_COLUMNS)})"))
            continue
        if not isinstance(spec, dict):
            continue
        typ = spec.get("type", DEFAULT_TYPES.get(fname, "string"))
        allowed = {"amount": ("minor", "decimal"), "occurred_at": ("datetime", "epoch_s", "epoch_ms")}.get(fname)
        if allowed and typ in TYPES and typ not in allowed:
            out.append((line_of(spec, "type"), fname, column,
                        f"columns.{fname}: type must be {' or '.join(allowed)}, not {typ!r}"))
        if fname != "amount" and ("round" in spec or "rounding" in spec):
            out.append((line_of(spec, "round" if "round" in spec else "rounding"), fname, column,
                        f"columns.{fname}: round and rounding apply to amount only"))
        if isinstance(spec.get("timezone"), str):
            try:
                parse_offset(spec["timezone"], f"columns.{fname}")
            except MappingError as exc:
                out.append((line_of(spec, "timezone"), fname, column, str(exc)))
    for name in constants:
        fname, line = str(name), line_of(constants, str(name))
        if fname not in FLAT_COLUMNS:
            out.append((line, fname, None,
                        f"constants.{fname}: not an event field{suggest(fname, list(FLAT_COLUMNS))}"))
        elif name in columns:
            out.append((line, fname, None, f"{fname} is both mapped to a column and a constant; keep one"))
    for fname in REQUIRED:
        if fname not in columns and fname not in constants:
            out.append((line_of(data, "columns"), fname, None, f"event field {fname!r} is required: map it under "
                        "columns (or give it under constants)"))
    return out


def column_at(data: dict[str, Any], where: str) -> str | None:
    """The source column of ``columns.<field>...``, for an error's ``column``."""
    parts = where.split(".")
    if len(parts) >= 2 and parts[0] == "columns" and isinstance(data.get("columns"), dict):
        spec = _column_spec(data["columns"].get(parts[1]))
        if isinstance(spec, dict) and isinstance(spec.get("column"), str):
            return str(spec["column"])
    return None


def validate_mapping(data: Any, source: str) -> MappingSpec:
    """The checked document, or a `MappingError` naming every problem (its ``field``
    and ``column`` are the first problem's)."""
    if not isinstance(data, dict):
        raise MappingError(f"{source}: a mapping file is a YAML mapping with columns, constants, label")
    problems: list[tuple[int | None, str, str | None, str]] = []  # line, field, column, text
    spec: MappingSpec | None = None
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        for e in field_errors(exc, MappingSpec, data, {"type": "type"}):
            problems.append((e.line, e.field, column_at(data, e.field), str(e)))
    problems += meaning_problems(data)
    if problems or spec is None:
        _, where, column, _ = problems[0]
        raise MappingError("\n".join(f"{source}{f':{ln}' if ln else ''}: {text}" for ln, _, _, text in problems),
                           field=where or None, column=column)
    return spec
