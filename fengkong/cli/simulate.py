"""`fengkong simulate`: labelled synthetic payment traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"{part!r}: expected scenario=weight, e.g. cash_out=2")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{part!r}: weight must be a number") from None
    return mix


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""

    @app.command("simulate")
    def simulate(
        out: Path = typer.Option(..., "--out", help="Folder to write events, merchants.parquet and blacklist.json."),
        events: Optional[int] = typer.Option(
            None, "--events", help="About this many events (sizes shoppers and merchants; overrides them)."),
        shoppers: int = typer.Option(20_000, "--shoppers", help="Number of legitimate shoppers."),
        merchants: int = typer.Option(1_000, "--merchants", help="Number of merchants."),
        days: int = typer.Option(60, "--days", help="Length of the history in days."),
        start: str = typer.Option("2025-10-01", "--start", help="First day (local, +08:00), YYYY-MM-DD."),
        seed: int = typer.Option(0, "--seed", help="Same seed and options, same history."),
        fmt: str = typer.Option("both", "--format", help="parquet, jsonl or both."),
        fraud_scale: float = typer.Option(1.0, "--fraud-scale", help="Multiply every scenario's incidence."),
        mix: str = typer.Option("", "--mix", help="Per-scenario multipliers, e.g. 'cash_out=2,card_testing=0'."),
        chunk_rows: Optional[int] = typer.Option(
            None, "--chunk-rows", min=1,
            help="Frame and write the events this many rows at a time (Parquet only): for histories whose "
                 "events would not fit in memory at once. The same files."),
    ) -> None:
        """Write a labelled event stream of a payment platform, with injected fraud scenarios."""
        import time
        from datetime import date

        from rich.console import Console
        from rich.table import Table

        from fengkong.simulation import SCENARIOS, SimConfig, run, summary, write_outputs

        console = Console(highlight=False)
        if fmt not in ("parquet", "jsonl", "both"):
            raise typer.BadParameter("use parquet, jsonl or both", param_hint="--format")
        if chunk_rows is not None and fmt != "parquet":
            raise typer.BadParameter("--chunk-rows writes Parquet only: add --format parquet", param_hint="--chunk-rows")
        try:
            first = date.fromisoformat(start)
        except ValueError:
            raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--start") from None
        mixes = _parse_mix(mix)
        t0 = time.perf_counter()
        try:
            if events is not None:
                config = SimConfig.for_events(events, days=days, seed=seed, start=first, fraud_scale=fraud_scale,
                                              mix=mixes)
            else:
                config = SimConfig(days=days, shoppers=shoppers, merchants=merchants, seed=seed, start=first,
                                   fraud_scale=fraud_scale, mix=mixes)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if chunk_rows is not None:
            import pandas as pd

            from fengkong.simulation.writer import write_run

            paths = write_run(config, out, chunk_rows=chunk_rows)
            t_gen = t_all = time.perf_counter() - t0
            s = summary(pd.read_parquet(paths["events.parquet"],
                                        columns=["type", "is_fraud", "scenario", "amount", "occurred_at"]))
        else:
            sim = run(config)
            t_gen = time.perf_counter() - t0
            formats = ("parquet", "jsonl") if fmt == "both" else (fmt,)
            paths = write_outputs(sim, out, formats=formats)
            t_all = time.perf_counter() - t0
            s = summary(sim.events)
        by_type, by_scenario = s["by_type"], s["by_scenario"]
        assert isinstance(by_type, dict) and isinstance(by_scenario, dict)  # summary()'s shapes, for mypy

        console.print(f"[bold]fengkong simulate[/bold]: seed {config.seed}, {config.days} days from "
                      f"{config.start}, {config.shoppers:,} shoppers, {config.merchants:,} merchants")
        types = Table(title="events by type")
        types.add_column("type")
        types.add_column("events", justify="right")
        for t, n in by_type.items():
            types.add_row(t, f"{n:,}")
        types.add_row("[bold]total[/bold]", f"[bold]{s['events']:,}[/bold]")
        console.print(types)
        scen = Table(title="fraud by scenario")
        scen.add_column("scenario")
        scen.add_column("events", justify="right")
        scen.add_column("payments", justify="right")
        for name in SCENARIOS:
            row = by_scenario[name]
            scen.add_row(name, f"{row['events']:,}", f"{row['payments']:,}")
        console.print(scen)
        console.print(
            f"fraud rate: {s['fraud_rate']:.3%} of {s['payments']:,} payments "
            f"({s['fraud_amount_rate']:.2%} of amount); {s['disputes']:,} chargebacks/fraud reports, "
            f"{s['friendly_fraud']:,} of them friendly fraud"
        )
        for name, path in paths.items():
            console.print(f"wrote {path}")
        console.print(f"time: {t_gen:.1f} s to generate, {t_all:.1f} s in all")
