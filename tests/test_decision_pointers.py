"""A decision id finds its event's record through its hour's pointer bucket
(`fengkong.api.service.pointers`): one hash field per decision, not a key, with the
bucket's TTL past `decision_ttl_s`; pointers of the format before still answer."""

from __future__ import annotations

import asyncio
import time

import hiredis
import pytest

from api_fixtures import DECIDE_KEY, Served, payment, settings
from fengkong.api.service.ids import new_decision_id
from fengkong.api.service import pointers
from fengkong.api.service.idempotency import set_record
from fengkong.api.service.pointers import BUCKET_GRACE_S
from fengkong.api.service.renewals import Renewals
from fengkong.features import keys
from fengkong.features.pipelined import PipelinedRedis

PREFIX = "tptr"
TTL_S = 7200


@pytest.fixture(scope="module")
def api(redis_server):
    with Served(settings(redis_server.url, PREFIX, decision_ttl_s=TTL_S)) as served:
        yield served


def test_a_decision_id_names_the_hour_it_was_made():
    before = int(time.time()) // 3600
    decision_id = new_decision_id()
    assert before <= int(decision_id[2:8], 16) <= int(time.time()) // 3600
    assert len(decision_id) == 26 and int(decision_id[8:], 16) >= 0


def test_the_pointer_is_a_field_of_its_bucket_and_answers_get(api, redis_client):
    with api.client(DECIDE_KEY) as c:
        made = [c.post("/v1/decisions", json=payment()).json() for _ in range(3)]
        got = [c.get(f"/v1/decisions/{m['decision_id']}").json() for m in made]
    assert [g["decision_id"] for g in got] == [m["decision_id"] for m in made]
    assert [g["event_id"] for g in got] == [m["event_id"] for m in made]
    for m in made:
        key, field = keys.decision_bucket(PREFIX, m["decision_id"])
        assert redis_client.hget(key, field).decode() == m["event_id"]
        assert TTL_S < redis_client.ttl(key) <= TTL_S + BUCKET_GRACE_S  # outlives decision_ttl_s
        assert not redis_client.exists(keys.decision_key(PREFIX, m["decision_id"]))  # no key per decision
    with api.client(DECIDE_KEY) as c:
        assert c.get("/v1/decisions/d_" + "0" * 24).status_code == 404


def test_a_pointer_of_the_format_before_still_answers(api, redis_client):
    with api.client(DECIDE_KEY) as c:
        made = c.post("/v1/decisions", json=payment()).json()
        want = c.get(f"/v1/decisions/{made['decision_id']}").json()
        key, field = keys.decision_bucket(PREFIX, made["decision_id"])
        redis_client.hdel(key, field)
        assert c.get(f"/v1/decisions/{made['decision_id']}").status_code == 404
        # as the version before wrote it: one key per decision id
        redis_client.set(keys.decision_key(PREFIX, made["decision_id"]), made["event_id"], ex=TTL_S)
        assert c.get(f"/v1/decisions/{made['decision_id']}").json() == want


@pytest.mark.parametrize("key,blob,ttl", [("p:{evt:e1}:request", b"\x02\x00\r\n\xff" * 40, 259200),
                                          ("p:{evt:事件}:request", b"", 1), ("k", b"{}", 10 ** 12)])
def test_the_record_set_is_what_hiredis_packs(key, blob, ttl):
    """The record's SET is written as RESP by hand (`idempotency.set_ex`): byte for byte
    what hiredis packs of the arguments, for a key not ASCII too, and again for a TTL seen before."""
    for _ in range(2):
        assert set_record(key, blob, ttl, only_if_absent=False) == hiredis.pack_command(("SET", key, blob, "EX", ttl))


def test_the_pointer_commands_are_packed_as_hiredis_packs_their_arguments():
    """ASCII key, field and event id: the RESP bytes hiredis makes of the arguments; otherwise
    the arguments themselves (the connection packs them); the EXPIRE only when it is due."""
    decision_id = new_decision_id()
    renewals = Renewals()
    for prefix in ("tptr", "前缀"):
        key, field = keys.decision_bucket(prefix, decision_id)
        for event_id in ("e-1", "事件-2", "x" * 2000):
            expected = [("HSET", key, field, event_id), ("EXPIRE", key, TTL_S + BUCKET_GRACE_S)]
            got = pointers.commands(prefix, decision_id=decision_id, event_id=event_id, ttl_s=TTL_S)
            assert len(got) == 2
            for command, args in zip(got, expected):
                if type(command) is bytes:
                    assert command == hiredis.pack_command(args) and all(str(a).isascii() for a in args)
                else:
                    assert command == args and not all(str(a).isascii() for a in args)
            due = pointers.commands(prefix, decision_id=decision_id, event_id=event_id, ttl_s=TTL_S,
                                    renewals=renewals, faults=0)
            assert [c if type(c) is bytes else hiredis.pack_command(c) for c in due] == [
                hiredis.pack_command(args) for args in (expected if event_id == "e-1" else expected[:1])]


def test_a_remembered_bucket_is_the_one_decision_bucket_names():
    """The pointer's HSET names the key and field `keys.decision_bucket` gives, for ids of one
    bucket, of other buckets, of other forms, under two prefixes in turn (each bucket's key is
    remembered after its first decision: the second round takes it)."""
    ids = [new_decision_id(), new_decision_id(), "d_0123456789abcdef01234567", "d_0123456789ffffffffffffff",
           "d_x", "short", "d_前缀0123456789abcdef"]
    for _ in range(2):
        for prefix in ("tptr", "tptr2", "前缀"):
            for decision_id in ids:
                key, field = keys.decision_bucket(prefix, decision_id)
                hset = pointers.commands(prefix, decision_id=decision_id, event_id="e-1", ttl_s=TTL_S)[0]
                args = ("HSET", key, field, "e-1")
                assert hset == (hiredis.pack_command(args) if type(hset) is bytes else args)
                assert type(hset) is bytes or not (prefix + decision_id).isascii()


def test_the_packed_commands_run_on_redis(redis_server, redis_client):
    """What Redis makes of the record's packed SET sent with the pointer's commands, as the
    decision path sends them (the pipelined connection writes bytes as they are)."""
    decision_id = new_decision_id()
    sent = [set_record("tptr:raw:rec", b"\x02blob", 600, only_if_absent=False),
            *pointers.commands("tptr", decision_id=decision_id, event_id="事件-2", ttl_s=TTL_S)]

    async def run() -> list:
        conn = PipelinedRedis(redis_server.url)
        try:
            return await conn.execute(sent, 5.0)
        finally:
            conn.close()

    assert asyncio.run(run()) == [b"OK", 1, 1]
    key, field = keys.decision_bucket("tptr", decision_id)
    assert redis_client.hget(key, field) == "事件-2".encode()
    assert TTL_S < redis_client.ttl(key) <= TTL_S + BUCKET_GRACE_S
    assert redis_client.get("tptr:raw:rec") == b"\x02blob" and 0 < redis_client.ttl("tptr:raw:rec") <= 600
