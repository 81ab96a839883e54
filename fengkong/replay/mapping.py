"""Which source column feeds which event field: replay a bank's own export without code.

A mapping file (YAML)::

    columns:                        # event field: source column, or a spec
      event_id: txn_id
      type: {column: txn_kind, map: {PAY: payment, RFD: refund, CB: chargeback}}
      occurred_at: {column: txn_time, type: datetime, format: "%Y/%m/%d %H:%M:%S", timezone: "+08:00"}
      amount: {column: amt_yuan, type: decimal}       # major units (yuan); `minor` (default) = fen
      merchant_id: shop_no
      user_id: cust_id
      card_fingerprint: card_token
      card_type: {column: card_kind, map: {C: credit, D: debit}}
      ip: client_ip
    constants:                      # fields every row shares
      currency: CNY
      channel: quick_pay
    label:                          # optional: the truth, for the report and outcome events
      column: fraud_flag
      true_values: ["Y", "1"]       # default: true, 1, yes, y, t (any case)
      delay: 7d                     # a fraud report reaches the features this long after the payment
      scenario_column: fraud_type   # optional: recall per scenario in the report
      emit_reports: true            # default true with a mapping

Event fields are the flat columns of `fengkong.events.FLAT_COLUMNS`. Types: ``string``
(default), ``minor`` (integer minor units; the default for ``amount``), ``decimal``
(major units, converted to minor units by the row's currency), ``datetime`` (ISO
8601 by default, or ``format``; times without an offset need ``timezone``),
``epoch_s`` / ``epoch_ms`` (shown in ``timezone``, default +00:00). ``map`` renames
values after conversion to text; values it does not list pass through.

Amounts with float noise (``914.1500000000001`` from a spreadsheet export): give the
amount ``round: N`` (decimal places of the source value; ``rounding: half_even``, the
default, or ``half_up``); it applies before the strict check that an amount has no
more decimals than its currency allows, so ``round: 2`` on yuan accepts the noise and
``round: 3`` still refuses ``12.345``. The number of amounts it changed is reported.

Rows a conversion refuses (a time in another layout, an amount with too many
decimals): with ``max_bad_share: 0.001`` at the top of the mapping, up to that share
of the file's rows are skipped and reported (count per field and reason, the first row
numbers; `fengkong.replay.refusals`); past it, or with the default 0, the file is
refused naming the first bad row.

Every problem is a `MappingError` that names the field and the source column.
Without a mapping file the source must already be in the flat form (`identity`);
then ``is_fraud``/``scenario`` columns, if present, label the rows and no outcome
events are made up (the file carries its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timezone
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Mapping as TMapping

import numpy as np
import pandas as pd

from fengkong.engine.yamlio import YamlSyntax, load_yaml, plain
from fengkong.events import FLAT_COLUMNS, currency_exponent
from fengkong.replay.mapping_spec import (
    DEFAULT_DELAY,
    DEFAULT_TRUE,
    DEFAULT_TYPES,
    REQUIRED,
    TYPES,
    MappingError,
    MappingSpec,
    parse_delay,
    parse_offset,
    suggest,
    validate_mapping,
)
from fengkong.replay.refusals import Refusals

__all__ = ["DEFAULT_DELAY", "DEFAULT_TRUE", "REQUIRED", "TYPES", "ColumnSpec", "LabelSpec", "Mapping", "MappingError",
           "MappingSpec", "load_mapping", "parse_delay", "parse_offset"]

@dataclass(frozen=True)
class ColumnSpec:
    field: str
    column: str
    type: str = "string"
    format: str | None = None
    timezone: str | None = None
    map: dict[str, str] | None = None
    round: int | None = None
    rounding: str = "half_even"


@dataclass(frozen=True)
class LabelSpec:
    column: str
    true_values: tuple[str, ...] = DEFAULT_TRUE
    delay_s: float = 7 * 86400.0
    scenario_column: str | None = None
    emit_reports: bool = True


@dataclass(frozen=True)
class Mapping:
    columns: dict[str, ColumnSpec]
    constants: dict[str, Any] = field(default_factory=dict)
    label: LabelSpec | None = None
    source: str = "<mapping>"
    max_bad_share: float = 0.0

    # -- building ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str) -> "Mapping":
        """Read a mapping file; every problem in it is named with its line."""
        path = Path(path)
        if not path.is_file():
            raise MappingError(f"mapping file {path} not found")
        try:
            data = load_yaml(path)
        except YamlSyntax as exc:
            raise MappingError(f"{path}{f':{exc.line}' if exc.line else ''}: {exc.reason}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<mapping>") -> "Mapping":
        """Check a mapping document (`MappingSpec`, then what it means for the event
        fields) and build it; one `MappingError` lists every problem found."""
        spec = validate_mapping(data, source)
        columns = {str(name): ColumnSpec(str(name), c.column, c.type or DEFAULT_TYPES.get(str(name), "string"),
                                         c.format, c.timezone,
                                         {str(k): str(v) for k, v in c.map.items()} if c.map else None,
                                         c.round, c.rounding or "half_even")
                   for name, c in (spec.columns or {}).items()}
        label = None
        if spec.label is not None:
            lab = spec.label
            true_values = tuple(_norm_label(v) for v in lab.true_values) if lab.true_values is not None \
                else DEFAULT_TRUE
            label = LabelSpec(lab.column, true_values, parse_delay(lab.delay), lab.scenario_column, lab.emit_reports)
        return cls(columns, plain(dict(spec.constants or {})), label, source, float(spec.max_bad_share))

    def with_max_bad_share(self, share: float | None) -> "Mapping":
        """This mapping with another ``max_bad_share`` (None keeps the mapping's)."""
        if share is None:
            return self
        if not 0.0 <= share <= 1.0:
            raise MappingError(f"max_bad_share {share} must be between 0 and 1", field="max_bad_share")
        return replace(self, max_bad_share=float(share))

    @classmethod
    def identity(cls, source_columns: list[str], *, source: str = "<file>") -> "Mapping":
        """The mapping of a file already in flat form (what `fengkong simulate` writes) or in
        the event contract's own nested shape (``card.fingerprint`` for ``card_fingerprint``;
        ``amount`` an integer of minor units or a decimal text in major units, as the contract says)."""
        nested = {c: "card." + c.removeprefix("card_") for c in FLAT_COLUMNS if c.startswith("card_")}
        contract = any(v in source_columns for v in nested.values())
        if contract:
            source_columns = [next((f for f, v in nested.items() if v == c), c) for c in source_columns]
        missing = [c for c in REQUIRED if c not in source_columns]
        if missing:
            raise MappingError(
                f"{source}: no mapping given and the file lacks the flat event column(s) "
                f"{', '.join(missing)} (it has: {', '.join(source_columns[:30])}); "
                "write a mapping file (--mapping) naming which column feeds which field",
                field=missing[0], column=missing[0])
        types = {"amount": "event" if contract else "minor", "occurred_at": "datetime"}
        columns = {c: ColumnSpec(c, nested[c] if contract and c in nested else c, types.get(c, "string"))
                   for c in FLAT_COLUMNS if c in source_columns}
        label = None
        if "is_fraud" in source_columns:
            label = LabelSpec("is_fraud", DEFAULT_TRUE, 7 * 86400.0,
                              "scenario" if "scenario" in source_columns else None, emit_reports=False)
        return cls(columns, {}, label, source)

    # -- checking and applying -----------------------------------------------------------
    def columns_read(self) -> set[str]:
        """Every source column this mapping reads (fields and label)."""
        read = {s.column for s in self.columns.values()}
        if self.label:
            read.add(self.label.column)
            if self.label.scenario_column:
                read.add(self.label.scenario_column)
        return read

    def check_columns(self, source_columns: list[str], *, source: str = "the file") -> None:
        """Refuse a mapping that reads a column the source lacks, naming it."""
        have = list(map(str, source_columns))
        wanted = [(f"columns.{s.field}", s.column) for s in self.columns.values()]
        if self.label:
            wanted.append(("label.column", self.label.column))
            if self.label.scenario_column:
                wanted.append(("label.scenario_column", self.label.scenario_column))
        for where, col in wanted:
            if col not in have:
                shown = ", ".join(have[:40]) + (" ..." if len(have) > 40 else "")
                raise MappingError(f"{self.source}: {where} reads column {col!r}, which {source} does not have"
                                   f"{suggest(col, have)} (columns: {shown})", field=where, column=col)

    def apply(self, raw: pd.DataFrame, *, source: str = "the file") -> pd.DataFrame:
        """The flat event frame of `convert`, without its refusals."""
        return self.convert(raw, source=source)[0]

    def convert(self, raw: pd.DataFrame, *, source: str = "the file") -> tuple[pd.DataFrame, Refusals]:
        """The flat event frame: FLAT_COLUMNS (amount as integer minor units, occurred_at as ISO
        text with offset), ``ts`` (UTC seconds), ``row`` (source row number, 0-based), ``is_fraud``
        (bool or NA) and ``scenario`` when labelled; and the rows refused. Refused rows are left
        out when their share is at most ``max_bad_share``; otherwise a `MappingError` names the
        first one."""
        self.check_columns(list(raw.columns), source=source)
        n = len(raw)
        refusals = Refusals(total_rows=n, bad=np.zeros(n, dtype=bool))
        out = pd.DataFrame(index=pd.RangeIndex(n))
        for fname in FLAT_COLUMNS:
            if fname in ("amount", "occurred_at"):
                continue
            spec = self.columns.get(fname)
            if spec is not None:
                out[fname] = _to_text(raw[spec.column], spec)
            elif fname in self.constants:
                out[fname] = pd.Series([str(self.constants[fname])] * n, dtype="str")
            else:
                out[fname] = pd.Series([None] * n, dtype="str")
        if "occurred_at" in self.columns:
            text, ts = _to_times(raw[self.columns["occurred_at"].column], self.columns["occurred_at"], refusals)
        else:
            const = pd.Series([str(self.constants["occurred_at"])] * n)
            text, ts = _to_times(const, ColumnSpec("occurred_at", "<constant>", "datetime"), refusals)
        out["occurred_at"] = text
        out["ts"] = ts
        if "amount" in self.columns:
            out["amount"] = _to_minor(raw[self.columns["amount"].column], self.columns["amount"], out["currency"],
                                      refusals)
        elif "amount" in self.constants:
            out["amount"] = pd.array([int(self.constants["amount"])] * n, dtype="Int64")
        else:
            out["amount"] = pd.array([pd.NA] * n, dtype="Int64")
        out = out[[*FLAT_COLUMNS, "ts"]]
        out["row"] = np.arange(n, dtype=np.int64)
        if self.label:
            out["is_fraud"] = _to_label(raw[self.label.column], self.label.true_values)
            if self.label.scenario_column:
                sc = raw[self.label.scenario_column].astype(object)
                out["scenario"] = sc.where(sc.notna() & (sc.astype(str) != "") & out["is_fraud"].to_numpy(dtype=bool, na_value=False),
                                           None).to_numpy()
        bad = refusals.bad
        if bad.any():
            first = refusals.first()
            if refusals.share > self.max_bad_share and first is not None:
                raise MappingError(
                    f"{first.message()} ({refusals.mapping_rows:,} of {n:,} rows, {100 * refusals.share:.3f}%, "
                    f"cannot be read; max_bad_share is {self.max_bad_share:g}: set `max_bad_share:` in the "
                    "mapping or --max-bad-share to skip up to that share of rows and report them)",
                    field=first.field, column=first.column)
            out = out[~bad].reset_index(drop=True)
        return out, refusals


def _norm_label(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip().lower()


def _to_label(s: pd.Series, true_values: tuple[str, ...]) -> pd.Series:
    truth = set(true_values)
    if s.dtype.kind == "b":
        return s.astype("boolean") if "true" in truth else ~s.astype("boolean")
    missing = s.isna().to_numpy()
    vals = np.fromiter((_norm_label(v) in truth for v in s.astype(object).to_numpy()), dtype=bool, count=len(s))
    out = pd.array(vals, dtype="boolean")
    out[missing] = pd.NA
    return pd.Series(out, index=s.index)


def _cell_text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return None
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))  # an id or a BIN read as a float because of gaps
    if isinstance(v, (np.integer, np.bool_)):
        v = v.item()
    if isinstance(v, bool):
        return "true" if v else "false"
    text = str(v).strip()
    return text or None


