"""The report of `fengkong tune`: what changed, the figures before and after, and the trade-off curve.

Markdown for people (``report.md``), one JSON file for tools (``tune.json``) and a plot
(``tradeoff.png``: fraud caught against legitimate friction, overall and per fraud
pattern on the left, per merchant grade on the right), each from a `TuneResult`. The
later days' figures sit beside the tuning days' ones, since only they say how the
candidate does on traffic it was not fit to.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fengkong.training.tune import TuneResult


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}%"


def _figure_rows(name: str, f: dict[str, Any] | None) -> list[str]:
    if not f:
        return []
    pats = ", ".join(f"{k} {_pct(v)}" for k, v in f.get("per_pattern", {}).items())
    promo = _pct(f.get("promo_legit_friction")) if "promo_legit_friction" in f else ""
    return [f"| {name} | {f['payments']:,} | {f['fraud']:,} | {_pct(f['legit_friction'])} | {promo} | "
            f"{_pct(f['fraud_caught'])} | {pats} |"]


def markdown(result: TuneResult, *, candidate_dir: Path | None = None, problems: list[str] | None = None,
             failed_cases: list[str] | None = None, split: str = "") -> str:
    """The report as Markdown."""
    out = [f"# fengkong tune: budget {_pct(result.budget)} legitimate friction", ""]
    if split:
        out += [split, ""]
    stopped = "stopped by the time limit; " if result.stopped_by_time else ""
    out += [f"{result.evaluations:,} candidates decided; {stopped}search log:", ""]
    out += [f"    {line}" for line in result.log] + [""]
    if candidate_dir is not None:
        out += [f"Candidate rules: `{candidate_dir}` (check it with "
                f"`fengkong rules check --rules-dir {candidate_dir}`, compare it with "
                f"`fengkong rules backtest HISTORY --candidate {candidate_dir}`).", ""]
    if problems:
        out += ["**The candidate does not check:**", ""] + [f"- {p}" for p in problems] + [""]
    if failed_cases:
        out += ["**Example cases the candidate fails** (update them before a reload, which runs them):", ""]
        out += [f"- {c}" for c in failed_cases] + [""]
    out += ["## Changes", "", "| what | was | now |", "| --- | --- | --- |"]
    out += [f"| {c.label()} | {c.old:g} | {c.new:g} |" for c in result.changes] or ["| (nothing) | | |"]
    out += ["", "## Figures (friction = challenge, review or deny; per payment)", "",
            "| rules | payments | fraud | legit friction | promotion-day legit friction | fraud caught | per pattern |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    out += _figure_rows("original, tuning days", result.train_before)
    out += _figure_rows("candidate, tuning days", result.train_after)
    out += _figure_rows("original, later days", result.test_before)
    out += _figure_rows("candidate, later days", result.test_after)
    out += ["", "## Per merchant grade (candidate)", "", "| days | grade | payments | legit friction | fraud caught |",
            "| --- | --- | --- | --- | --- |"]
    for days, f in (("tuning", result.train_after), ("later", result.test_after)):
        for g, v in (f or {}).get("per_grade", {}).items():
            out.append(f"| {days} | {g} | {v['payments']:,} | {_pct(v['legit_friction'])} | "
                       f"{_pct(v['fraud_caught'])} |")
    out += ["", "## Trade-off curve (each budget tuned from the answer at the budget)", "",
            "![trade-off](tradeoff.png)", "",
            "| budget | legit friction (tuning) | fraud caught (tuning) | legit friction (later) "
            "| fraud caught (later) |",
            "| --- | --- | --- | --- | --- |"]
    for p in result.curve:
        tr, te = p["train"] or {}, p["test"] or {}
        out.append(f"| {_pct(p['budget'])} | {_pct(tr.get('legit_friction'))} | {_pct(tr.get('fraud_caught'))} | "
                   f"{_pct(te.get('legit_friction'))} | {_pct(te.get('fraud_caught'))} |")
    return "\n".join(out) + "\n"


def plot(result: TuneResult, path: Path) -> Path:
    """``tradeoff.png``: fraud caught against legitimate friction along the curve (later days when
    there are any, else the tuning days), overall and per pattern; per grade on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = "test" if all(p["test"] for p in result.curve) else "train"
    pts = [p[side] for p in result.curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = [100 * f["legit_friction"] for f in pts]
    left.plot(xs, [100 * f["fraud_caught"] for f in pts], "o-", lw=2.5, color="black", label="all fraud")
    for pat in sorted({k for f in pts for k in f.get("per_pattern", {})}):
        left.plot(xs, [100 * f.get("per_pattern", {}).get(pat, float("nan")) for f in pts], ".--", label=pat)
    left.axvline(100 * result.budget, color="grey", lw=0.8)
    left.set(xlabel="legitimate payments with friction (%)", ylabel="fraud payments with friction (%)",
             title=f"per pattern ({'later' if side == 'test' else 'tuning'} days)")
    left.legend(fontsize=7)
    for g in sorted({k for f in pts for k in f.get("per_grade", {})}):
        gx = [100 * f.get("per_grade", {}).get(g, {}).get("legit_friction", float("nan")) for f in pts]
        gy = [100 * f.get("per_grade", {}).get(g, {}).get("fraud_caught", float("nan")) for f in pts]
        right.plot(gx, gy, "o-", label=g)
    right.axvline(100 * result.budget, color="grey", lw=0.8)
    right.set(xlabel="legitimate payments with friction (%)", ylabel="fraud payments with friction (%)",
              title="per merchant grade")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: TuneResult, out_dir: Path, **kw: Any) -> Path:
    """``report.md``, ``tune.json`` and ``tradeoff.png`` in ``out_dir``; returns the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(result, out_dir / "tradeoff.png")
    md = out_dir / "report.md"
    md.write_text(markdown(result, **kw), encoding="utf-8")
    changes = [{"what": c.label(), "old": c.old, "new": c.new} for c in result.changes]
    doc = {"budget": result.budget, "changes": changes,
           "train_before": result.train_before, "train_after": result.train_after, "test_before": result.test_before,
           "test_after": result.test_after, "curve": result.curve, "evaluations": result.evaluations,
           "stopped_by_time": result.stopped_by_time, "log": result.log}
    (out_dir / "tune.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    return md


__all__ = ["markdown", "plot", "write_report"]
