"""The backtest as one self-contained HTML page: the summary of the candidate against the
live rules, and the figures of every rule that changed.

Written by ``fengkong rules backtest --html PATH`` (and beside the CSV with ``--out``) so
that the console's report viewer (``<data_dir>/reports``) can show it to analysts who do
not open CSV files. No external assets: styles are inline, every text is escaped.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

from fengkong.replay.backtest import BacktestResult

#: Per-rule columns and their headings; the label columns only when the history has labels.
_COLUMNS = (("rule", "Rule"), ("status", "Status"), ("fires_live", "Fires (live)"),
            ("fires_candidate", "Fires (candidate)"), ("events_affected", "Events affected"),
            ("decisions_changed", "Decisions changed"), ("fraud_newly_caught", "Fraud newly caught"),
            ("fraud_lost", "Fraud lost"), ("good_newly_stopped", "Good newly stopped"),
            ("good_released", "Good released"), ("review_rate_change_pp", "Review rate change (pp)"))
_LABELLED = {"fraud_newly_caught", "fraud_lost", "good_newly_stopped", "good_released"}
_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "td:first-child,th:first-child,td.text{text-align:left}th{background:#f3f3f3}"
          "tr.overall td{font-weight:bold}.added{color:#0a6}.removed{color:#b30}.changed{color:#a60}")


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if column == "review_rate_change_pp":
        return f"{float(value):+.3f}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{int(value):,}"
    return html.escape(str(value))


def backtest_html(result: BacktestResult, *, candidate: str, live: str, all_rules: bool = False) -> str:
    """The page for ``result`` (``candidate`` and ``live`` name the two rule folders);
    rules that changed nothing are left out unless ``all_rules``."""
    labelled = result.labels is not None
    columns = [(c, h) for c, h in _COLUMNS if labelled or c not in _LABELLED]
    frame = result.table
    shown = frame if all_rules else frame[(frame["status"] != "same") | (frame["events_affected"] > 0)]
    overall = result.overall
    esc = html.escape
    summary = [("Candidate rules", esc(candidate)), ("Live rules", esc(live)),
               ("Candidate version", esc(result.candidate_version)), ("Live version", esc(result.live_version)),
               ("Events", _cell("events", result.timings.get("events"))),
               ("Decisions", _cell("decisions", len(result.features)))]
    summary += [(h, _cell(c, overall.get(c))) for c, h in columns[4:]]
    head = "".join(f"<th>{esc(h)}</th>" for _, h in columns)
    rows = []
    for record in shown.to_dict("records"):
        cls = ' class="overall"' if record["rule"] == "(all)" else ""
        cells = []
        for c, _ in columns:
            status = f' class="text {esc(str(record["status"]))}"' if c == "status" else ""
            cells.append(f"<td{status}>{_cell(c, record.get(c))}</td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    title = f"Backtest: {candidate} against {live}"
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><h2>Summary</h2><table>"
            + "".join(f"<tr><th>{esc(k)}</th><td class='text'>{v}</td></tr>" for k, v in summary)
            + "</table><h2>Per rule</h2>"
            "<p>A rule's row counts the events where it fires differently in the two sets; "
            "<b>(policy)</b> counts decisions that changed with no rule firing differently, "
            "<b>(all)</b> counts each changed event once. Stopped means review or deny.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "</body></html>")
