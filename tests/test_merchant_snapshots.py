"""A worker's merchant snapshots against a real Redis: decisions of an interval leave one
SET per merchant, holding the latest; a read on the worker takes its pending snapshot;
interval 0 writes with the decision; a full set of pending merchants is sent at once."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

from fengkong.api.service import merchant_snapshots as ms
from fengkong.api.service.merchant_snapshots import MerchantSnapshots
from fengkong.features import keys
from fengkong.features.pipelined import PipelinedRedis, packed_args

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=timezone(timedelta(hours=8)))
NAMES = ("merchant.count_24h", "merchant.sum_24h")


def _args(command: tuple | bytes) -> tuple:
    """A command's arguments, given packed (RESP bytes, as `MerchantSnapshots.command` gives it)."""
    return tuple(a.decode() for a in packed_args(command)) if isinstance(command, bytes) else command


def _note(snaps: MerchantSnapshots, merchant: str, i: int) -> tuple | bytes | None:
    # the decision's features as they are: the snapshot keeps the merchant.* ones
    return snaps.note(merchant, event_id=f"e{i}", occurred_at=T0 + timedelta(seconds=i), decision_id=f"d{i}",
                      features={"card.count_1h": i + 1, NAMES[0]: i, "user.x": None, NAMES[1]: i * 1.5})


def _stored(redis_client, prefix: str, merchant: str) -> dict | None:
    raw = redis_client.get(keys.merchant_snapshot_key(prefix, merchant))
    return json.loads(raw) if raw else None


def test_decisions_of_an_interval_leave_one_write_per_merchant_with_its_latest(redis_server, redis_client, prefix):
    conn = PipelinedRedis(redis_server.url)

    async def main() -> tuple:
        await conn.execute([("PING",)], 1.0)  # the connection the interval's write goes over
        snaps = MerchantSnapshots(conn, prefix, 600, interval_s=0.05)
        assert [_note(snaps, "m1", i) for i in range(3)] == [None, None, None]
        assert _note(snaps, "m2", 7) is None
        before = _stored(redis_client, prefix, "m1")
        calls = redis_client.info("commandstats").get("cmdstat_set", {}).get("calls", 0)
        await asyncio.sleep(0.2)
        after_calls = redis_client.info("commandstats")["cmdstat_set"]["calls"]
        return before, after_calls - calls

    before, sets = asyncio.run(main())
    assert before is None  # nothing written within the interval
    assert sets == 2  # one per merchant, not one per decision
    assert _stored(redis_client, prefix, "m1") == {
        "event_id": "e2", "occurred_at": (T0 + timedelta(seconds=2)).isoformat(), "decision_id": "d2",
        "features": {"merchant.count_24h": 2, "merchant.sum_24h": 3.0}}
    assert _stored(redis_client, prefix, "m2")["decision_id"] == "d7"
    assert 0 < redis_client.ttl(keys.merchant_snapshot_key(prefix, "m1")) <= 600


def test_a_read_takes_the_pending_snapshot_and_interval_zero_writes_with_the_decision(redis_server, prefix):
    conn = PipelinedRedis(redis_server.url)

    async def main() -> None:
        snaps = MerchantSnapshots(conn, prefix, 600, interval_s=60)
        assert _note(snaps, "m1", 1) is None
        taken = snaps.take("m1")
        assert taken is not None and _args(taken)[:2] == ("SET", keys.merchant_snapshot_key(prefix, "m1"))
        assert snaps.take("m1") is None  # no longer pending: the interval's write leaves it out
        snaps.close()

    asyncio.run(main())
    now = MerchantSnapshots(conn, prefix, 600, interval_s=0)
    command = _note(now, "m3", 4)
    assert command is not None and json.loads(_args(command)[2])["event_id"] == "e4" and _args(command)[3:] == (
        "EX", "600")
    assert now.take("m3") is None


def test_a_full_set_of_pending_merchants_is_written_at_once(redis_server, redis_client, prefix, monkeypatch):
    monkeypatch.setattr(ms, "MAX_PENDING", 3)
    conn = PipelinedRedis(redis_server.url)

    async def main() -> None:
        await conn.execute([("PING",)], 1.0)
        snaps = MerchantSnapshots(conn, prefix, 600, interval_s=60)
        for i in range(4):  # the third makes three pending: they leave now; the fourth waits
            _note(snaps, f"m{i}", i)
        await asyncio.sleep(0.05)
        snaps.close()

    asyncio.run(main())
    assert [(_stored(redis_client, prefix, f"m{i}") or {}).get("event_id") for i in range(4)] == \
        ["e0", "e1", "e2", None]


