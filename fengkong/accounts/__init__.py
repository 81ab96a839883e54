"""Per-user accounts of the web console: who may log in, with which role.

Machines keep API keys (`fengkong.api.security`); people log in to the console with a
username and a password, hashed with argon2id (argon2-cffi) and never stored or
logged in clear. Users live in the relational store (`fengkong.db`); their table is
the ``accounts`` branch of the migrations. `fengkong users ...` manages them from
the shell and `fengkong serve` creates a first admin when there is none.
"""

from fengkong.accounts.models import ROLES, Role, User
from fengkong.accounts.service import AccountError, Accounts, UserInfo

__all__ = ["ROLES", "AccountError", "Accounts", "Role", "User", "UserInfo"]
