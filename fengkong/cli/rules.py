"""`fengkong rules ...`: the analysts' commands (check, test, backtest)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

RulesDir = typer.Option(Path("rules"), "--rules-dir", help="Folder holding the rule files, policy.yaml and lists/.")


@app.command("check")
def check(rules_dir: Path = RulesDir) -> None:
    """Report every problem in the rule files in one run (file, line, rule id, reason)."""
    from rich.console import Console

    from fengkong.engine.errors import EvaluationError, Problem, RuleSetError
    from fengkong.engine.ruleset import RuleSet, content_hash, parse_rules
    from fengkong.engine.testing import load_cases

    console = Console(highlight=False)
    try:
        rules, policy, schema, problems = parse_rules(rules_dir)
    except RuleSetError as exc:
        rules, policy, schema, problems = [], None, None, exc.problems
    _, case_problems = load_cases(rules_dir) if rules_dir.is_dir() else ([], [])
    problems = problems + case_problems
    if not problems and policy is not None and schema is not None:
        try:  # compile too: "checks" means the set would load
            RuleSet(rules, policy, schema, content_hash=content_hash(rules_dir), rules_dir=rules_dir).close()
        except EvaluationError as exc:
            problems.append(Problem(str(rules_dir), None, None, f"durable_rules compile failed: {exc}"))
    for p in problems:
        where = p.file + (f":{p.line}" if p.line else "")
        rid = f" [bold]{p.rule_id}[/bold]" if p.rule_id else ""
        console.print(f"[red]error[/red] {where}{rid}: {p.reason}", soft_wrap=True, markup=True)
    if problems:
        console.print(f"[red]{len(problems)} problem(s)[/red] in {rules_dir}")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {len(rules)} rules, policy with "
                  f"{len(policy.lanes) if policy else 0} lane(s) in {rules_dir}")


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
            console.print(f"[red]error[/red] {p}", soft_wrap=True)
        console.print("[red]the rule set does not load; run `fengkong rules check`[/red]")
        raise typer.Exit(2)
    cases, problems = load_cases(rules_dir)
    for p in problems:
        console.print(f"[red]error[/red] {p}", soft_wrap=True)
    results = run_cases(ruleset, cases)
    failed = [r for r in results if not r.passed]
    for r in results:
        if verbose or not r.passed:
            mark = "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
            console.print(f"{mark} {r.case.file}:{r.case.line} {r.case.name}", soft_wrap=True)
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
