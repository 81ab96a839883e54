"""IP intelligence against geoip2fast's real bundled database and the shipped lists."""

from __future__ import annotations

import functools
import ipaddress
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fengkong.features import geoip_adapter, ip_addresses, ip_lists, ipintel
from fengkong.features.ipintel import (
    UNKNOWN,
    IpInfo,
    IpIntel,
    IpListError,
    load_name_list,
    load_range_list,
    subnet_of,
    subnets_of,
)

LISTS = Path(__file__).resolve().parents[1] / "rules" / "lists"


@pytest.fixture(scope="module")
def intel() -> IpIntel:
    return IpIntel.load(LISTS)


@pytest.mark.parametrize(
    ("ip", "country", "asn"),
    [
        ("52.1.2.3", "US", "AMAZON-AES"),
        ("8.8.8.8", "US", "GOOGLE"),
        ("1.1.1.1", "AU", "CLOUDFLARENET"),
        ("114.114.114.114", "CN", "ZEN-ECN"),
        ("185.220.101.1", "DE", "Stiftung Erneuerbare Freiheit"),
        ("2a01:4f8::1", "DE", "Hetzner Online GmbH"),
        # geoip2fast's IPv4-only file reports Andorra as private ('--'); we must not
        ("89.150.6.113", "AD", "Andorra Telecom, S.a.u."),
    ],
)
def test_country_and_asn_of_known_addresses(intel: IpIntel, ip: str, country: str, asn: str) -> None:
    info = intel.lookup(ip)
    assert (info.country, info.asn, info.is_private) == (country, asn, False)


def test_aws_address_is_hosting_and_google_dns_is_not(intel: IpIntel) -> None:
    assert intel.lookup("52.1.2.3").is_hosting
    assert intel.lookup("2600:1f18::1").is_hosting  # AWS IPv6
    assert not intel.lookup("8.8.8.8").is_hosting  # 'GOOGLE' is deliberately not listed


def test_tor_range_address_is_tor(intel: IpIntel) -> None:
    info = intel.lookup("185.220.101.33")
    assert info.is_tor and not info.is_hosting and not info.is_listed_proxy
    assert intel.lookup("2a0b:f4c0:1::1").is_tor
    assert not intel.lookup("185.220.104.1").is_tor  # just past 185.220.100.0/22


@pytest.mark.parametrize("ip", ["113.110.1.1", "223.104.1.1"])
def test_residential_chinese_isp_is_none_of_these(intel: IpIntel, ip: str) -> None:
    info = intel.lookup(ip)
    assert info.country == "CN"
    assert info.asn in {"Chinanet", "China Mobile communications corporation"}
    assert not (info.is_hosting or info.is_tor or info.is_listed_proxy or info.is_private)


def test_the_api_tests_plain_payments_come_from_chinese_broadband(intel: IpIntel) -> None:
    """The API tests' `payment()` must not trip a geography rule by its IP alone: with a
    foreign address among its draws, which test saw one would depend on how many
    payments ran before it."""
    from api_fixtures import payment

    for _ in range(20_000):
        info = intel.lookup(payment()["ip"])
        assert info.country == "CN" and not (info.is_hosting or info.is_tor or info.is_listed_proxy), info


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.0.1", "127.0.0.1", "100.64.0.1", "::1", "fe80::1", "fd00::5",
                                "224.0.0.1"])
def test_private_address_has_no_country(intel: IpIntel, ip: str) -> None:
    assert intel.lookup(ip) == IpInfo(None, None, False, False, False, True)


def test_ipv4_mapped_ipv6_is_read_as_ipv4(intel: IpIntel) -> None:
    assert intel.lookup("::ffff:52.1.2.3") == intel.lookup("52.1.2.3")


def test_asn_is_dropped_when_geoip_range_does_not_cover_the_address(intel: IpIntel) -> None:
    # geoip2fast's v4+v6 file answers 'THE-METROHEALTH-SYSTEM' (199.249.228.0/24) here
    info = intel.lookup("199.249.230.1")
    assert info.asn is None and info.country == "CA" and info.is_tor


def test_listed_proxy_seed_and_malformed_address(intel: IpIntel) -> None:
    assert intel.lookup("203.0.113.77").is_listed_proxy
    assert intel.lookup("198.51.100.7").is_listed_proxy
    assert not intel.lookup("198.51.100.8").is_listed_proxy
    assert intel.lookup("not an ip") == UNKNOWN
    assert intel.lookup("") == UNKNOWN


