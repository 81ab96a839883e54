"""The online store's call and reply, checked at its public boundaries.

* Golden replies: a fixed sequence of events through a real Redis, and the raw
  values each kind of op returns (`FeatureResult.raw`), written by hand from what the
  definitions mean.
* A plain-Python oracle of the rolling windows, on arbitrary payment times and
  amounts (hypothesis): new entities, known ones, buckets that leave the window.
* The wire: what the store sends Redis for an event, captured as bytes from the
  socket and decoded by this file's own RESP and op-list readers, checked
  structurally against the script's header.
* The fast path that fills the features straight from the reply equals `assemble`
  of the raw values, on events of every type with entities missing, IPv6 and lists.
* The Python op classes and the Lua dispatch table name the same functions.
The twin test (tests/test_feature_twin.py) holds every feature equal to the offline
computation.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import struct
from datetime import date, timedelta
from typing import Any

import msgpack
import pytest
import redis
from eventgen import dense_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_online_store import CN, T0, pay

from fengkong.events import flat_to_dict, parse_event
from fengkong.features import keys
from fengkong.features.assemble import assemble, blank_features
from fengkong.features.errors import FeatureDefinitionError
from fengkong.features.lists import ListStore
from fengkong.features.online import OnlineStore, load_script
from fengkong.features.ops import OP_KINDS, Op, Opcode
from fengkong.features.rows import event_row, ts_us

ONBOARDED = "2026-08-01"


@pytest.fixture
def listed(store, redis_client):
    lists = ListStore(redis_client, store.lists, prefix=store.prefix)
    lists.add("blocked_ips", ["113.0.0.0/10"])
    lists.add("blocked_cards", ["c7"])
    lists.add("trusted_users", ["u3"])
    store.set_merchant_profile("m1", grade="A", single_limit_minor=300_000, daily_cap_minor=2_000_000,
                               onboarded_at=ONBOARDED)
    return store


def _holds(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    """``raw`` has ``expected``'s values at its names, of the same types (0, 0.0 and False differ)."""
    assert {name: (type(raw[name]), raw[name]) for name in expected} == {
        name: (type(value), value) for name, value in expected.items()}


