"""The pipelined asyncio connection the decision path uses, against a real Redis:
replies reach the right callers under concurrency, an error reply stays with its
command, a broken or silent connection fails fast and is replaced, and the store's
asynchronous call gives the same features as the synchronous one (also after the
server lost its script cache)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fengkong.features.errors import FeatureStoreUnavailable
from fengkong.features.online import OnlineStore
from fengkong.features import pipelined
from fengkong.features.pipelined import ConnectionFailed, PipelinedRedis, ReplyError, ReplyLate
from test_online_store import T0, pay


# keeps the server busy for ARGV[1] ms (Redis runs one script at a time)
BUSY = """local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]
repeat local n = redis.call('TIME') until n[1] * 1e6 + n[2] - s >= ARGV[1] * 1000
return 1"""


def test_concurrent_callers_get_their_own_replies_in_one_connection(redis_server, redis_client, prefix):
    conn = PipelinedRedis(redis_server.url)
    opened_before = redis_client.info("stats")["total_connections_received"]

    async def one(i: int) -> list:
        await asyncio.sleep(0.0001 * (i % 7))  # interleave the callers' writes
        return await conn.execute([("SET", f"{prefix}:k{i}", f"v{i}"), ("GET", f"{prefix}:k{i}"),
                                   ("INCRBY", f"{prefix}:n", i)], 1.0)

    async def main() -> list:
        return await asyncio.gather(*(one(i) for i in range(300)))

    replies = asyncio.run(main())
    for i, (set_ok, got, total) in enumerate(replies):
        assert set_ok == b"OK" and got == f"v{i}".encode()
        assert isinstance(total, int)
    assert int(redis_client.get(f"{prefix}:n")) == sum(range(300))
    assert redis_client.info("stats")["total_connections_received"] - opened_before == 1


def test_an_error_reply_stays_with_its_command(redis_server, redis_client, prefix):
    redis_client.set(f"{prefix}:text", "not a number")
    conn = PipelinedRedis(redis_server.url)

    async def main() -> tuple:
        return await asyncio.gather(conn.execute([("INCR", f"{prefix}:text")], 1.0),
                                    conn.execute([("INCR", f"{prefix}:ok")], 1.0))

    bad, good = asyncio.run(main())
    assert isinstance(bad[0], ReplyError) and "not an integer" in str(bad[0])
    assert good == [1]


def test_a_silent_server_fails_within_the_budget_and_the_next_call_reconnects(redis_server, redis_client, prefix):
    conn = PipelinedRedis(redis_server.url)
    opened_before = redis_client.info("stats")["total_connections_received"]

    async def main() -> tuple[float, type, list]:
        await conn.execute([("PING",)], 1.0)
        await asyncio.sleep(0.06)  # nothing asked, nothing heard: the silence below is the server's
        redis_client.execute_command("CLIENT", "PAUSE", 400, "ALL")
        t = time.perf_counter()
        with pytest.raises(ConnectionFailed, match="did not answer within 50 ms") as failure:
            await conn.execute([("SET", f"{prefix}:p", 1)], 0.05)
        waited = time.perf_counter() - t
        await asyncio.sleep(0.5)  # the pause is over
        return waited, failure.type, await conn.execute([("GET", f"{prefix}:p")], 1.0)

    waited, kind, after = asyncio.run(main())
    assert waited < 0.2 and kind is ConnectionFailed  # not ReplyLate: the server said nothing at all
    assert after in ([b"1"], [None])  # the paused SET may or may not have run; the connection answers again
    assert redis_client.info("stats")["total_connections_received"] - opened_before == 2  # dropped and remade


def test_a_reply_late_while_the_server_answers_is_reply_late_and_keeps_the_connection(
        redis_server, redis_client, prefix):
    """A 60 ms script, then (in a later write) another and a PING with a 100 ms budget.
    The first script's reply comes at ~60 ms, the PING's at ~120 ms: the server was
    answering during the wait, so the PING is ReplyLate and the connection stays."""
    conn = PipelinedRedis(redis_server.url)
    opened_before = redis_client.info("stats")["total_connections_received"]

    async def main() -> tuple:
        await conn.execute([("PING",)], 1.0)
        first = asyncio.ensure_future(conn.execute([("EVAL", BUSY, 0, 60)], 2.0))
        await asyncio.sleep(0.005)  # written on its own: Redis answers it when it is done
        second = asyncio.ensure_future(conn.execute([("EVAL", BUSY, 0, 60)], 2.0))
        with pytest.raises(ReplyLate):
            await conn.execute([("PING",)], 0.1)
        return await first, await second, await conn.execute([("PING",)], 1.0)

    first, second, after = asyncio.run(main())
    assert first == second == [1] and after == [b"PONG"]
    assert redis_client.info("stats")["total_connections_received"] - opened_before == 1


def test_one_timer_judges_every_batch_at_its_own_deadline(redis_server, redis_client, prefix):
    """The connection's one timer: a batch with a shorter budget, sent after two with a
    longer one, is still judged at its own deadline (ReplyLate: the server answered the
    first meanwhile); batches answered in time leave nothing behind: no timer, no deadlines."""
    conn = PipelinedRedis(redis_server.url)

    async def main() -> tuple:
        await conn.execute([("PING",)], 1.0)
        first = asyncio.ensure_future(conn.execute([("EVAL", BUSY, 0, 60)], 5.0))
        await asyncio.sleep(0.005)  # written on its own: Redis answers it when it is done, at ~60 ms
        second = asyncio.ensure_future(conn.execute([("EVAL", BUSY, 0, 60)], 5.0))
        t = time.perf_counter()
        with pytest.raises(ReplyLate):  # its reply would come at ~120 ms
            await conn.execute([("PING",)], 0.1)
        waited = time.perf_counter() - t
        late = (await first) + (await second)
        proto = conn._proto
        assert proto is not None
        timed = await asyncio.gather(*(conn.execute([("INCR", f"{prefix}:n")], 0.05) for _ in range(200)))
        await asyncio.sleep(0.1)  # past every deadline: the timer has fired and found them all done
        return waited, late, timed, proto.watched, proto.deadlines, proto.timer

    waited, late, timed, watched, deadlines, timer = asyncio.run(main())
    assert 0.09 <= waited < 0.2  # its own 100 ms, not the others' 5 s
    assert late == [1, 1] and sorted(r[0] for r in timed) == list(range(1, 201))
    assert not watched and deadlines == [] and timer is None


def test_the_timer_judges_the_queue_and_the_heap_in_deadline_order(monkeypatch):
    """Batches watched with deadlines that never fall join the queue, one due before the
    last watched goes on the heap; the timer judges the undone ones of both in deadline
    order (ties in the order watched), skips the done ones and leaves neither holding any."""
    judged: list[str] = []
    monkeypatch.setattr(pipelined, "_expire", lambda batch, proto, *times: judged.append(batch.name))

    async def main() -> tuple:
        loop = asyncio.get_running_loop()
        proto = pipelined._Protocol()
        now = loop.time()
        batches = {}
        for name, due in [("a", 1.0), ("b", 0.5), ("c", 2.0), ("d", 1.5), ("e", 2.0), ("f", 0.2), ("g", 3.0)]:
            batches[name] = batch = loop.create_future()
            batch.name = name  # type: ignore[attr-defined]
            proto.watch(batch, now - 5 + due, 1.0, now - 6, now - 5 + due)
        queued = [entry[2][0].name for entry in proto.watched]
        heaped = sorted(entry[2][0].name for entry in proto.deadlines)
        batches["d"].set_result([])
        proto._deadlines_due()
        left = (len(proto.watched), len(proto.deadlines))
        proto.fail(ConnectionFailed("done"))
        return queued, heaped, left

    queued, heaped, left = asyncio.run(main())
    assert queued == ["a", "c", "e", "g"] and heaped == ["b", "d", "f"]
    assert judged == ["f", "b", "a", "c", "e", "g"]  # d was done
    assert left == (0, 0)


def test_with_one_budget_every_batch_is_queued_none_heaped_and_each_leaves_when_answered(redis_server, prefix):
    """The service's calls all have one budget: each is due no earlier than the one before,
    so the heap is never used; and as replies come in order, each batch leaves the queue as
    its caller gets its replies, not when the timer comes to it."""
    conn = PipelinedRedis(redis_server.url)

    async def main() -> tuple:
        await conn.execute([("PING",)], 0.05)
        proto = conn._proto
        assert proto is not None
        waiting, heaped, left = [], [], []
        for i in range(50):
            calls = [asyncio.ensure_future(conn.execute([("INCR", f"{prefix}:q")], 0.05)) for _ in range(4)]
            await asyncio.sleep(0)  # each sent and watched
            waiting.append(len(proto.watched))
            got = await asyncio.gather(*calls)
            heaped.append(len(proto.deadlines))
            left.append(len(proto.watched))
            assert sorted(r[0] for r in got) == [4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4]
        await asyncio.sleep(0.1)  # past every deadline
        return waiting, heaped, left, proto.timer

    waiting, heaped, left, timer = asyncio.run(main())
    assert max(waiting) > 0 and set(heaped) == {0} and set(left) == {0}
    assert timer is None


def test_a_killed_connection_fails_its_pending_callers_and_is_replaced(redis_server, redis_client, prefix):
    conn = PipelinedRedis(redis_server.url)

    async def main() -> list:
        await conn.execute([("CLIENT", "SETNAME", f"{prefix}-pipe")], 1.0)
        waiting = asyncio.ensure_future(conn.execute([("BLPOP", f"{prefix}:never", 5)], 10.0))
        await asyncio.sleep(0.05)
        (ident,) = [c["id"] for c in redis_client.client_list() if c.get("name") == f"{prefix}-pipe"]
        redis_client.client_kill_filter(_id=ident)
        t = time.perf_counter()
        with pytest.raises(ConnectionFailed, match="connection lost"):
            await waiting
        assert time.perf_counter() - t < 1.0  # told at once, not after the BLPOP's 5 s
        return await conn.execute([("PING",)], 1.0)  # a new connection answers

    assert asyncio.run(main()) == [b"PONG"]


def test_an_unreachable_server_is_a_connection_failure(tmp_path):
    conn = PipelinedRedis(f"unix://{tmp_path}/nobody.sock")
    with pytest.raises(ConnectionFailed, match="cannot connect"):
        asyncio.run(conn.execute([("PING",)], 0.5))


def test_the_async_store_call_equals_the_sync_one_and_survives_a_script_flush(
        redis_server, redis_client, ipintel, list_specs, prefix):
    sync_store = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix + "s")
    async_store = OnlineStore(redis_client, ipintel=ipintel, lists=list_specs, prefix=prefix + "a")
    conn = PipelinedRedis(redis_server.url)
    events = [pay(T0, amount="120.00"), pay(T0.replace(minute=3), amount="80.00", card="c2"),
              pay(T0.replace(minute=5), amount="300.00", device="d9")]

    async def main() -> list:
        out = []
        for i, event in enumerate(events):
            if i == 2:
                redis_client.script_flush()  # as after a Redis restart: the next EVALSHA gets NOSCRIPT
            out.append(await async_store.process_async(event, conn, 1.0))
        out.append(await async_store.process_async(events[0], conn, 1.0))  # a retry
        return out

    got = asyncio.run(main())
    want = [sync_store.process(e) for e in events]
    for g, w in zip(got, want):
        assert g.features == w.features and not g.duplicate
    assert got[1].features["card.count_10m"] == 0 and got[2].features["user.count_1h"] == 2
    assert got[3].duplicate and got[3].features == got[0].features


def test_the_async_store_call_raises_the_store_error_when_redis_is_down(ipintel, list_specs, tmp_path):
    import redis

    store = OnlineStore(redis.Redis(unix_socket_path=str(tmp_path / "x.sock")), ipintel=ipintel, lists=list_specs)
    conn = PipelinedRedis(f"unix://{tmp_path}/x.sock")
    with pytest.raises(FeatureStoreUnavailable):
        asyncio.run(store.process_async(pay(T0), conn, 0.2))