def test_every_hosting_name_exists_in_the_bundled_database(intel: IpIntel) -> None:
    tables = geoip_adapter.geo_tables_v4(intel._geo)  # every AS name of the database, IPv4 and IPv6
    assert tables is not None
    names = set(tables.asn_names.tolist())
    missing = sorted(n for n in intel.hosting_asns if n not in names)
    assert not missing, f"names geoip2fast never reports: {missing}"
    assert len(intel.hosting_asns) >= 40


def test_list_parsing_errors_name_file_and_line(tmp_path: Path) -> None:
    ranges = tmp_path / "ranges.txt"
    ranges.write_text("# header\n\n10.0.0.0/8  # fine\n185.220.101.1/24\n")
    with pytest.raises(IpListError, match=r"ranges\.txt:4: .*185\.220\.101\.1/24") as err:
        load_range_list(ranges)
    assert err.value.line_no == 4 and err.value.path == ranges

    ranges.write_text("1.2.3.4\nexample.com\n")
    with pytest.raises(IpListError, match=r"ranges\.txt:2: not an IP address"):
        load_range_list(ranges)

    names = tmp_path / "names.txt"
    names.write_text("OVH SAS\n\n# c\nAS16509  # amazon\n")
    with pytest.raises(IpListError, match=r"names\.txt:4: looks like an AS number"):
        load_name_list(names)


def test_load_reports_the_bad_list_file(tmp_path: Path) -> None:
    for name in (ipintel.HOSTING_ASNS_FILE, ipintel.TOR_EXIT_RANGES_FILE, ipintel.PROXY_IPS_FILE):
        (tmp_path / name).write_text((LISTS / name).read_text())
    (tmp_path / ipintel.PROXY_IPS_FILE).write_text("203.0.113.0/24\n203.0.113.300\n")
    with pytest.raises(IpListError, match=r"proxy_ips\.txt:2:"):
        IpIntel.load(tmp_path)


def test_range_set_bisects_merged_ranges(tmp_path: Path) -> None:
    f = tmp_path / "r.txt"
    f.write_text("10.0.0.0/24\n10.0.1.0/24\n10.0.0.128/25\n192.0.2.9\n2001:db8::/32\n")
    rs = load_range_list(f)
    assert len(rs) == 3  # two /24s and the /25 merge into one range
    for ip in ("10.0.0.0", "10.0.1.255", "192.0.2.9", "2001:db8:ffff::1"):
        assert ip in rs
    for ip in ("9.255.255.255", "10.0.2.0", "192.0.2.8", "192.0.2.10", "2001:db9::", "::ffff:10.0.0.1x"):
        assert ip not in rs


def test_subnet_of() -> None:
    assert subnet_of("113.110.1.1") == "113.110.1.0/24"
    assert subnet_of("::ffff:113.110.1.1") == "113.110.1.0/24"
    assert subnet_of("2408:4000:1:2:3:4:5:6") == "2408:4000:1:2::/64"
    assert subnet_of("2001:db8::1") == "2001:db8::/64"
    with pytest.raises(ValueError):
        subnet_of("300.1.1.1")


def test_subnets_of_matches_subnet_of() -> None:
    s = pd.Series(["1.2.3.4", "1.2.3.200", None, "2001:db8:0:7::9", "junk", "1.2.3.4"], index=list("abcdef"))
    out = subnets_of(s)
    assert list(out.index) == list("abcdef")
    assert out.tolist() == ["1.2.3.0/24", "1.2.3.0/24", None, "2001:db8:0:7::/64", None, "1.2.3.0/24"]


def test_lookup_many_equals_lookup_row_by_row(intel: IpIntel) -> None:
    rng = np.random.default_rng(20261101)
    v4 = [".".join(str(x) for x in rng.integers(0, 256, 4)) for _ in range(400)]
    fixed = ["52.1.2.3", "185.220.101.1", "10.0.0.1", "203.0.113.5", "2a01:4f8::1", "bad", None]
    ips = pd.Series(np.array(v4 + fixed, dtype=object)[rng.integers(0, len(v4) + len(fixed), 3000)])
    ips.index = ips.index * 10 + 7
    df = intel.lookup_many(ips)
    assert list(df.columns) == list(ipintel.COLUMNS)
    assert df.index.equals(ips.index)
    for idx, ip in ips.items():
        assert IpInfo(**df.loc[idx].to_dict()) == intel.lookup(ip), ip
    assert df["is_hosting"].any() and df["is_tor"].any() and df["is_private"].any()
    assert df["is_hosting"].dtype == bool


