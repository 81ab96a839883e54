"""IP intelligence, offline: country and AS name from geoip2fast's bundled
database; hosting, Tor-exit and analyst-listed proxy flags from text lists in
``rules/lists/``.

Nothing here touches the network. The database is the file that ships inside
the ``geoip2fast`` wheel (``geoip2fast-asn-ipv6.dat.gz``: MaxMind GeoLite2
country + ASN, IPv4 and IPv6); geoip2fast's ``update_file``/``update_all`` are
never called. Lists change by editing the files (docs/ip_intelligence.md).

    >>> intel = IpIntel.load(Path("rules/lists"))
    >>> intel.lookup("52.1.2.3")
    IpInfo(country='US', asn='AMAZON-AES', is_hosting=True, is_tor=False, ...)

Decisions recorded here (the next person should not rediscover them):

- ``is_private`` comes from :mod:`ipaddress` (not global, multicast or reserved),
  not from geoip2fast: geoip2fast 1.2.2 with its IPv4-only file reports Andorra
  (``AD``) as private, and maps small IPv6 integers such as ``::1`` onto IPv4
  ranges. A private address has no country and no AS.
- geoip2fast's ASN lookup on the IPv4+IPv6 file does not check that an IPv4
  address lies inside the AS range it found (about 15% of random IPv4 addresses
  would get the AS of the preceding range). The AS name is kept only when the
  address is inside the ``asn_cidr`` geoip2fast returns, which gives exactly
  the IPv4-only file's answers.
- An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is treated as ``a.b.c.d``.
- A missing or malformed address gives :data:`UNKNOWN` (no country, no AS, every
  flag false); the API validates addresses before they reach this module.
- geoip2fast keeps its tables in module globals, so one process holds one
  database; it is loaded once per process (:func:`_geo_database`) and shared by
  every :class:`IpIntel`. Do not construct another ``GeoIP2Fast`` in-process.
- Columns (:meth:`IpIntel.lookup_many`, :func:`subnets_of`) take a vectorised
  path for plain dotted-quad IPv4 text (:func:`ipv4_ints`): ``is_private`` from
  a range table built from :mod:`ipaddress` at import, country and AS name by
  ``np.searchsorted`` over geoip2fast's tables flattened once
  (:func:`_geo_tables_v4`) with the same containment checks as the scalar path,
  list flags by :meth:`RangeSet.contains_many`. Everything else (IPv6, mapped
  IPv6, whitespace, non-strings) goes through the scalar :meth:`IpIntel.lookup`,
  which stays the reference: tests/test_ipintel.py holds the two equal.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import itertools
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fengkong.events import IPV4_TEXT
from fengkong.features.errors import FeatureStoreError

__all__ = [
    "HOSTING_ASNS_FILE",
    "PROXY_IPS_FILE",
    "TOR_EXIT_RANGES_FILE",
    "UNKNOWN",
    "V4_INVALID",
    "V4_OTHER",
    "V4_VALID",
    "IpInfo",
    "IpIntel",
    "IpIntelError",
    "IpListError",
    "RangeSet",
    "load_name_list",
    "load_range_list",
    "ipv4_ints",
    "ipv4_is_private",
    "subnet_of",
    "subnets_of",
]

HOSTING_ASNS_FILE = "hosting_asns.txt"
TOR_EXIT_RANGES_FILE = "tor_exit_ranges.txt"
PROXY_IPS_FILE = "proxy_ips.txt"

#: The bundled geoip2fast file used: country + AS name, IPv4 and IPv6.
GEOIP_DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpIntelError(FeatureStoreError):
    """Root of IP-intelligence errors (bad list files, missing database)."""


class IpListError(IpIntelError, ValueError):
    """A line of a list file is malformed; names the file and the line."""

    def __init__(self, path: Path, line_no: int, line: str, reason: str) -> None:
        self.path = path
        self.line_no = line_no
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line_no}: {reason}: {line.strip()!r}")


@dataclass(frozen=True, slots=True)
class IpInfo:
    """What is known about one address (feature names ``ip.*``)."""

    country: str | None  # ISO 3166 alpha-2 from the bundled database; None if private/unknown
    asn: str | None  # AS *name* as geoip2fast reports it (not the number)
    is_hosting: bool  # asn is in hosting_asns.txt
    is_tor: bool  # address is in tor_exit_ranges.txt
    is_listed_proxy: bool  # address is in proxy_ips.txt
    is_private: bool  # private, loopback, link-local, shared, documentation, multicast, reserved


#: Result for a missing or malformed address.
UNKNOWN = IpInfo(None, None, False, False, False, False)

#: `IpInfo`, one shared value for all the addresses that get the same answer (those of
#: one network, mostly): a frozen dataclass takes 0.46 us to build, a hit here 0.07 us
#: (`IpIntel._lookup_v4` makes one for each address the per-address LRU misses).
_shared_info = functools.lru_cache(maxsize=8192)(IpInfo)

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(IpInfo))


# ---------------------------------------------------------------------------
# list files


def _entries(path: Path) -> Iterable[tuple[int, str, str]]:
    """(line number, entry, raw line) for each non-blank, non-comment line."""
    with open(path, encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            entry = raw.split("#", 1)[0].strip()
            if entry:
                yield line_no, entry, raw


def load_name_list(path: Path) -> frozenset[str]:
    """AS names, one a line, exactly as geoip2fast reports them (case-sensitive)."""
    names: set[str] = set()
    for line_no, entry, raw in _entries(path):
        if _looks_like_as_number(entry):
            raise IpListError(
                path, line_no, raw,
                "looks like an AS number; this file holds AS names as geoip2fast reports them",
            )
        if _parse_network(entry) is not None:
            raise IpListError(path, line_no, raw, "an address or range, not an AS name")
        names.add(entry)
    return frozenset(names)


def _looks_like_as_number(entry: str) -> bool:
    e = entry.upper()
    return e.isdigit() or (e.startswith("AS") and e[2:].isdigit())


def _parse_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError:
        return None


class RangeSet:
    """Sorted, merged integer ranges per IP version; membership by bisection."""

    __slots__ = ("_starts", "_ends", "_np4")

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        per_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in networks:
            per_version[net.version].append(
                (int(net.network_address), int(net.broadcast_address))
            )
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, ranges in per_version.items():
            ranges.sort()
            merged: list[list[int]] = []
            for lo, hi in ranges:
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self._starts[version] = [lo for lo, _ in merged]
            self._ends[version] = [hi for _, hi in merged]
        self._np4 = (np.array(self._starts[4], dtype=np.int64), np.array(self._ends[4], dtype=np.int64))

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])

    def contains(self, version: int, value: int) -> bool:
        starts = self._starts[version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[version][i]

    def __contains__(self, ip: str) -> bool:
        addr = _parse_ip(ip)
        return addr is not None and self.contains(addr.version, int(addr))

    def contains_many(self, values: np.ndarray) -> np.ndarray:
        """`contains(4, v)` for an array of IPv4 integers (0 .. 2**32-1), as a bool array."""
        values = np.asarray(values, dtype=np.int64)
        starts, ends = self._np4
        if not len(starts):
            return np.zeros(values.shape, dtype=bool)
        i = np.searchsorted(starts, values, side="right") - 1
        return (i >= 0) & (values <= ends[np.maximum(i, 0)])


def load_range_list(path: Path) -> RangeSet:
    """Addresses and CIDR ranges, one a line (IPv4 or IPv6); a bare address is a /32 or /128."""
    networks = []
    for line_no, entry, raw in _entries(path):
        try:
            net = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            raise IpListError(path, line_no, raw, f"not an IP address or CIDR range ({exc})") from None
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
            raise IpListError(path, line_no, raw, "write IPv4-mapped ranges as IPv4")
        networks.append(net)
    return RangeSet(networks)


# ---------------------------------------------------------------------------
# addresses


def _parse_ip(ip: Any) -> _IPAddress | None:
    if not isinstance(ip, str):
        return None
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_private(addr: _IPAddress) -> bool:
    return not addr.is_global or addr.is_multicast or addr.is_reserved


def _subnet(addr: _IPAddress) -> str:
    if addr.version == 4:
        p = addr.packed
        return f"{p[0]}.{p[1]}.{p[2]}.0/24"
    net = int(addr) & ~((1 << 64) - 1)
    return f"{ipaddress.IPv6Address(net).compressed}/64"


@functools.lru_cache(maxsize=65_536)  # the online store asks once per event; addresses repeat
def subnet_of(ip: str) -> str:
    """The IPv4 /24 ("a.b.c.0/24") or IPv6 /64 of an address; ValueError if malformed."""
    if isinstance(ip, str) and IPV4_TEXT.fullmatch(ip):  # canonical already: no ipaddress parse
        return _subnet24_of_text(ip)
    addr = _parse_ip(ip)
    if addr is None:
        raise ValueError(f"not an IP address: {ip!r}")
    return _subnet(addr)


def _subnet24_of_text(ip: str) -> str:
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
        addr = _parse_ip(values[i])
        out[i] = None if addr is None else _subnet(addr)
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
    """`_is_private` of every IPv4 address, as sorted (interval starts, flag of each interval).

    The boundaries are those of every network :mod:`ipaddress` names for IPv4
    (``IPv4Address._constants``) plus IANA's special-purpose registry; the flag
    of each elementary interval between boundaries is `_is_private` of its first
    address, computed by ipaddress itself. tests/test_ipintel.py checks the table
    against ipaddress on random addresses and on both edges of every range.
    """
    nets: list[ipaddress.IPv4Network] = [ipaddress.IPv4Network(n) for n in _IANA_SPECIAL_V4]

    def collect(value: Any) -> None:
        if isinstance(value, ipaddress.IPv4Network):
            nets.append(value)
        elif isinstance(value, ipaddress.IPv4Address):
            nets.append(ipaddress.IPv4Network(value))
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                collect(v)

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
        flag = _is_private(ipaddress.IPv4Address(b))
        if not flags or flags[-1] != flag:
            starts.append(b)
            flags.append(flag)
    return np.array(starts, dtype=np.int64), np.array(flags, dtype=bool)


#: IANA IPv4 special-purpose address registry (and multicast), as extra boundaries.
_IANA_SPECIAL_V4 = (
    "0.0.0.0/8", "0.0.0.0/32", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.9/32",
    "192.0.0.10/32", "192.0.0.170/32", "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24",
    "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4",
    "255.255.255.255/32",
)

_PRIVATE_V4_STARTS, _PRIVATE_V4_FLAGS = _ipv4_private_table()
_PRIVATE_V4_STARTS_LIST, _PRIVATE_V4_FLAGS_LIST = _PRIVATE_V4_STARTS.tolist(), _PRIVATE_V4_FLAGS.tolist()


def ipv4_is_private(ints: np.ndarray) -> np.ndarray:
    """`not is_global or is_multicast or is_reserved` (as :mod:`ipaddress` says) of IPv4 integers."""
    i = np.searchsorted(_PRIVATE_V4_STARTS, np.asarray(ints, dtype=np.int64), side="right") - 1
    return _PRIVATE_V4_FLAGS[i]


# ---------------------------------------------------------------------------
# the bundled database

_geo_lock = threading.Lock()


@functools.cache
def _geo_database() -> Any:
    """geoip2fast loaded from its own bundled file, once per process; never updated."""
    with _geo_lock:
        saved = os.environ.get("PYTHONWARNINGS")
        import geoip2fast  # its import sets PYTHONWARNINGS=ignore for the whole process

        if saved is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved
        path = Path(geoip2fast.__file__).parent / GEOIP_DATA_FILE
        if not path.is_file():
            raise IpIntelError(f"geoip2fast's bundled database is missing: {path}")
        return geoip2fast.GeoIP2Fast(geoip2fast_data_file=str(path), verbose=False)


def _ip_to_int(text: str) -> int:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return int.from_bytes(socket.inet_pton(family, text), "big")


def _network_contains(cidr: str, value: int, version: int) -> bool:
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


@dataclass(frozen=True, slots=True)
class _GeoTablesV4:
    """geoip2fast's IPv4 tables as flat sorted numpy arrays (see `_geo_tables_v4`)."""

    first: np.ndarray  # int64: first address of each country range, ascending
    last: np.ndarray  # int64: its last address (first + numIPsv4[netlen] - 1)
    country_id: np.ndarray  # intp: index into country / country_failed
    country: np.ndarray  # object, per country id: what `_lookup` reports (str or None)
    country_failed: np.ndarray  # bool, per country id: geoip2fast's own country lookup raises
    asn_first: np.ndarray  # int64: first address of each AS range, ascending
    asn_end: np.ndarray  # int64: one past its last address, as `_network_contains` reads the asn_cidr
    asn_id: np.ndarray  # intp: index into asn_names
    asn_names: np.ndarray  # object, per AS id: the name, None where empty


