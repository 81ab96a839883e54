"""`fengkong replay`: send a history through the full online path and report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""

    @app.command("replay")
    def replay(
        file: Path = typer.Argument(..., help="History: CSV, Parquet or JSON lines (.csv, .parquet, .jsonl)."),
        mapping: Optional[Path] = typer.Option(None, "--mapping", help="Mapping file (YAML): source columns -> "
                                               "event fields, constants, label. Without it: flat event columns."),
        out: Path = typer.Option(Path("replay_out"), "--out", help="Folder for decisions and the report."),
        rules_dir: Path = typer.Option(Path("rules"), "--rules-dir", help="The rules (and lists/) to replay with."),
        lists: Optional[Path] = typer.Option(None, "--lists", help="JSON {list: [entries]} loaded into the analyst "
                                             "lists first (e.g. blacklist.json from fengkong simulate)."),
        merchants: Optional[Path] = typer.Option(None, "--merchants", help="Merchant profiles (merchants.parquet)."),
        models_dir: Optional[Path] = typer.Option(None, "--artifacts", "--models", help="Model artifacts folder "
                                                  "(default $FENGKONG_ARTIFACTS_DIR or ./artifacts, as `fengkong "
                                                  "train` and `serve`; rules only when it holds none)."),
        redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Use this Redis (keys under a fresh "
                                                "prefix) instead of an embedded one."),
        label_delay: Optional[str] = typer.Option(None, "--label-delay", help="Send a fraud report this long after "
                                                  "each fraud-labelled payment (e.g. 7d); overrides the mapping."),
        fmt: str = typer.Option("parquet", "--format", help="Decisions file: parquet or csv."),
        top_k: int = typer.Option(100, "--top-k", help="k of the per-day top-k card precision."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.md and report.html."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Replay a history event by event through Redis features, the live rules and the models
        (the decision service's own path), write every decision, then a report."""
        import json
        import sys

        from rich.console import Console

        from fengkong.engine import RuleSetError
        from fengkong.models.artifacts import ArtifactError, default_root
        from fengkong.replay.mapping import Mapping, MappingError, parse_delay
        from fengkong.replay.report import write_report
        from fengkong.replay.runner import run_replay

        console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        if not (rules_dir / "lists").is_dir():
            console.print(f"[red]error[/red] rules folder {rules_dir} (with lists/) not found; give --rules-dir",
                          soft_wrap=True)
            raise typer.Exit(2)
        if fmt not in ("parquet", "csv"):
            raise typer.BadParameter("use parquet or csv", param_hint="--format")
        try:
            models_dir = default_root(models_dir)
        except ArtifactError as exc:
            raise typer.BadParameter(str(exc), param_hint="--artifacts") from None
        try:
            mapping_obj = Mapping.load(mapping) if mapping else None
            delay = parse_delay(label_delay) if label_delay is not None else None
            result = run_replay(file, mapping=mapping_obj, rules_dir=rules_dir, redis_url=redis_url,
                                lists_file=lists, merchants_file=merchants, models_dir=models_dir,
                                label_delay_s=delay, emit_reports=True if delay is not None else None,
                                progress=progress and sys.stderr.isatty())
        except MappingError as exc:
            console.print(f"[red]error[/red] {exc}", soft_wrap=True, markup=False)
            raise typer.Exit(2)
        except RuleSetError as exc:
            for p in exc.problems:
                console.print(f"[red]error[/red] {p}", soft_wrap=True, markup=False)
            raise typer.Exit(2)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"decisions.{fmt}"
        if fmt == "parquet":
            result.decisions.to_parquet(path, index=False)
        else:
            result.decisions.to_csv(path, index=False)
        counts = result.decisions["decision"].value_counts()
        console.print(f"[bold]fengkong replay[/bold]: {result.events_in:,} events from {file} "
                      f"(+{result.reports_generated:,} fraud reports from labels) in {result.seconds:.1f} s, "
                      f"{result.events_per_s:,.0f} events/s; rules {result.ruleset_version}; "
                      f"models: {result.models_status or 'none'}")
        console.print("decisions: " + ", ".join(f"{a} {int(counts.get(a, 0)):,}"
                                                for a in ("allow", "challenge", "review", "deny")))
        if result.rejected:
            console.print(f"[yellow]{result.rejected:,} row(s) refused by the event contract[/yellow]; first: "
                          + "; ".join(f"row {r} {f}: {why}" for r, f, why in result.rejects[:3]), soft_wrap=True)
        console.print(f"wrote {path}")
        if report:
            info = {r.id: {"mode": r.mode, "then": r.then} for r in (result.rules.rules if result.rules else ())}
            meta = {"source": str(file), "mapping": str(mapping) if mapping else "none (flat event columns)",
                    "events": f"{result.events_in:,} (+{result.reports_generated:,} label-derived fraud reports, "
                              f"{result.outcomes_sent:,} outcome events in all; {result.rejected:,} refused)",
                    "decisions": f"{len(result.decisions):,}", "rules": result.ruleset_version,
                    "models": result.models_status or "none",
                    "replay time": f"{result.seconds:.1f} s ({result.events_per_s:,.0f} events/s)",
                    "_rejects": result.rejects}
            md, html, m = write_report(result.decisions, out, meta=meta, top_k=top_k, rule_info=info)
            if m.labelled:
                console.print(f"ROC AUC {m.roc_auc if m.roc_auc is None else round(m.roc_auc, 4)}, "
                              f"average precision {m.average_precision if m.average_precision is None else round(m.average_precision, 4)}, "
                              f"review+deny rate {100 * (m.stop_rate or 0):.2f}%: precision "
                              f"{100 * (m.precision or 0):.1f}%, recall {100 * (m.recall or 0):.1f}%")
            console.print(f"wrote {md} and {html}")
            json.dumps({})
