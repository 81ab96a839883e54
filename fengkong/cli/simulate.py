"""`fengkong simulate`: labelled synthetic payment traffic."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""