def test_no_network_access(monkeypatch: pytest.MonkeyPatch, intel: IpIntel) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    geoip_adapter.geo_database.cache_clear()  # load the database file again, under the patch
    fresh = IpIntel.load(LISTS)
    fresh.lookup_many(pd.Series(["8.8.8.8", "2a01:4f8::1"]))
    assert fresh.lookup("52.1.2.3").is_hosting


def test_modules_import_nothing_from_engine_models_api_cli() -> None:
    for module in (ipintel, ip_addresses, ip_lists, geoip_adapter):
        src = Path(module.__file__ or "").read_text()
        for pkg in ("engine", "models", "api", "cli", "training", "replay"):
            assert f"fengkong.{pkg}" not in src, (module.__name__, pkg)


# ---------------------------------------------------------------------------
# the vectorised IPv4 path equals the scalar path


def _scalar_frame(intel: IpIntel, ips: pd.Series) -> pd.DataFrame:
    """What lookup_many must return, built from the scalar reference `_lookup`."""
    infos = [UNKNOWN if pd.isna(ip) else intel._lookup(ip) for ip in ips.tolist()]
    data = {
        name: pd.Series([getattr(i, name) for i in infos], index=ips.index,
                        dtype=object if name in ("country", "asn") else bool)
        for name in ipintel.COLUMNS
    }
    return pd.DataFrame(data, columns=list(ipintel.COLUMNS))


def _scalar_subnets(ips: pd.Series) -> list[str | None]:
    out: list[str | None] = []
    for ip in ips.tolist():
        try:
            out.append(subnet_of(ip))
        except ValueError:
            out.append(None)
    return out


def _v4(ints: np.ndarray) -> list[str]:
    ints = np.asarray(ints, dtype=np.int64)
    return [f"{a}.{b}.{c}.{d}" for a, b, c, d in zip(ints >> 24, (ints >> 16) & 255, (ints >> 8) & 255, ints & 255)]


def _private_edges() -> np.ndarray:
    """Both edges (and their neighbours) of every special IPv4 range ipaddress or IANA names."""
    nets = [ipaddress.IPv4Network(n) for n in ip_addresses.IANA_SPECIAL_V4]
    consts = ipaddress.IPv4Address._constants  # type: ignore[attr-defined]
    for value in vars(consts).values():
        nets += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, ipaddress.IPv4Network)]
    edges = []
    for net in nets:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        edges += [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1]
    edges += (ip_addresses.PRIVATE_V4_STARTS - 1).tolist() + ip_addresses.PRIVATE_V4_STARTS.tolist()
    return np.unique(np.clip(np.array(edges, dtype=np.int64), 0, 0xFFFFFFFF))


def _malformed(rng: np.random.Generator, valid: list[str], k: int) -> list[object]:
    """Near-miss IPv4 text: every way ipaddress rejects (or accepts) digits and dots, and more."""
    fixed: list[object] = [
        "", ".", "...", "1.2.3", "1.2.3.4.5", "1..3.4", ".1.2.3", "1.2.3.", "01.2.3.4", "1.02.3.4", "1.2.3.00",
        "0.0.0.0", "00.0.0.0", "256.1.1.1", "1.1.1.256", "999.999.999.999", "1000.1.1.1", "1.2.3.0004",
        "255.255.255.255", "255.255.255.2555", "1.2.3.4/24", "1.2.3.4 ", " 1.2.3.4", "\t8.8.8.8\n", "1.2.3.4\x00",
        "1.2\x00.3.4", "１.2.3.4", "1.2.3.٤", "1.2.3.4a", "a.b.c.d", "1,2,3,4", "1.2.3.-4", "+1.2.3.4",
        "0x7f.0.0.1", "127.1", "2130706433", "::", "::1", "::ffff:8.8.8.8", "::ffff:10.0.0.1", "::ffff:1.2.3.256",
        "2a01:4f8::1", "2600:1f18::1", "fe80::1%eth0", "1.2.3.4%1", "111.222.333.444", "12.34.56.789",
        "not an ip", "8.8.8.8\n", 3405803777, 8.8, b"8.8.8.8", None, np.nan,
    ]
    out: list[object] = list(fixed)
    for s in rng.choice(valid, k):
        op = rng.integers(0, 6)
        pos = int(rng.integers(0, len(s) + 1))
        if op == 0:  # insert a digit or a dot
            s = s[:pos] + str(rng.choice(list("0123456789."))) + s[pos:]
        elif op == 1 and len(s) > 1:  # drop a character
            s = s[:pos] + s[pos + 1:]
        elif op == 2:  # a leading zero on some octet
            parts = s.split(".")
            j = int(rng.integers(0, 4))
            parts[j] = "0" + parts[j]
            s = ".".join(parts)
        elif op == 3:  # an octet past 255
            parts = s.split(".")
            parts[int(rng.integers(0, 4))] = str(int(rng.integers(256, 1000)))
            s = ".".join(parts)
        elif op == 4:
            s = s + str(rng.integers(0, 10))
        else:  # IPv4-mapped IPv6
            s = "::ffff:" + s
        out.append(s)
    return out


