"""Signing webhook bodies, and what a receiver runs to check them.

Every delivery carries ``X-Fengkong-Signature: t=<unix seconds>,v1=<hex>``, where the
hex is HMAC-SHA256, keyed with the subscription's secret, of ``<t>.`` followed by the
raw body bytes. The timestamp is signed with the body so that a captured request
cannot be replayed later: a receiver refuses a ``t`` too far from its own clock
(`verify`'s ``tolerance_s``). docs/webhooks.md has the same check as a standalone
snippet for receivers that do not install fengkong.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Fengkong-Signature"
DELIVERY_HEADER = "X-Fengkong-Delivery"
EVENT_HEADER = "X-Fengkong-Event"
ATTEMPT_HEADER = "X-Fengkong-Attempt"

#: a receiver's default window for the signed timestamp (seconds either way)
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under `secret`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The value of ``X-Fengkong-Signature`` for `body` sent at `timestamp` (now if None)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, body, t)}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """True if `header` signs `body` with `secret` at a time within `tolerance_s` of `now`.

    For receivers (and the tests): a malformed header, another secret, a changed body or
    an old timestamp all give False. Compared in constant time."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(name, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = signature(secret, body, t)
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
