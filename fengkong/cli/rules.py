"""`fengkong rules ...`: the analysts' commands (check, test, reload, backtest)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from fengkong.engine.errors import Problem

app = typer.Typer(no_args_is_help=True)

RulesDir = typer.Option(Path("rules"), "--rules-dir", help="Folder holding the rule files, policy.yaml and lists/.")


@app.command("check")
def check(rules_dir: Path = RulesDir) -> None:
    """Report every problem in the rule files in one run (file, line, rule id, reason).

    Exit 1 when the set has problems (each printed); exit 2, with one line naming the
    folder, if the check itself fails: never a traceback."""
    from rich.console import Console

    console = Console(highlight=False)
    try:
        problems, summary = _check(rules_dir)
        for p in problems:
            _print_problem(console, p)
        if problems:
            console.print(f"[red]{len(problems)} problem(s)[/red] in {_text(console, str(rules_dir))}")
        else:
            console.print(f"[green]ok[/green]: {_text(console, summary)}")
    except Exception as exc:
        _last_words(f"error {rules_dir}: the check could not finish ({type(exc).__name__}: {exc})")
        raise typer.Exit(2) from None
    if problems:
        raise typer.Exit(1)


def _check(rules_dir: Path) -> tuple[list[Problem], str]:
    """Every problem of the set in ``rules_dir`` (parsed, checked, compiled as a load
    would), and a one-line summary for a clean set."""
    from fengkong.engine.errors import RuleSetError
    from fengkong.engine.ruleset import compile_ruleset, content_hash, parse_rules
    from fengkong.engine.testing import load_cases

    try:
        rules, policy, schema, problems = parse_rules(rules_dir)
    except RuleSetError as exc:
        return exc.problems, ""
    _, case_problems = load_cases(rules_dir) if rules_dir.is_dir() else ([], [])
    problems = problems + case_problems
    if not problems and policy is not None:
        try:  # compile too: "checks" means the set would load
            compile_ruleset(rules, policy, schema, content_hash=content_hash(rules_dir), rules_dir=rules_dir).close()
        except RuleSetError as exc:
            problems += exc.problems
    return problems, f"{len(rules)} rules, policy with {len(policy.lanes) if policy else 0} lane(s) in {rules_dir}"


def _print_problem(console: Any, p: Problem) -> None:
    """One problem as ``error file:line [rule]: reason``; the file's text is never markup."""
    where = p.file + (f":{p.line}" if p.line else "")
    rid = f" [bold]{_text(console, p.rule_id)}[/bold]" if p.rule_id else ""
    console.print(f"[red]error[/red] {_text(console, where)}{rid}: {_text(console, p.reason)}", soft_wrap=True,
                  markup=True)


