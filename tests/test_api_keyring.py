"""API keys: an accepted key is remembered by its exact text, and nothing else is.

`KeyRing.identify` compares a presented key's digest with every configured digest in
constant time the first time; a key that matched is then found by its text. These
tests hold the security property: only accepted texts are remembered (a wrong key,
a prefix or an extension of a right one is refused every time and never stored), the
memory is bounded, and a ring built without a key does not know it."""

from __future__ import annotations

import pytest

from fengkong.api.config import ApiKeySpec, Scope
from fengkong.api.deps import AuthError, identify
from fengkong.api.security import CONFIRMED_MAX, KeyRing

GOOD = "good-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"


def _ring() -> KeyRing:
    return KeyRing([ApiKeySpec(name="payments", key=GOOD, scopes=frozenset({Scope.DECIDE})),
                    ApiKeySpec(name="ops", key=ADMIN, scopes=frozenset({Scope.ADMIN}))])


def test_a_key_is_identified_the_same_before_and_after_it_is_remembered() -> None:
    ring = _ring()
    first = ring.identify(GOOD)
    assert first is not None and first.name == "payments"
    assert ring.identify(GOOD) is first
    assert ring._confirmed == {GOOD: first}
    assert ring.identify(ADMIN).name == "ops"  # type: ignore[union-attr]


def test_wrong_keys_near_a_remembered_one_are_refused_and_never_remembered() -> None:
    ring = _ring()
    assert ring.identify(GOOD) is not None
    for wrong in (GOOD[:-1], GOOD + "x", GOOD.upper(), " " + GOOD, "", "x" * 64):
        assert ring.identify(wrong) is None
        assert ring.identify(wrong) is None
    assert set(ring._confirmed) == {GOOD}


def test_the_memory_is_bounded_and_a_new_ring_starts_empty() -> None:
    ring = KeyRing([ApiKeySpec(name=f"k{i}", key=f"key-{i:04d}-0123456789abcdef", scopes=frozenset({Scope.DECIDE}))
                    for i in range(CONFIRMED_MAX + 10)])
    for i in range(CONFIRMED_MAX + 10):
        assert ring.identify(f"key-{i:04d}-0123456789abcdef").name == f"k{i}"  # type: ignore[union-attr]
    assert len(ring._confirmed) == CONFIRMED_MAX
    assert ring.identify(f"key-{CONFIRMED_MAX + 5:04d}-0123456789abcdef") is not None  # past the bound: still checked
    assert KeyRing([]).identify(GOOD) is None
    revoked = KeyRing([ApiKeySpec(name="ops", key=ADMIN, scopes=frozenset({Scope.ADMIN}))])
    assert revoked.identify(GOOD) is None  # a ring built without the key never knew it


def test_identify_checks_the_scope_on_every_request() -> None:
    ring = _ring()
    headers = [(b"x-api-key", GOOD.encode())]
    for _ in range(2):  # before and after the key is remembered
        assert identify(ring, headers, (Scope.DECIDE,)).name == "payments"
        with pytest.raises(AuthError) as err:
            identify(ring, headers, (Scope.REPORT,))
        assert err.value.status == 403
        assert identify(ring, headers, (Scope.REPORT, Scope.DECIDE)).name == "payments"
    with pytest.raises(AuthError) as err:
        identify(ring, [(b"x-api-key", GOOD[:-1].encode())], (Scope.DECIDE,))
    assert err.value.status == 401
    assert identify(ring, [(b"authorization", b"Bearer " + ADMIN.encode())], (Scope.REPORT,)).name == "ops"