_geo_tables_lock = threading.Lock()
_geo_tables_cache: list[tuple[tuple[Any, ...], _GeoTablesV4 | None]] = []


def _geo_tables_v4(geo: Any) -> _GeoTablesV4 | None:
    """Flatten the loaded geoip2fast database's IPv4 part, once per loaded database.

    geoip2fast 1.2.2 keeps a two-level index in module globals: ``mainIndex``
    (first address of each chunk) and per chunk ``mainListFirstIP`` /
    ``mainListNetlength`` / ``mainListIDCountryCodes`` (and the ``...ASN``
    counterparts). Its lookup is ``bisect_right`` on ``mainIndex`` then on the
    chunk; when every chunk starts at its index entry, the chunks concatenate in
    order and the index starts at 0, that is one ``bisect_right`` over the
    concatenation, which is what ``np.searchsorted(..., side="right")`` does.
    The IPv4 part is the prefix of entries starting below 2**32. Returns None
    (callers use the scalar path) if ``geo`` is not the loaded geoip2fast
    database or the tables are not shaped so.
    """
    try:
        import geoip2fast.geoip2fast as g
    except ImportError:  # pragma: no cover - geoip2fast is a dependency
        return None
    if not isinstance(geo, g.GeoIP2Fast) or not (geo.is_loaded and geo.country and geo.asn and not geo.city):
        return None
    try:
        key = (
            g.mainIndex, g.mainListFirstIP, g.mainListNetlength, g.mainListIDCountryCodes, g.mainListNamesCountry,
            g.mainIndexASN, g.mainListFirstIPASN, g.mainListNetlengthASN, g.mainListIDASN, g.mainListNamesASN,
            geo.error_code_private_networks,
        )
    except AttributeError:
        return None
    with _geo_tables_lock:
        for k, tables in _geo_tables_cache:
            if len(k) == len(key) and all(a is b for a, b in zip(k, key)):
                return tables
        try:
            tables = _flatten_geo(g, geo)
        except (TypeError, ValueError, IndexError, OverflowError):
            tables = None
        _geo_tables_cache[:] = [(key, tables)]  # one database per process
        return tables