def _text(console: Any, text: str) -> str:
    """Text from the files, safe to print: not markup, and what the output's encoding
    cannot hold written as escapes (an ASCII terminal gets ``\\u89c4``, not a crash)."""
    encoding = console.encoding or "utf-8"
    return escape(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def _last_words(line: str) -> None:
    """One line on stderr, written past any console (whose output may be what failed)."""
    import os
    import sys

    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        os.write(2, (line + "\n").encode(encoding, "backslashreplace"))
    except (OSError, LookupError):
        pass


@app.command("test")
def test(rules_dir: Path = RulesDir, verbose: bool = typer.Option(False, "-v", "--verbose")) -> None:
    """Run every example case in *_test.yaml beside the rules, like a test runner."""
    from rich.console import Console

    from fengkong.engine import RuleSetError, load_ruleset
    from fengkong.engine.testing import load_cases, run_cases

    console = Console(highlight=False)
    try:
        ruleset = load_ruleset(rules_dir)
    except RuleSetError as exc:
        for p in exc.problems:
            _print_problem(console, p)
        console.print("[red]the rule set does not load; run `fengkong rules check`[/red]")
        raise typer.Exit(2)
    cases, problems = load_cases(rules_dir)
    for p in problems:
        _print_problem(console, p)
    results = run_cases(ruleset, cases)
    failed = [r for r in results if not r.passed]
    for r in results:
        if verbose or not r.passed:
            mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
            console.print(f"{mark} {_text(console, f'{r.case.file}:{r.case.line} {r.case.name}')}", soft_wrap=True)
        for f in r.failures:
            console.print(f"     {f}", soft_wrap=True, markup=False)
    rules_hit = {rid for r in results if r.decision for rid in r.decision.fired_ids}
    untested = sorted(set(ruleset.by_id) - rules_hit)
    if untested:
        console.print(f"[yellow]rules no case fires[/yellow]: {', '.join(untested)}", soft_wrap=True)
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed, {len(problems)} error(s)"
    console.print(("[red]" if failed or problems else "[green]") + summary + f"[/] (rules {ruleset.version})")
    if failed or problems:
        raise typer.Exit(1)


@app.command("reload")
def reload(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", envvar="FENGKONG_URL", help="The running service."),
    key: str = typer.Option(..., "--key", envvar="FENGKONG_ADMIN_KEY", help="An API key with the admin scope."),
    timeout_s: float = typer.Option(30.0, "--timeout"),
) -> None:
    """Ask a running service to reload its rules from its rules folder.

    The service swaps the live set only if the whole new set compiles and all its
    cases pass; otherwise the live set stays and the problems are printed here.
    """
    import httpx
    from rich.console import Console

    console = Console(highlight=False)
    try:
        resp = httpx.post(f"{url.rstrip('/')}/v1/rules/reload", headers={"X-API-Key": key}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the service at {url}: {exc}[/red]")
        raise typer.Exit(2) from None
    if resp.status_code != 200:
        detail = resp.json().get("detail") if resp.headers.get("content-type", "").startswith("application/json") else resp.text
        console.print(f"[red]the service refused ({resp.status_code}): {detail}[/red]")
        raise typer.Exit(2)
    result = resp.json()
    for p in result.get("problems", []):
        # markup off: a reason may quote the analyst's text; the colour comes from style
        console.print(f"error {p.get('file')}:{p.get('line')} {p.get('rule_id') or ''} {p.get('reason')}",
                      soft_wrap=True, markup=False, style="red")
    for case in result.get("failed_cases", []):
        console.print(f"case failed {case}", soft_wrap=True, markup=False, style="red")
    if not result.get("ok"):
        console.print(f"[red]not reloaded: the live rules stay at {result.get('version')}[/red]")
        raise typer.Exit(1)
    what = "reloaded" if result.get("changed") else "unchanged"
    console.print(f"[green]{what}[/green]: live rules {result.get('version')} (was {result.get('previous_version')})")


@app.command("backtest")
def backtest(
    history: Path = typer.Argument(..., help="History file: CSV, Parquet or JSON lines (flat events, or see --mapping)."),
    candidate: Path = typer.Option(..., "--candidate", help="Candidate rules folder (rule files, policy.yaml, lists/)."),
    live: Path = typer.Option(Path("rules"), "--live", help="The live rules folder to compare with."),
    mapping: Path = typer.Option(None, "--mapping", help="Mapping file: which source column feeds which event field."),
    lists: Path = typer.Option(None, "--lists", help="JSON {list: [entries]} loaded into the analyst lists (e.g. blacklist.json)."),
    merchants: Path = typer.Option(None, "--merchants", help="Merchant profiles (merchants.parquet from fengkong simulate)."),
    promotions: Path = typer.Option(None, "--promotions", help="Merchants' planned promotions (promotions.parquet "
                                    "from fengkong simulate, or a CSV), as fengkong replay --promotions."),
    out: Path = typer.Option(None, "--out", help="Folder for backtest.csv, changed_events.csv and backtest.html."),
    html_path: Path = typer.Option(None, "--html", help="Write the HTML report here too (e.g. under "
                                   "<data_dir>/reports, where the console's report viewer lists it)."),
    all_rules: bool = typer.Option(False, "--all-rules", help="List unchanged rules too."),
    engine: str = typer.Option("pandas", "--engine", help="Offline features in this process (pandas) or on a "
                               "Dask cluster (dask; the same features)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (with --engine dask; "
                                  "default: a local cluster of --workers processes)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Local Dask cluster workers (without --scheduler)."),
    partitions: int = typer.Option(8, "--partitions", min=1, help="Parts per entity split (with --engine dask "
                                   "or --parts)."),
    parts: Path = typer.Option(None, "--parts", help="Run the offline twin in parts on disk under this folder "
                               "and keep only the columns the rules read: for a history whose features do not "
                               "fit in memory (the same table; with --engine dask the workers must reach it)."),
) -> None:
    """What the candidate rules would have decided on a history, next to the live rules."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from fengkong.engine import RuleSetError
    from fengkong.replay.backtest import backtest as run_backtest
    from fengkong.replay.backtest_report import backtest_html
    from fengkong.replay.mapping import Mapping, MappingError

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 180)
    if engine not in ("pandas", "dask"):
        raise typer.BadParameter("use pandas or dask", param_hint="--engine")
    if scheduler and engine != "dask":
        raise typer.BadParameter("--scheduler needs --engine dask", param_hint="--scheduler")
    client = cluster = None
    try:
        if engine == "dask":
            from dask.distributed import Client, LocalCluster

            if scheduler:
                client = Client(scheduler)
            else:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                client = Client(cluster)
        mapping_obj = Mapping.load(mapping) if mapping else None
        result = run_backtest(history, candidate, live_dir=live, mapping=mapping_obj, lists_file=lists,
                              merchants_file=merchants, dask_client=client, partitions=partitions,
                              promotions_file=promotions, parts_dir=parts)
    except RuleSetError as exc:
        for p in exc.problems:
            console.print(f"[red]error[/red] {p}", soft_wrap=True, markup=False)
        raise typer.Exit(2)
    except MappingError as exc:
        console.print(f"[red]error[/red] {exc}", soft_wrap=True, markup=False)
        raise typer.Exit(2)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    frame = result.table
    shown = frame if all_rules else frame[(frame["status"] != "same") | (frame["events_affected"] > 0)]
    labelled = result.labels is not None
    table = Table(title=f"backtest: {candidate} vs {live} on {result.timings['events']:,} events "
                        f"({len(result.features):,} decisions)")
    headers = ["rule", "status", "fires live", "fires cand", "decisions changed", "review rate Δ (pp)"]
    if labelled:
        headers[5:5] = ["fraud newly caught", "fraud lost", "good newly stopped", "good released"]
    for h in headers:
        table.add_column(h, justify="left" if h in ("rule", "status") else "right")

    def num(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and v != v) else f"{int(v):,}"

    for r in shown.to_dict("records"):
        cells = [str(r["rule"]), str(r["status"]), num(r["fires_live"]), num(r["fires_candidate"]),
                 num(r["decisions_changed"]), f"{r['review_rate_change_pp']:+.3f}"]
        if labelled:
            cells[5:5] = [num(r["fraud_newly_caught"]), num(r["fraud_lost"]), num(r["good_newly_stopped"]),
                          num(r["good_released"])]
        table.add_row(*cells, style="bold" if r["rule"] == "(all)" else None)
    console.print(table)
    t = result.timings
    console.print(f"live {result.live_version}, candidate {result.candidate_version}; "
                  f"features {t['features_s']:.1f} s, rules {t['evaluate_s']:.1f} s, total {t['total_s']:.1f} s "
                  f"({t['events'] / max(t['total_s'], 1e-9):,.0f} events/s)")
    page = backtest_html(result, candidate=str(candidate), live=str(live), all_rules=all_rules)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / "backtest.csv", index=False)
        result.changed_events().to_csv(out / "changed_events.csv", index=False)
        (out / "backtest.html").write_text(page, encoding="utf-8")
        console.print(f"wrote {out / 'backtest.csv'}, {out / 'changed_events.csv'} and {out / 'backtest.html'}")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(page, encoding="utf-8")
        console.print(f"wrote {html_path}")
