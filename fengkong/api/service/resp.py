"""Commands the decision path writes as RESP bytes by hand, byte for byte what
``hiredis.pack_command`` makes of their arguments (tests/test_decision_pointers.py): the
pipelined connection (`fengkong.features.pipelined`) sends bytes as they are, and hiredis
formats each argument's length with ``sprintf`` and copies the value once more.

A module of its own, below `idempotency` (the record's SET) and `merchant_snapshots` (the
snapshot's), which the runtime's module imports before the one `idempotency` imports."""

from __future__ import annotations


def set_ex(key: str, value: bytes, ttl: int) -> bytes:
    """``SET key value EX ttl`` as RESP bytes, byte for byte ``hiredis.pack_command``'s
    (tests/test_decision_pointers.py): written for every decision record and merchant snapshot,
    where hiredis' packing of the arguments (a copy of the value among them) cost more. The key's
    length is counted in characters where it is ASCII (the decision path's keys), else in
    its UTF-8 bytes."""
    tail = _EX_TAILS.get(ttl)
    if tail is None:
        if len(_EX_TAILS) >= 16:
            _EX_TAILS.clear()
        expiry = b"%d" % ttl
        tail = _EX_TAILS[ttl] = b"\r\n$2\r\nEX\r\n$%d\r\n%b\r\n" % (len(expiry), expiry)
    if key.isascii():
        return f"*5\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(value)}\r\n".encode() + value + tail
    name = key.encode()
    return b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n" % (len(name), name, len(value)) + value + tail


#: ``set_ex``'s text after the value, by TTL (a worker writes its records with one or two TTLs)
_EX_TAILS: dict[int, bytes] = {}
