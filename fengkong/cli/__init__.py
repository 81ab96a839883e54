"""The `fengkong` command. Each group lives in its own module; heavy imports stay
inside the commands so `fengkong --help` answers at once."""

from __future__ import annotations

import typer

from fengkong.cli import cases, models, replay, rules, serve, simulate, tune, users

app = typer.Typer(
    help="fengkong (风控): a rules-driven risk control engine for payments.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(rules.app, name="rules", help="Check, test and backtest the analyst rule files.")
app.add_typer(cases.app, name="cases", help="The review queue's background work.")
app.add_typer(users.app, name="users", help="Console users: add, list, passwd, disable.")
serve.register(app)
simulate.register(app)
replay.register(app)
models.register(app)
tune.register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()