def _to_text(s: pd.Series, spec: ColumnSpec) -> pd.Series:
    if spec.type != "string":
        raise MappingError(f"columns.{spec.field}: type {spec.type!r} applies to amount and occurred_at only; "
                           f"{spec.field} is text", field=spec.field, column=spec.column)
    if str(s.dtype) in ("str", "string"):
        t = s.str.strip()
        text = t.where(t != "")
    elif s.dtype == object:
        text = s.map(_cell_text, na_action="ignore")
    else:
        text = pd.Series([_cell_text(v) for v in s.to_numpy(dtype=object)], index=s.index, dtype=object)
    text = text.astype("str")
    if spec.map:
        text = text.replace(spec.map)
    return text.reset_index(drop=True)


def _to_times(s: pd.Series, spec: ColumnSpec, refusals: Refusals) -> tuple[pd.Series, np.ndarray]:
    """ISO text with offset and UTC seconds; rows that cannot be read go to ``refusals``
    (None / NaN in the result)."""
    def refuse(reason: str, mask: np.ndarray, *, show_value: bool = True) -> None:
        if mask.any():
            refusals.add("occurred_at", spec.column, reason, mask, s.to_numpy(dtype=object), show_value=show_value)

    present = s.notna().to_numpy() & (s.astype(str).str.strip() != "").to_numpy()
    refuse("has no time; every event needs occurred_at", ~present, show_value=False)
    tz = parse_offset(spec.timezone, "columns.occurred_at") if spec.timezone else None
    if spec.type in ("epoch_s", "epoch_ms"):
        num = pd.to_numeric(s.where(present), errors="coerce")
        refuse(f"is not a number of {'seconds' if spec.type == 'epoch_s' else 'milliseconds'}",
               num.isna().to_numpy() & present)
        t = pd.to_datetime(num, unit="s" if spec.type == "epoch_s" else "ms", utc=True)
        local = t.dt.tz_convert(tz or timezone.utc)
        return _iso(local), _seconds(t)
    text = s.astype(str).str.strip().where(present)
    if spec.format is None:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        refuse("is not an ISO 8601 time; give `format:` (strftime codes) for another layout",
               parsed.isna().to_numpy() & present)
        ok = parsed.notna().to_numpy()
        has_offset = text.str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$", regex=True, na=False).to_numpy()
        if has_offset[ok].all() and ok.any():
            if tz is None:
                return text.where(ok).reset_index(drop=True).astype("str"), _seconds(parsed)
            return _iso(parsed.dt.tz_convert(tz)), _seconds(parsed)
        if has_offset[ok].any():
            refuse("has no UTC offset while other rows do", ok & ~has_offset)
            return _iso(parsed.dt.tz_convert(tz or timezone.utc)), _seconds(parsed)
        naive = pd.to_datetime(text, format="ISO8601", errors="coerce")
    else:
        naive = pd.to_datetime(text, format=spec.format, errors="coerce")
        refuse(f"does not match format {spec.format!r}", naive.isna().to_numpy() & present)
        if naive.dt.tz is not None:
            local = naive.dt.tz_convert(tz) if tz else naive
            return _iso(local), _seconds(naive)
    if tz is None:
        raise MappingError(f"column {spec.column!r} (occurred_at): times carry no UTC offset; add "
                           "`timezone: \"+08:00\"` (or the source's offset) to columns.occurred_at",
                           field="occurred_at", column=spec.column)
    local = naive.dt.tz_localize(tz)
    return _iso(local), _seconds(local)


