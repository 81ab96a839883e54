"""Parsing of IP addresses, one at a time and as numpy columns; subnets; private ranges.

This is the bottom of IP intelligence (docs/ip_intelligence.md): it knows
addresses only, not lists or the geo database, so the online store, the
offline twin and the list loaders all read an address the same way.

- An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is read as ``a.b.c.d``.
- "Private" is :mod:`ipaddress`'s answer (not global, multicast or reserved),
  never geoip2fast's: its IPv4-only file calls Andorra private.
- Columns take a vectorised path for plain dotted-quad IPv4 text
  (:func:`ipv4_ints`, :func:`ipv4_is_private`); everything else goes through the
  scalar functions, which stay the reference (tests/test_ipintel.py holds the
  two equal).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any, Iterable

import numpy as np
import pandas as pd

from fengkong.events import IPV4_TEXT

__all__ = [
    "IANA_SPECIAL_V4",
    "IPAddress",
    "PRIVATE_V4_FLAGS",
    "PRIVATE_V4_FLAGS_LIST",
    "PRIVATE_V4_STARTS",
    "PRIVATE_V4_STARTS_LIST",
    "V4_INVALID",
    "V4_OTHER",
    "V4_VALID",
    "ipv4_ints",
    "ipv4_is_private",
    "is_private_address",
    "network_contains",
    "parse_ip",
    "subnet24_of_text",
    "subnet_of",
    "subnet_of_address",
    "subnets_of",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(ip: Any) -> IPAddress | None:
    """The address in ``ip`` (surrounding whitespace ignored, mapped IPv6 read as IPv4); None if not one.

    Returning None rather than raising lets a malformed address from history
    become "unknown" instead of stopping a batch.
    """
    if not isinstance(ip, str):
        return None
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_private_address(addr: IPAddress) -> bool:
    """Private, loopback, link-local, shared, documentation, multicast or reserved: no country, no AS."""
    return not addr.is_global or addr.is_multicast or addr.is_reserved


def subnet_of_address(addr: IPAddress) -> str:
    """The /24 of an IPv4 address or the /64 of an IPv6 one, as CIDR text (the subnet entity)."""
    if addr.version == 4:
        p = addr.packed
        return f"{p[0]}.{p[1]}.{p[2]}.0/24"
    net = int(addr) & ~((1 << 64) - 1)
    return f"{ipaddress.IPv6Address(net).compressed}/64"


@functools.lru_cache(maxsize=65_536)  # the online store asks once per event; addresses repeat
def subnet_of(ip: str) -> str:
    """The IPv4 /24 ("a.b.c.0/24") or IPv6 /64 of an address; ValueError if malformed."""
    if isinstance(ip, str) and IPV4_TEXT.fullmatch(ip):  # canonical already: no ipaddress parse
        return subnet24_of_text(ip)
    addr = parse_ip(ip)
    if addr is None:
        raise ValueError(f"not an IP address: {ip!r}")
    return subnet_of_address(addr)


def subnet24_of_text(ip: str) -> str:
    """`subnet_of` of canonical dotted-quad IPv4 text."""
    return ip[: ip.rindex(".")] + ".0/24"


def subnets_of(ips: pd.Series) -> pd.Series:
    """`subnet_of` over a column, once per distinct value; None where missing or malformed."""
    codes, uniques = pd.factorize(ips, use_na_sentinel=True)
    values = np.asarray(uniques, dtype=object)
    out = np.empty(len(values) + 1, dtype=object)
    ints, state = ipv4_ints(values)
    valid = np.flatnonzero(state == V4_VALID)
    out[valid] = _format_subnets24(ints[valid] >> 8)
    out[np.flatnonzero(state == V4_INVALID)] = None
    for i in np.flatnonzero(state == V4_OTHER):  # IPv6, mapped IPv6, padded text, non-strings
        addr = parse_ip(values[i])
        out[i] = None if addr is None else subnet_of_address(addr)
    out[-1] = None  # code -1 (missing) picks the last slot
    return pd.Series(out[codes], index=ips.index, name="subnet", dtype=object)


# ---------------------------------------------------------------------------
# IPv4 columns, vectorised

#: `ipv4_ints` states: a valid address; digits-and-dots text ipaddress rejects
#: (neither IPv4 nor IPv6, so the scalar path gives None / UNKNOWN); anything else
#: (the caller asks the scalar path).
V4_VALID, V4_INVALID, V4_OTHER = 1, 0, -1
_V4_WIDTH = 15  # "255.255.255.255"


def ipv4_ints(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Plain dotted-quad IPv4 text to integers, with numpy, for a column of values.

    Returns ``(ints, state)``: ``ints`` int64 (the address where ``state`` is
    :data:`V4_VALID`, else -1); ``state`` int8: :data:`V4_VALID` where
    ``ipaddress.ip_address(v)`` is that IPv4 address (four decimal octets
    0..255 of 1-3 ASCII digits, no leading zeros, nothing else);
    :data:`V4_INVALID` where ``v`` is a string of only ASCII digits and dots
    that ipaddress rejects; :data:`V4_OTHER` for everything else (None,
    non-strings, IPv6, IPv4-mapped IPv6, surrounding whitespace, other
    characters, longer than 15 characters), which the caller answers with its
    scalar path. Text is never stripped here.
    """
    obj = np.asarray(values, dtype=object).ravel()
    n = len(obj)
    ints = np.full(n, -1, dtype=np.int64)
    state = np.full(n, V4_OTHER, dtype=np.int8)
    if pd.api.types.infer_dtype(obj, skipna=False) == "string":  # all str: the usual column
        lens = np.fromiter(map(len, obj), dtype=np.int64, count=n)
    else:
        lens = np.fromiter((len(v) if isinstance(v, str) else -1 for v in obj), dtype=np.int64, count=n)
    cand = np.flatnonzero((lens >= 1) & (lens <= _V4_WIDTH))
    if not len(cand):
        return ints, state
    length = lens[cand]
    # one row of code points per string, NUL-padded; anything past U+00FF reads as 0xFF (not a digit or dot)
    text = obj[cand].astype(f"U{_V4_WIDTH}")
    c = np.minimum(text.view(np.uint32).reshape(len(cand), _V4_WIDTH), 255).astype(np.uint8)
    d = c - np.uint8(48)  # '0'..'9' -> 0..9; everything else wraps to >= 10
    digit = d < 10
    dot = c == 46
    # only ASCII digits and dots, as many as the str has characters: a NUL (numpy drops trailing
    # ones) or any other character leaves the count short
    shaped = np.count_nonzero(digit | dot, axis=1) == length
    four = np.flatnonzero(shaped & (np.count_nonzero(dot, axis=1) == 3))
    every = len(four) == len(cand)  # the usual case: skip the row selections
    ok = np.zeros(len(cand), dtype=bool)
    if len(four):
        dots = np.nonzero(dot if every else dot[four])[1].reshape(-1, 3)  # positions of the 3 dots, ascending per row
        starts = np.concatenate([np.zeros((len(four), 1), dtype=np.intp), dots + 1], axis=1)
        ends = np.concatenate([dots, (length if every else length[four])[:, None]], axis=1)
        olen = ends - starts  # characters (all digits) of each octet
        df = d if every else d[four]
        d0, d1, d2 = (
            np.take_along_axis(df, np.minimum(starts + j, _V4_WIDTH - 1), axis=1).astype(np.int64)
            for j in range(3)
        )
        octets = np.where(olen == 1, d0, np.where(olen == 2, d0 * 10 + d1, d0 * 100 + d1 * 10 + d2))
        good = (
            np.all((olen >= 1) & (olen <= 3), axis=1)  # no empty octet, at most 3 digits
            & ~np.any((olen > 1) & (d0 == 0), axis=1)  # no leading zero
            & np.all(octets <= 255, axis=1)
        )
        ok[four[good]] = True
        octets = octets[good]
        ints[cand[four[good]]] = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    state[cand[ok]] = V4_VALID
    state[cand[shaped & ~ok]] = V4_INVALID
    return ints, state