# -- golden replies -------------------------------------------------------------------------
def test_golden_replies_of_every_op_kind(listed):
    store = listed
    card = dict(card="c7", user="u3", device="d1", ip="113.7.1.2", merchant="m1")
    first = store.process(pay(T0, amount="2800.00", **card)).raw
    second_at = T0 + timedelta(minutes=5)
    second = store.process(pay(second_at, amount="100.00", **card)).raw
    refund = store.process(pay(T0 + timedelta(minutes=6), typ="refund", amount="50.00", refers_to="x", **card))
    other = store.process(pay(T0 + timedelta(minutes=7), amount="10.00", card="c2", user="u4", device="d2",
                              ip="8.8.4.4", merchant="m1")).raw

    # P: the merchant's profile (its own limit wins over its grade's)
    profile = {"merchant.grade": "A", "merchant.single_limit_minor": 300_000,
               "merchant.onboarded_day": (date.fromisoformat(ONBOARDED) - date(1970, 1, 1)).days,
               "merchant.daily_cap_minor": 2_000_000, "merchant.anomaly": None}
    _holds(first, profile)

    # R: an entity's rings, first seen, moments and hour habit: all empty, then the first payment
    windows = ("10m", "1h", "24h", "7d")
    empty = {**{f"card.count_{w}": 0 for w in windows}, **{f"card.sum_{w}": 0.0 for w in windows},
             "card.declines_1h": 0, "card.first_seen_us": None,
             "card.merchant_count_30d": 0, "card.merchant_sum_30d": 0.0,
             "user.count_1h": 0, "user.sum_1h": 0.0, "user.count_30d": 0, "user.sum_30d": 0.0,
             "user.moments": (0, 0.0, 0.0), "user.hour_count": 0, "user.hour_total": 0,
             "merchant.count_24h": 0, "merchant.near_limit_count_24h": 0, "merchant.round_count_24h": 0}
    _holds(first, empty)
    once = {**{f"card.count_{w}": 1 for w in windows}, **{f"card.sum_{w}": 2800.0 for w in windows},
            "card.declines_1h": 0, "card.merchant_count_30d": 1, "card.merchant_sum_30d": 2800.0,
            "user.count_1h": 1, "user.sum_1h": 2800.0, "user.count_30d": 1, "user.sum_30d": 2800.0,
            "user.moments": (1, 280_000.0, 0.0), "user.hour_count": 1, "user.hour_total": 1,
            # 2,800.00 is within 10% under the 3,000.00 limit, a credit card, a round amount, by day
            "merchant.count_24h": 1, "merchant.sum_24h": 2800.0, "merchant.near_limit_count_24h": 1,
            "merchant.credit_count_24h": 1, "merchant.round_count_24h": 1, "merchant.night_count_24h": 0,
            "merchant.refund_sum_30d": 0.0}
    _holds(second, once)
    assert (second["card.first_seen_us"], second["user.first_seen_us"]) == (ts_us(T0), ts_us(T0))
    # R's ring of the last amounts (minor units): none, then the first payment's
    _holds(first, {"user.recent_amounts": (), "card.recent_amounts": ()})
    _holds(second, {"user.recent_amounts": (280_000,), "card.recent_amounts": (280_000,)})
    # N: each member's first use: 0 never used, then the first payment's time; None without one
    used = {f"{ns}.{x}_first_used_us": ts_us(T0) for ns in ("user", "card") for x in ("device", "ip", "country")}
    _holds(first, dict.fromkeys(used, 0))
    _holds(second, used)
    assert other["user.device_first_used_us"] == 0 and other["card.country_first_used_us"] == 0
    assert second_at.astimezone(CN).hour == 12 and T0.hour == 12  # one hour-of-day bucket for both

    # an outcome runs only the ops that count it, and gets no features
    assert refund.features == {}
    assert {name.split(".")[0] for name in refund.raw} == {"merchant"}
    assert refund.raw["merchant.first_seen_us"] == ts_us(T0)
    assert refund.raw["merchant.count_30d"] == 2 and refund.raw["merchant.refund_sum_30d"] == 0.0
    assert other["merchant.refund_sum_30d"] == 50.0 and other["merchant.sum_30d"] == 2900.0

    # D: distinct members in each window; S: whether this member was seen, and how many were
    _holds(first, {"card.distinct_devices_24h": 0, "device.distinct_cards_1h": 0, "device.distinct_cards_24h": 0,
                   "merchant.distinct_cards_24h": 0})
    seen_once = {"card.distinct_devices_24h": 1, "card.distinct_ips_24h": 1, "card.distinct_merchants_24h": 1,
                 "device.distinct_cards_1h": 1, "device.distinct_users_24h": 1, "ip.distinct_cards_1h": 1,
                 "merchant.distinct_cards_24h": 1,
                 "user.is_new_device": False, "user.devices_seen_90d": 1,
                 "user.is_new_country": False, "user.countries_seen_90d": 1}
    _holds(second, seen_once)
    _holds(first, {"user.is_new_device": True, "user.devices_seen_90d": 0})
    assert other["merchant.distinct_cards_24h"] == 1 and other["user.is_new_device"] is True

    # V: today's and this hour's volume; no baseline for a merchant first seen today
    volume = {"merchant.volume_today": 2800.0, "merchant.count_today": 1, "merchant.volume_hour": 2800.0,
              "merchant.count_hour": 1, "merchant.baseline_today_7d": None, "merchant.baseline_hour_7d": None,
              "merchant.baseline_count_today_7d": None, "merchant.baseline_today_28d": None,
              "merchant.baseline_hour_28d": None, "merchant.baseline_count_today_28d": None}
    _holds(second, volume)
    assert other["merchant.volume_today"] == 2900.0 and other["merchant.count_today"] == 2

    # T: the largest volume one card brought today, before this payment
    _holds(first, {"merchant.top_card_volume_today": 0.0})
    assert other["merchant.top_card_volume_today"] == 2900.0

    # L: list membership, IPv4 ranges included
    hits = {"lists.blocked_cards": True, "lists.blocked_ips": True, "lists.trusted_users": True,
            "lists.blocked_devices": False, "lists.trusted_cards": False}
    _holds(first, hits)
    assert (other["lists.blocked_cards"], other["lists.blocked_ips"], other["lists.trusted_users"]) == (
        False, False, False)


