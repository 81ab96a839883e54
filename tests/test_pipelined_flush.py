"""When the pipelined connection writes: at once when Redis has nothing of ours to
do, else as soon as ``flush_bytes`` are queued or at the end of the loop tick (so
Redis works on the first commands while the worker still prepares the next).
Against a real Redis: an early write really reaches the server within the tick, a
queued one does not, Redis reads a busy tick's commands in one write or one per
call as the setting says, and under every setting replies reach their callers in
order, error replies stay values and faults keep their meaning.

"Within the tick": the test polls Redis from another connection with a blocking
client, so the event loop does not turn meanwhile. A command is "in flight" while
its reply has not been read, which within one tick is every command written in it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fengkong.api.config import Settings
from fengkong.features.pipelined import FLUSH_BYTES, ConnectionFailed, PipelinedRedis, ReplyError

#: every call's commands at once; about one small command a write; the default; only at the tick's end
SETTINGS = [0, 100, FLUSH_BYTES, 1 << 30]


def _seen_within(client, key: str, seconds: float) -> bool:
    """Whether another connection sees ``key`` set within ``seconds`` (a blocking poll:
    the event loop does not turn meanwhile, so the tick that queued the write goes on)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        if client.get(key) is not None:
            return True
        time.sleep(0.001)
    return False


def test_queued_bytes_past_the_threshold_are_written_within_the_tick(redis_server, redis_client, prefix):
    early = PipelinedRedis(redis_server.url, flush_bytes=64)
    late = PipelinedRedis(redis_server.url, flush_bytes=1 << 20)

    async def main() -> tuple[bool, bool, bool, bool, list, list]:
        await asyncio.gather(early.execute([("PING",)], 1.0), late.execute([("PING",)], 1.0))
        # one tick, no await: the PINGs go at once (nothing in flight) and keep each connection busy
        pings = [early.send_nowait([("PING",)]), late.send_nowait([("PING",)])]
        # ... so a small command stays queued, until a large one brings the queue past 64 bytes
        small = early.send_nowait([("SET", f"{prefix}:small", "1")])
        small_seen = _seen_within(redis_client, f"{prefix}:small", 0.05)
        large = early.send_nowait([("SET", f"{prefix}:large", "x" * 100)])
        large_seen = _seen_within(redis_client, f"{prefix}:large", 2.0)
        small_then = redis_client.get(f"{prefix}:small") == b"1"
        held = late.send_nowait([("SET", f"{prefix}:held", "x" * 100)])
        held_seen = _seen_within(redis_client, f"{prefix}:held", 0.05)
        replies = await asyncio.gather(*pings, small, large)
        return small_seen, large_seen, small_then, held_seen, replies, await held

    small_seen, large_seen, small_then, held_seen, replies, late_reply = asyncio.run(main())
    assert not small_seen  # ~34 bytes < 64 while the PING is in flight: it waited ...
    assert large_seen and small_then  # ... until the queue passed 64 bytes: both left then, in order
    assert not held_seen and late_reply == [b"OK"]  # under the threshold: written at the tick's end only
    assert replies == [[b"PONG"], [b"PONG"], [b"OK"], [b"OK"]]


def test_a_call_on_an_idle_connection_is_written_at_once(redis_server, redis_client, prefix):
    conn = PipelinedRedis(redis_server.url, flush_bytes=1 << 20)

    async def main() -> tuple[bool, bool, list]:
        await conn.execute([("PING",)], 1.0)  # its reply read: nothing in flight
        first = conn.send_nowait([("SET", f"{prefix}:first", "1")])
        first_seen = _seen_within(redis_client, f"{prefix}:first", 2.0)
        second = conn.send_nowait([("SET", f"{prefix}:second", "1")])  # the first is in flight now
        second_seen = _seen_within(redis_client, f"{prefix}:second", 0.05)
        return first_seen, second_seen, await asyncio.gather(first, second)

    first_seen, second_seen, replies = asyncio.run(main())
    assert first_seen and not second_seen
    assert replies == [[b"OK"], [b"OK"]]
    assert redis_client.get(f"{prefix}:second") == b"1"


