"""Creating, checking and changing console users: keyword methods that know nothing of HTTP.

Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher`, its default
parameters: 64 MiB, 3 passes) and only the hash is stored. A login for an unknown or
disabled user still runs one hash check, so its timing does not tell which usernames
exist. A session carries `UserInfo.stamp`, a digest of the stored hash: changing the
password (or disabling the user, checked on every request) ends every open session.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from fengkong.accounts.models import ROLES, Role, User
from fengkong.db.engine import session_factory
from fengkong.pan import looks_like_pan

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
FIRST_ADMIN = "admin"


class AccountError(ValueError):
    """A refused account change; `field` names what was wrong (the console's 4xx names it)."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class UserInfo:
    """A user as the console and the CLI see it (never the hash)."""

    id: int
    username: str
    role: Role
    active: bool
    created_at: datetime
    last_login_at: datetime | None
    stamp: str

    def can(self, role: Role) -> bool:
        """True if this user's role includes `role` (viewer < analyst < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:20]


def _utc(value: datetime | None) -> datetime | None:
    """Times are written in UTC; SQLite gives them back without their offset."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _info(user: User) -> UserInfo:
    created = _utc(user.created_at)
    assert created is not None
    return UserInfo(id=user.id, username=user.username, role=Role(user.role), active=user.active,
                    created_at=created, last_login_at=_utc(user.last_login_at), stamp=_stamp(user.password_hash))


def check_password(password: str) -> None:
    """Refuse a password too short to be one (or absurdly long: argon2 hashes it all)."""
    if len(password) < MIN_PASSWORD:
        raise AccountError("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError("password", f"must be at most {MAX_PASSWORD} characters")


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise AccountError("role", f"must be one of {', '.join(r.value for r in ROLES)}") from None


def generate_password() -> str:
    """A random password for a first admin (printed once, stored only hashed)."""
    return secrets.token_urlsafe(15)


class Accounts:
    """The users of one database."""

    def __init__(self, engine: Engine, *, hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.hasher = hasher or PasswordHasher()
        self._dummy = self.hasher.hash(secrets.token_hex(8))

    def create(self, *, username: str, password: str, role: str) -> UserInfo:
        """Add an active user; the username must be new."""
        if not USERNAME_RE.match(username or ""):
            raise AccountError("username", "must be 1-64 letters, digits or _.@-")
        if looks_like_pan(username):  # stored, shown and written into every audit row of the user
            raise AccountError("username", "looks like a full card number (PAN)")
        role_ = check_role(role)
        check_password(password)
        now = _now()
        user = User(username=username, password_hash=self.hasher.hash(password), role=role_.value, active=True,
                    created_at=now, password_changed_at=now)
        with self.sessions() as s:
            s.add(user)
            try:
                s.commit()
            except IntegrityError:
                raise AccountError("username", "already exists", status=409) from None
            return _info(user)

    def verify(self, *, username: str, password: str) -> UserInfo | None:
        """The active user with this username and password (its last login is set), else None."""
        with self.sessions() as s:
            user = s.scalar(sa.select(User).where(User.username == username)) if len(password) <= MAX_PASSWORD \
                else None
            stored = user.password_hash if user is not None and user.active else self._dummy
            try:
                self.hasher.verify(stored, password[:MAX_PASSWORD])
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
            if user is None or not user.active:
                return None
            if self.hasher.check_needs_rehash(user.password_hash):
                user.password_hash = self.hasher.hash(password)
            user.last_login_at = _now()
            s.commit()
            return _info(user)

    def get(self, user_id: int) -> UserInfo | None:
        with self.sessions() as s:
            user = s.get(User, user_id)
            return _info(user) if user is not None else None

    def by_name(self, username: str) -> UserInfo | None:
        with self.sessions() as s:
            user = s.scalar(sa.select(User).where(User.username == username))
            return _info(user) if user is not None else None

    def list(self) -> list[UserInfo]:
        """Every user, by username."""
        with self.sessions() as s:
            return [_info(u) for u in s.scalars(sa.select(User).order_by(User.username))]

    def _change(self, username: str, **fields: object) -> UserInfo:
        with self.sessions() as s:
            user = s.scalar(sa.select(User).where(User.username == username))
            if user is None:
                raise AccountError("username", "no such user", status=404)
            was_admin = user.role == Role.ADMIN.value and user.active
            for name, value in fields.items():
                setattr(user, name, value)
            if was_admin and ("active" in fields or "role" in fields):  # never lock everyone out
                s.flush()
                if not s.scalar(sa.select(sa.func.count()).select_from(User).where(
                        User.role == Role.ADMIN.value, User.active.is_(True))):
                    raise AccountError("username", "is the last active admin", status=409)
            s.commit()
            return _info(user)

    def set_password(self, *, username: str, password: str) -> UserInfo:
        """Change a password; the user's open console sessions end (their stamp changes)."""
        check_password(password)
        return self._change(username, password_hash=self.hasher.hash(password), password_changed_at=_now())

    def set_active(self, *, username: str, active: bool) -> UserInfo:
        """Disable (or re-enable) a user; a disabled user cannot log in and its sessions end."""
        return self._change(username, active=active)

    def set_role(self, *, username: str, role: str) -> UserInfo:
        return self._change(username, role=check_role(role).value)

    def has_admin(self) -> bool:
        with self.sessions() as s:
            return bool(s.scalar(sa.select(sa.func.count()).select_from(User).where(
                User.role == Role.ADMIN.value, User.active.is_(True))))

    def ensure_admin(self) -> tuple[str, str] | None:
        """With no active admin, create one (``admin``, or ``admin-<n>`` if that name is
        taken by a disabled user) with a random password: (username, password), which
        the caller prints once. None when an active admin exists."""
        if self.has_admin():
            return None
        password = generate_password()
        taken = {u.username for u in self.list()}
        name = FIRST_ADMIN
        n = 1
        while name in taken:
            n += 1
            name = f"{FIRST_ADMIN}-{n}"
        self.create(username=name, password=password, role=Role.ADMIN.value)
        return name, password
