"""`fengkong replay`: send a history through the full online path and report.

Everything it prints is plain text (errors on stderr, starting ``error:``), so a log
or a pipe gets no terminal markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def _error(text: str) -> None:
    """One plain-text error line on stderr (red only on a terminal)."""
    typer.echo(f"{typer.style('error', fg='red')}: {text}" if _tty() else f"error: {text}", err=True)


def _warn(text: str) -> None:
    typer.echo(f"{typer.style('warning', fg='yellow')}: {text}" if _tty() else f"warning: {text}", err=True)


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""

    @app.command("replay")
    def replay(
        file: Path = typer.Argument(..., help="History: CSV, Parquet or JSON lines (.csv, .parquet, .jsonl); "
                                    "flat event columns, the event contract's nested JSON, or any export "
                                    "with --mapping."),
        mapping: Optional[Path] = typer.Option(None, "--mapping", help="Mapping file (YAML): source columns -> "
                                               "event fields, constants, label. Without it: flat event columns "
                                               "or the event contract's own shape."),
        out: Path = typer.Option(Path("replay_out"), "--out", help="Folder for decisions and the report."),
        rules_dir: Path = typer.Option(Path("rules"), "--rules-dir", help="The rules (and lists/) to replay with."),
        lists: Optional[Path] = typer.Option(None, "--lists", help="JSON {list: [entries]} loaded into the analyst "
                                             "lists first (e.g. blacklist.json from fengkong simulate)."),
        merchants: Optional[Path] = typer.Option(None, "--merchants", help="Merchant profiles (merchants.parquet)."),
        promotions: Optional[Path] = typer.Option(None, "--promotions", help="Merchants' planned promotions "
                                                  "(promotions.parquet from fengkong simulate, or a CSV: merchant_id, "
                                                  "start, end, expected_multiple)."),
        models_dir: Optional[Path] = typer.Option(None, "--artifacts", "--models", help="Model artifacts folder "
                                                  "(default $FENGKONG_ARTIFACTS_DIR or ./artifacts, as `fengkong "
                                                  "train` and `serve`; rules only when it holds none)."),
        redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Use this Redis, or a Redis Cluster "
                                                "(redis+cluster://host:port,...), keys under a fresh prefix, "
                                                "instead of an embedded one."),
        label_delay: Optional[str] = typer.Option(None, "--label-delay", help="Send a fraud report this long after "
                                                  "each fraud-labelled payment (e.g. 7d); overrides the mapping."),
        max_bad_share: Optional[float] = typer.Option(None, "--max-bad-share", help="Skip and report rows the "
                                                      "mapping cannot read while their share of the file is at "
                                                      "most this (e.g. 0.001); overrides the mapping's. Default 0: "
                                                      "refuse the file."),
        evaluate_from: Optional[str] = typer.Option(None, "--evaluate-from", help="First business day (YYYY-MM-DD, "
                                                    "UTC+08:00) the report scores; the replay still runs the "
                                                    "whole history."),
        evaluate_until: Optional[str] = typer.Option(None, "--evaluate-until", help="Last business day "
                                                     "(inclusive) the report scores."),
        fmt: str = typer.Option("parquet", "--format", help="Decisions file: parquet or csv."),
        top_k: int = typer.Option(100, "--top-k", help="k of the per-day top-k card precision."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.md and report.html."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        history_start: Optional[str] = typer.Option(
            None, "--history-start", help="When the history's past begins: first (its first event: ages, first "
            "seen and new-device flags are missing until the history is as old as their window), none (the "
            "history holds every entity's whole past), or an ISO 8601 time. Default: first with --mapping, "
            "else none."),
        in_flight: int = typer.Option(1024, "--in-flight", min=1, help="Events whose Redis feature calls are "
                                      "sent ahead, in event-time order, on one connection per Redis master "
                                      "(same decisions as one by one; 1 = send each event and wait for its "
                                      "answer)."),
        nightly: bool = typer.Option(False, "--nightly/--no-nightly", help="Run the nightly job (`fengkong "
                                     "rescore`: merchant grades, daily caps, the merchant model's anomaly score) at "
                                     "each business-day boundary (00:00 UTC+08:00) in event time, on the history "
                                     "before it; merchants without a grade start at the policy's start grade with "
                                     "its daily cap."),
        grade_policy: Optional[Path] = typer.Option(None, "--grade-policy", help="Grade policy for --nightly "
                                                    "(default RULES_DIR/grades/grades.yaml)."),
    ) -> None:
        """Replay a history event by event through Redis features, the live rules and the models
        (the decision service's own path), write every decision, then a report."""
        import sys

        from fengkong.engine import RuleSetError
        from fengkong.models.artifacts import ArtifactError, default_root
        from fengkong.replay.evaluation import Window
        from fengkong.replay.mapping import Mapping, MappingError, parse_delay
        from fengkong.replay.report import write_report
        from fengkong.replay.runner import run_replay
        from fengkong.training.grade_policy import GradePolicyError
        from fengkong.training.nightly import Nightly, NightlyError

        if not (rules_dir / "lists").is_dir():
            _error(f"rules folder {rules_dir} (with lists/) not found; give --rules-dir")
            raise typer.Exit(2)
        if fmt not in ("parquet", "csv"):
            raise typer.BadParameter("use parquet or csv", param_hint="--format")
        try:
            window = Window.parse(evaluate_from, evaluate_until)
        except ValueError as exc:
            _error(str(exc))
            raise typer.Exit(2)
        try:
            models_dir = default_root(models_dir)
        except ArtifactError as exc:
            raise typer.BadParameter(str(exc), param_hint="--artifacts") from None
        try:
            job = Nightly.load(policy_path=grade_policy or rules_dir / "grades" / "grades.yaml",
                               models_dir=models_dir) if nightly else None
        except (GradePolicyError, ArtifactError) as exc:
            _error(str(exc))
            raise typer.Exit(2)
        try:
            mapping_obj = Mapping.load(mapping) if mapping else None
            delay = parse_delay(label_delay) if label_delay is not None else None
            result = run_replay(file, mapping=mapping_obj, rules_dir=rules_dir, redis_url=redis_url,
                                lists_file=lists, merchants_file=merchants, models_dir=models_dir,
                                label_delay_s=delay, emit_reports=True if delay is not None else None,
                                progress=progress and sys.stderr.isatty(), max_bad_share=max_bad_share,
                                in_flight=in_flight, promotions_file=promotions, nightly=job,
                                history_start=history_start)
        except (MappingError, NightlyError) as exc:
            _error(str(exc))
            raise typer.Exit(2)
        except RuleSetError as exc:
            for p in exc.problems:
                _error(str(p))
            raise typer.Exit(2)
        if result.unused:
            _warn(f"{len(result.unused)} source field(s) nothing reads (map them, or they play no part): "
                  + ", ".join(result.unused))
        for line in result.refusals.lines():
            _warn(line)
        if result.refusals.rounded:
            typer.echo(f"amounts rounded by the mapping's `round`: {result.refusals.rounded:,}")
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"decisions.{fmt}"
        if fmt == "parquet":
            result.decisions.to_parquet(path, index=False)
        else:
            result.decisions.to_csv(path, index=False)
        counts = result.decisions["decision"].value_counts()
        typer.echo(f"fengkong replay: {result.events_in:,} events from {file} "
                   f"(+{result.reports_generated:,} fraud reports from labels) in {result.seconds:.1f} s, "
                   f"{result.events_per_s:,.0f} events/s; rules {result.ruleset_version}; "
                   f"models: {result.models_status or 'none'}")
        if result.nightly:
            typer.echo(f"nightly job: {result.nightly}")
        typer.echo("decisions: " + ", ".join(f"{a} {int(counts.get(a, 0)):,}"
                                             for a in ("allow", "challenge", "review", "deny")))
        typer.echo(f"wrote {path}")
        if report:
            _write_report(result, file=file, mapping=mapping, out=out, top_k=top_k, window=window,
                          write_report=write_report)


def _write_report(result: Any, *, file: Path, mapping: Path | None, out: Path, top_k: int, window: Any,
                  write_report: Any) -> None:
    """The report of a replay, and its headline figures on the console."""
    info = {r.id: {"mode": r.mode, "then": r.then} for r in (result.rules.rules if result.rules else ())}
    refused = result.refusals
    meta = {"source": str(file), "mapping": str(mapping) if mapping else "none (flat event columns or the "
            "event contract's shape)",
            "events": f"{result.events_in:,} (+{result.reports_generated:,} label-derived fraud reports, "
                      f"{result.outcomes_sent:,} outcome events in all; {refused.mapping_rows:,} rows the "
                      f"mapping could not read, {result.rejected:,} refused by the event contract)",
            "decisions": f"{len(result.decisions):,}", "rules": result.ruleset_version,
            "models": result.models_status or "none",
            "nightly job": result.nightly or "off (merchant profiles as they started)",
            "replay time": f"{result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)"}
    if refused.rounded:
        meta["amounts rounded"] = f"{refused.rounded:,} (the mapping's `round`)"
    if result.unused:
        meta["source fields nothing reads"] = ", ".join(result.unused)
    md, html, m = write_report(result.decisions, out, meta=meta, top_k=top_k, rule_info=info, window=window,
                               card_reports=result.card_reports, refusals=refused.table())
    if m.events == 0:
        _warn(f"the evaluation window ({m.window.describe()}) holds none of the {len(result.decisions):,} decisions")
    if m.labelled:
        auc = "n/a" if m.roc_auc is None else f"{m.roc_auc:.4f}"
        ap = "n/a" if m.average_precision is None else f"{m.average_precision:.4f}"
        typer.echo(f"evaluated: {m.window.describe()}; ROC AUC {auc}, average precision {ap}, "
                   f"review+deny rate {100 * (m.stop_rate or 0):.2f}%: precision "
                   f"{100 * (m.precision or 0):.1f}%, recall {100 * (m.recall or 0):.1f}%")
    typer.echo(f"wrote {md} and {html}")