def test_ipv4_ints_reads_exactly_what_ipaddress_reads() -> None:
    rng = np.random.default_rng(7)
    valid = _v4(rng.integers(0, 2**32, 20_000))
    values = valid + _malformed(rng, valid, 50_000)
    ints, state = ipintel.ipv4_ints(np.array(values, dtype=object))
    for v, i, st in zip(values, ints.tolist(), state.tolist()):
        try:
            addr = ipaddress.ip_address(v) if isinstance(v, str) else None
        except ValueError:
            addr = None
        if st == ipintel.V4_VALID:
            assert isinstance(addr, ipaddress.IPv4Address) and int(addr) == i, v
        elif st == ipintel.V4_INVALID:
            assert addr is None and isinstance(v, str) and ip_addresses.parse_ip(v) is None, v
        else:  # left to the scalar path: never plain dotted-quad IPv4 text
            assert i == -1
            assert not (isinstance(v, str) and set(v) <= set("0123456789.") and 1 <= len(v) <= 15), v
    assert (state == ipintel.V4_VALID).sum() >= 20_000


def test_private_table_equals_ipaddress() -> None:
    rng = np.random.default_rng(11)
    ints = np.concatenate([rng.integers(0, 2**32, 200_000), _private_edges(), [0, 2**32 - 1]])
    got = ipintel.ipv4_is_private(ints)
    want = [ip_addresses.is_private_address(ipaddress.IPv4Address(i)) for i in ints.tolist()]
    assert got.tolist() == want
    # not just "not is_global": Python 3.11 calls multicast (224.0.0.0/4) global; the scalar path does not
    assert ipintel.ipv4_is_private(np.array([int(ipaddress.IPv4Address("224.0.0.1"))]))[0]


def test_range_set_contains_many_equals_contains(intel: IpIntel) -> None:
    rng = np.random.default_rng(3)
    for ranges in (intel.tor_ranges, intel.proxy_ranges):
        starts, ends = ranges._np4
        near = np.concatenate([starts - 1, starts, ends, ends + 1])
        ints = np.clip(np.concatenate([rng.integers(0, 2**32, 20_000), near]), 0, 2**32 - 1)
        assert ranges.contains_many(ints).tolist() == [ranges.contains(4, i) for i in ints.tolist()]
    empty = ipintel.RangeSet([])
    assert not empty.contains_many(np.array([0, 5, 2**32 - 1])).any()