def _format_subnets24(prefixes: np.ndarray) -> np.ndarray:
    """'a.b.c.0/24' text (object array) of /24 prefixes (address >> 8), formatted once per prefix."""
    uniq, inverse = np.unique(prefixes, return_inverse=True)
    text = [f"{p >> 16}.{(p >> 8) & 255}.{p & 255}.0/24" for p in uniq.tolist()]
    return np.array(text, dtype=object)[inverse] if text else np.empty(0, dtype=object)


def _ipv4_private_table() -> tuple[np.ndarray, np.ndarray]:
    """`is_private_address` of every IPv4 address, as sorted (interval starts, flag of each interval).

    The boundaries are those of every network :mod:`ipaddress` names for IPv4
    (``IPv4Address._constants``) plus IANA's special-purpose registry; the flag
    of each elementary interval between boundaries is `is_private_address` of its first
    address, computed by ipaddress itself. tests/test_ipintel.py checks the table
    against ipaddress on random addresses and on both edges of every range.
    """
    nets: list[ipaddress.IPv4Network] = [ipaddress.IPv4Network(n) for n in IANA_SPECIAL_V4]

    def collect(value: Any) -> None:
        if isinstance(value, ipaddress.IPv4Network):
            nets.append(value)
        elif isinstance(value, ipaddress.IPv4Address):
            nets.append(ipaddress.IPv4Network(value))
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                collect(v)

    # private to the stdlib (Python 3.11-3.13 have it): the networks ipaddress's is_* properties test;
    # test_private_table_equals_ipaddress fails if a Python release changes them
    constants = ipaddress.IPv4Address._constants  # type: ignore[attr-defined]
    for klass in type.mro(constants):
        for value in vars(klass).values():
            collect(value)
    bounds = {0}
    for net in nets:
        bounds.add(int(net.network_address))
        if int(net.broadcast_address) < 0xFFFFFFFF:
            bounds.add(int(net.broadcast_address) + 1)
    starts: list[int] = []
    flags: list[bool] = []
    for b in sorted(bounds):
        flag = is_private_address(ipaddress.IPv4Address(b))
        if not flags or flags[-1] != flag:
            starts.append(b)
            flags.append(flag)
    return np.array(starts, dtype=np.int64), np.array(flags, dtype=bool)