# -- the rolling windows against a plain-Python oracle --------------------------------------
_cards = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 3 * 86_400), st.integers(1, 500_000)), min_size=1, max_size=25))
def test_rolling_windows_equal_a_plain_count_of_earlier_payments(store, steps):
    """Payments of one card, in time order with gaps from none to days: each one's counts
    and sums per window are those of the earlier payments whose bucket is one of the
    window's (the event's bucket and the N-1 before it)."""
    card = f"h{next(_cards)}"
    windows = {"10m": (60, 10), "1h": (300, 12), "24h": (3600, 24), "7d": (21600, 28)}
    at = T0
    earlier: list[tuple[int, int]] = []  # (seconds since the epoch, amount in minor units)
    for gap, amount in steps:
        at += timedelta(seconds=gap)
        t = ts_us(at) // 1_000_000
        raw = store.process(pay(at, amount=f"{amount / 100:.2f}", card=card, user=None, device=None, ip=None,
                                merchant=f"m{card}")).raw
        for name, (res, n) in windows.items():
            inside = [a for s, a in earlier if t // res - n < s // res <= t // res]
            assert raw[f"card.count_{name}"] == len(inside), (name, earlier, t)
            assert raw[f"card.sum_{name}"] == sum(inside) / 100, (name, earlier, t)
        month = [a for s, a in earlier if t // 86_400 - 30 < s // 86_400]  # the merchant x card ring: 30 days
        assert (raw["card.merchant_count_30d"], raw["card.merchant_sum_30d"]) == (len(month), sum(month) / 100)
        earlier.append((t, amount))


# -- the wire -------------------------------------------------------------------------------
class _Recording(redis.UnixDomainSocketConnection):
    """A real connection that also keeps the bytes of every command it sends."""

    sent: list[bytes] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        data = command if isinstance(command, (bytes, bytearray)) else b"".join(command)
        _Recording.sent.append(bytes(data))
        super().send_packed_command(command, check_health)


def _resp_array(data: bytes) -> list[bytes]:
    """A RESP array of bulk strings (what a client sends), decoded."""
    assert data[:1] == b"*"
    head, _, rest = data.partition(b"\r\n")
    items = []
    for _ in range(int(head[1:])):
        size, _, rest = rest.partition(b"\r\n")
        assert size[:1] == b"$"
        n = int(size[1:])
        items.append(rest[:n])
        assert rest[n:n + 2] == b"\r\n"
        rest = rest[n + 2:]
    assert rest == b""
    return items


#: arguments after the opcode and key index, per opcode, as the script's header lists them
def _op_width(code: str, args: list[Any]) -> int:
    if code == "P":
        return 2 + 2 * args[0]
    if code == "R":
        i = 2
        for _ in range(args[1]):
            i += 3 + args[i + 2]
        i += 1 + 3 * args[i]  # the extra sections
        ngroups, i = args[i], i + 1
        if ngroups:  # the groups of sets: ts, then per group tag, nsets, (kind, member, legacy, nthr, thresholds) each
            i += 1
            for _ in range(ngroups):
                nsets, i = args[i + 1], i + 2
                for _ in range(nsets):
                    i += 4 + args[i + 3]
        return i + 1
    if code == "D":
        return 5 + args[4]
    return {"V": 5, "T": 4, "C": 8, "L": 3}[code]


def _ops(packed: bytes) -> list[tuple[str, int, list[Any]]]:
    items = msgpack.unpackb(packed)
    ops, i = [], 0
    while i < len(items):
        code, key_index = items[i], items[i + 1]
        width = _op_width(code, items[i + 2:])
        ops.append((code, key_index, items[i + 2:i + 2 + width]))
        i += 2 + width
    assert i == len(items)
    return ops


def _captured_call(redis_server, store: OnlineStore, event) -> tuple[list[bytes], Any]:
    pool = redis.ConnectionPool(connection_class=_Recording, path=redis_server.socket_path)
    wired = OnlineStore(redis.Redis(connection_pool=pool), ipintel=store.ipintel, lists=store.lists,
                        prefix=store.prefix)
    _Recording.sent.clear()
    result = wired.process(event)
    evalsha = [_resp_array(data) for data in _Recording.sent if data.startswith(b"*")]
    evalsha = [cmd for cmd in evalsha if cmd[0].upper() == b"EVALSHA"]
    assert len(evalsha) == 1  # one round trip
    return evalsha[0], result


def _unsqueezed(value: bytes, size: int) -> bytes:
    """An entity's state value of the format before, as its `size` doubles. A shorter
    value is squeezed (values of at most 1 kB were): the number of zero runs cut out
    (u16), each run's offset and length (u16, u16), then the other bytes in order."""
    if len(value) == 8 * size:
        return value
    (nruns,) = struct.unpack_from("<H", value, 0)
    literal = value[2 + 4 * nruns:]
    out, done, at = bytearray(), 0, 0
    for i in range(nruns):
        start, length = struct.unpack_from("<HH", value, 2 + 4 * i)
        out += literal[at:at + start - done] + bytes(length)
        at += start - done
        done = start + length
    return bytes(out + literal[at:])


def _squeezed(plain: bytes) -> bytes:
    """`plain` as the format before stored a value of at most 1 kB: its runs of 32 or more
    zero bytes cut out (`_unsqueezed` reads it back), or as it is if that is not shorter."""
    runs = [(m.start(), m.end() - m.start()) for m in re.finditer(rb"\x00{32,}", plain)]
    if not runs:
        return plain
    literal, at = bytearray(), 0
    for start, length in runs:
        literal += plain[at:start]
        at = start + length
    packed = struct.pack("<H", len(runs)) + b"".join(struct.pack("<HH", *r) for r in runs) + literal + plain[at:]
    return packed if len(packed) < len(plain) else plain


def _layout(args: list[Any]) -> tuple[int, list[tuple[int, int]], list[str]]:
    """(size in doubles, (buckets, record width) per ring, the other sections' codes) of an R op."""
    size, nrings = args[0], args[1]
    rings, i = [], 2
    for _ in range(nrings):
        n, _, ncounters = args[i:i + 3]
        rings.append((n, ncounters + 1))
        i += 3 + ncounters
    return size, rings, [args[i + 1 + 3 * j] for j in range(args[i])]


def _plain(value: bytes | None, args: list[Any]) -> bytes | None:
    return _plain_and_sets(value, args)[0]


def _set_groups(args: list[Any]) -> list[list[tuple[int, Any, str, list[Any]]]]:
    """An R op's groups of sets: (kind, member, the key it was kept in before, thresholds) per set."""
    i = 2
    for _ in range(args[1]):
        i += 3 + args[i + 2]
    i += 1 + 3 * args[i]
    ngroups, i, groups = args[i], i + 2, []
    for _ in range(ngroups):
        nsets, i, group = args[i + 1], i + 2, []
        for _ in range(nsets):
            group.append((args[i], args[i + 1], args[i + 2], args[i + 4:i + 4 + args[i + 3]]))
            i += 4 + args[i + 3]
        groups.append(group)
    return groups


def _set_names(args: list[Any]) -> list[tuple[int, str]]:
    """(kind, the key it was kept in before) of each set of an R op, in order."""
    return [(kind, legacy) for group in _set_groups(args) for kind, _, legacy, _ in group]


def _plain_and_sets(value: bytes | None, args: list[Any]) -> tuple[bytes | None, list[dict[bytes, Any]]]:
    """An entity's state value (the script's `op_state`, any format) as the `size` doubles
    the format before kept: each ring's header and its n slots (bucket b in slot b % n),
    then F, M, H and the whole K ring. Checks that a compact value holds each ring's
    buckets inside its window, in order, and nothing else (a ring of one bucket holds
    its record alone: the header is that record)."""
    if value is None:
        return None, []
    size, rings, codes = _layout(args)
    if value[:1] != b"\xfe":
        return _unsqueezed(value, size), []
    assert struct.unpack_from("<H", value, 1)[0] == size
    out, at = bytearray(), 3
    for n, width in rings:
        (k,) = struct.unpack_from("<H", value, at)
        at += 2
        w8 = width * 8
        section = bytearray((1 + n) * w8)
        if k:
            section[:w8] = value[at:at + w8]  # the header; one record is its own header
            (last,) = struct.unpack_from("<d", value, at)
            at += w8 if k > 1 else 0
            previous = -math.inf
            for _ in range(k):
                (bucket,) = struct.unpack_from("<d", value, at)
                assert previous < bucket and last - n < bucket <= last
                previous = bucket
                slot = 1 + int(bucket) % n
                section[slot * w8:(slot + 1) * w8] = value[at:at + w8]
                at += w8
            assert previous == last  # the header's newest bucket is the last record's
        out += section
    for code in codes:
        if code in ("F", "M", "H"):
            length = {"F": 8, "M": 24, "H": 200}[code]
            out += value[at:at + length]
            at += length
        else:  # K<k>: n, then the min(n, k) amounts held
            k = int(code[1:])
            (n,) = struct.unpack_from("<d", value, at)
            held = min(int(n), k)
            out += value[at:at + 8 + 8 * held] + bytes(8 * (k - held))
            at += 8 + 8 * held
    sets: list[dict[bytes, Any]] = []
    # the groups of sets: each its tag, then per set its members, each seen once (a first
    # use's: last seen, first use)
    for group in _set_groups(args):
        if at == len(value):
            break
        at += 2
        for kind, *_ in group:
            (m,) = struct.unpack_from("<H", value, at)
            at += 2
            members: dict[bytes, Any] = {}
            for _ in range(m):
                if kind < 4:
                    seen, length = struct.unpack_from("<dH", value, at)
                    members[value[at + 10:at + 10 + length]] = seen
                    at += 10 + length
                else:
                    seen, first, length = struct.unpack_from("<ddH", value, at)
                    members[value[at + 18:at + 18 + length]] = (seen, first)
                    at += 18 + length
            assert len(members) == m
            sets.append(members)
    assert at == len(value) and len(out) == 8 * size
    return bytes(out), sets


def test_a_payment_is_one_evalsha_whose_keys_and_ops_follow_the_script_header(redis_server, listed, redis_client):
    store, prefix = listed, listed.prefix
    event = pay(T0, amount="123.45", card="c1", user="u1", device="d1", ip="113.7.1.2", merchant="m1",
                event_id="wire-1")
    cmd, result = _captured_call(redis_server, store, event)
    assert cmd[1].decode() == hashlib.sha1(load_script().encode()).hexdigest()
    nkeys = int(cmd[2])
    keys_sent = [k.decode() for k in cmd[3:3 + nkeys]]
    ttl, amount, packed, tag, legacy = cmd[3 + nkeys:]
    assert keys_sent[0] == keys.request_key(prefix, "wire-1")  # the claim, then the decision record
    assert legacy.decode() == keys.legacy_claim_key(prefix, "wire-1")
    assert (int(ttl), int(amount)) == (3 * 86_400, 12_345)
    assert msgpack.unpackb(redis_client.get(keys_sent[0]))[0] == tag.decode()  # the reply, stored, starts with it

    ids = {"card": "c1", "user": "u1", "device": "d1", "ip": "113.7.1.2", "subnet": "113.7.1.0/24",
           "merchant": "m1", "merchant_card": "m1|c1", "list": None}
    t = ts_us(T0)
    used = set()
    seen_codes = set()
    for code, k, args in _ops(packed):
        seen_codes.add(code)
        key = keys_sent[k - 1]
        used.add(k)
        entity, entity_id = re.match(rf"^{prefix}:v1:\{{([a-z_]+):([^}}]+)\}}:", key).groups()
        if entity != "list":
            assert entity_id == ids[entity], key
        if code == "P":
            assert key == keys.merchant_profile_key(prefix, "m1")
        elif code == "R":
            size, nrings = args[0], args[1]
            stored = redis_client.get(key)  # the buckets in use of `size` doubles' rings, if the payment counted
            value = _plain(stored, args)
            assert value is None or len(value) == 8 * size
            assert stored is None or len(stored) < 4 * size  # a first payment: one bucket per ring, not n
            if entity == "merchant_card":
                assert len(stored) < 2 * size  # one day's slot of 30, the rest not stored
            i = 2
            for _ in range(nrings):
                buckets, bucket, ncounters = args[i:i + 3]
                resolution_s = {10: 60, 12: 300, 24: 3600, 28: 21600, 30: 86400}[buckets]  # the windows' N
                assert bucket == t // (resolution_s * 1_000_000)
                increments = args[i + 3:i + 3 + ncounters]
                assert set(increments) <= {0, 1, 12_345, "N"}
                if entity == "card" and buckets == 10:
                    assert increments == [1, 12_345] and len(value) == 8 * size  # count_10m, sum_10m
                i += 3 + ncounters
            members = {"device_id": "d1", "ip": "113.7.1.2", "merchant_id": "m1", "card_fp": "c1",
                       "user_id": "u1", "ip_country": "CN"}
            day_us = 86_400_000_000
            for kind, member, legacy, thresholds in (s for g in _set_groups(args) for s in g):
                if kind < 4:  # "d:<column>", "s:<column>": the sorted set of before
                    of = legacy.split(":")[1]
                else:  # "n:<columns>#<place>:": the hash of before and the member's field prefix
                    columns, place = legacy.removeprefix("n:").split("#")
                    of = columns.split(",")[int(place[:-1]) - 1]
                assert kind % 2 == 1 and member == members[of], (kind, legacy)  # the payment counts in each
                if kind >= 2:  # seen and first use: the 90-day horizon's threshold
                    assert [int(x) for x in thresholds] == [(t // day_us - 89) * day_us]
            kinds = sorted(kind for g in _set_groups(args) for kind, *_ in g)
            assert kinds == {"card": [1, 1, 1, 5, 5, 5], "user": [3, 3, 5, 5, 5], "device": [1, 1],
                             "ip": [1, 1], "subnet": [1]}.get(entity, []), (entity, kinds)
            if kinds and kinds[-1] == 5:  # the country's first use: this payment's, the run begun now
                assert _plain_and_sets(stored, args)[1][-1] == {b"CN": (t, t)}
        elif code == "D":
            member, ts = args[0], args[1]
            assert int(ts) == t
            of = key.rsplit(":", 1)[1]
            assert member == members[of]
        elif code == "V":
            assert args[2] == 12_345 and args[1] == "12"  # the business hour (UTC+8) as text
        elif code == "T":
            assert key == f"{keys.entity_key(prefix, 'merchant', 'm1', 'top')}:{event_row(event, store.ipintel)['biz_day']}"
            assert args[:2] == ["c1", "12345"]
        elif code == "C":
            day = event_row(event, store.ipintel)["biz_day"]
            assert key == f"{keys.entity_key(prefix, 'merchant', 'm1', 'mix')}:{day}"
            assert args[:5] == [t, 86_400_000_000, day, str(2 * 86_400), 1]
            # where the card's and the account's first seen and the pair's first day are in the reply
            stored = msgpack.unpackb(redis_client.get(keys_sent[0]))
            assert [stored[at - 1] for at in args[5:]] == [False, False, False]  # c1, u1, m1|c1: never seen
            assert redis_client.hgetall(key) == {b"c": b"1", b"u": b"1"}  # a new card, a new account
        elif code == "L":
            ranges = args[0]
            name = key.split("{list:")[1].split("}")[0]
            assert key == keys.list_members_key(prefix, name)
            if ranges:
                used.add(ranges)
                assert keys_sent[ranges - 1] == keys.list_ranges_key(prefix, name)
                assert args[2] == str((113 << 24) | (7 << 16) | (1 << 8) | 2)
    assert seen_codes == {op.value for op in Opcode}
    assert used == set(range(2, nkeys + 1))  # every key but the dedup key is some op's
    assert result.features["lists.blocked_ips"] is True


def test_a_refund_sends_only_the_merchant_state_with_its_amount(redis_server, listed):
    event = pay(T0, typ="refund", amount="50.00", refers_to="p1", event_id="wire-2")
    cmd, result = _captured_call(redis_server, listed, event)
    nkeys = int(cmd[2])
    ops = _ops(cmd[3 + nkeys + 2])
    assert [(code, k) for code, k, _ in ops] == [("R", 2)]
    assert re.fullmatch(rf"{listed.prefix}:v1:\{{merchant:m1\}}:state\.[0-9a-f]{{8}}", cmd[4].decode())
    assert 5_000 in ops[0][2]  # the refund sum's increment
    assert result.features == {}


# -- the fast path against assemble ----------------------------------------------------------
def _events() -> list:
    frame = dense_events(3_000, seed=5, days=4)
    ipv6 = frame.index % 11 == 0
    frame.loc[ipv6 & frame["ip"].notna(), "ip"] = "2001:db8:5::7"
    frame.loc[frame.index % 13 == 0, "ip"] = "185.220.101.7"  # Tor exit
    return [parse_event(flat_to_dict(row)) for row in frame.to_dict("records")]


def _same_typed(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def norm(v: Any) -> Any:
        return "nan" if isinstance(v, float) and math.isnan(v) else v
    return [(k, type(v), norm(v)) for k, v in a.items()] == [(k, type(v), norm(v)) for k, v in b.items()]


def test_features_equal_assemble_of_the_raw_values(listed):
    store = listed
    decisions = outcomes = 0
    for event in _events():
        result = store.process(event)
        if not result.features:
            outcomes += 1
            continue
        decisions += 1
        row = event_row(event, store.ipintel, store.biz_offset_min)
        expected = assemble(row, dict(result.raw), store.default_limit, store.lists)
        assert _same_typed(result.features, expected)  # names, order, types and values
    assert decisions > 1_000 and outcomes > 100


def test_the_blank_features_are_the_catalog_then_the_lists(store):
    from fengkong.features import definitions as d

    result = store.process(pay(T0, event_id="blank-1"))
    catalog = [name for name, spec in d.CATALOG.items() if spec.source != "model"]
    assert list(result.features) == catalog + [spec.feature for spec in store.lists.values()]


def test_a_raw_value_named_like_an_event_feature_is_refused():
    with pytest.raises(FeatureDefinitionError, match="event.amount"):
        blank_features(["card.count_10m", "event.amount"])


def test_raw_is_built_once_and_only_when_read(store):
    event = parse_event({"event_id": "lazy-1", "type": "payment", "occurred_at": "2026-11-02T00:00:00+00:00",
                         "merchant_id": "m1", "amount": 500, "card": {"fingerprint": "c1"}})
    result = store.process(event)
    assert "raw" not in vars(result)
    assert result.raw is result.raw
    assert result.raw["card.count_10m"] == 0
    assert result.raw["card.first_seen_us"] is None and result.features["card.is_first_seen"] is True
    assert result.features["device.count_1h"] is None


# -- the script and the op classes -----------------------------------------------------------
def test_every_op_class_names_a_lua_function_the_dispatch_table_maps_its_opcode_to():
    script = load_script()
    # OPS is what the function that makes the ops' functions returns (the script says why)
    assert re.search(r"^local OPS = \(function\(\)$", script, re.M)
    table = re.search(r"^return \{(.*?)\n\}\nend\)\(\)  -- \(OPS\)$", script, re.S | re.M)
    assert table is not None
    dispatch = dict(re.findall(r"(\w) = (\w+),", table.group(1)))
    assert dispatch == {kind.code.value: kind.lua_function for kind in OP_KINDS}
    assert {kind.code for kind in OP_KINDS} == set(Opcode)
    assert set(OP_KINDS) == set(Op.__subclasses__())  # no kind left out of the store's ops
    for kind in OP_KINDS:
        assert re.search(rf"^local function {kind.lua_function}\(key\)$", script, re.M), kind
        assert f"{kind.code.value} {kind.lua_function}" in script  # documented in the header


def test_lookup_with_subnet_is_lookup_and_subnet_of(ipintel):
    import random

    from fengkong.features.ipintel import subnet_of

    rng = random.Random(4)
    ips = [f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(3000)]
    ips += ["10.0.0.1", "185.220.101.7", "52.1.2.3", "203.0.113.5", "2001:db8:5::7", "2a0b:f4c0::9", "::1",
            "::ffff:52.1.2.3", " 1.2.3.4", "fe80::1"]
    for ip in ips:
        assert ipintel.lookup_with_subnet(ip) == (ipintel.lookup(ip), subnet_of(ip)), ip
    for bad in ("x", "1.2.3", "256.1.1.1", "01.2.3.4", ""):
        with pytest.raises(ValueError):
            subnet_of(bad)
        with pytest.raises(ValueError):
            ipintel.lookup_with_subnet(bad)


def test_entity_state_of_the_formats_before_reads_as_the_compact_one(redis_client, ipintel, list_specs, prefix):
    """Values of the formats before (plain doubles, a ring of n slots each; and those
    with their zero runs cut out) and compact ones give the same features: one store
    keeps what it wrote, the other has every state value rewritten after each event as
    a version before would have left it, plain or squeezed by turns, and its sets put
    back in the keys that versions kept them in (sorted sets; a hash of first uses). The
    rewritten values and those keys are read, and the next write stores them compact
    again."""
    events = [parse_event(flat_to_dict(r)) for r in dense_events(400, seed=12).to_dict("records")]
    compact = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=f"{prefix}s")
    before = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=f"{prefix}p")
    layouts: dict[str, list[Any]] = {}
    rewritten = {"plain": 0, "squeezed": 0, "sets": 0, "first uses": 0}
    for turn, event in enumerate(events):
        a, b = compact.process(event), before.process(event)
        assert a.features == b.features or all(
            (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
            for x, y in zip(a.features.values(), b.features.values()))
        call = before._prepare(event)
        for code, k, args in _ops(call.args[2]):
            if code == "R":
                layouts[call.keys[k - 1]] = args
        for key, args in layouts.items():
            value = redis_client.get(key)
            if value is not None and value[:1] == b"\xfe":  # written compact since the last rewrite
                plain, sets = _plain_and_sets(value, args)
                assert plain is not None and len(value) < len(plain) + sum(12 * len(x) for x in sets)
                old = _squeezed(plain) if turn % 2 and len(plain) <= 1024 else plain
                rewritten["squeezed" if len(old) < len(plain) else "plain"] += 1
                redis_client.set(key, old, keepttl=True)
                base = key.rsplit("}:", 1)[0] + "}:"
                for (kind, name), members in zip(_set_names(args), sets):
                    if members and kind < 4:
                        rewritten["sets"] += 1
                        redis_client.zadd(base + name, members)
                        redis_client.expire(base + name, 86_400 + 3600)
                    elif members:  # a first use: fields "<place>:<member>" of a hash
                        rewritten["first uses"] += 1
                        hash_name, place = name.split("#")
                        redis_client.hset(base + hash_name, mapping={
                            place.encode() + m: struct.pack("<dd", first, seen) for m, (seen, first) in members.items()})
                        redis_client.expire(base + hash_name, 91 * 86_400)
    # both formats were read back, and sets from their sorted sets and hashes
    assert min(rewritten.values()) > 100, rewritten


def test_a_merchants_closed_days_are_packed_as_doubles_and_packs_of_the_format_before_read(
        redis_client, ipintel, list_specs, prefix):
    """A closed day's volumes are 72 doubles (576 bytes, where 72 numbers of 15 digits
    took 1,080); a merchant whose packs are of the format before gets the same 7- and
    28-day baselines. One store keeps what it wrote, the other has every pack rewritten
    as 15-digit numbers after each event."""
    events = [pay(T0 + timedelta(days=day, hours=hour), amount=f"{10 + (day * 7 + hour) % 13}.{day % 10}0",
                  card=f"c{(day + hour) % 4}", event_id=f"mv-{day}-{hour}")
              for day in range(34) for hour in (0, 3, 7)]
    packed = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=f"{prefix}b")
    before = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=f"{prefix}t")
    volume_key = keys.entity_key(f"{prefix}t", "merchant", "m1", "volume")
    rewritten = 0
    with_baseline = 0
    for event in events:
        a, b = packed.process(event), before.process(event)
        assert a.features == b.features or all(
            (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
            for x, y in zip(a.features.values(), b.features.values()))
        with_baseline += a.features["merchant.baseline_today_28d"] is not None
        for field, value in redis_client.hgetall(volume_key).items():
            if field.startswith(b"P:") and len(value) == 576:
                numbers = struct.unpack("<72d", value)
                redis_client.hset(volume_key, field, "".join(f"{n:015.0f}" for n in numbers))
                rewritten += 1
    packs = {f: v for f, v in redis_client.hgetall(keys.entity_key(f"{prefix}b", "merchant", "m1", "volume")).items()
             if f.startswith(b"P:")}
    assert len(packs) >= 28 and {len(v) for v in packs.values()} == {576}
    assert rewritten >= 30 and with_baseline >= 10  # 28-day baselines read from the rewritten packs
