"""IP intelligence against geoip2fast's real bundled database and the shipped lists."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.features import ipintel
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


@pytest.mark.parametrize("ip", ["10.1.2.3", "192.168.0.1", "127.0.0.1", "100.64.0.1", "::1", "fe80::1", "fd00::5", "224.0.0.1"])
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
    import geoip2fast.geoip2fast as g  # the AS-name table lives in module globals

    names = set(g.mainListNamesASN)
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
    ipintel._geo_database.cache_clear()  # load the database file again, under the patch
    fresh = IpIntel.load(LISTS)
    fresh.lookup_many(pd.Series(["8.8.8.8", "2a01:4f8::1"]))
    assert fresh.lookup("52.1.2.3").is_hosting


def test_module_imports_nothing_from_engine_models_api_cli() -> None:
    src = Path(ipintel.__file__).read_text()
    for pkg in ("engine", "models", "api", "cli"):
        assert f"fengkong.{pkg}" not in src
