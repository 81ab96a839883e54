"""`fengkong train ...` and `fengkong rescore`: the models and the nightly job."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the commands to the top-level app."""