def test_an_intervals_write_goes_out_a_slice_per_loop_turn_with_decisions_between(redis_server, redis_client, prefix,
                                                                                  monkeypatch):
    """A worker with many merchants never holds its decisions behind one long write: the
    interval's snapshots leave `SLICE` at a time, and work queued meanwhile runs between."""
    monkeypatch.setattr(ms, "SLICE", 2)
    conn = PipelinedRedis(redis_server.url)
    batches: list[int] = []
    send = conn.send_nowait

    def counted(commands):  # the real connection sends; this only notes each write's size
        batches.append(len(commands))
        return send(commands)

    monkeypatch.setattr(conn, "send_nowait", counted)
    order: list[str] = []

    async def main() -> None:
        await conn.execute([("PING",)], 1.0)
        snaps = MerchantSnapshots(conn, prefix, 600, interval_s=60)
        for i in range(5):
            _note(snaps, f"m{i}", i)
        snaps.flush()
        assert batches == []  # nothing encoded in the flush itself
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: order.append(f"decision after {sum(batches)}"))
        await asyncio.sleep(0.05)
        snaps.close()

    asyncio.run(main())
    assert batches == [2, 2, 1]
    assert order == ["decision after 2"]  # ran between the first slice and the second
    assert [(_stored(redis_client, prefix, f"m{i}") or {}).get("event_id") for i in range(5)] == \
        [f"e{i}" for i in range(5)]


def test_a_read_during_the_slices_gets_the_newest_and_the_older_is_never_written_after_it(redis_server, redis_client,
                                                                                          prefix, monkeypatch):
    monkeypatch.setattr(ms, "SLICE", 1)
    conn = PipelinedRedis(redis_server.url)

    async def main() -> None:
        await conn.execute([("PING",)], 1.0)
        snaps = MerchantSnapshots(conn, prefix, 600, interval_s=60)
        for i in range(3):
            _note(snaps, f"m{i}", i)
        snaps.flush()  # m0, m1, m2 to send, a slice per turn
        _note(snaps, "m2", 9)  # a newer decision of m2, in the next interval
        taken = snaps.take("m2")
        assert taken is not None and json.loads(_args(taken)[2])["event_id"] == "e9"
        await conn.execute([taken], 1.0)  # the read sends it with its GET
        await asyncio.sleep(0.05)
        snaps.close()

    asyncio.run(main())
    assert _stored(redis_client, prefix, "m2")["event_id"] == "e9"  # the older e2 was dropped, not sent after
    assert _stored(redis_client, prefix, "m1")["event_id"] == "e1"


def test_a_snapshot_noted_with_the_received_time_text_holds_that_text(redis_server, prefix):
    """The decision path hands over the event's ``occurred_at`` as received when it is the
    text ``isoformat`` gives (no formatting per snapshot): the SET is byte for byte the one
    noted with the parsed time."""
    conn = PipelinedRedis(redis_server.url)
    now = MerchantSnapshots(conn, prefix, 600, interval_s=0)
    features = {NAMES[0]: 2, "user.x": None, NAMES[1]: 3.0}
    at = T0 + timedelta(microseconds=3000)
    text = "2026-11-25T09:00:00.003000+08:00"
    assert at.isoformat() == text
    as_text = now.note("m1", event_id="e1", occurred_at=text, decision_id="d1", features=features)
    as_time = now.note("m1", event_id="e1", occurred_at=at, decision_id="d1", features=features)
    assert as_text == as_time and json.loads(_args(as_text)[2])["occurred_at"] == text


def test_a_snapshots_set_is_the_command_hiredis_packs_of_its_arguments(prefix):
    """`MerchantSnapshots.command` writes the SET as RESP bytes (`resp.set_ex`): byte for byte
    what hiredis packs of the arguments it gave before (the key, the snapshot's JSON of the
    merchant.* features in the features' order, the TTL), for a key not ASCII too; a TTL that
    is no integer stays arguments."""
    import hiredis

    from fengkong.api.encoding import dumps

    features = {"card.count_1h": 1, NAMES[0]: 3, "user.x": None, NAMES[1]: 4.5, "merchant.über": "ü"}
    noted = ("e1", "2026-11-25T09:00:00+08:00", "d1", features)
    want = {"event_id": "e1", "occurred_at": noted[1], "decision_id": "d1",
            "features": {NAMES[0]: 3, NAMES[1]: 4.5, "merchant.über": "ü"}}
    for merchant in ("m1", "商户"):
        args = ("SET", keys.merchant_snapshot_key(prefix, merchant), dumps(want), "EX", 600)
        for _ in range(2):  # the features' shape found, then taken again
            assert MerchantSnapshots(None, prefix, 600, 0).command(merchant, noted) == hiredis.pack_command(args)
        assert MerchantSnapshots(None, prefix, 600.5, 0).command(merchant, noted) == args[:4] + (600.5,)
