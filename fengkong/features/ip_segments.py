"""Every IPv4 answer of an `IpIntel` as one sorted table of segments, for the decision path.

An IPv4 answer (`IpInfo`) depends on where the address falls in six sorted tables: the
private ranges, geoip2fast's country ranges and AS ranges (each with its end), the Tor
exit and the proxy ranges. Between two consecutive boundaries of all of them together
nothing can change, so the answer is the same for every address of such a segment.
Asked one address at a time (once per decision, and live traffic mostly misses a cache
of addresses), one bisection in the segments of the address's /16 and one list item then
answer what five bisections, a dozen table reads and a shared-value cache did
(`IpIntel._lookup_v4`, which stays the scalar reference: tests/test_ipintel.py).

The answers at the boundaries are computed by numpy, as `IpIntel.lookup_many` computes
a column (the same containment checks); neighbouring segments with the same answer are
merged. The table is kept per database and lists (`segments_for`): one process that
loads the same lists again (a reload, the tests) builds it once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from fengkong.features.geoip_adapter import GeoTablesV4
from fengkong.features.ip_addresses import PRIVATE_V4_STARTS, ipv4_is_private
from fengkong.features.ip_lists import RangeSet

#: (country, asn, is_hosting, is_tor, is_listed_proxy, is_private) -> the shared answer
MakeInfo = Callable[[Any, Any, bool, bool, bool, bool], Any]

_V4_END = 1 << 32


class SegmentsV4:
    """The segments: ``starts`` (ascending, the first 0), the answer of each (``infos``),
    and ``at16[p]``, where the segments starting in /16 ``p`` begin (``bisect_right`` of
    ``p << 16``), so that a bisection for an address of prefix ``p`` searches only
    ``at16[p] .. at16[p + 1]``."""

    __slots__ = ("at16", "infos", "starts")

    def __init__(self, starts: np.ndarray, infos: list[Any]) -> None:
        if len(starts) != len(infos) or not len(starts) or starts[0] != 0:
            raise ValueError("segments: as many answers as starts, the first start 0")
        prefixes = np.arange(65_537, dtype=np.int64) << 16
        # memoryviews: one item reads as a Python int, without numpy's per-call overhead
        self.starts = np.ascontiguousarray(starts, dtype=np.int64).data
        self.at16 = np.searchsorted(starts, prefixes, side="right").data
        self.infos = infos

    def __len__(self) -> int:
        return len(self.infos)


def boundaries(tables: GeoTablesV4, tor: RangeSet, proxy: RangeSet) -> np.ndarray:
    """Every IPv4 address at which some table's answer may change, ascending, from 0."""
    parts = [np.zeros(1, dtype=np.int64), PRIVATE_V4_STARTS, tables.first, tables.last + 1,
             tables.asn_first, tables.asn_end]
    for ranges in (tor, proxy):
        starts, ends = ranges.v4_arrays()
        parts += [starts, ends + 1]
    # the parts are ascending runs, which a stable (merge) sort joins in little more than a copy
    points = np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]), kind="stable")
    first = np.empty(len(points), dtype=bool)
    first[0] = True
    np.not_equal(points[1:], points[:-1], out=first[1:])
    points = points[first]
    return points[points < _V4_END]


def build_segments(tables: GeoTablesV4, hosting_asns: frozenset[str], tor: RangeSet, proxy: RangeSet,
                   make_info: MakeInfo) -> SegmentsV4:
    """The segments of these tables and lists: `IpIntel._lookup_v4`'s steps on every
    boundary at once (ids rather than names, for speed), then one answer per run."""
    v = boundaries(tables, tor, proxy)
    is_tor = tor.contains_many(v)
    is_proxy = proxy.contains_many(v)
    private = ipv4_is_private(v)
    pos = np.searchsorted(tables.first, v, side="right") - 1  # tables.first[0] == 0
    cid = tables.country_id[pos]
    found = ~private & (v <= tables.last[pos]) & ~tables.country_failed[cid]
    apos = np.searchsorted(tables.asn_first, v, side="right") - 1  # asn_first[0] == 0
    aid = tables.asn_id[apos]
    names = tables.asn_names.tolist()
    named = np.fromiter((name is not None for name in names), dtype=bool, count=len(names))
    hosting_ids = np.fromiter((name is not None and name in hosting_asns for name in names), dtype=bool,
                              count=len(names))
    has_asn = found & (v < tables.asn_end[apos]) & named[aid]
    country_code = np.where(found, cid, -1).astype(np.int64) + 1  # 0: no country
    asn_code = np.where(has_asn, aid, -1).astype(np.int64) + 1  # 0: no AS name
    flags = ((has_asn & hosting_ids[aid]).astype(np.int64) | is_tor.astype(np.int64) << 1
             | is_proxy.astype(np.int64) << 2 | private.astype(np.int64) << 3)
    key = (country_code * (len(names) + 1) + asn_code) << 4 | flags
    run = np.ones(len(v), dtype=bool)
    run[1:] = key[1:] != key[:-1]
    answers, which = np.unique(key[run], return_inverse=True)
    countries = tables.country.tolist()
    shared = []
    for k in answers.tolist():
        code, bits = divmod(k >> 4, len(names) + 1), k & 15
        country = countries[code[0] - 1] if code[0] else None
        asn = names[code[1] - 1] if code[1] else None
        shared.append(make_info(country, asn, bool(bits & 1), bool(bits & 2), bool(bits & 4), bool(bits & 8)))
    return SegmentsV4(v[run], [shared[i] for i in which.tolist()])


_lock = threading.Lock()
#: (key, the tables the key names by id, the segments) of the tables and lists built lately
_built: list[tuple[tuple[Any, ...], GeoTablesV4, SegmentsV4]] = []
_KEEP = 2


def segments_for(tables: GeoTablesV4, hosting_asns: frozenset[str], tor: RangeSet, proxy: RangeSet,
                 make_info: MakeInfo) -> SegmentsV4:
    """`build_segments`, once per database and list contents (the last `_KEEP` kept)."""
    key = (id(tables), hosting_asns, tor.v4_key(), proxy.v4_key(), make_info)
    with _lock:
        for known, held, segments in _built:
            if known == key and held is tables:
                return segments
        segments = build_segments(tables, hosting_asns, tor, proxy, make_info)
        _built.insert(0, (key, tables, segments))
        del _built[_KEEP:]
        return segments
