"""The analysts' IP lists in ``rules/lists/``: hosting AS names, Tor exit ranges, proxy IPs.

Plain text files, one entry a line, ``#`` starts a comment; they change by
editing the file (docs/ip_intelligence.md). A malformed line stops the load with
:class:`IpListError` naming the file and the line, so a bad edit never half-loads.
The errors of IP intelligence live here because list files are where they start.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fengkong.features.errors import FeatureStoreError
from fengkong.features.ip_addresses import merge_ranges, parse_ip

__all__ = [
    "HOSTING_ASNS_FILE",
    "PROXY_IPS_FILE",
    "TOR_EXIT_RANGES_FILE",
    "IpIntelError",
    "IpListError",
    "RangeSet",
    "load_name_list",
    "load_range_list",
]

HOSTING_ASNS_FILE = "hosting_asns.txt"
TOR_EXIT_RANGES_FILE = "tor_exit_ranges.txt"
PROXY_IPS_FILE = "proxy_ips.txt"


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
    """Sorted, merged integer ranges per IP version; membership by bisection.

    A list of ranges is asked about every event, so it is held as the plain
    sorted integers :mod:`bisect` and ``np.searchsorted`` search, not as
    :mod:`ipaddress` networks.
    """

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
            merged = merge_ranges(ranges)
            self._starts[version] = [lo for lo, _ in merged]
            self._ends[version] = [hi for _, hi in merged]
        self._np4 = (np.array(self._starts[4], dtype=np.int64), np.array(self._ends[4], dtype=np.int64))

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])

    def ranges(self, version: int) -> tuple[list[int], list[int]]:
        """The sorted first and last addresses (integers) of the merged ranges of IP ``version``
        (4 or 6): what `contains` bisects, for a caller that bisects them itself."""
        return self._starts[version], self._ends[version]

    def contains(self, version: int, value: int) -> bool:
        """Whether integer address ``value`` of IP ``version`` (4 or 6) is in a range."""
        starts = self._starts[version]
        i = bisect.bisect_right(starts, value) - 1
        return i >= 0 and value <= self._ends[version][i]

    def __contains__(self, ip: str) -> bool:
        addr = parse_ip(ip)
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

