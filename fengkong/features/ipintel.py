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
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fengkong.features.errors import FeatureStoreError

__all__ = [
    "HOSTING_ASNS_FILE",
    "PROXY_IPS_FILE",
    "TOR_EXIT_RANGES_FILE",
    "UNKNOWN",
    "IpInfo",
    "IpIntel",
    "IpIntelError",
    "IpListError",
    "RangeSet",
    "load_name_list",
    "load_range_list",
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

    __slots__ = ("_starts", "_ends")

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

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])

    def contains(self, version: int, value: int) -> bool:
        starts = self._starts[version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[version][i]

    def __contains__(self, ip: str) -> bool:
        addr = _parse_ip(ip)
        return addr is not None and self.contains(addr.version, int(addr))


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


def subnet_of(ip: str) -> str:
    """The IPv4 /24 ("a.b.c.0/24") or IPv6 /64 of an address; ValueError if malformed."""
    addr = _parse_ip(ip)
    if addr is None:
        raise ValueError(f"not an IP address: {ip!r}")
    return _subnet(addr)


def subnets_of(ips: pd.Series) -> pd.Series:
    """`subnet_of` over a column, once per distinct value; None where missing or malformed."""
    codes, uniques = pd.factorize(ips, use_na_sentinel=True)
    out = np.empty(len(uniques) + 1, dtype=object)
    for i, ip in enumerate(uniques):
        addr = _parse_ip(ip)
        out[i] = None if addr is None else _subnet(addr)
    out[-1] = None  # code -1 (missing) picks the last slot
    return pd.Series(out[codes], index=ips.index, name="subnet", dtype=object)


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
        self.lookup = functools.lru_cache(maxsize=cache_size)(self._lookup)  # type: ignore[method-assign]

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

    def _lookup(self, ip: str) -> IpInfo:
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
        """`lookup` over a column, computed once per distinct value; index kept."""
        codes, uniques = pd.factorize(ips, use_na_sentinel=True)
        n = len(uniques)
        cols = {name: np.empty(n + 1, dtype=object) for name in COLUMNS[:2]}
        flags = {name: np.zeros(n + 1, dtype=bool) for name in COLUMNS[2:]}
        lookup = self._lookup  # bypass the LRU: a batch should not evict live traffic
        for i, ip in enumerate(uniques):
            info = lookup(ip)
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