#: IANA IPv4 special-purpose address registry (and multicast), as extra boundaries.
IANA_SPECIAL_V4 = (
    "0.0.0.0/8", "0.0.0.0/32", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.9/32",
    "192.0.0.10/32", "192.0.0.170/32", "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24",
    "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4",
    "255.255.255.255/32",
)

PRIVATE_V4_STARTS, PRIVATE_V4_FLAGS = _ipv4_private_table()
PRIVATE_V4_STARTS_LIST, PRIVATE_V4_FLAGS_LIST = PRIVATE_V4_STARTS.tolist(), PRIVATE_V4_FLAGS.tolist()


def ipv4_is_private(ints: np.ndarray) -> np.ndarray:
    """`not is_global or is_multicast or is_reserved` (as :mod:`ipaddress` says) of IPv4 integers."""
    i = np.searchsorted(PRIVATE_V4_STARTS, np.asarray(ints, dtype=np.int64), side="right") - 1
    return PRIVATE_V4_FLAGS[i]


def _ip_to_int(text: str) -> int:
    """The integer of an address's text (IPv4 or IPv6); OSError if malformed."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return int.from_bytes(socket.inet_pton(family, text), "big")


def network_contains(cidr: str, value: int, version: int) -> bool:
    """Whether CIDR text ``cidr`` of IP ``version`` holds the address ``value``; False if ``cidr`` is empty or bad.

    The reference lookup checks geoip2fast's ``asn_cidr`` with it, because
    geoip2fast can report the AS range before the address (docs/ip_intelligence.md).
    """
    if not cidr:
        return False
    base, _, length = cidr.partition("/")
    try:
        start = _ip_to_int(base)
        bits = 32 if version == 4 else 128
        size = 1 << (bits - int(length))
    except (OSError, ValueError):
        return False
    if (version == 4) != (start <= 0xFFFFFFFF):
        return False
    return start <= value < start + size


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive integer ranges merged where they overlap or touch, sorted by start: the
    form a bisect over starts and ends needs (lists of CIDRs, analyst lists' copies)."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]
