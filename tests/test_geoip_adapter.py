"""geoip2fast's private interface, as features/geoip_adapter.py reads it.

The adapter reads geoip2fast's module globals because no public call gives its
tables at the speed the feature store needs. These tests fail on a geoip2fast
release that changes what the adapter relies on: the pin in pyproject.toml, the
names and shapes of the globals, and the flat tables against geoip2fast's own
public ``lookup`` on thousands of addresses.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement

from fengkong.features import geoip_adapter, ipintel
from fengkong.features.geoip_adapter import (
    ASN_GLOBALS,
    COUNTRY_GLOBALS,
    INSTANCE_ATTRIBUTES,
    PRIVATE_COUNTRY_IDS,
    GeoTablesV4,
    geo_database,
    geo_tables_v4,
)
from fengkong.features.ipintel import IpIntel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def geo() -> Any:
    return geo_database()


@pytest.fixture(scope="module")
def tables(geo: Any) -> GeoTablesV4:
    t = geo_tables_v4(geo)
    assert t is not None, "geoip2fast's tables are no longer shaped as geoip_adapter.py reads them"
    return t


def test_installed_geoip2fast_is_inside_the_pinned_series() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if Requirement(d).name == "geoip2fast"]
    assert any(s.operator == "<" for s in req.specifier), f"no upper bound on a private interface: {req}"
    installed = importlib.metadata.version("geoip2fast")
    assert req.specifier.contains(installed), f"geoip2fast {installed} is outside {req}: check geoip_adapter.py"


def test_the_bundled_file_and_instance_attributes(geo: Any) -> None:
    import geoip2fast

    assert (Path(geoip2fast.__file__).parent / geoip_adapter.GEOIP_DATA_FILE).is_file()
    for name in INSTANCE_ATTRIBUTES:
        assert hasattr(geo, name), name
    assert (geo.is_loaded, geo.country, geo.asn, geo.city) == (True, True, True, False)
    assert geo.error_code_private_networks == "--"


@pytest.mark.parametrize("names", [COUNTRY_GLOBALS, ASN_GLOBALS], ids=["country", "asn"])
def test_the_private_globals_have_the_shapes_read(geo: Any, names: tuple[str, ...]) -> None:
    import geoip2fast.geoip2fast as g

    index, firsts, netlens, ids, labels = (getattr(g, name) for name in names)
    assert isinstance(index, list) and index[0] == 0 and index == sorted(index)
    assert index[-1] > 0xFFFFFFFF  # IPv6 ranges follow the IPv4 ones in the same table
    for column in (firsts, netlens, ids):
        assert isinstance(column, list) and len(column) == len(index)
    for r, chunk in enumerate(firsts):
        assert chunk[0] == index[r] and len(netlens[r]) == len(chunk) == len(ids[r])
    assert all(type(x) is int for x in firsts[0] + netlens[0] + ids[0])
    assert isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    if names is COUNTRY_GLOBALS:  # "CC:Country name"; the first PRIVATE_COUNTRY_IDS are special ranges
        assert all(x.count(":") == 1 for x in labels)
        codes = [x.split(":")[0] for x in labels]
        assert all(c.isdigit() for c in codes[:PRIVATE_COUNTRY_IDS]), codes[:PRIVATE_COUNTRY_IDS]
        assert codes[PRIVATE_COUNTRY_IDS - 1] == "99"  # "not found in database"
        assert all(c.isalpha() for c in codes[PRIVATE_COUNTRY_IDS:])  # ISO codes, and "ASIA"


def _public(geo: Any, ip: str) -> tuple[Any, ...]:
    """geoip2fast's public answer for an IPv4 address: country, range, private flag, AS name, AS range."""
    r = geo.lookup(ip)
    return r.country_code, r.cidr, r.is_private, r.asn_name, r.asn_cidr


def _cidr(first: int, last_or_end: int, *, end: bool) -> str:
    size = last_or_end - first + (0 if end else 1)
    return f"{ipaddress.IPv4Address(first)}/{32 - (size.bit_length() - 1)}"


def test_the_flat_tables_agree_with_geoip2fast_public_lookup(geo: Any, tables: GeoTablesV4) -> None:
    rng = np.random.default_rng(1202)
    pick = rng.integers(0, len(tables.first), 1_500)
    apick = rng.integers(0, len(tables.asn_first), 1_500)
    ints = np.concatenate([
        rng.integers(0, 2**32, 3_000),
        tables.first[pick], tables.last[pick], tables.last[pick] + 1,
        tables.asn_first[apick], tables.asn_end[apick] - 1,
        tables.first[tables.country_id < PRIVATE_COUNTRY_IDS],  # every special range
    ])
    ints = np.unique(np.clip(ints, 0, 2**32 - 1))
    pos = np.searchsorted(tables.first, ints, side="right") - 1
    apos = np.searchsorted(tables.asn_first, ints, side="right") - 1
    seen_private = seen_asn = not_found = 0
    for v, p, a in zip(ints.tolist(), pos.tolist(), apos.tolist()):
        country, cidr, is_private, asn_name, asn_cidr = _public(geo, str(ipaddress.IPv4Address(v)))
        cid = int(tables.country_id[p])
        if v > tables.last[p]:  # outside every country range
            assert (country, asn_name) == (geo.error_code_network_not_found, ""), v
            not_found += 1
            continue
        assert not tables.country_failed[cid]
        assert cidr == _cidr(int(tables.first[p]), int(tables.last[p]), end=False), v
        assert is_private == (cid < PRIVATE_COUNTRY_IDS), v
        want = country if len(country) == 2 and country.isalpha() else None
        assert tables.country[cid] == want, v
        # geoip2fast reports the AS range at or before the address, inside it or not
        assert asn_cidr == _cidr(int(tables.asn_first[a]), int(tables.asn_end[a]), end=True), v
        assert tables.asn_names[tables.asn_id[a]] == (asn_name or None), v
        seen_private += is_private
        seen_asn += bool(asn_name) and v < tables.asn_end[a]
    assert len(ints) > 9_000 and seen_private > 100 and seen_asn > 5_000 and not_found > 0


def test_a_changed_private_interface_falls_back_to_the_public_lookup(
    geo: Any, tables: GeoTablesV4, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that renames or reshapes the globals must not give wrong answers: the
    adapter returns None and IpIntel answers through geoip2fast's public lookup."""
    import geoip2fast.geoip2fast as g

    ips = pd.Series(["52.1.2.3", "8.8.8.8", "10.0.0.1", "185.220.101.33", "199.249.230.1", "2a01:4f8::1"])
    intel = IpIntel.load(ROOT / "rules" / "lists")
    want = intel.lookup_many(ips)
    assert want["asn"].notna().sum() >= 4

    monkeypatch.delattr(g, "mainListIDASN")
    assert geo_tables_v4(geo) is None
    monkeypatch.undo()

    monkeypatch.setattr(g, "mainIndex", [1, *g.mainIndex[1:]])  # the index no longer starts at 0
    assert geo_tables_v4(geo) is None
    fallback = IpIntel.load(ROOT / "rules" / "lists")
    assert fallback._v4 is None
    pd.testing.assert_frame_equal(fallback.lookup_many(ips), want)
    assert [fallback.lookup(ip) for ip in ips] == [intel.lookup(ip) for ip in ips]
    monkeypatch.undo()
    assert geo_tables_v4(geo) is not None


def test_ipintel_reexports_the_adapter() -> None:
    assert ipintel.GEOIP_DATA_FILE == geoip_adapter.GEOIP_DATA_FILE
    assert ipintel.geo_tables_v4 is geoip_adapter.geo_tables_v4
