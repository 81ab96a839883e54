"""`fengkong replay`: send a history through the full online path and report."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""