def _flatten_chunks(index: list[int], firsts: list[list[int]], *columns: list[list[int]]) -> list[np.ndarray] | None:
    """The IPv4 prefix of a two-level geoip2fast table, or None if it is not one sorted list."""
    if not index or index[0] != 0 or len(firsts) != len(index):
        return None
    if any(len(col) != len(firsts) for col in columns):
        return None
    for r, chunk in enumerate(firsts):
        if not chunk or chunk[0] != index[r] or any(len(col[r]) != len(chunk) for col in columns):
            return None
    flat_first = [x for chunk in firsts for x in chunk]
    if any(a > b for a, b in zip(flat_first, itertools.islice(flat_first, 1, None))):
        return None
    n4 = bisect.bisect_right(flat_first, 0xFFFFFFFF)
    out = [np.array(flat_first[:n4], dtype=np.int64)]
    for col in columns:
        flat = np.array([x for chunk in col for x in chunk][:n4], dtype=np.int64)
        out.append(flat)
    return out


def _flatten_geo(g: Any, geo: Any) -> _GeoTablesV4 | None:
    country = _flatten_chunks(g.mainIndex, g.mainListFirstIP, g.mainListNetlength, g.mainListIDCountryCodes)
    asn = _flatten_chunks(g.mainIndexASN, g.mainListFirstIPASN, g.mainListNetlengthASN, g.mainListIDASN)
    if country is None or asn is None:
        return None
    first, netlen, cid = country
    a_first, a_netlen, aid = asn
    names_c, names_a = g.mainListNamesCountry, g.mainListNamesASN
    # outside these, geoip2fast's Python indexing (negative indices, numIPs lists) would need emulating
    if np.any((netlen < 0) | (netlen > 32)) or np.any((a_netlen < 0) | (a_netlen > 32)):
        return None
    if np.any((cid < 0) | (cid >= len(names_c))) or np.any((aid < 0) | (aid >= len(names_a))):
        return None
    country_val = np.empty(len(names_c), dtype=object)
    country_failed = np.zeros(len(names_c), dtype=bool)
    for i, entry in enumerate(names_c):  # GeoIP2Fast._country_lookup, then IpIntel._lookup
        try:
            cc, _name = entry.split(":")
        except (AttributeError, ValueError):
            country_failed[i] = True
            continue
        if i < 16:  # geoip2fast's private/reserved entries
            cc = geo.error_code_private_networks
        country_val[i] = cc if len(cc) == 2 and cc.isalpha() else None
    asn_names = np.array([n if n else None for n in names_a], dtype=object)
    return _GeoTablesV4(
        first=first,
        last=first + (np.int64(1) << (32 - netlen)) - 1,
        country_id=cid.astype(np.intp),
        country=country_val,
        country_failed=country_failed,
        asn_first=a_first,
        asn_end=a_first + (np.int64(1) << (32 - a_netlen)),
        asn_id=aid.astype(np.intp),
        asn_names=asn_names,
    )


