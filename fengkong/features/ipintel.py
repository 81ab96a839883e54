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

This module is the facade (:class:`IpInfo`, :class:`IpIntel`) and re-exports
the public names of the modules it is built from, one job each:
:mod:`fengkong.features.ip_addresses` (parsing addresses, subnets, private
ranges, numpy columns), :mod:`fengkong.features.ip_lists` (the list files and
the errors), :mod:`fengkong.features.geoip_adapter` (the only code that knows
geoip2fast's private tables; pinned in pyproject.toml).

Decisions recorded here (the next person should not rediscover them):

- ``is_private`` comes from :mod:`ipaddress` (not global, multicast or reserved),
  not from geoip2fast: geoip2fast 1.2 with its IPv4-only file reports Andorra
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
  database; it is loaded once per process (:func:`geo_database`) and shared by
  every :class:`IpIntel`. Do not construct another ``GeoIP2Fast`` in-process.
- Columns (:meth:`IpIntel.lookup_many`, :func:`subnets_of`) take a vectorised
  path for plain dotted-quad IPv4 text (:func:`ipv4_ints`): ``is_private`` from
  a range table built from :mod:`ipaddress` at import, country and AS name by
  ``np.searchsorted`` over geoip2fast's tables flattened once
  (:func:`geo_tables_v4`) with the same containment checks as the scalar path,
  list flags by :meth:`RangeSet.contains_many`. Everything else (IPv6, mapped
  IPv6, whitespace, non-strings) goes through the scalar :meth:`IpIntel.lookup`,
  which stays the reference: tests/test_ipintel.py holds the two equal.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fengkong.events import ipv4_packed
from fengkong.features.geoip_adapter import (
    GEOIP_DATA_FILE,
    GeoTablesV4,
    ScalarTablesV4,
    geo_database,
    geo_tables_v4,
)
from fengkong.features.ip_addresses import (
    PRIVATE_V4_FLAGS_LIST,
    PRIVATE_V4_STARTS_LIST,
    V4_INVALID,
    V4_OTHER,
    V4_VALID,
    ipv4_ints,
    ipv4_is_private,
    is_private_address,
    network_contains,
    parse_ip,
    subnet24_of_text,
    subnet_of,
    subnets_of,
)
from fengkong.features.ip_lists import (
    HOSTING_ASNS_FILE,
    PROXY_IPS_FILE,
    TOR_EXIT_RANGES_FILE,
    IpIntelError,
    IpListError,
    RangeSet,
    load_name_list,
    load_range_list,
)

__all__ = [
    "COLUMNS",
    "GEOIP_DATA_FILE",
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
#: one network, mostly): a cache hit is cheaper than building a frozen dataclass, and
#: `IpIntel._lookup_v4` makes one for each address the per-address LRU misses.
_shared_info = functools.lru_cache(maxsize=8192)(IpInfo)

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(IpInfo))

_bisect_right = bisect.bisect_right


class IpIntel:
    """Country, AS and list flags of addresses. Build with :meth:`load`.

    ``lookup`` (one address, the decision path) and ``lookup_many`` (a column,
    the offline twin) give the same answers; both are checked against
    ``_lookup``, the reference built on :mod:`ipaddress` and geoip2fast's public
    lookup.
    """

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
        self._hosting_ids: tuple[GeoTablesV4, frozenset[str], np.ndarray] | None = None
        # the flat IPv4 tables, built once per loaded database here at start-up rather than
        # on the first payment; None if `geo` is not geoip2fast as we know it
        tables = geo_tables_v4(geo)
        self._v4 = ScalarTablesV4(tables) if tables is not None else None
        self.lookup = functools.lru_cache(maxsize=cache_size)(self._lookup_one)  # type: ignore[method-assign]
        self.lookup_with_subnet = functools.lru_cache(  # type: ignore[method-assign]
            maxsize=cache_size)(self._lookup_with_subnet)

    @classmethod
    def load(cls, lists_dir: Path, *, cache_size: int = 65_536) -> IpIntel:
        """Load the bundled database (once per process) and the three list files."""
        lists_dir = Path(lists_dir)
        return cls(
            geo=geo_database(),
            hosting_asns=load_name_list(lists_dir / HOSTING_ASNS_FILE),
            tor_ranges=load_range_list(lists_dir / TOR_EXIT_RANGES_FILE),
            proxy_ranges=load_range_list(lists_dir / PROXY_IPS_FILE),
            cache_size=cache_size,
        )

    def lookup(self, ip: str) -> IpInfo:  # replaced per instance by an LRU-cached wrapper
        """The `IpInfo` of one address; `UNKNOWN` if missing or malformed."""
        return self._lookup(ip)

    def lookup_with_subnet(self, ip: str) -> tuple[IpInfo, str]:  # replaced per instance by an LRU-cached wrapper
        """`lookup` and `subnet_of` of one address (ValueError where `subnet_of` raises one).

        The decision path asks both of every event: one cache entry and one pattern
        match for the two cost less than asking each (live traffic mostly misses the
        caches; see docs/benchmarks.md).
        """
        return self._lookup_with_subnet(ip)

    def _lookup_with_subnet(self, ip: str) -> tuple[IpInfo, str]:
        packed = ipv4_packed(ip)
        if packed is None:  # not plain IPv4 text
            return self._lookup(ip), subnet_of(ip)
        v4 = self._v4  # as `_lookup_one` answers plain IPv4 text
        info = self._lookup(ip) if v4 is None else self._lookup_v4(v4, int.from_bytes(packed, "big"))
        return info, subnet24_of_text(ip)

    def _lookup_one(self, ip: str) -> IpInfo:
        """`_lookup`, answered for plain IPv4 text from the flat tables `lookup_many` uses
        (`ScalarTablesV4`), which is several times faster than geoip2fast's own lookup
        plus `ipaddress`: the decision path asks once per event, and live traffic mostly
        misses the LRU (docs/benchmarks.md). The answers are `_lookup`'s (tested)."""
        v4 = self._v4
        if v4 is not None:
            packed = ipv4_packed(ip)  # canonical dotted quads only, as ipaddress reads them
            if packed is not None:
                return self._lookup_v4(v4, int.from_bytes(packed, "big"))
        return self._lookup(ip)

    def _lookup_v4(self, v4: ScalarTablesV4, v: int) -> IpInfo:
        """One IPv4 integer through `_lookup_ipv4`'s steps, with scalars."""
        is_tor = self.tor_ranges.contains(4, v)
        is_proxy = self.proxy_ranges.contains(4, v)
        if PRIVATE_V4_FLAGS_LIST[_bisect_right(PRIVATE_V4_STARTS_LIST, v) - 1]:
            return _shared_info(None, None, False, is_tor, is_proxy, True)
        p = v >> 16
        pos = _bisect_right(v4.first, v, v4.first_at16[p], v4.first_at16[p + 1]) - 1
        cid = v4.country_id[pos]
        if v > v4.last[pos] or v4.country_failed[cid]:
            return _shared_info(None, None, False, is_tor, is_proxy, False)
        apos = _bisect_right(v4.asn_first, v, v4.asn_first_at16[p], v4.asn_first_at16[p + 1]) - 1
        asn = v4.asn_names[v4.asn_id[apos]] if v < v4.asn_end[apos] else None
        # the name test of `_lookup` (the column path's per-id table holds the same answers)
        hosting = asn is not None and asn in self.hosting_asns
        return _shared_info(v4.country[cid], asn, hosting, is_tor, is_proxy, False)

    def _lookup(self, ip: str) -> IpInfo:
        """The reference answer for one address: `ipaddress` and geoip2fast's own lookup."""
        addr = parse_ip(ip)
        if addr is None:
            return UNKNOWN
        version, value = addr.version, int(addr)
        is_tor = self.tor_ranges.contains(version, value)
        is_proxy = self.proxy_ranges.contains(version, value)
        if is_private_address(addr):
            return IpInfo(None, None, False, is_tor, is_proxy, True)
        r = self._geo.lookup(str(addr))
        cc = r.country_code
        country = cc if len(cc) == 2 and cc.isalpha() else None
        asn = r.asn_name if r.asn_name and network_contains(r.asn_cidr, value, version) else None
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
        tables = geo_tables_v4(self._geo)
        if tables is None:  # not geoip2fast's tables as we know them: all scalar
            state = np.full(n, V4_OTHER, dtype=np.int8)
        else:
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

    def _hosting_by_asn_id(self, tables: GeoTablesV4) -> np.ndarray:
        """``is_hosting`` per AS id of ``tables``, kept until the tables or the hosting list change."""
        cached = self._hosting_ids
        if cached is None or cached[0] is not tables or cached[1] is not self.hosting_asns:
            hosting = self.hosting_asns
            table = np.fromiter((name in hosting for name in tables.asn_names.tolist()), dtype=bool)
            cached = self._hosting_ids = (tables, hosting, table)
        return cached[2]

    def _lookup_ipv4(
        self,
        tables: GeoTablesV4,
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
