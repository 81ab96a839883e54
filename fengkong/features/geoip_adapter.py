"""The geoip2fast adapter: the only module that knows how geoip2fast stores its data.

geoip2fast's public API answers one address at a time (``GeoIP2Fast.lookup``),
too slow for the offline twin's columns and for the online store's per-event
lookup. No public call exposes its tables, so this module reads them from
geoip2fast's *private* interface and flattens them into sorted numpy arrays once
per loaded database. Everything private it relies on is named here, in one place:

- module globals of ``geoip2fast.geoip2fast``, set when a database loads
  (:data:`COUNTRY_GLOBALS`, :data:`ASN_GLOBALS`): a two-level index, the first
  address of each chunk in ``mainIndex`` and per chunk the first address, the
  prefix length and the name id of each range (lists of lists of ints), the
  names in ``mainListNamesCountry`` (``"CC:Country name"``) and
  ``mainListNamesASN``;
- a range ``(first, netlen)`` covers ``first .. first + 2**(32 - netlen) - 1``
  for IPv4 (geoip2fast's ``numIPsv4``), and country ids below
  :data:`PRIVATE_COUNTRY_IDS` are its private/reserved entries, reported as
  ``error_code_private_networks`` (its ``_country_lookup``);
- the instance attributes ``is_loaded``, ``country``, ``asn``, ``city`` and
  ``error_code_private_networks`` (:data:`INSTANCE_ATTRIBUTES`);
- the name of the database file inside the package (:data:`GEOIP_DATA_FILE`),
  and that importing geoip2fast sets ``PYTHONWARNINGS=ignore`` (undone here).

pyproject.toml pins geoip2fast to the series this was checked against, and
tests/test_geoip_adapter.py fails on a release that changes any of it: it checks
the names and shapes, and the flat tables against geoip2fast's public
``lookup`` on thousands of addresses. If the tables are not shaped as expected,
:func:`geo_tables_v4` returns None and callers fall back to the public lookup
(slower, never wrong).

geoip2fast keeps its tables in module globals, so one process holds one
database: :func:`geo_database` loads it once per process. Do not construct
another ``GeoIP2Fast`` in-process.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fengkong.features.ip_lists import IpIntelError

__all__ = [
    "ASN_GLOBALS",
    "COUNTRY_GLOBALS",
    "GEOIP_DATA_FILE",
    "INSTANCE_ATTRIBUTES",
    "PRIVATE_COUNTRY_IDS",
    "GeoTablesV4",
    "ScalarTablesV4",
    "geo_database",
    "geo_tables_v4",
]

#: The bundled geoip2fast file used: country + AS name, IPv4 and IPv6 (private: a file name in its package).
GEOIP_DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"

#: Private module globals of ``geoip2fast.geoip2fast`` read for the country ranges:
#: index, first address, prefix length, country id per range, then the id -> "CC:Name" table.
COUNTRY_GLOBALS = ("mainIndex", "mainListFirstIP", "mainListNetlength", "mainListIDCountryCodes",
                   "mainListNamesCountry")
#: The same for the AS ranges, ending with the id -> AS name table.
ASN_GLOBALS = ("mainIndexASN", "mainListFirstIPASN", "mainListNetlengthASN", "mainListIDASN", "mainListNamesASN")
#: Attributes of a loaded ``GeoIP2Fast`` read here (set by its private loader, not documented).
INSTANCE_ATTRIBUTES = ("is_loaded", "country", "asn", "city", "error_code_private_networks")
#: Country ids below this are geoip2fast's private/reserved entries (its ``_country_lookup``).
PRIVATE_COUNTRY_IDS = 16

_geo_lock = threading.Lock()


@functools.cache
def geo_database() -> Any:
    """geoip2fast loaded from its own bundled file, once per process; never updated.

    Loading the file by path (not geoip2fast's default search) keeps lookups
    offline and on the database this code was tested with.
    """
    with _geo_lock:
        saved = os.environ.get("PYTHONWARNINGS")
        import geoip2fast  # its import sets PYTHONWARNINGS=ignore for the whole process: undone below

        if saved is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved
        path = Path(geoip2fast.__file__).parent / GEOIP_DATA_FILE
        if not path.is_file():
            raise IpIntelError(f"geoip2fast's bundled database is missing: {path}")
        return geoip2fast.GeoIP2Fast(geoip2fast_data_file=str(path), verbose=False)


@dataclass(frozen=True, slots=True)
class GeoTablesV4:
    """geoip2fast's IPv4 tables as flat sorted numpy arrays (see `geo_tables_v4`).

    One ``np.searchsorted`` over these answers a whole column of addresses as
    geoip2fast's own two-level bisection would, address by address.
    """

    first: np.ndarray  # int64: first address of each country range, ascending
    last: np.ndarray  # int64: its last address (first + 2**(32 - netlen) - 1)
    country_id: np.ndarray  # intp: index into country / country_failed
    country: np.ndarray  # object, per country id: what `IpIntel._lookup` reports (str or None)
    country_failed: np.ndarray  # bool, per country id: geoip2fast's own country lookup raises
    asn_first: np.ndarray  # int64: first address of each AS range, ascending
    asn_end: np.ndarray  # int64: one past its last address, as `network_contains` reads the asn_cidr
    asn_id: np.ndarray  # intp: index into asn_names
    asn_names: np.ndarray  # object, per AS id: the name, None where empty


_geo_tables_lock = threading.Lock()
_geo_tables_cache: list[tuple[tuple[Any, ...], GeoTablesV4 | None]] = []


def geo_tables_v4(geo: Any) -> GeoTablesV4 | None:
    """Flatten the loaded geoip2fast database's IPv4 part, once per loaded database.

    geoip2fast 1.2 keeps a two-level index in module globals: ``mainIndex``
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
    if not isinstance(geo, g.GeoIP2Fast):
        return None
    try:
        # private: the instance attributes its loader sets, and the module globals holding the tables
        if not (geo.is_loaded and geo.country and geo.asn and not geo.city):
            return None
        key = (*(getattr(g, name) for name in COUNTRY_GLOBALS + ASN_GLOBALS), geo.error_code_private_networks)
    except AttributeError:
        return None
    with _geo_tables_lock:
        for k, tables in _geo_tables_cache:
            if len(k) == len(key) and all(a is b for a, b in zip(k, key)):  # the same loaded lists
                return tables
        try:
            tables = _flatten_geo(g, geo)
        except (TypeError, ValueError, IndexError, OverflowError):
            tables = None
        _geo_tables_cache[:] = [(key, tables)]  # one database per process
        return tables


def _flatten_chunks(index: list[int], firsts: list[list[int]], *columns: list[list[int]]) -> list[np.ndarray] | None:
    """The IPv4 prefix of a two-level geoip2fast table, or None if it is not one sorted list.

    ``index`` is the first address of each chunk, ``firsts`` the first address
    of each range per chunk, ``columns`` other per-range values, chunked alike.
    """
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


def _flatten_geo(g: Any, geo: Any) -> GeoTablesV4 | None:
    """`GeoTablesV4` from geoip2fast's module ``g`` (private globals) and loaded instance ``geo``."""
    *country_chunks, names_c = (getattr(g, name) for name in COUNTRY_GLOBALS)
    *asn_chunks, names_a = (getattr(g, name) for name in ASN_GLOBALS)
    country = _flatten_chunks(*country_chunks)
    asn = _flatten_chunks(*asn_chunks)
    if country is None or asn is None:
        return None
    first, netlen, cid = country
    a_first, a_netlen, aid = asn
    # outside these, geoip2fast's Python indexing (negative indices, numIPs lists) would need emulating
    if np.any((netlen < 0) | (netlen > 32)) or np.any((a_netlen < 0) | (a_netlen > 32)):
        return None
    if np.any((cid < 0) | (cid >= len(names_c))) or np.any((aid < 0) | (aid >= len(names_a))):
        return None
    country_val = np.empty(len(names_c), dtype=object)
    country_failed = np.zeros(len(names_c), dtype=bool)
    for i, entry in enumerate(names_c):  # as GeoIP2Fast._country_lookup, then IpIntel._lookup, read it
        try:
            cc, _name = entry.split(":")
        except (AttributeError, ValueError):
            country_failed[i] = True
            continue
        if i < PRIVATE_COUNTRY_IDS:
            cc = geo.error_code_private_networks
        country_val[i] = cc if len(cc) == 2 and cc.isalpha() else None
    asn_names = np.array([n if n else None for n in names_a], dtype=object)
    return GeoTablesV4(
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


class ScalarTablesV4:
    """`GeoTablesV4` shaped for one address at a time (`IpIntel._lookup_v4`, once per event).

    numpy is slow at one scalar (each call and each item read has overhead), so
    the big int columns are memoryviews of the same arrays (``.data``: no copy;
    an item reads as a Python int), the small per-id columns are lists, and
    ``bisect`` searches only the entries of the address's /16: ``first_at16[p]``
    is ``bisect_right(first, p << 16)``, so for an address of prefix ``p`` the
    insertion point lies in ``first_at16[p] .. first_at16[p + 1]``. See
    docs/benchmarks.md.
    """

    __slots__ = ("asn_end", "asn_first", "asn_first_at16", "asn_id", "asn_names", "country", "country_failed",
                 "country_id", "first", "first_at16", "last")

    def __init__(self, tables: GeoTablesV4) -> None:
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

