"""Console accounts on both databases (SQLite and a real PostgreSQL): argon2id hashes,
roles, disabling, password changes that end sessions, the last-admin guard, the first
admin `fengkong serve` creates, and `fengkong users ...`."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fengkong.accounts import AccountError, Accounts, Role
from fengkong.accounts.models import User
from fengkong.cli import app as cli
from fengkong.db import migrate
from fengkong.db.engine import make_engine


@pytest.fixture
def accounts(database_url: str):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    yield Accounts(engine)
    engine.dispose()


def test_only_an_argon2id_hash_is_stored_and_it_verifies(accounts: Accounts) -> None:
    accounts.create(username="ana", password="correct horse battery", role="analyst")
    with accounts.sessions() as s:
        stored = s.scalar(sa.select(User.password_hash).where(User.username == "ana"))
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    user = accounts.verify(username="ana", password="correct horse battery")
    assert user is not None and user.role is Role.ANALYST and user.last_login_at is not None
    assert user.last_login_at.utcoffset() is not None and user.created_at.utcoffset() is not None  # UTC, both databases
    assert accounts.verify(username="ana", password="correct horse batterz") is None
    assert accounts.verify(username="nobody", password="correct horse battery") is None


def test_refusals_name_the_field(accounts: Accounts) -> None:
    with pytest.raises(AccountError) as short:
        accounts.create(username="bo", password="short", role="viewer")
    assert short.value.field == "password"
    with pytest.raises(AccountError) as role:
        accounts.create(username="bo", password="long enough pw", role="root")
    assert role.value.field == "role"
    with pytest.raises(AccountError) as name:
        accounts.create(username="bo bo", password="long enough pw", role="viewer")
    assert name.value.field == "username"
    with pytest.raises(AccountError) as pan:
        accounts.create(username="4111_1111_1111_1111", password="long enough pw", role="viewer")
    assert pan.value.field == "username" and "4111" not in str(pan.value)
    accounts.create(username="bo", password="long enough pw", role="viewer")
    with pytest.raises(AccountError) as dup:
        accounts.create(username="bo", password="another long pw", role="viewer")
    assert dup.value.field == "username" and dup.value.status == 409


def test_disabling_and_password_changes_end_logins_and_sessions(accounts: Accounts) -> None:
    first = accounts.create(username="cy", password="first password", role="analyst")
    accounts.set_password(username="cy", password="second password")
    assert accounts.verify(username="cy", password="first password") is None
    second = accounts.verify(username="cy", password="second password")
    assert second is not None and second.stamp != first.stamp  # an old session's stamp no longer matches
    accounts.set_active(username="cy", active=False)
    assert accounts.verify(username="cy", password="second password") is None
    assert accounts.get(first.id).active is False


def test_the_last_active_admin_cannot_be_disabled_or_demoted(accounts: Accounts) -> None:
    created = accounts.ensure_admin()
    assert created is not None and created[0] == "admin"
    assert accounts.verify(username="admin", password=created[1]).role is Role.ADMIN
    assert accounts.ensure_admin() is None  # one exists: nothing is created
    with pytest.raises(AccountError, match="last active admin"):
        accounts.set_active(username="admin", active=False)
    with pytest.raises(AccountError, match="last active admin"):
        accounts.set_role(username="admin", role="viewer")
    accounts.create(username="dee", password="another admin", role="admin")
    accounts.set_active(username="admin", active=False)  # another admin remains: allowed
    assert [u.username for u in accounts.list() if u.active] == ["dee"]


def test_the_users_command(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    added = runner.invoke(cli, ["users", "add", "eve", "--role", "viewer", "--password-stdin", *data],
                          input="a long password\n")
    assert added.exit_code == 0, added.output
    refused = runner.invoke(cli, ["users", "add", "fay", "--password-stdin", *data], input="short\n")
    assert refused.exit_code == 2 and "password" in refused.output
    listed = runner.invoke(cli, ["users", "list", *data])
    assert "eve\tviewer\tactive" in listed.output and "fay" not in listed.output
    assert runner.invoke(cli, ["users", "passwd", "eve", "--password-stdin", *data],
                         input="a new long password\n").exit_code == 0
    assert runner.invoke(cli, ["users", "disable", "eve", *data]).exit_code == 0
    assert "eve\tviewer\tdisabled" in runner.invoke(cli, ["users", "list", *data]).output
    engine = make_engine(f"sqlite:///{tmp_path / 'fengkong.sqlite3'}")
    assert Accounts(engine).verify(username="eve", password="a new long password") is None  # disabled
    engine.dispose()