def test_a_busy_tick_is_one_write_by_default_and_each_call_is_its_own_with_zero(redis_server, redis_client, prefix):
    batched = PipelinedRedis(redis_server.url, flush_bytes=1 << 30)
    each = PipelinedRedis(redis_server.url, flush_bytes=0)

    async def main() -> tuple[int, list, list[bool], list]:
        await asyncio.gather(batched.execute([("PING",)], 1.0), each.execute([("PING",)], 1.0))
        first = batched.send_nowait([("PING",)])  # written at once (idle); the 60 below find it in flight
        before = redis_client.info("stats")["total_reads_processed"]
        futures = [batched.send_nowait([("INCR", f"{prefix}:n")]) for _ in range(60)]  # one tick
        replies = await asyncio.gather(first, *futures)
        reads = redis_client.info("stats")["total_reads_processed"] - before - 1  # less the first INFO's own
        seen, futures = [], []
        await asyncio.sleep(0)
        for i in range(5):  # one tick again: each call reaches Redis before the next is made
            futures.append(each.send_nowait([("SET", f"{prefix}:each{i}", i)]))
            seen.append(_seen_within(redis_client, f"{prefix}:each{i}", 2.0))
        return reads, replies, seen, await asyncio.gather(*futures)

    reads, replies, seen, each_replies = asyncio.run(main())
    assert replies == [[b"PONG"]] + [[i] for i in range(1, 61)]
    assert reads <= 3  # the PING (if Redis had not read it before), the 60 calls in one write, the second INFO
    assert seen == [True] * 5 and each_replies == [[b"OK"]] * 5


@pytest.mark.parametrize("flush_bytes", SETTINGS)
def test_concurrent_callers_get_their_replies_in_order_under_every_setting(redis_server, redis_client, prefix,
                                                                           flush_bytes):
    conn = PipelinedRedis(redis_server.url, flush_bytes=flush_bytes)

    async def one(i: int) -> list:
        await asyncio.sleep(0.0001 * (i % 5))
        big = "v" * (i % 7) * 40  # calls of different sizes cross the threshold at different points
        return await conn.execute([("SET", f"{prefix}:k{i}", f"{i}{big}"), ("GET", f"{prefix}:k{i}"),
                                   ("INCR", f"{prefix}:k{i}"), ("RPUSH", f"{prefix}:order", i)], 1.0)

    async def main() -> list:
        return await asyncio.gather(*(one(i) for i in range(200)))

    replies = asyncio.run(main())
    for i, (set_ok, got, incr, _) in enumerate(replies):
        assert set_ok == b"OK" and got == f"{i}{'v' * (i % 7) * 40}".encode()
        if i % 7 == 0:
            assert incr == i + 1
        else:  # not a number: the error reply is this command's value, the batch goes on
            assert isinstance(incr, ReplyError) and "not an integer" in str(incr)
    positions = [r[3] for r in replies]
    assert sorted(positions) == list(range(1, 201))  # each RPUSH's reply is its own list length


@pytest.mark.parametrize("flush_bytes", [0, FLUSH_BYTES])
def test_a_killed_connection_fails_queued_and_written_commands_alike(redis_server, redis_client, prefix,
                                                                     flush_bytes):
    conn = PipelinedRedis(redis_server.url, flush_bytes=flush_bytes)

    async def main() -> list:
        await conn.execute([("CLIENT", "SETNAME", f"{prefix}-flush")], 1.0)
        waiting = asyncio.ensure_future(conn.execute([("BLPOP", f"{prefix}:never", 5)], 10.0))
        await asyncio.sleep(0.05)
        (ident,) = [c["id"] for c in redis_client.client_list() if c.get("name") == f"{prefix}-flush"]
        redis_client.client_kill_filter(_id=ident)
        with pytest.raises(ConnectionFailed, match="connection lost"):
            await waiting
        return await conn.execute([("PING",)], 1.0)

    assert asyncio.run(main()) == [b"PONG"]


@pytest.mark.parametrize("flush_bytes", [0, FLUSH_BYTES])
def test_a_silent_server_still_fails_within_the_budget(redis_server, redis_client, prefix, flush_bytes):
    conn = PipelinedRedis(redis_server.url, flush_bytes=flush_bytes)

    async def main() -> float:
        await conn.execute([("PING",)], 1.0)
        await asyncio.sleep(0.06)
        redis_client.execute_command("CLIENT", "PAUSE", 300, "ALL")
        t = time.perf_counter()
        with pytest.raises(ConnectionFailed, match="did not answer within 50 ms") as failure:
            await conn.execute([("SET", f"{prefix}:p", "x" * 200)], 0.05)
        assert failure.type is ConnectionFailed
        return time.perf_counter() - t

    assert asyncio.run(main()) < 0.2
    time.sleep(0.3)


