"""API keys and scopes.

Callers send ``X-API-Key: <secret>`` (or ``Authorization: Bearer <secret>``). The
service keeps only the SHA-256 of each configured key; a presented key is hashed
and compared with *every* configured digest using `hmac.compare_digest`, with no
early exit, so neither the comparison nor the loop leaks which key nearly matched.
Hashing first also makes the comparison length-independent.

A key that passed that check is remembered, by its exact text, with its caller
(`KeyRing.identify`; at most `CONFIRMED_MAX` texts, and only keys that matched): a
worker's callers present the same few keys on every request, and the hash and the
comparisons with every digest are then done once per key, not once per request.
Looking a text up tells nothing about a configured key: only texts that were
themselves accepted are there, and the lookup hashes the text with Python's keyed
(randomised) string hash before it compares any characters.

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


#: how many accepted key texts a `KeyRing` remembers (a bound, whatever callers send)
CONFIRMED_MAX = 64


class KeyRing:
    """The configured keys, as digests."""

    def __init__(self, keys: list[ApiKeySpec]) -> None:
        self._entries = [(k.digest, Caller(k.name, frozenset(k.scopes))) for k in keys]
        self._confirmed: dict[str, Caller] = {}  # key text -> its caller, for texts that matched

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, presented: str | None) -> Caller | None:
        """The caller whose key this is, or None. Constant time in the key's content the
        first time a key is presented; a key that matched is remembered (module doc)."""
        if not presented or not self._entries:
            return None
        known = self._confirmed.get(presented)
        if known is not None:
            return known
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: Caller | None = None
        for stored, caller in self._entries:
            if hmac.compare_digest(stored, digest):
                found = caller
        if found is not None and len(self._confirmed) < CONFIRMED_MAX:
            self._confirmed[presented] = found
        return found


def generate_key() -> str:
    """A fresh random key (for the development key `fengkong serve` prints)."""
    return "fkdev_" + secrets.token_urlsafe(24)
