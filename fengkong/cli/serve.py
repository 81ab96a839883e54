"""`fengkong serve`: start the feature store (embedded Redis by default) and the service."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""