def test_the_setting_reaches_the_services_connection_and_every_cluster_node(redis_server, prefix, tmp_path):
    from api_fixtures import settings

    from fengkong.api.state import build_runtime
    from fengkong.features.cluster import ClusterPipelined

    rt = build_runtime(settings(redis_server.url, prefix, redis_flush_bytes=1234, cases_consumer=False,
                                data_dir=tmp_path))
    try:
        assert isinstance(rt.conn, PipelinedRedis) and rt.conn.flush_bytes == 1234
    finally:
        rt.close()
    cluster = ClusterPipelined("redis+cluster://127.0.0.1:7000", flush_bytes=0)
    assert cluster.node("127.0.0.1:7001").flush_bytes == 0  # made on first use, not connected yet


def test_a_negative_threshold_is_refused_by_name(redis_server):
    with pytest.raises(ValueError, match="flush_bytes"):
        PipelinedRedis(redis_server.url, flush_bytes=-1)
    with pytest.raises(ValueError, match="redis_flush_bytes"):
        Settings(redis_url=redis_server.url, redis_flush_bytes=-1)
    assert Settings(redis_url=redis_server.url, redis_flush_bytes=0).redis_flush_bytes == 0


def test_a_write_nobody_waits_for_is_held_while_redis_has_ours_to_do(redis_server, redis_client, prefix):
    """`send_nowait` while a command is in flight: no write of its own, not even at the
    tick's end; it leaves with the next call's write or once Redis has answered what was
    written, and Redis still runs the connection's commands in the order they were queued."""
    conn = PipelinedRedis(redis_server.url)

    async def main() -> tuple[int, int, list, list, int, list, bytes | None]:
        await conn.execute([("PING",)], 1.0)
        proto = conn._proto
        assert proto is not None
        busy = asyncio.ensure_future(conn.execute([("BLPOP", f"{prefix}:nothing", 0.2)], 2.0))
        await asyncio.sleep(0)  # the BLPOP is written (nothing was in flight) and holds Redis
        held = conn.send_nowait([("SET", f"{prefix}:held", "1")])
        await asyncio.sleep(0.05)  # many ticks: still held
        held_then = len(proto.out)
        blpop = await busy
        wrote = await held  # written once Redis answered the BLPOP
        after = len(proto.out)
        # while a call is in flight, a held write leaves with the next call's write, before it
        blocker = asyncio.ensure_future(conn.execute([("BLPOP", f"{prefix}:nothing", 0.1)], 2.0))
        await asyncio.sleep(0)
        rider = conn.send_nowait([("SET", f"{prefix}:rider", "2")])
        read = await conn.execute([("GET", f"{prefix}:rider")], 2.0)
        await asyncio.gather(blocker, rider)
        return held_then, after, blpop, wrote, len(proto.out), read, redis_client.get(f"{prefix}:held")

    held_then, after, blpop, wrote, out_left, read, held_value = asyncio.run(main())
    assert held_then == 1  # the SET was queued, not written, while the BLPOP held Redis
    assert blpop == [None] and wrote == [b"OK"] and held_value == b"1"
    assert after == 0 and out_left == 0  # nothing left behind
    assert read == [b"2"]  # the held SET went before the GET that followed it


def test_closing_hands_what_was_held_to_the_transport(redis_server, prefix):
    """A worker that stops (`PipelinedRedis.close`) hands the writes it held to the transport,
    which sends them before it closes, instead of dropping them unsent; the commands still
    waiting for replies fail as before."""
    conn = PipelinedRedis(redis_server.url)

    async def main() -> tuple[int, list[bytes], list]:
        await conn.execute([("PING",)], 1.0)
        proto = conn._proto
        assert proto is not None and proto.transport is not None
        written: list[bytes] = []
        write = proto.transport.write
        proto.transport.write = (  # type: ignore[method-assign]
            lambda data: (written.append(bytes(data)), write(data))[1])
        busy = asyncio.ensure_future(conn.execute([("BLPOP", f"{prefix}:nothing", 0.2)], 2.0))
        await asyncio.sleep(0)
        held = conn.send_nowait([("SET", f"{prefix}:last", "1")])
        out = len(proto.out)
        conn.close()
        return out, written, await asyncio.gather(busy, held, return_exceptions=True)

    out, written, results = asyncio.run(main())
    assert out == 1  # the SET was held when the connection closed ...
    assert written[-1] == b"*3\r\n$3\r\nSET\r\n$" + str(len(f"{prefix}:last")).encode() + b"\r\n" + \
        f"{prefix}:last".encode() + b"\r\n$1\r\n1\r\n"  # ... and was written by the close
    assert all(isinstance(r, ConnectionFailed) for r in results)  # what still waited failed, as before
