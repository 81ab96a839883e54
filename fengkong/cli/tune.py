"""`fengkong tune HISTORY --max-friction 1%`: a candidate rule set fit to a friction budget.

The history's features come from the same function `rules backtest` uses
(`replay.backtest.history_features`), its payments are split into tuning days and later
days (``--until``), `fengkong.training.tune` searches, and the candidate folder, its
check, its example cases and the report are written under ``--out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

import typer


def parse_share(text: str) -> float:
    """``1%`` or ``0.01`` as a share; BadParameter naming --max-friction otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a share such as 1% or 0.01", param_hint="--max-friction") from None
    if not 0 < value < 1:
        raise typer.BadParameter(f"{text!r} must be above 0% and below 100%", param_hint="--max-friction")
    return value


@dataclass
class TuneRun:
    """What `tune_history` produced: the search's result and where it wrote things."""

    result: Any  # fengkong.training.tune.TuneResult
    candidate: Path
    report: Path
    problems: list[str]
    failed_cases: list[str]
    last_tuning_day: date


def tune_history(history_path: Path, *, rules_dir: Path, out: Path, budget: float, until: date | None = None,
                 mapping: Path | None = None, lists: Path | None = None, merchants: Path | None = None,
                 promotions: Path | None = None, seed: int = 0, passes: int = 4, objective: str = "payments",
                 max_seconds: float | None = None, label_maturity_days: float = 0.0,
                 pattern_floor: float | None = None,
                 risk_column: str | None = None, progress: Callable[[str], None] | None = None) -> TuneRun:
    """Read, compute features once, tune on the days up to ``until`` (default: the first 70%),
    write ``out/rules`` (the candidate) and ``out/report.md``, check the candidate.

    The history's labels are what was known at its end: tuning payments younger than
    ``label_maturity_days`` then are left out (`fengkong.training.tune_labels`), not judged
    legitimate. ``pattern_floor``: `fengkong.training.tune`'s per-pattern floor."""
    import numpy as np
    import pandas as pd

    from fengkong.cli.rules import _check
    from fengkong.engine import RuleSetError, load_ruleset
    from fengkong.engine.candidate import write_candidate
    from fengkong.engine.ruleset import parse_rules
    from fengkong.engine.testing import load_cases, run_cases
    from fengkong.features.definitions import DEFAULT_BUSINESS_UTC_OFFSET_MIN
    from fengkong.replay.backtest import history_features
    from fengkong.replay.mapping import Mapping
    from fengkong.replay.reader import load_history
    from fengkong.training.train import split_day
    from fengkong.training.fusion import cutoff_after
    from fengkong.training.tune import Rows, tune
    from fengkong.training.tune_labels import known_labels
    from fengkong.training.tune_report import write_report

    rules, policy, schema, problems = parse_rules(rules_dir)
    if problems or policy is None:
        raise RuleSetError(problems)
    history = load_history(history_path, Mapping.load(mapping) if mapping else None)
    if not history.labelled:
        raise ValueError(f"{history_path}: tune needs labels (is_fraud, or a mapping's label:)")
    if progress:
        progress(f"computing features of {len(history.events):,} events")
    feats, labels = history_features(history, rules_dir=rules_dir, lists_file=lists, merchants_file=merchants,
                                     promotions_file=promotions)
    assert labels is not None
    pay = (feats["event.type"] == "payment").to_numpy()
    src = history.events.drop_duplicates("event_id").set_index("event_id")
    ids = feats["event.event_id"].to_numpy(dtype=object)[pay]
    when = pd.to_datetime(src.loc[ids, "occurred_at"].astype(str), utc=True, format="ISO8601")
    days = (when + pd.Timedelta(minutes=DEFAULT_BUSINESS_UTC_OFFSET_MIN)).dt.date.to_numpy()
    y = pd.array(labels, dtype="boolean").to_numpy(dtype=bool, na_value=False)[pay]
    scen = (src.loc[ids, "scenario"].fillna("").astype(str).to_numpy(dtype=object)
            if "scenario" in src.columns else None)
    risk = None
    if risk_column:
        if risk_column not in src.columns:
            raise ValueError(f"--risk-column: {history_path} has no column {risk_column!r}")
        risk = pd.to_numeric(src.loc[ids, risk_column], errors="coerce").to_numpy(dtype=np.float64)
    promo = None
    if promotions is not None:
        from fengkong.replay.reader import read_table
        from fengkong.training.friction import in_promotion

        promo = in_promotion(src.loc[ids, "merchant_id"].to_numpy(), src.loc[ids, "occurred_at"].astype(str),
                             read_table(promotions))
    rows = Rows(feats[pay].reset_index(drop=True), y, scen, risk, promo)
    last = split_day(pd.Series(days), until)
    train = days <= last
    known = known_labels(pd.DataFrame({"event.event_id": ids, "occurred_at": when.to_numpy()}),
                         cutoff=cutoff_after(max(days)), maturity=timedelta(days=label_maturity_days),
                         reported=y).known
    if not (train & known).any() or not y[train & known].any():
        raise ValueError(f"--until {last}: the tuning days hold no labelled fraud to tune on"
                         + (f" older than --label-maturity-days {label_maturity_days:g}" if label_maturity_days else ""))
    if progress and label_maturity_days:
        progress(f"{int((train & ~known).sum()):,} tuning payments younger than {label_maturity_days:g} days at the "
                 f"end of the history left out (their label may not be known yet)")
    result = tune(rules, policy, schema.dtypes, rows.subset(train & known), budget=budget, test=rows.subset(~train),
                  seed=seed, max_passes=passes, objective=objective, max_seconds=max_seconds,
                  pattern_floor=pattern_floor, progress=progress)
    candidate = write_candidate(rules_dir, out / "rules", result.changes)
    found, _ = _check(candidate)
    found_text = [str(p) for p in found]
    failed: list[str] = []
    if not found:
        ruleset = load_ruleset(candidate)
        try:
            cases, _ = load_cases(candidate)
            failed = [f"{r.case.file}:{r.case.line} {r.case.name}: {'; '.join(r.failures)}"
                      for r in run_cases(ruleset, cases) if not r.passed]
        finally:
            ruleset.close()
    split = (f"Tuned on the payments of business days up to {last} ({int((train & known).sum()):,}"
             f"{f', {int((train & ~known).sum()):,} younger than the label maturity left out' if label_maturity_days else ''}); "
             f"later days ({int((~train).sum()):,} payments) only measured.")
    report = write_report(result, out, candidate_dir=candidate, problems=found_text, failed_cases=failed, split=split)
    return TuneRun(result, candidate, report, found_text, failed, last)


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune_cmd(
        history: Path = typer.Argument(..., help="Labelled history: CSV, Parquet or JSON lines (as rules backtest)."),
        max_friction: str = typer.Option("1%", "--max-friction", help="Budget: the share of legitimate payments "
                                         "that may meet challenge, review or deny (1% or 0.01)."),
        rules_dir: Path = typer.Option(Path("rules"), "--rules-dir", help="The rules to start from."),
        out: Path = typer.Option(Path("tune_out"), "--out", help="Folder for rules/ (the candidate) and the report."),
        until: str = typer.Option(None, "--until", help="Last tuning day, YYYY-MM-DD (later days are only measured; "
                                  "default: the first 70% of the days)."),
        mapping: Path = typer.Option(None, "--mapping", help="Mapping file (see fengkong replay)."),
        lists: Path = typer.Option(None, "--lists", help="JSON {list: [entries]} for the analyst lists."),
        merchants: Path = typer.Option(None, "--merchants", help="Merchant profiles (merchants.parquet)."),
        promotions: Path = typer.Option(None, "--promotions", help="Merchants' planned promotions (as replay)."),
        seed: int = typer.Option(0, "--seed", help="Orders the search (the same seed gives the same candidate)."),
        passes: int = typer.Option(4, "--passes", min=1, help="At most this many passes over the parameters."),
        objective: str = typer.Option("payments", "--objective", help="payments (fraud payments caught) or "
                                      "patterns (the mean over fraud patterns, needs a scenario column)."),
        max_seconds: float = typer.Option(None, "--max-seconds", help="Stop searching after this long (wall clock)."),
        label_maturity_days: float = typer.Option(0.0, "--label-maturity-days", min=0, help="Leave out tuning "
                                                  "payments younger than this at the end of the history: their fraud "
                                                  "report may not have arrived (as fengkong train)."),
        pattern_floor: float = typer.Option(None, "--pattern-floor", min=0, max=0.99, help="No fraud pattern's "
                                            "friction on the tuning days may fall more than this share below the "
                                            "starting rules' (needs a scenario column; e.g. 0.05)."),
        risk_column: str = typer.Option(None, "--risk-column", help="A history column holding each payment's fused "
                                        "risk (e.g. a replay's decisions file: risk): tunes the soft table too."),
    ) -> None:
        """Search the policy's thresholds and the rules' tunable constants for the most fraud caught
        within a legitimate-friction budget; write the candidate rules and a report."""
        from fengkong.engine import RuleSetError
        from fengkong.replay.mapping import MappingError

        budget = parse_share(max_friction)
        try:
            last = date.fromisoformat(until) if until else None
        except ValueError:
            raise typer.BadParameter(f"{until!r} is not a date YYYY-MM-DD", param_hint="--until") from None
        try:
            run = tune_history(history, rules_dir=rules_dir, out=out, budget=budget, until=last, mapping=mapping,
                               lists=lists, merchants=merchants, promotions=promotions, seed=seed, passes=passes,
                               objective=objective, max_seconds=max_seconds,
                               label_maturity_days=label_maturity_days, pattern_floor=pattern_floor,
                               risk_column=risk_column, progress=typer.echo)
        except RuleSetError as exc:
            for p in exc.problems:
                typer.echo(f"error {p}", err=True)
            raise typer.Exit(2)
        except (MappingError, ValueError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        r = run.result
        for c in r.changes:
            typer.echo(f"  {c.label()}: {c.old:g} -> {c.new:g}")
        for name, f in (("tuning days", r.train_after), ("later days", r.test_after)):
            if f:
                typer.echo(f"candidate, {name}: legit friction {f['legit_friction']:.2%}, fraud caught "
                           f"{f['fraud_caught']:.2%}")
        for line in run.problems:
            typer.echo(f"error {line}", err=True)
        for case in run.failed_cases:
            typer.echo(f"case fails with the candidate: {case}")
        typer.echo(f"wrote {run.candidate} and {run.report}")
        if run.problems:
            raise typer.Exit(1)
