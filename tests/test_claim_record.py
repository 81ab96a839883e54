"""One key per event id: the feature store's claim (``{evt:<id>}:request``, the features
the event got) is replaced by the decision record (`fengkong.api.service.idempotency`).

What must hold, as before the two shared a key: a retry counts nothing and gets the
stored decision; a first delivery that left no record lets a retry decide on the
features it got and store that decision, once; an event counted before the upgrade
(its claim under the older ``:dedup`` key) counts nothing after it; GET
/v1/decisions/{id} ends with `decision_ttl_s` while the key lasts as long as the dedup."""

from __future__ import annotations

from datetime import timedelta

import msgpack
import pytest

from api_fixtures import DECIDE_KEY, T0, Served, payment, settings
from fengkong.api.service import records
from fengkong.api.service.idempotency import set_record
from fengkong.events import parse_event
from fengkong.features import keys
from fengkong.features.definitions import DEDUP_TTL_S
from fengkong.features.online import holds_features

PREFIX = "tclaim"
DECISION_TTL_S = 3600


@pytest.fixture(scope="module")
def api(redis_server):
    with Served(settings(redis_server.url, PREFIX, decision_ttl_s=DECISION_TTL_S)) as served:
        yield served


@pytest.fixture
def c(api):
    with api.client(DECIDE_KEY) as client:
        yield client


def _count_10m(c, card: dict, seconds: int) -> int:
    """card.count_10m of a new payment of `card`, `seconds` after T0: how often it was counted."""
    out = c.post("/v1/decisions", json=payment(card=card, occurred_at=(T0 + timedelta(seconds=seconds)).isoformat()))
    assert out.status_code == 200, out.text
    return c.get(f"/v1/decisions/{out.json()['decision_id']}").json()["features"]["card.count_10m"]


def test_a_decision_leaves_one_key_of_its_event_id_and_a_retry_counts_nothing(api, c, redis_client):
    ev = payment()
    first = c.post("/v1/decisions", json=ev).json()
    key = keys.request_key(PREFIX, ev["event_id"])
    tag = keys.event_tag_prefix(PREFIX) + ev["event_id"] + "}"
    assert sorted(k.decode() for k in redis_client.scan_iter(match=tag.replace("{", "[{]") + "*")) == [key]
    assert records.is_record(redis_client.get(key))
    # the key is the claim too: it lasts the dedup TTL; the pointer (GET by id) decision_ttl_s
    assert DEDUP_TTL_S - 60 < redis_client.ttl(key) <= DEDUP_TTL_S
    bucket, field = keys.decision_bucket(PREFIX, first["decision_id"])  # the pointer: a field of its hour's hash
    assert redis_client.hget(bucket, field).decode() == ev["event_id"]
    assert DECISION_TTL_S < redis_client.ttl(bucket) <= DECISION_TTL_S + 3600
    again = c.post("/v1/decisions", json=ev).json()
    assert again["decision_id"] == first["decision_id"] and again["duplicate"] and not first["duplicate"]
    assert _count_10m(c, ev["card"], 30) == 1
    assert c.post("/v1/decisions", json=dict(ev, amount="7.00")).status_code == 409


def test_a_first_delivery_that_left_no_record_is_decided_once_on_its_features(api, c, redis_client):
    """The store counted the event (its features in the claim) and no record followed
    (the worker degraded or died): the retry decides on those features, stores the
    record over the claim, and every later retry gets that decision."""
    ev = payment()
    counted = api.runtime.store.process(parse_event(ev))
    key = keys.request_key(PREFIX, ev["event_id"])
    assert not counted.duplicate and holds_features(redis_client.get(key))
    retry = c.post("/v1/decisions", json=ev).json()
    assert not retry["degraded"] and records.is_record(redis_client.get(key))
    again = c.post("/v1/decisions", json=ev).json()
    assert again["decision_id"] == retry["decision_id"] and again["duplicate"]
    assert c.get(f"/v1/decisions/{retry['decision_id']}").status_code == 200
    assert _count_10m(c, ev["card"], 30) == 1  # counted by the store's call only


def test_an_event_counted_before_the_upgrade_counts_nothing_after_it(api, c, redis_client):
    """The claim of the format before (``{evt:<id>}:dedup``, written by the script as it
    was: its first key, four arguments) and no record: a retry after the upgrade counts
    nothing and decides on the features that claim holds."""
    ev = payment()
    store = api.runtime.store
    call = store._prepare(parse_event(ev))
    legacy = keys.legacy_claim_key(PREFIX, ev["event_id"])
    old = store._script(keys=[legacy, *call.keys[1:]], args=call.args[:4])
    assert old[0] == b"ok" and redis_client.exists(legacy)
    retry = c.post("/v1/decisions", json=ev).json()
    assert not retry["degraded"] and retry["decision"] in ("allow", "review", "deny", "challenge")
    assert c.post("/v1/decisions", json=ev).json()["decision_id"] == retry["decision_id"]
    assert _count_10m(c, ev["card"], 30) == 1


def test_settling_a_claim_replaces_features_but_never_a_record(redis_client):
    key = keys.request_key(PREFIX, "settle-1")
    blob = msgpack.packb(["tag", 1, 2.5, False])
    redis_client.set(key, blob)
    record = records.COMPACT + msgpack.packb([b"x"])
    assert redis_client.execute_command(*set_record(key, record, 600, only_if_absent=True)) is None
    assert redis_client.get(key) == record and 590 < redis_client.ttl(key) <= 600
    other = records.COMPACT + msgpack.packb([b"y"])
    assert redis_client.execute_command(*set_record(key, other, 600, only_if_absent=True)) == record
    redis_client.set(key, b'{"kind": "decision"}')  # a record in the JSON format of before
    assert redis_client.execute_command(*set_record(key, other, 600, only_if_absent=True)) == b'{"kind": "decision"}'
    redis_client.set(key, b"~claimed")  # a cluster claim's marker is a claim, not a record
    assert redis_client.execute_command(*set_record(key, other, 600, only_if_absent=True)) is None
    assert redis_client.get(key) == other


def test_what_a_claim_holds_is_told_apart_by_its_first_byte():
    assert holds_features(msgpack.packb(["t", *range(20)])) and holds_features(msgpack.packb(["t"] * 70000))
    for value in (records.COMPACT + b"\x90", b'{"kind":"decision"}', b"~claimed", b"~unsettled", b""):
        assert not holds_features(value)
    assert records.is_record(records.COMPACT + b"\x90") and records.is_record(b"{}")
    assert not records.is_record(msgpack.packb(["t"])) and not records.is_record(None)


@pytest.mark.parametrize("head", [records.DEFLATED, records.COMPRESSED])
def test_a_compressed_record_is_a_record_to_the_settling_script_and_the_readers(redis_client, head):
    """A compressed record (first byte 3), or a deflated one of before (2), is never
    replaced by a late adopter, and is neither features nor a claim to the readers."""
    key = keys.request_key(PREFIX, "settle-deflated")
    compressed = head + bytes(24) + b"\x03\x00"
    redis_client.set(key, compressed)
    other = records.COMPACT + msgpack.packb([b"y"])
    assert redis_client.execute_command(*set_record(key, other, 600, only_if_absent=True)) == compressed
    assert redis_client.get(key) == compressed
    assert records.is_record(compressed) and not holds_features(compressed)
