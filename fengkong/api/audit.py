"""The audit trail: every decision, every rules reload and every list or merchant
profile change.

Where it goes:

* Redis streams, capped with ``XADD ... MAXLEN ~ n`` (approximate trimming is O(1)
  amortised; exact trimming is not): ``{prefix}:v1:audit:decisions`` and
  ``{prefix}:v1:audit:changes``. A change entry has one field, ``record``, holding
  the whole change record as JSON. A decision entry is a reference to the decision
  (`reference`: ids, outcome, score, the rules that fired, rule-set version, caller;
  its time is the entry's id), written in the same pipeline (one round trip) as the
  decision record itself by `fengkong.api.service.decisions`: the stored record has
  the rest, and a second full copy in the stream cost as many bytes again as the
  record. Its items are the entry's fields, the same ones in every entry
  (`ENTRY_FIELDS`), so Redis stores their names once per node of the stream and each
  entry holds only its values (about 120 bytes where one JSON field took 330);
  `read_entry` reads both shapes (entries of one JSON ``record`` were written before).
* Optionally a JSON-lines file (``FENGKONG_AUDIT_FILE``), one line per record,
  written with a single ``write(2)`` on an ``O_APPEND`` descriptor so that several
  worker processes can share the file without interleaving lines. The file also
  receives decisions made while Redis was down, which the stream cannot.

A decision record (in the file, and in Redis as `fengkong.api.service.records`
stores it) holds the event (the contract refuses card numbers, so there is
no secret to drop), the features the live rule set reads (not all ~130 the store
computes: the ones the decision could depend on), the rules that fired with their
values, the version and the outcome. A change record holds the key's *name*
(never the key), the time, the action and the live rule-set version.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import hiredis
import redis

from fengkong.api.encoding import dumps, loads
from fengkong.features import keys
from fengkong.features.change_audit import change_record, changes_key, stream_entry, utc_now_iso
from fengkong.features.plan_code import LENGTHS, ascii_resp

__all__ = ["ENTRY_FIELDS", "Audit", "read_entry", "reference", "stream_entry", "utc_now_iso"]

log = logging.getLogger(__name__)


#: a decision entry's fields, in order (`reference`'s keys but its time, which is the entry's id)
ENTRY_FIELDS = ("decision_id", "event_id", "decision", "score", "rules", "shadow", "ruleset_version", "degraded",
                "caller", "card")
_LISTS = frozenset(("rules", "shadow"))
_JSON = frozenset(("score", "degraded"))


def reference(record: Mapping[str, Any]) -> dict[str, Any]:
    """A decision's audit stream entry: who asked, what was decided, by which rules and
    rule set; the event and the features are in the stored record (GET
    /v1/decisions/{id}, for `decision_ttl_s`) and in the audit file."""
    return {"decision_id": record.get("decision_id"), "event_id": record.get("event_id"),
            "decision": record.get("decision"), "score": record.get("score"),
            "rules": rule_ids(record.get("reasons") or ()),
            "shadow": rule_ids(record.get("shadow") or ()),
            "ruleset_version": record.get("ruleset_version"), "degraded": record.get("degraded"),
            "caller": record.get("caller"),
            # the card's recent decisions (console) are found by it without reading every record
            "card": ((record.get("event") or {}).get("card") or {}).get("fingerprint")}


def rule_ids(reasons: Any) -> list[Any]:
    """The ids of fired rules given as the engine's `FiredRule` objects (the decision path's
    record) or as their dicts (a record read back, a degraded decision's)."""
    try:
        return [r.id for r in reasons]
    except AttributeError:
        return [r["id"] for r in reasons]


#: the record's fields an entry reads, in `entry_command`'s order but the card (the event's)
_ENTRY_NAMES = ("decision_id", "event_id", "decision", "score", "reasons", "shadow", "ruleset_version", "degraded",
                "caller", "event")
_ENTRY_READ = operator.itemgetter(*_ENTRY_NAMES)
#: a bool's JSON (`Audit.decision_command`)
_BOOLS = {True: "true", False: "false"}


def entry_command(head: str, values: tuple[Any, ...]) -> bytes | None:
    """The RESP bytes of an ``XADD`` whose text up to its fields is `head` (`resp_head`)
    and whose fields are `ENTRY_FIELDS` with these `values`, byte for byte what
    ``hiredis.pack_command`` makes of the command's arguments; None unless every value is
    ASCII text (the caller packs that command the general way). Written out, since the
    decision path queues one per decision: tests/test_worker_cpu.py holds it to hiredis."""
    a, b, c, d, e, f, g, h, i, j = values
    if not (type(a) is type(b) is type(c) is type(d) is type(e) is type(f) is type(g) is type(h)
            is type(i) is type(j) is str):
        return None
    n = LENGTHS  # lengths as text, looked up rather than formatted (one past the table: the general way)
    try:
        # two f-strings of at most 30 pieces, joined by `+`: CPython builds a longer one in a list
        text = (f"{head}$11\r\ndecision_id\r\n${n[len(a)]}\r\n{a}\r\n$8\r\nevent_id\r\n${n[len(b)]}\r\n{b}\r\n"
                f"$8\r\ndecision\r\n${n[len(c)]}\r\n{c}\r\n$5\r\nscore\r\n${n[len(d)]}\r\n{d}\r\n"
                f"$5\r\nrules\r\n${n[len(e)]}\r\n{e}\r\n") + (
                f"$6\r\nshadow\r\n${n[len(f)]}\r\n{f}\r\n"
                f"$15\r\nruleset_version\r\n${n[len(g)]}\r\n{g}\r\n$8\r\ndegraded\r\n${n[len(h)]}\r\n{h}\r\n"
                f"$6\r\ncaller\r\n${n[len(i)]}\r\n{i}\r\n$4\r\ncard\r\n${n[len(j)]}\r\n{j}\r\n")
    except IndexError:
        return None
    return ascii_resp(text)


def resp_head(*args: str | int) -> str:
    """The RESP text of a command's first arguments (texts or integers), with the count of
    all its arguments (`entry_command`'s head): ``*<count>`` and each as a bulk string, its
    length counted in characters (a text not ASCII, such as a key prefix, makes
    `entry_command` give None: the command is then packed the general way)."""
    count = len(args) + 2 * len(ENTRY_FIELDS)
    return f"*{count}\r\n" + "".join(f"${len(str(arg))}\r\n{arg}\r\n" for arg in args)


def read_entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    """A decision entry of the stream as the dict `reference` made, with ``at`` (ISO
    8601, UTC) from the entry's id; an entry written before (one JSON ``record``)
    as it was. None for an entry of neither shape."""
    raw = fields.get(b"record")
    if raw is not None:
        return loads(raw)  # type: ignore[no-any-return]
    if b"decision_id" not in fields:
        return None
    out: dict[str, Any] = {}
    for name in ENTRY_FIELDS:
        text = fields.get(name.encode(), b"").decode()
        if name in _LISTS:
            out[name] = text.split() if text else []
        elif name in _JSON:
            out[name] = loads(text) if text else None
        else:
            out[name] = text or None
    stamp = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    out["at"] = datetime.fromtimestamp(int(stamp.split("-")[0]) / 1000, timezone.utc).isoformat(
        timespec="microseconds")
    return out


class Audit:
    """Writes audit records to the Redis streams and the optional file."""

    def __init__(self, *, prefix: str, maxlen: int, path: Path | None) -> None:
        self.decisions_key = keys.audit_stream(prefix, "decisions")
        self.changes_key = changes_key(prefix)
        self.maxlen = maxlen
        self._head = resp_head("XADD", self.decisions_key, "MAXLEN", "~", maxlen, "*")
        self.path = Path(path) if path else None
        self._fd: int | None = None
        self._lock = threading.Lock()  # the rules watcher thread audits too
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def decision_command(self, record: Mapping[str, Any]) -> bytes:
        """The decision's stream entry as a command, for the caller's pipelined write: a
        reference to the stored record (`reference`), not a second copy of it; packed as
        Redis reads it (RESP: `fengkong.features.pipelined` writes bytes as they are). The
        decision path's record has every field: one ``itemgetter`` reads them; another record
        (fields missing) is read field by field."""
        try:
            fields = _ENTRY_READ(record)
        except KeyError:
            fields = tuple(map(record.get, _ENTRY_NAMES))
        decision_id, event_id, decision, score, reasons, shadow, version, degraded, caller, event = fields
        card = ((event or {}).get("card") or {}).get("fingerprint")
        # `reference(record)` as the entry's fields in `ENTRY_FIELDS` order (texts as they are, "" for
        # none; the rules' ids joined by spaces; score and degraded as JSON), written out: this runs
        # for every decision; tests/test_worker_cpu.py holds `read_entry` of it to `reference`
        values = ("" if decision_id is None else decision_id, "" if event_id is None else event_id,
                  "" if decision is None else decision, str(score) if type(score) is int else dumps(score).decode(),
                  " ".join(rule_ids(reasons)) if reasons else "", " ".join(rule_ids(shadow)) if shadow else "",
                  "" if version is None else version,
                  _BOOLS[degraded] if type(degraded) is bool else dumps(degraded).decode(),
                  "" if caller is None else caller, "" if card is None else card)
        packed = entry_command(self._head, values)
        if packed is not None:
            return packed
        args: Any = ("XADD", self.decisions_key, "MAXLEN", "~", self.maxlen, "*",
                     *(item for pair in zip(ENTRY_FIELDS, values) for item in pair))
        return hiredis.pack_command(args)

    @property
    def to_a_file(self) -> bool:
        """Whether records go to an audit file too (else the decision path need not make the
        whole record for it)."""
        return self._fd is not None

    def decision_to_file(self, record: Mapping[str, Any]) -> None:
        """The whole decision record as one line of the audit file (no-op without one)."""
        if self._fd is not None:
            self.to_file(dumps(record))

    def to_file(self, record_json: bytes) -> None:
        """Append one JSON line (no-op without an audit file)."""
        fd = self._fd
        if fd is None:
            return
        try:
            os.write(fd, record_json + b"\n")
        except OSError:  # a full disk must not fail a payment decision
            log.exception("audit file write failed")

    def change(self, client: redis.Redis | None, *, actor: str, action: str, version: str | None,
               detail: dict[str, Any]) -> dict[str, Any]:
        """Record a rules reload, list change or profile change; returns the record.

        The stream write is best effort (Redis may be the thing that is down); the
        file line is always written when a file is configured."""
        record = change_record(actor=actor, action=action, version=version, detail=detail)
        data = dumps(record)
        with self._lock:
            self.to_file(data)
        if client is not None:
            try:
                client.xadd(self.changes_key, {"record": data}, maxlen=self.maxlen, approximate=True)
            except (redis.RedisError, OSError):
                log.warning("audit stream unavailable for %s by %s", action, actor)
        return record

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