def test_lookup_many_and_subnets_of_equal_scalar_on_100k_addresses(intel: IpIntel) -> None:
    tables = geoip_adapter.geo_tables_v4(intel._geo)
    assert tables is not None  # the vectorised path is the one under test
    rng = np.random.default_rng(20261125)
    # the edges of geoip2fast's country and AS ranges, where the containment checks decide
    pick = rng.integers(0, len(tables.first), 3_000)
    apick = rng.integers(0, len(tables.asn_first), 3_000)
    geo_edges = np.concatenate([
        tables.first[pick], tables.last[pick], tables.last[pick] + 1,
        tables.asn_first[apick], tables.asn_end[apick] - 1, tables.asn_end[apick],
    ])
    ints = np.clip(np.concatenate([rng.integers(0, 2**32, 100_000), _private_edges(), geo_edges]), 0, 2**32 - 1)
    known = [
        "52.1.2.3", "8.8.8.8", "1.1.1.1", "114.114.114.114", "185.220.101.1", "89.150.6.113", "185.220.101.33",
        "185.220.104.1", "113.110.1.1", "223.104.1.1", "199.249.230.1", "203.0.113.77", "198.51.100.7",
        "198.51.100.8", "10.1.2.3", "192.168.0.1", "127.0.0.1", "100.64.0.1", "224.0.0.1",
        "2a01:4f8::1", "2600:1f18::1", "2a0b:f4c0:1::1", "::1", "fe80::1", "fd00::5", "::ffff:52.1.2.3",
    ]
    valid = _v4(ints)
    values = valid + known + _malformed(rng, valid[:1000], 3_000)
    ips = pd.Series(np.array(values, dtype=object)[rng.permutation(len(values))])
    ips = pd.concat([ips, ips.iloc[:5_000]])  # repeats
    ips.index = np.arange(len(ips)) * 3 + 1
    got = intel.lookup_many(ips)
    pd.testing.assert_frame_equal(got, _scalar_frame(intel, ips))
    assert got["asn"].notna().sum() > 50_000 and got["is_hosting"].any() and got["is_tor"].any()
    assert got["is_private"].sum() > 10_000 and got["is_listed_proxy"].any()
    # the same through a pandas string column (what the simulation and the parquet reader give)
    as_str = ips.where(ips.map(lambda v: isinstance(v, str)), None).astype("str")
    pd.testing.assert_frame_equal(intel.lookup_many(as_str), _scalar_frame(intel, as_str))

    subnets = subnets_of(ips)
    assert subnets.index.equals(ips.index) and subnets.dtype == object and subnets.name == "subnet"
    assert subnets.tolist() == _scalar_subnets(ips)


def test_the_live_lookup_equals_the_reference_on_100k_addresses(intel: IpIntel) -> None:
    """`lookup` (the decision path: flat tables for plain IPv4) against `_lookup`
    (ipaddress and geoip2fast), on random addresses, range edges and malformed text."""
    tables = geoip_adapter.geo_tables_v4(intel._geo)
    assert tables is not None
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(tables.first), 2_000)
    apick = rng.integers(0, len(tables.asn_first), 2_000)
    edges = np.concatenate([tables.first[pick], tables.last[pick], tables.last[pick] + 1,
                            tables.asn_first[apick], tables.asn_end[apick] - 1, tables.asn_end[apick]])
    ints = np.clip(np.concatenate([rng.integers(0, 2**32, 100_000), _private_edges(), edges]), 0, 2**32 - 1)
    valid = _v4(ints)
    odd = ["01.2.3.4", "1.2.3.4 ", " 1.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", "::ffff:52.1.2.3", "2a01:4f8::1",
           "", "x", "1.2.3.04", "0.0.0.0", "255.255.255.255"]
    fresh = IpIntel(geo=intel._geo, hosting_asns=intel.hosting_asns, tor_ranges=intel.tor_ranges,
                    proxy_ranges=intel.proxy_ranges)
    # non-strings too: an event's ip may be anything until the API validates it
    infos = {ip: fresh.lookup(ip) for ip in valid + odd + _malformed(rng, valid[:500], 2_000)}  # type: ignore[arg-type]
    assert all(info == intel._lookup(ip) for ip, info in infos.items())  # type: ignore[arg-type]
    assert sum(i.asn is not None for i in infos.values()) > 50_000 and any(i.is_hosting for i in infos.values())
    assert any(i.is_private for i in infos.values()) and any(i.is_tor for i in infos.values())
    for ip in valid[:20_000] + odd:  # the subnet's text shortcut for plain IPv4, against ipaddress
        addr = ip_addresses.parse_ip(ip)
        if addr is None:
            with pytest.raises(ValueError):
                subnet_of(ip)
        else:
            assert subnet_of(ip) == ip_addresses.subnet_of_address(addr)


def test_lookup_many_without_usable_tables_is_the_scalar_path(intel: IpIntel, monkeypatch: pytest.MonkeyPatch) -> None:
    ips = pd.Series(["52.1.2.3", "10.0.0.1", "bad", None, "2a01:4f8::1", "185.220.101.33"])
    monkeypatch.setattr(ipintel, "geo_tables_v4", lambda geo: None)
    pd.testing.assert_frame_equal(intel.lookup_many(ips), _scalar_frame(intel, ips))


