"""Mapping robustness: `round` for amounts with float noise, and `max_bad_share` for a few bad rows.

* an export's float noise (``914.1500000000001``) refuses the file without ``round`` and
  is read as 914.15 yuan with ``round: 2``; the rounding mode is the documented one;
  rounding happens before the strict decimal check, so real extra decimals still fail;
* rows a conversion refuses are skipped and reported (per field and reason, first row
  numbers) while their share is at most ``max_bad_share``; past it, and by default, the
  file is refused naming the first bad row;
* the CLI prints the refusals and the report lists them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fengkong.replay.mapping import Mapping, MappingError
from fengkong.replay.reader import load_history

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"

MAPPING = {
    "columns": {"event_id": "txn", "type": {"column": "kind", "map": {"P": "payment"}},
                "occurred_at": {"column": "when", "format": "%Y-%m-%d %H:%M:%S", "timezone": "+08:00"},
                "amount": {"column": "yuan", "type": "decimal"}, "merchant_id": "shop", "user_id": "cust",
                "card_fingerprint": "card"},
    "constants": {"currency": "CNY"},
}


def _export(path: Path, n: int, *, amounts: dict[int, str] | None = None, times: dict[int, str] | None = None) -> None:
    """A bank's CSV export of ``n`` payments; ``amounts``/``times`` replace cells by row index."""
    rows = []
    for i in range(n):
        rows.append({"txn": f"t{i:05d}", "kind": "P", "when": f"2025-10-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}",
                     "yuan": f"{10 + i % 90}.{i % 100:02d}", "shop": f"m{i % 7}", "cust": f"u{i % 50}",
                     "card": f"c{i % 80}"})
    for i, v in (amounts or {}).items():
        rows[i]["yuan"] = v
    for i, v in (times or {}).items():
        rows[i]["when"] = v
    pd.DataFrame(rows).to_csv(path, index=False)


def _mapping(**amount: object) -> Mapping:
    m = yaml.safe_load(yaml.safe_dump(MAPPING))
    m["columns"]["amount"].update(amount)
    return Mapping.from_dict(m)


def test_float_noise_refuses_the_file_without_round_and_reads_with_round(tmp_path) -> None:
    csv = tmp_path / "export.csv"
    _export(csv, 30, amounts={4: "914.1500000000001", 9: "20.049999999999997"})
    with pytest.raises(MappingError) as err:
        load_history(csv, _mapping())
    assert "row 5 value '914.1500000000001' has more decimals than CNY allows" in str(err.value)
    assert "2 of 30 rows" in str(err.value) and "max_bad_share" in str(err.value)
    h = load_history(csv, _mapping(round=2))
    amounts = dict(zip(h.events["event_id"], h.events["amount"]))
    assert amounts["t00004"] == 91415 and amounts["t00009"] == 2005 and amounts["t00001"] == 1101
    assert len(h.events) == 30 and h.refusals.rounded == 2 and h.refusals.mapping_rows == 0


def test_rounding_mode_is_half_even_unless_half_up_and_runs_before_the_strict_check(tmp_path) -> None:
    csv = tmp_path / "export.csv"
    _export(csv, 5, amounts={0: "0.125", 1: "0.135", 2: "12.345"})
    even = load_history(csv, _mapping(round=2)).events.set_index("event_id")["amount"]
    up = load_history(csv, _mapping(round=2, rounding="half_up")).events.set_index("event_id")["amount"]
    assert (even["t00000"], even["t00001"], even["t00002"]) == (12, 14, 1234)
    assert (up["t00000"], up["t00001"], up["t00002"]) == (13, 14, 1235)
    # round: 3 keeps the third decimal, which yuan cannot hold: still refused
    _export(csv, 5, amounts={2: "12.345", 3: "7.1000000000000001"})
    with pytest.raises(MappingError, match="row 3 value '12.345' has more decimals than CNY allows"):
        load_history(csv, _mapping(round=3))