def _seconds(t: pd.Series) -> np.ndarray:
    return (t.astype("datetime64[us, UTC]").astype("int64") / 1e6).where(t.notna()).to_numpy(dtype=np.float64)


def _iso(local: pd.Series) -> pd.Series:
    frac = (local.dt.microsecond.fillna(0) != 0).any()
    text = local.dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z" if frac else "%Y-%m-%dT%H:%M:%S%z")
    text = text.str.replace(r"([+-]\d{2})(\d{2})$", r"\1:\2", regex=True)
    return text.reset_index(drop=True).astype("str")


_ROUNDING = {"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP}


def _rounded(d: Decimal, spec: ColumnSpec) -> Decimal:
    """``d`` rounded to ``spec.round`` decimal places (unchanged without ``round``)."""
    if spec.round is None:
        return d
    with localcontext() as ctx:
        ctx.prec = 60
        return d.quantize(Decimal(1).scaleb(-spec.round), rounding=_ROUNDING[spec.rounding])


def _to_minor(s: pd.Series, spec: ColumnSpec, currency: pd.Series, refusals: Refusals) -> pd.Series:
    """Integer minor units; rows that cannot be read go to ``refusals`` (NA in the result)."""
    n = len(s)
    out = np.zeros(n, dtype=np.int64)
    vals = s.to_numpy(dtype=object)
    missing = s.isna().to_numpy() | (s.astype(str).str.strip() == "").to_numpy()
    reasons: dict[str, np.ndarray] = {}

    def refuse(i: int, reason: str) -> None:
        reasons.setdefault(reason, np.zeros(n, dtype=bool))[i] = True

    if spec.type in ("minor", "event") and spec.round is None and s.dtype.kind in "iu":
        out = s.to_numpy(dtype=np.int64, na_value=0)
    elif spec.type == "minor" and spec.round is None:
        num = pd.to_numeric(s.where(~missing), errors="coerce")
        arr = num.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = (np.isnan(arr) | (np.nan_to_num(arr) % 1 != 0)) & ~missing
        reasons["is not a whole number of minor units (fen); use `type: decimal` for amounts in yuan"] = bad
        out = np.where(bad | missing, 0, np.nan_to_num(arr)).astype(np.int64)
    else:
        cur = currency.where(currency.notna(), "CNY").to_numpy(dtype=object)
        for i in map(int, np.flatnonzero(~missing)):
            if spec.type == "event" and not isinstance(vals[i], str):  # the contract: integer = minor units
                v = vals[i]
                if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                    out[i] = int(v)
                elif isinstance(v, (float, np.floating)) and float(v).is_integer():
                    out[i] = int(v)
                else:
                    refuse(i, "is neither an integer of minor units nor a decimal text (the event contract "
                           "takes no float money)")
                continue
            try:
                d: Decimal | None = Decimal(str(vals[i]).strip().replace(",", ""))
            except InvalidOperation:
                d = None
            if d is None or not d.is_finite():
                refuse(i, "is not a decimal amount" if spec.type in ("decimal", "event") else
                       "is not a whole number of minor units (fen); use `type: decimal` for amounts in yuan")
                continue
            r = _rounded(d, spec)
            refusals.rounded += int(r != d)
            minor = r.scaleb(currency_exponent(str(cur[i]))) if spec.type in ("decimal", "event") else r
            if minor != minor.to_integral_value():
                refuse(i, f"has more decimals than {cur[i]} allows" if spec.type in ("decimal", "event") else
                       "is not a whole number of minor units (fen); use `type: decimal` for amounts in yuan")
                continue
            out[i] = int(minor)
    reasons["is negative"] = (out < 0) & ~missing
    gone = np.zeros(n, dtype=bool)
    for reason, mask in reasons.items():
        refusals.add("amount", spec.column, reason, mask, vals)
        gone |= mask
    arr = pd.array(out, dtype="Int64")
    arr[missing | gone] = pd.NA
    return pd.Series(arr)


def load_mapping(path: Path | str | None, data: TMapping[str, Any] | None = None) -> Mapping | None:
    if path is not None:
        return Mapping.load(path)
    if data is not None:
        return Mapping.from_dict(dict(data))
    return None