class _ScalarTablesV4:
    """`_GeoTablesV4` shaped for one address at a time (`IpIntel._lookup_v4`).

    numpy answers a scalar slowly: ``searchsorted`` costs ~0.45 us a call, and every
    item read gives a numpy scalar whose comparisons are slow too. Here the big int
    columns are memoryviews of the same arrays (``.data``: no copy; an item reads as
    a Python int in ~30 ns), the small per-id columns are lists, and ``bisect``
    searches only the entries of the address's /16: ``first_at16[p]`` is
    ``bisect_right(first, p << 16)``, so for an address of prefix ``p`` the
    insertion point lies in ``first_at16[p] .. first_at16[p + 1]`` (0.5 MB per
    column, built in a few ms). `IpIntel._lookup_v4` went from 2.6 us to 1.6 us.
    """

    __slots__ = ("asn_end", "asn_first", "asn_first_at16", "asn_id", "asn_names", "country", "country_failed",
                 "country_id", "first", "first_at16", "last")

    def __init__(self, tables: _GeoTablesV4) -> None:
        prefixes = np.arange(65_537, dtype=np.int64) << 16
        self.first = np.ascontiguousarray(tables.first).data
        self.last = np.ascontiguousarray(tables.last).data
        self.country_id = np.ascontiguousarray(tables.country_id).data
        self.country: list[str | None] = tables.country.tolist()
        self.country_failed: list[bool] = tables.country_failed.tolist()
        self.first_at16 = np.searchsorted(tables.first, prefixes, side="right").data
        self.asn_first = np.ascontiguousarray(tables.asn_first).data
        self.asn_end = np.ascontiguousarray(tables.asn_end).data
        self.asn_id = np.ascontiguousarray(tables.asn_id).data
        self.asn_names: list[str | None] = tables.asn_names.tolist()
        self.asn_first_at16 = np.searchsorted(tables.asn_first, prefixes, side="right").data