def test_round_applies_to_amount_only() -> None:
    m = yaml.safe_load(yaml.safe_dump(MAPPING))
    m["columns"]["user_id"] = {"column": "cust", "round": 2}
    with pytest.raises(MappingError, match="columns.user_id: round and rounding apply to amount only"):
        Mapping.from_dict(m)
    m = yaml.safe_load(yaml.safe_dump(MAPPING))
    m["columns"]["amount"]["rounding"] = "up"
    with pytest.raises(MappingError, match="rounding"):
        Mapping.from_dict(m)


def test_bad_rows_under_the_share_are_skipped_and_reported(tmp_path) -> None:
    csv = tmp_path / "export.csv"
    _export(csv, 2000, times={10: "01/10/2025 10:00"}, amounts={1500: "-3.00"})
    with pytest.raises(MappingError) as err:  # default 0: the file is refused at its first bad row
        load_history(csv, _mapping())
    assert "column 'when' (occurred_at): row 11 value '01/10/2025 10:00' does not match format" in str(err.value)
    m = yaml.safe_load(yaml.safe_dump(MAPPING))
    m["max_bad_share"] = 0.001
    h = load_history(csv, Mapping.from_dict(m))
    assert len(h.events) == 1998 and h.refusals.mapping_rows == 2
    assert not {"t00010", "t01500"} & set(h.events["event_id"])
    table = {(r["field"], r["reason"].split(" ")[0]): r for r in h.refusals.table()}
    assert table[("occurred_at", "does")]["rows"] == 1 and table[("occurred_at", "does")]["first rows"] == "11"
    assert table[("amount", "is")]["rows"] == 1 and table[("amount", "is")]["first rows"] == "1501"
    assert h.events["row"].max() == 1999  # source row numbers survive the skipping
    # three bad rows of 2,000 are 0.15% > 0.1%: refused, naming the first and the share
    _export(csv, 2000, times={10: "x", 11: "y"}, amounts={1500: "-3.00"})
    with pytest.raises(MappingError, match=r"row 11 value 'x'.*3 of 2,000 rows, 0\.150%.*max_bad_share is 0\.001"):
        load_history(csv, Mapping.from_dict(m))
    # the CLI's --max-bad-share overrides the mapping's
    assert load_history(csv, Mapping.from_dict(m), max_bad_share=0.002).refusals.mapping_rows == 3


def test_cli_reports_skipped_rows_and_the_report_lists_them(tmp_path, redis_server) -> None:
    from fengkong.cli import app

    csv, mfile, out = tmp_path / "export.csv", tmp_path / "m.yaml", tmp_path / "out"
    _export(csv, 400, times={7: "not a time"}, amounts={3: "914.1500000000001"})
    m = yaml.safe_load(yaml.safe_dump(MAPPING))
    m["columns"]["amount"]["round"] = 2
    mfile.write_text(yaml.safe_dump(m), encoding="utf-8")
    args = ["replay", str(csv), "--mapping", str(mfile), "--rules-dir", str(RULES), "--out", str(out),
            "--redis-url", redis_server.url, "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "error: column 'when' (occurred_at): row 8 value 'not a time'" in res.output
    res = CliRunner().invoke(app, [*args, "--max-bad-share", "0.01"])
    assert res.exit_code == 0, res.output
    assert "warning: 1 row(s) skipped by the mapping, occurred_at (column 'when'): does not match format" in res.output
    assert "first rows 8" in res.output and "amounts rounded by the mapping's `round`: 1" in res.output
    d = pd.read_parquet(out / "decisions.parquet")
    assert len(d) == 399 and "t00007" not in set(d["event_id"])
    assert d.set_index("event_id").loc["t00003", "amount"] == 91415
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Rows not replayed" in md
    assert "| mapping | occurred_at | when | does not match format '%Y-%m-%d %H:%M:%S' | 1 | 8 |" in md
    assert "amounts rounded" in md
