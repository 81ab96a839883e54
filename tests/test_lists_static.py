"""StaticLists (the offline twin's view of the analyst lists): contains_many equals contains."""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
import pytest

from fengkong.features.lists import ListSpec, StaticLists

SPECS = {
    "blocked_ips": ListSpec("blocked_ips", "ip"),
    "proxy_ips": ListSpec("proxy_ips", "ip"),
    "empty_ips": ListSpec("empty_ips", "ip"),
    "blocked_users": ListSpec("blocked_users", "user"),
    "unlisted": ListSpec("unlisted", "card"),
}


def _v4(rng: np.random.Generator, n: int) -> list[str]:
    return [str(ipaddress.IPv4Address(int(i))) for i in rng.integers(0, 2**32, n)]


@pytest.fixture(scope="module")
def static() -> StaticLists:
    rng = np.random.default_rng(5)
    cidrs = [f"{ipaddress.IPv4Address(int(i))}/{int(p)}" for i, p in zip(rng.integers(0, 2**32, 300), rng.integers(8, 33, 300))]
    return StaticLists(
        SPECS,
        {
            "blocked_ips": cidrs + ["203.0.113.0/24", "203.0.113.128/25", "198.51.100.7", "2001:db8::/32", "2001:db8::1"],
            "proxy_ips": ["198.51.100.0/24", "10.0.0.0/8", "192.0.2.1"],
            "empty_ips": [],
            "blocked_users": ["u1", "u2", "1.2.3.4"],
        },
    )


def _values(rng: np.random.Generator, static: StaticLists, n: int) -> pd.Series:
    inside = []
    for lo, hi in static.ranges["blocked_ips"] + static.ranges["proxy_ips"]:
        inside += [lo - 1, lo, (lo + hi) // 2, hi, hi + 1]
    near = [str(ipaddress.IPv4Address(i)) for i in inside if 0 <= i < 2**32]
    odd: list[object] = [
        "198.51.100.7", "198.51.100.07", " 198.51.100.7", "198.51.100.7\n", "203.0.113.5/32", "203.0.113.256",
        "::ffff:203.0.113.5", "::ffff:cb00:7105", "2001:db8::1", "2001:db8::2", "2001:0db8::1", "u1", "u3",
        "1.2.3.4", "", "10.1", "0.0.0.0", "255.255.255.255", "192.0.2.1", None, np.nan, 3405803777, 1.5,
    ]
    pool = np.array(_v4(rng, n) + near + odd, dtype=object)
    return pd.Series(pool[rng.integers(0, len(pool), 2 * len(pool))])


@pytest.mark.parametrize("name", list(SPECS))
def test_contains_many_equals_contains(static: StaticLists, name: str) -> None:
    rng = np.random.default_rng(len(name))
    values = _values(rng, static, 30_000)
    values.index = np.arange(len(values)) * 2 + 5  # not a RangeIndex: the answer is positional
    got = static.contains_many(name, values)
    assert isinstance(got, np.ndarray) and got.dtype == bool and got.shape == (len(values),)
    assert got.tolist() == [static.contains(name, v) for v in values.tolist()]
    if name in ("blocked_ips", "proxy_ips", "blocked_users"):
        assert got.any()


def test_contains_many_on_a_string_column_and_empty_input(static: StaticLists) -> None:
    rng = np.random.default_rng(9)
    values = _values(rng, static, 5_000)
    as_str = values.where(values.map(lambda v: isinstance(v, str)), None).astype("str")
    for name in SPECS:
        got = static.contains_many(name, as_str)
        assert got.tolist() == [static.contains(name, None if pd.isna(v) else v) for v in as_str.tolist()]
    assert static.contains_many("blocked_ips", pd.Series([], dtype=object)).shape == (0,)
    assert static.contains_many("blocked_ips", pd.Series([None, np.nan], dtype=object)).tolist() == [False, False]


def test_contains_many_examples(static: StaticLists) -> None:
    values = pd.Series(["203.0.113.9", "203.0.114.0", "198.51.100.7", "198.51.100.8", "2001:db8:1::5", None])
    assert static.contains_many("blocked_ips", values).tolist() == [True, False, True, False, False, False]
    assert static.contains_many("proxy_ips", values).tolist() == [False, False, True, True, False, False]