# ---------------------------------------------------------------------------
# the facade


class IpIntel:
    """Country, AS and list flags of addresses. Build with :meth:`load`."""

    def __init__(
        self,
        *,
        geo: Any,
        hosting_asns: frozenset[str],
        tor_ranges: RangeSet,
        proxy_ranges: RangeSet,
        cache_size: int = 65_536,
    ) -> None:
        self._geo = geo
        self.hosting_asns = hosting_asns
        self.tor_ranges = tor_ranges
        self.proxy_ranges = proxy_ranges
        self._hosting_ids: tuple[_GeoTablesV4, frozenset[str], np.ndarray] | None = None
        # the flat IPv4 tables (built once per loaded database, ~0.3 s: at start-up, not
        # on the first payment); None if `geo` is not geoip2fast as we know it
        tables = _geo_tables_v4(geo)
        self._v4 = _ScalarTablesV4(tables) if tables is not None else None
        self.lookup = functools.lru_cache(maxsize=cache_size)(self._lookup_one)  # type: ignore[method-assign]
        self.lookup_with_subnet = functools.lru_cache(  # type: ignore[method-assign]
            maxsize=cache_size)(self._lookup_with_subnet)

    @classmethod
    def load(cls, lists_dir: Path, *, cache_size: int = 65_536) -> IpIntel:
        """Load the bundled database (once per process) and the three list files."""
        lists_dir = Path(lists_dir)
        return cls(
            geo=_geo_database(),
            hosting_asns=load_name_list(lists_dir / HOSTING_ASNS_FILE),
            tor_ranges=load_range_list(lists_dir / TOR_EXIT_RANGES_FILE),
            proxy_ranges=load_range_list(lists_dir / PROXY_IPS_FILE),
            cache_size=cache_size,
        )

    def lookup(self, ip: str) -> IpInfo:  # replaced per instance by an LRU-cached wrapper
        return self._lookup(ip)

    def lookup_with_subnet(self, ip: str) -> tuple[IpInfo, str]:  # replaced per instance by an LRU-cached wrapper
        """`lookup` and `subnet_of` of one address (ValueError where `subnet_of` raises one).
        The decision path asks both of every event: one cache and one pattern match for the
        two took 2.1 us per address where asking each took 2.6 us (live traffic mostly
        misses the caches)."""
        return self._lookup_with_subnet(ip)

    def _lookup_with_subnet(self, ip: str) -> tuple[IpInfo, str]:
        if not (isinstance(ip, str) and IPV4_TEXT.fullmatch(ip)):
            return self._lookup(ip), subnet_of(ip)
        v4 = self._v4  # as `_lookup_one` answers plain IPv4 text
        info = self._lookup(ip) if v4 is None else \
            self._lookup_v4(v4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big"))
        return info, _subnet24_of_text(ip)

    def _lookup_one(self, ip: str) -> IpInfo:
        """`_lookup`, answered for plain IPv4 text from the flat tables `lookup_many` uses
        (`_ScalarTablesV4`): 2.3 us per address (3.6 us with numpy's scalar searches,
        13.1 us for geoip2fast plus `ipaddress`); the decision path asks once per event,
        and live traffic mostly misses the LRU. The answers are `_lookup`'s (tested)."""
        v4 = self._v4
        if v4 is not None and isinstance(ip, str) and IPV4_TEXT.fullmatch(ip):
            # the pattern admits canonical dotted quads only, which inet_pton reads as ipaddress does
            return self._lookup_v4(v4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big"))
        return self._lookup(ip)

    def _lookup_v4(self, v4: _ScalarTablesV4, v: int) -> IpInfo:
        """One IPv4 integer through `_lookup_ipv4`'s steps, with scalars."""
        is_tor = self.tor_ranges.contains(4, v)
        is_proxy = self.proxy_ranges.contains(4, v)
        if _PRIVATE_V4_FLAGS_LIST[bisect.bisect_right(_PRIVATE_V4_STARTS_LIST, v) - 1]:
            return _shared_info(None, None, False, is_tor, is_proxy, True)
        p = v >> 16
        pos = bisect.bisect_right(v4.first, v, v4.first_at16[p], v4.first_at16[p + 1]) - 1
        cid = v4.country_id[pos]
        if v > v4.last[pos] or v4.country_failed[cid]:
            return _shared_info(None, None, False, is_tor, is_proxy, False)
        apos = bisect.bisect_right(v4.asn_first, v, v4.asn_first_at16[p], v4.asn_first_at16[p + 1]) - 1
        asn = v4.asn_names[v4.asn_id[apos]] if v < v4.asn_end[apos] else None
        # the name test of `_lookup` (the column path's per-id table holds the same answers)
        hosting = asn is not None and asn in self.hosting_asns
        return _shared_info(v4.country[cid], asn, hosting, is_tor, is_proxy, False)

    def _lookup(self, ip: str) -> IpInfo:
        """The reference answer for one address: `ipaddress` and geoip2fast's own lookup."""
        addr = _parse_ip(ip)
        if addr is None:
            return UNKNOWN
        version, value = addr.version, int(addr)
        is_tor = self.tor_ranges.contains(version, value)
        is_proxy = self.proxy_ranges.contains(version, value)
        if _is_private(addr):
            return IpInfo(None, None, False, is_tor, is_proxy, True)
        r = self._geo.lookup(str(addr))
        cc = r.country_code
        country = cc if len(cc) == 2 and cc.isalpha() else None
        asn = r.asn_name if r.asn_name and _network_contains(r.asn_cidr, value, version) else None
        return IpInfo(country, asn, asn is not None and asn in self.hosting_asns, is_tor, is_proxy, False)

    def lookup_many(self, ips: pd.Series) -> pd.DataFrame:
        """`lookup` over a column, computed once per distinct value; index kept.

        Plain IPv4 text is answered with numpy (`_lookup_ipv4`); everything else
        by the scalar `_lookup`. The answers are `lookup`'s, value for value.
        """
        codes, uniques = pd.factorize(ips, use_na_sentinel=True)
        values = np.asarray(uniques, dtype=object)
        n = len(values)
        cols = {name: np.empty(n + 1, dtype=object) for name in COLUMNS[:2]}
        flags = {name: np.zeros(n + 1, dtype=bool) for name in COLUMNS[2:]}
        ints, state = ipv4_ints(values)
        tables = _geo_tables_v4(self._geo)
        if tables is None:  # not geoip2fast's tables as we know them: all scalar
            state = np.full(n, V4_OTHER, dtype=np.int8)
        valid = np.flatnonzero(state == V4_VALID)
        if len(valid):
            self._lookup_ipv4(tables, ints[valid], valid, cols, flags)
        # V4_INVALID: text ipaddress rejects, UNKNOWN: the slots already say None / False
        lookup = self._lookup  # bypass the LRU: a batch should not evict live traffic
        for i in np.flatnonzero(state == V4_OTHER).tolist():
            info = lookup(values[i])
            cols["country"][i] = info.country
            cols["asn"][i] = info.asn
            flags["is_hosting"][i] = info.is_hosting
            flags["is_tor"][i] = info.is_tor
            flags["is_listed_proxy"][i] = info.is_listed_proxy
            flags["is_private"][i] = info.is_private
        cols["country"][n] = cols["asn"][n] = None  # code -1 (missing) picks this slot
        # country/asn stay object columns holding str or None: the values lookup() returns
        data = {
            name: pd.Series(arr[codes], index=ips.index, dtype=object if arr.dtype == object else bool)
            for name, arr in (*cols.items(), *flags.items())
        }
        return pd.DataFrame(data, columns=list(COLUMNS))

    def _hosting_by_asn_id(self, tables: _GeoTablesV4) -> np.ndarray:
        cached = self._hosting_ids
        if cached is None or cached[0] is not tables or cached[1] is not self.hosting_asns:
            hosting = self.hosting_asns
            table = np.fromiter((name in hosting for name in tables.asn_names.tolist()), dtype=bool)
            cached = self._hosting_ids = (tables, hosting, table)
        return cached[2]

    def _lookup_ipv4(
        self,
        tables: _GeoTablesV4,
        v: np.ndarray,
        at: np.ndarray,
        cols: dict[str, np.ndarray],
        flags: dict[str, np.ndarray],
    ) -> None:
        """`_lookup` of IPv4 integers ``v``, written into the slots ``at`` of the output columns."""
        flags["is_tor"][at] = self.tor_ranges.contains_many(v)
        flags["is_listed_proxy"][at] = self.proxy_ranges.contains_many(v)
        private = ipv4_is_private(v)
        flags["is_private"][at] = private
        public = ~private
        v, at = v[public], at[public]
        # country: geoip2fast's range; outside it ("not found") or a failing entry gives no AS either
        pos = np.searchsorted(tables.first, v, side="right") - 1  # tables.first[0] == 0: pos >= 0
        cid = tables.country_id[pos]
        found = (v <= tables.last[pos]) & ~tables.country_failed[cid]
        cols["country"][at] = np.where(found, tables.country[cid], None)
        # AS name: kept only inside the range geoip2fast reports (IpIntel._lookup's asn_cidr check)
        apos = np.searchsorted(tables.asn_first, v, side="right") - 1  # asn_first[0] == 0
        aid = tables.asn_id[apos]
        names = tables.asn_names[aid]
        has_asn = found & (v < tables.asn_end[apos]) & (names != None)  # noqa: E711 (object array)
        cols["asn"][at] = np.where(has_asn, names, None)
        flags["is_hosting"][at] = has_asn & self._hosting_by_asn_id(tables)[aid]