def test_the_live_lookup_at_the_edges_of_its_16_bit_index(intel: IpIntel) -> None:
    """`_lookup_v4` bisects only the table entries of the address's /16 (`ScalarTablesV4`):
    the first and last address of a /16, and the range edges inside the busiest /16s,
    read as the reference does."""
    v4 = intel._v4
    assert v4 is not None
    rng = np.random.default_rng(16)
    prefixes = rng.choice(65_536, 4_000, replace=False)
    counts = np.diff(np.asarray(v4.first_at16))
    busiest = np.argsort(counts)[-3:]  # /16s holding thousands of country ranges
    tables = geoip_adapter.geo_tables_v4(intel._geo)
    assert tables is not None
    inside = tables.first[(tables.first >> 16) == busiest[-1]]
    ints = np.concatenate([
        prefixes << 16, (prefixes << 16) - 1, ((prefixes + 1) << 16) - 1,
        busiest << 16, ((busiest + 1) << 16) - 1, inside, inside - 1,
    ])
    ints = np.clip(ints, 0, 2**32 - 1)
    fresh = IpIntel(geo=intel._geo, hosting_asns=intel.hosting_asns, tor_ranges=intel.tor_ranges,
                    proxy_ranges=intel.proxy_ranges)
    for ip in _v4(ints):
        assert fresh.lookup(ip) == intel._lookup(ip), ip


def test_the_live_lookup_at_the_edges_of_the_listed_ranges(intel: IpIntel, tmp_path: Path) -> None:
    """`_lookup_v4` bisects the Tor and proxy lists' IPv4 ranges itself (`RangeSet.ranges`):
    the first and last address of every range and their neighbours, in the shipped lists and
    in lists of adjacent and single-address ranges, read as the reference does, through
    `lookup` and `lookup_with_subnet` alike."""
    (tmp_path / "tor.txt").write_text("10.0.0.0/31\n10.0.0.2/32\n52.1.2.0/24\n1.0.0.0/8\n")
    (tmp_path / "proxy.txt").write_text("52.1.2.3\n52.1.3.0/30\n255.255.255.255\n0.0.0.0/32\n")
    made = (ip_lists.load_range_list(tmp_path / "tor.txt"), ip_lists.load_range_list(tmp_path / "proxy.txt"))
    for tor, proxy in ((intel.tor_ranges, intel.proxy_ranges), made):
        fresh = IpIntel(geo=intel._geo, hosting_asns=intel.hosting_asns, tor_ranges=tor, proxy_ranges=proxy)
        starts = [s for ranges in (tor, proxy) for s in ranges.ranges(4)[0]]
        ends = [e for ranges in (tor, proxy) for e in ranges.ranges(4)[1]]
        ints = np.clip(np.array([v + d for v in starts + ends for d in (-1, 0, 1)], dtype=np.int64), 0, 2**32 - 1)
        flagged = 0
        for ip in _v4(ints):
            expected = fresh._lookup(ip)
            value = int(ipaddress.ip_address(ip))
            assert (expected.is_tor, expected.is_listed_proxy) == (tor.contains(4, value), proxy.contains(4, value))
            assert fresh.lookup(ip) == expected and fresh.lookup_with_subnet(ip) == (expected, subnet_of(ip)), ip
            flagged += expected.is_tor or expected.is_listed_proxy
        assert flagged >= len(starts)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.text(alphabet="0123456789.", max_size=17),
    st.lists(st.integers(0, 999).map(str) | st.sampled_from(["", "00", "01", "+1", " 1", "1a", "\u0661", "1\x00"]),
             min_size=3, max_size=5).map(".".join),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *[st.integers(0, 255)] * 4)))
def test_the_ipv4_fast_path_answers_what_the_reference_lookup_does(text: str) -> None:
    """`lookup`/`lookup_with_subnet` read dotted-quad text with inet_pton (plain IPv4: no
    leading zeros, four octets up to 255, which is `IPV4_TEXT`); every other text goes the
    reference way. Both must answer as `_lookup` and `subnet_of` do."""
    from fengkong.events import IPV4_TEXT

    intel = _fuzz_intel()
    try:
        subnet = subnet_of(text)
    except ValueError:
        subnet = None
    expected = intel._lookup(text)
    assert intel._lookup_one(text) == expected
    if subnet is None:
        with pytest.raises(ValueError):
            intel._lookup_with_subnet(text)
    else:
        assert intel._lookup_with_subnet(text) == (expected, subnet)
    try:
        socket.inet_pton(socket.AF_INET, text)
        pton = True
    except (OSError, ValueError):
        pton = False
    assert pton == bool(IPV4_TEXT.fullmatch(text))


@functools.cache
def _fuzz_intel() -> IpIntel:
    return IpIntel.load(LISTS)  # once: hypothesis' examples cannot take the fixture
