"""`fengkong users add|list|passwd|disable`: the console's accounts from the shell.

The database is the service's (``FENGKONG_DATABASE_URL``, else SQLite in the data
directory), so run these with the same ``--data-dir`` as `fengkong serve`. A password
is asked for twice on the terminal, or read from stdin with ``--password-stdin`` (for
scripts); it is never an argument (the shell history and ``ps`` would keep it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from fengkong.accounts import Accounts

app = typer.Typer(help="Console users: add, list, change a password, disable.", no_args_is_help=True)

DATA_DIR = typer.Option(None, "--data-dir", help="The service's data directory (FENGKONG_DATA_DIR, default .fengkong).")
DB_URL = typer.Option(None, "--database-url", help="FENGKONG_DATABASE_URL; unset = SQLite in the data directory.")


def open_accounts(data_dir: Path | None, database_url: str | None) -> "Accounts":
    """The accounts of the service's database, migrated to the newest schema."""
    from fengkong.accounts import Accounts
    from fengkong.api.config import Settings
    from fengkong.db import migrate
    from fengkong.db.engine import make_engine
    from fengkong.db.url import database_url as resolve

    settings = Settings()
    url = resolve(database_url or settings.database_url, Path(data_dir or settings.data_dir))
    engine = make_engine(url)
    migrate.upgrade(engine)
    return Accounts(engine)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


def _fail(exc: Exception) -> None:
    from fengkong.accounts import AccountError

    if isinstance(exc, AccountError):
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    raise exc


@app.command("add")
def add(username: str = typer.Argument(..., help="1-64 letters, digits or _.@-"),
        role: str = typer.Option("analyst", "--role", help="viewer, analyst or admin."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
        data_dir: Optional[Path] = DATA_DIR, database_url: Optional[str] = DB_URL) -> None:
    """Add a user who can log in to the console."""
    accounts = open_accounts(data_dir, database_url)
    try:
        user = accounts.create(username=username, password=_password(password_stdin), role=role)
    except Exception as exc:
        _fail(exc)
        return
    typer.echo(f"added {user.username} ({user.role.value})")


@app.command("list")
def list_users(data_dir: Optional[Path] = DATA_DIR, database_url: Optional[str] = DB_URL) -> None:
    """Every user: name, role, active, created, last login."""
    for u in open_accounts(data_dir, database_url).list():
        last = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never"
        typer.echo(f"{u.username}\t{u.role.value}\t{'active' if u.active else 'disabled'}\t"
                   f"created {u.created_at.isoformat(timespec='seconds')}\tlast login {last}")


@app.command("passwd")
def passwd(username: str, password_stdin: bool = typer.Option(False, "--password-stdin"),
           data_dir: Optional[Path] = DATA_DIR, database_url: Optional[str] = DB_URL) -> None:
    """Set a user's password (its open console sessions end)."""
    accounts = open_accounts(data_dir, database_url)
    try:
        accounts.set_password(username=username, password=_password(password_stdin))
    except Exception as exc:
        _fail(exc)
    typer.echo(f"password of {username} changed")


@app.command("disable")
def disable(username: str, enable: bool = typer.Option(False, "--enable", help="Re-enable instead."),
            data_dir: Optional[Path] = DATA_DIR, database_url: Optional[str] = DB_URL) -> None:
    """Disable a user (it cannot log in; its sessions end). The last active admin stays."""
    accounts = open_accounts(data_dir, database_url)
    try:
        accounts.set_active(username=username, active=enable)
    except Exception as exc:
        _fail(exc)
    typer.echo(f"{username} {'enabled' if enable else 'disabled'}")
