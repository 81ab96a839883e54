"""The HTTP protocol `fengkong serve` runs (fengkong/api/http_protocol.py): a
response's header and body writes leave as one write, and a closing connection
still delivers its whole answer. Over real sockets, against the real app."""

from __future__ import annotations

import json
import socket
import time

import pytest
from api_fixtures import DECIDE_KEY, Served, payment, settings

from fengkong.api.http_protocol import CoalescingTransport


@pytest.fixture(scope="module")
def served(redis_server):
    with Served(settings(redis_server.url, "thttp")) as app:
        yield app


def _address(served: Served) -> tuple[str, int]:
    return "127.0.0.1", int(served.url.rsplit(":", 1)[1])


def _request(body: bytes, close: bool = False) -> bytes:
    return (b"POST /v1/decisions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"x-api-key: " + DECIDE_KEY.encode() + b"\r\ncontent-length: %d\r\n" % len(body)
            + (b"connection: close\r\n" if close else b"") + b"\r\n" + body)


def _read_response(sock: socket.socket) -> tuple[bytes, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head, json.loads(body)


class _CountingWrites:
    """Stands between the coalescing transport and the socket's, counting writes."""

    def __init__(self, transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name):
        return getattr(self.transport, name)


def test_an_answer_leaves_in_one_write(served):
    with socket.create_connection(_address(served)) as sock:
        sock.sendall(_request(json.dumps(payment()).encode()))
        head, first = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        (protocol,) = [p for p in served.server.server_state.connections
                       if p.transport.get_extra_info("peername") == sock.getsockname()]
        coalescing = protocol.transport
        assert isinstance(coalescing, CoalescingTransport)
        counting = coalescing.transport = _CountingWrites(coalescing.transport)

        sock.sendall(_request(json.dumps(payment()).encode()))
        head, second = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and second["decision"] and second["decision_id"] != first["decision_id"]
        deadline = time.monotonic() + 5
        while not counting.writes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(counting.writes) == 1  # headers and body together
        assert counting.writes[0].startswith(b"HTTP/1.1 200") and counting.writes[0].endswith(b"}")


def test_a_closing_connection_gets_its_whole_answer(served):
    with socket.create_connection(_address(served)) as sock:
        sock.sendall(_request(json.dumps(payment()).encode(), close=True))
        data = b""
        while chunk := sock.recv(65536):  # until the server closes
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert json.loads(body)["decision"] in ("allow", "challenge", "review", "deny")
