"""API keys and scopes.

Callers send ``X-API-Key: <secret>`` (or ``Authorization: Bearer <secret>``). The
service keeps only the SHA-256 of each configured key; a presented key is hashed
and compared with *every* configured digest using `hmac.compare_digest`, with no
early exit, so neither the comparison nor the loop leaks which key nearly matched.
Hashing first also makes the comparison length-independent.

A missing or unknown key is 401; a known key without the scope the route needs is
403. The key itself is never logged, audited or echoed: the audit trail and the
logs carry the key's configured *name*.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fengkong.api.config import ApiKeySpec, Scope


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name and its scopes (never the secret)."""

    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


class KeyRing:
    """The configured keys, as digests."""

    def __init__(self, keys: list[ApiKeySpec]) -> None:
        self._entries = [(k.digest, Caller(k.name, frozenset(k.scopes))) for k in keys]

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, presented: str | None) -> Caller | None:
        """The caller whose key this is, or None. Constant time in the key's content."""
        if not presented or not self._entries:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: Caller | None = None
        for stored, caller in self._entries:
            if hmac.compare_digest(stored, digest):
                found = caller
        return found


def generate_key() -> str:
    """A fresh random key (for the development key `fengkong serve` prints)."""
    return "fkdev_" + secrets.token_urlsafe(24)
