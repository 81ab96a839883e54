"""Slow clients are cut off: a request whose body (or headers) has not all arrived
within the read timeout gets 408 and its connection is closed; connections that
send nothing, or stay idle after an answer, are closed after the keep-alive
timeout. Nothing stays open for a client that never finishes."""

from __future__ import annotations

import json
import select
import socket
import time

from api_fixtures import DECIDE_KEY, Served, payment, settings

N = 50
TIMEOUT_S = 1.0
MARGIN_S = 3.0


def _open(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        s.sendall(data)
    return s


def _until_closed(socks: list[socket.socket], limit_s: float) -> dict[socket.socket, bytes]:
    """Read every socket until the server closes it; what each received. Sockets still
    open at the limit are missing from the result."""
    got = {s: b"" for s in socks}
    open_ = set(socks)
    stop = time.monotonic() + limit_s
    while open_ and time.monotonic() < stop:
        ready, _, _ = select.select(list(open_), [], [], 0.1)
        for s in ready:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                got[s] += chunk
            else:
                open_.discard(s)
    for s in socks:
        s.close()
    return {s: data for s, data in got.items() if s not in open_}


def test_half_sent_requests_get_408_and_are_closed_within_the_timeout(redis_server):
    body = json.dumps(payment()).encode()
    head = (f"POST /v1/decisions HTTP/1.1\r\nhost: x\r\nx-api-key: {DECIDE_KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with Served(settings(redis_server.url, "tslow", body_timeout_s=TIMEOUT_S, keep_alive_s=TIMEOUT_S)) as api:
        t0 = time.monotonic()
        half_body = [_open(api.port, head + body[:10]) for _ in range(N)]
        half_head = [_open(api.port, head[:30]) for _ in range(N)]
        silent = [_open(api.port, b"") for _ in range(N)]
        closed = _until_closed(half_body + half_head + silent, TIMEOUT_S + MARGIN_S)
        elapsed = time.monotonic() - t0
        assert len(closed) == 3 * N, f"{3 * N - len(closed)} connections still open after {elapsed:.1f} s"
        assert elapsed >= TIMEOUT_S * 0.9  # not closed before the timeout either
        for s in half_body + half_head:
            assert closed[s].startswith(b"HTTP/1.1 408 "), closed[s][:80]
            assert b'"field":"body"' in closed[s]
        assert all(closed[s] == b"" for s in silent)
        with api.client() as c:  # the service goes on answering complete requests
            assert c.post("/v1/decisions", json=payment()).status_code == 200


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(redis_server):
    body = json.dumps(payment()).encode()
    request = (f"POST /v1/decisions HTTP/1.1\r\nhost: x\r\nx-api-key: {DECIDE_KEY}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    with Served(settings(redis_server.url, "tidle", body_timeout_s=30, keep_alive_s=TIMEOUT_S)) as api:
        s = _open(api.port, request)
        t0 = time.monotonic()
        closed = _until_closed([s], TIMEOUT_S + MARGIN_S)
        assert s in closed and closed[s].startswith(b"HTTP/1.1 200 "), closed
        assert time.monotonic() - t0 >= TIMEOUT_S * 0.9


def test_a_later_request_on_a_keep_alive_connection_gets_its_own_full_timeout(redis_server):
    """The connection's timer was set for the first request's deadline: the second, begun
    half a timeout later and never finished, is cut off a whole timeout after it began."""
    def request() -> bytes:
        body = json.dumps(payment()).encode()
        return (f"POST /v1/decisions HTTP/1.1\r\nhost: x\r\nx-api-key: {DECIDE_KEY}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body

    with Served(settings(redis_server.url, "tlater", body_timeout_s=TIMEOUT_S, keep_alive_s=30)) as api:
        s = _open(api.port, request())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT_S / 2)
        second = request()
        s.sendall(second[:len(second) - 5])
        t0 = time.monotonic()
        s.setblocking(False)
        closed = _until_closed([s], TIMEOUT_S + MARGIN_S)
        elapsed = time.monotonic() - t0
        assert s in closed and b"HTTP/1.1 408 " in closed[s], closed
        assert TIMEOUT_S * 0.9 <= elapsed <= TIMEOUT_S + MARGIN_S


def test_an_idle_connection_is_closed_a_whole_timeout_after_its_last_answer(redis_server):
    """The connection's timer was set for the first answer's idle deadline: a second request
    answered half a timeout later moves the close to a whole timeout after that answer."""
    def request() -> bytes:
        body = json.dumps(payment()).encode()
        return (f"POST /v1/decisions HTTP/1.1\r\nhost: x\r\nx-api-key: {DECIDE_KEY}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body

    def answer(s: socket.socket) -> bytes:
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        return got

    with Served(settings(redis_server.url, "tidle2", body_timeout_s=30, keep_alive_s=TIMEOUT_S)) as api:
        s = _open(api.port, request())
        assert answer(s).startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT_S / 2)
        s.sendall(request())
        assert answer(s).startswith(b"HTTP/1.1 200 ")
        t0 = time.monotonic()
        s.setblocking(False)
        closed = _until_closed([s], TIMEOUT_S + MARGIN_S)
        elapsed = time.monotonic() - t0
        assert s in closed, "still open"
        assert TIMEOUT_S * 0.9 <= elapsed <= TIMEOUT_S + MARGIN_S
