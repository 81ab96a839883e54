"""The decision record an event_id leaves in Redis, stored compactly.

Why: the record is kept `decision_ttl_s` for every decision (idempotent retries and
GET /v1/decisions/{id}), so its size is most of what Redis holds per decision. As
JSON it repeated ~70 feature names, the rule-set version and the models' status in
every record; here each record holds only its values, and what records written under
one rule set share is stored once (docs/operations.md, "Memory sizing").

Format: one byte ``\\x01``, then one MessagePack array of the record's values in
`FIELDS` order, where

* the feature names, the rule-set version, the models' status and the names a
  ``missing_features`` entry may take are a `Schema`, stored once under
  ``{schema:<id>}:names`` (``id``: a hash of its content) with a TTL past the
  records' and re-sent by each worker every `RESEND_S` and after a Redis fault, so
  the schema outlives every record that names it (a Redis restarted empty gets it
  again with a worker's first decision after the fault it saw, or within `RESEND_S`;
  a record whose schema is gone still reads, without its feature names);
* the features are a list of values in the schema's order; ``missing_features``
  indexes into the schema's names; a fired rule is its id and its values when the
  schema's table of the rule set's rules has the rest (description, action, score,
  mode, tags) as the rule fired it;
* a feature whose value repeats one of the event's texts (``event.ip``,
  ``card.fingerprint``, ...) is a reference to it (an extension type, `record_event`);
* the event's field names are indexes into `EVENT_NAMES`, its ``occurred_at`` an
  integer (`when_code`: microseconds and the UTC offset) where that gives the same text
  back; the body's SHA-256 is its first 16 bytes (enough to tell a retry from another
  body: `same_body`), the decision id raw bytes, ``decided_at`` an integer of
  microseconds, ``event_id`` left out when it is the event's own;
* a feature that is a float with a whole value, or a whole number of hundredths (an
  amount in major units), is stored as that integer (1 to 5 bytes where a float takes
  9), and the record's last item says which: two bitmaps over the features, whole
  values then hundredths (`scaled`; absent in records written before, which read as
  they were);
* the thresholds' names are indexes into `THRESHOLD_NAMES`.

Compressed: once a worker has written `SAMPLES` records under a schema, it makes that
schema's dictionary of them (a zstd dictionary trained on their values packed as below,
`record_codec.dictionary`) and writes the next records under a schema of its own, the same
plus the dictionary (``zdict``, the blob's sixth item), as one byte ``\\x03``, the schema id
(8 bytes) and the body's hash (16 bytes) in the clear (what `header` and `schema_id` read
without decompressing), then one zstd frame (`record_codec`: no magic number, content size,
checksum or dictionary id, the clear header names the schema) of the MessagePack array above
with those two items left None, the features' floats as they are (no bitmaps: the
dictionary's repeats pack a whole float's bytes as well) and ``latency_ms`` a whole number of
microseconds (`thousandths`). Records of one rule set repeat most of each other's bytes (the
structure, the features' usual values, the merchants' and rules' texts), so a compressed
record is a fraction of its compact size (docs/operations.md, "Memory sizing"); a trained
dictionary also holds the entropy tables, which a record of a few hundred bytes could not
pay for on its own. The dictionary is a worker's own sample of its traffic; a rule set
reloaded makes a new schema, sampled again. That first dictionary is of a rule set's first
records, which meet cold entities (no history, empty counts): after `RESAMPLE_AFTER` records
compressed with it, the next `SAMPLES` make the shape's last schema and dictionary, as the
first was made (a record with it is smaller: docs/benchmarks.md). A compressed record cannot
be read without its schema (the schema outlives every record that names it, as above):
`decode` then keeps only the body's hash. Records written before as ``\\x02`` (the same
header, then raw deflate with an 8 kB dictionary of raw sampled bytes) are still read.

A record that MessagePack cannot hold (an integer past 64 bits) is written as JSON,
the format before this one; readers take every format (`decode`: a record starting with
``{`` is JSON, ``\\x01`` compact, ``\\x02`` deflated, ``\\x03`` compressed), so records
written by an older version stay readable after an upgrade. Outcome records are JSON.
"""

from __future__ import annotations

import operator
import time
from typing import Any, Mapping

import msgpack
import msgspec

from fengkong.api.encoding import loads
from fengkong.api.service import record_codec
from fengkong.api.service.record_values import (
    decided_code, id_bytes, iso_micros, latency_of, scaled, thousandths, unscaled)
from fengkong.api.service.record_event import named, resolved, stored_event
from fengkong.api.service.record_reasons import REASON_KEYS, reason_dict as _reason_dict, reason_values as _reason
from fengkong.api.service.record_schema import Schema, rule_table
from fengkong.features import keys

#: the first byte of a compact decision record (a JSON record starts with ``{``)
COMPACT = b"\x01"
#: the first byte of a deflated decision record (written before `COMPRESSED`; still read)
DEFLATED = b"\x02"
#: the first byte of a compressed decision record (`Records.encode`, the module docstring)
COMPRESSED = b"\x03"
#: records a worker writes under a new schema before it makes that schema's dictionary of them
SAMPLES = 64
#: records a worker compresses with a schema's first dictionary before it samples the next `SAMPLES`
#: for the last one (the first records of a rule set meet cold entities: unlike the traffic after)
RESAMPLE_AFTER = 256
#: a decision record's fields, in the order the service writes them
FIELDS = ("kind", "body_sha256", "decision_id", "event_id", "decision", "score", "reasons", "merchant_grade",
          "ruleset_version", "degraded", "degraded_reason", "lane", "risk", "models", "decided_at", "caller", "event",
          "features", "shadow", "missing_features", "score_action", "thresholds", "latency_ms")
#: the thresholds' names (`fengkong.engine.decision.Decision.thresholds`), written as their
#: index here (part of the format: append new names, never reorder)
THRESHOLD_NAMES = ("challenge", "review", "deny")
_THRESHOLD_INDEX = {n: i for i, n in enumerate(THRESHOLD_NAMES)}
#: how often a worker writes a schema again while it uses it (its TTL is the records' plus an hour)
RESEND_S = 60.0
_SCHEMA_GRACE_S = 3600

_encode = msgspec.msgpack.Encoder().encode
#: what packs a record msgspec does not take (a float or int subclass such as numpy's): msgpack,
#: which writes the same bytes (tests/test_write_behind.py), the references as its ExtType
_packer = msgpack.Packer(use_bin_type=True, autoreset=True,
                         default=lambda o: msgpack.ExtType(o.code, o.data) if type(o) is msgspec.msgpack.Ext else o)


def pack(values: list[Any]) -> bytes:
    """A record's values as MessagePack: msgspec's encoder (a third of msgpack's CPU for a
    record's hundred-odd values), the same bytes as ``msgpack.packb(..., use_bin_type=True)``;
    what msgspec refuses as a type, by msgpack. Past 64 bits, an integer raises OverflowError
    in both (the record is then JSON: `Records.encode`)."""
    try:
        return _encode(values)
    except TypeError:
        return _packer.pack(values)


class Records:
    """One worker's encoder and schema cache for decision records (see the module docstring)."""

    def __init__(self, prefix: str, ttl_s: int) -> None:
        self.prefix = prefix
        self.schema_ttl_s = ttl_s + _SCHEMA_GRACE_S
        self._by_shape: dict[tuple[Any, ...], Schema] = {}
        self._by_id: dict[str, Schema] = {}
        self._sent: dict[str, tuple[float, int]] = {}  # schema id -> (monotonic time written, faults then)
        self._samples: dict[str, list[bytes]] = {}  # schema id (no dictionary yet) -> its first records' values
        self._resample: dict[str, int] = {}  # schema id (first dictionary) -> records until its samples are kept
        self._last: tuple[Any, ...] | None = None  # the last record's shape and schema (`_schema`)

    def schema_key(self, schema_id: str) -> str:
        return keys.record_schema_key(self.prefix, schema_id)

    def known(self, schema_id: str) -> Schema | None:
        """A schema this worker has written or read before."""
        return self._by_id.get(schema_id)

    def learn(self, blob: bytes | None) -> Schema | None:
        """Remember a schema read from Redis (None when it is gone: then every schema is
        written again with this worker's next decision)."""
        if not blob:
            self._sent.clear()
            return None
        schema = Schema.from_blob(blob)
        self._remember(schema)
        return schema

    def _remember(self, schema: Schema) -> None:
        if len(self._by_id) >= 256:  # rule sets come and go; a worker keeps the recent ones
            self._by_id.clear()
            self._by_shape.clear()
            self._sent.clear()
            self._samples.clear()
            self._resample.clear()
            self._last = None
        self._by_id[schema.id] = schema

    def encode(self, record: Mapping[str, Any], *, ruleset: Any, faults: int,
               features: tuple[tuple[str, ...], Any] | None = None,
               fields: tuple[Any, ...] | None = None) -> tuple[bytes, list[Any]]:
        """The stored form of a decision record (compact for a schema's first `SAMPLES`
        records, compressed after), and the commands that must precede it (the schema's SET
        when this worker has not written it lately, or since the last Redis fault `faults`
        counts). `ruleset` is the rule set that decided (its rules and the names it reads
        go to the schema), or None when it is no longer live. `features`: the record's
        features as their names and values (the decision path, which builds no dict of
        them; its names one tuple object per rule set), when ``record["features"]`` is not
        there to read them from. `fields`: the record's values of `READ`, in that order, when
        the caller has them at hand and the record holds no field but `FIELDS` (the decision
        path: then none is looked up again)."""
        if features is None:
            recorded = record["features"]
            names, values = tuple(recorded), list(recorded.values())
        else:
            names, values = features[0], list(features[1])
        version, models = record.get("ruleset_version"), record.get("models")
        shape = (version, models, names, ruleset is None)
        last = self._last
        if (last is not None and last[2] is names and last[0] == version and last[1] == models
                and last[3] is shape[3]):
            schema = last[4]  # the last record's schema: the same names object, no tuple to hash
        else:
            schema = self._schema(shape, ruleset)
        commands: list[Any] = []  # what `Records.encode`'s caller adds to: commands as tuples or RESP bytes
        now = time.monotonic()
        sent = self._sent.get(schema.id)
        if sent is None or sent[1] != faults or now - sent[0] >= RESEND_S:
            commands.append(("SET", self.schema_key(schema.id), schema.blob, "EX", self.schema_ttl_s))
            self._sent[schema.id] = (now, faults)
        try:
            if schema.zdict:
                return self._compressed(record, schema, values, shape, fields), commands
            items = _values(record, schema, values, fields=fields)
            plain = pack(items)
            self._sample(shape, schema, items)
            return COMPACT + plain, commands
        except (OverflowError, TypeError, ValueError, UnicodeEncodeError):  # what only JSON can hold
            from fengkong.api.encoding import dumps

            return dumps(record if features is None else with_features(record, names, features[1])), []

    def _schema(self, shape: tuple[Any, ...], ruleset: Any) -> Schema:
        """The schema of records of this shape (rule-set version, models, feature names, no
        live rule set), made the first time; remembered as the last one asked for."""
        schema = self._by_shape.get(shape)
        if schema is None:
            schema = Schema.make(shape[0], shape[1], shape[2], ruleset.features_read if ruleset is not None else (),
                                 rule_table(ruleset) if ruleset is not None else {})
            self._remember(schema)
            self._by_shape[shape] = schema
        self._last = (*shape, schema)
        return schema

    def _compressed(self, record: Mapping[str, Any], schema: Schema, features: list[Any],
                    shape: tuple[Any, ...], fields: tuple[Any, ...] | None) -> bytes:
        """The record compressed with its schema's dictionary (the module docstring), by
        one compressor per schema. Records under a schema's first dictionary are counted,
        and the `SAMPLES` after `RESAMPLE_AFTER` of them make its last (`_collect`)."""
        values = _values(record, schema, features, scale=False, fields=fields)
        sha = values[1]
        if len(sha) != SHA_BYTES:
            raise ValueError("body_sha256 is not a SHA-256")
        values[0] = values[1] = None
        values[20] = thousandths(values[20])
        compress = schema.codec.get("compress")
        if compress is None:
            compress = schema.codec["compress"] = record_codec.compressor(schema.zdict)
        packed = pack(values)
        left = self._resample.get(schema.id)  # None: a last dictionary (or one of another worker's)
        if left is not None:
            if left:
                self._resample[schema.id] = left - 1
            else:
                self._collect(shape, schema, packed)
        # the schema id and the body's hash, read without decompressing
        return b"".join((COMPRESSED, schema.raw_id, sha, compress(packed)))

    def _sample(self, shape: tuple[Any, ...], schema: Schema, values: list[Any]) -> None:
        """Keep a record written under a schema without a dictionary; after `SAMPLES`,
        the shape's records are written under the schema with their dictionary."""
        if values[-1] is not None:  # `scaled` changed the values: pack them as `_compressed` does
            values[15] = unscaled(list(values[15]), values[-1])
        values[0] = values[1] = None
        values[20] = thousandths(values[20])
        values[-1] = None
        self._collect(shape, schema, pack(values))

    def _collect(self, shape: tuple[Any, ...], schema: Schema, packed: bytes) -> None:
        """Keep a record's values packed as `_compressed` packs them; after `SAMPLES`, the
        shape's records are written under the schema with their dictionary (the first: counted
        until it is sampled again, `_compressed`; or the last)."""
        samples = self._samples.setdefault(schema.id, [])
        samples.append(packed)
        if len(samples) >= SAMPLES:
            del self._samples[schema.id]
            first = self._resample.pop(schema.id, None) is None
            compressed = schema.with_dictionary(record_codec.dictionary(samples))
            self._remember(compressed)
            if first:
                self._resample[compressed.id] = RESAMPLE_AFTER
            self._by_shape[shape] = compressed
            self._last = None


def with_features(record: Mapping[str, Any], names: tuple[str, ...], values: Any) -> dict[str, Any]:
    """The whole record of one given without its features (`Records.encode`'s `features`),
    with them after its event, where the record's fields have them (`FIELDS`)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        out[k] = v
        if k == "event":
            out["features"] = dict(zip(names, values))
    return out


#: bytes of the body's SHA-256 a compact record keeps (128 bits: a retry with another body
#: is told apart by them as surely as by all 32)
SHA_BYTES = 16


def same_body(stored_sha: str, digest: bytes) -> bool:
    """Whether a stored record's body hash (`header`: hex, the first `SHA_BYTES` of a
    compact record's, all 32 of a JSON one's) is of the body whose SHA-256 hex is `digest`."""
    return len(stored_sha) >= 2 * SHA_BYTES and digest.startswith(stored_sha.encode())


_HEAD = 8 + SHA_BYTES  # a compressed (or deflated) record's schema id and body hash, after its first byte
#: the first bytes of the records whose schema id and body hash are in the clear
_HEADED = (COMPRESSED, DEFLATED)

#: the fields `_values` reads, in the order it reads them (one ``itemgetter`` call where the
#: record has them all, as a record read back does: cheaper than a ``get`` per field; the
#: decision path hands them over as it made them, `Records.encode`'s `fields`)
READ = ("body_sha256", "decision_id", "event_id", "decision", "score", "reasons", "merchant_grade", "degraded",
        "degraded_reason", "lane", "risk", "decided_at", "caller", "event", "shadow", "missing_features",
        "score_action", "thresholds", "latency_ms")
_read_all = operator.itemgetter(*READ)


def _values(record: Mapping[str, Any], schema: Schema, features: list[Any], scale: bool = True,
            fields: tuple[Any, ...] | None = None) -> list[Any]:
    """The record's items in their stored order (the module docstring); `features` is its
    features' values in the schema's order, a list this changes and returns among them;
    `fields` as `Records.encode` takes them."""
    if fields is None:
        try:
            fields = _read_all(record)
        except KeyError:
            fields = (record["body_sha256"], *map(record.get, READ[1:]))
        extra = None if record.keys() <= _FIELD_SET else {k: v for k, v in record.items() if k not in _FIELD_SET}
    else:
        extra = None
    (sha, decision_id, event_id, decision, score, reasons, grade, degraded, degraded_reason, lane, risk, decided_at,
     caller, event, shadow, missing, score_action, thresholds, latency) = fields
    if isinstance(event, dict):
        stored: Any = stored_event(event, features, schema.copies)  # (`features` made `with_refs` of them)
        own_id = event_id is not None and event.get("event_id") == event_id
    else:
        stored = event
        own_id = isinstance(event, Mapping) and event.get("event_id") == event_id and event_id is not None
    return [
        schema.raw_id, bytes.fromhex(sha)[:SHA_BYTES], id_bytes(decision_id), None if own_id else [event_id],
        decision, score, [_reason(r, schema) for r in reasons] if reasons else [],
        grade, degraded, degraded_reason, lane, risk, decided_code(decided_at), caller, stored,
        features,
        [_reason(r, schema) for r in shadow] if shadow else [],
        _missing(missing, schema) if missing else [],
        score_action,
        {_THRESHOLD_INDEX.get(k, k): v for k, v in thresholds.items()} if isinstance(thresholds, dict) else thresholds,
        latency, extra or None, scaled(features) if scale else None,  # zstd packs a float's bytes as well
        # ruleset_version and models are the schema's; kind is "decision"
    ]


_FIELD_SET = frozenset(FIELDS)


def _missing(names: Any, schema: Schema) -> list[Any]:
    """A record's missing_features as indexes into the schema's vocab (a name not there
    stays), remembered per list: the list is only packed, never changed."""
    key = tuple(names)
    out = schema.missing.get(key)
    if out is None:
        if len(schema.missing) >= 256:
            schema.missing.clear()
        get = schema.index.get
        out = schema.missing[key] = [get(n, n) for n in key]
    return out


def is_record(value: bytes | None) -> bool:
    """Whether a value of ``{evt:<id>}:request`` is a record (compact, compressed, deflated or
    JSON), not the event id's claim that the record replaces (the feature store's blob, a marker)."""
    return value is not None and value[:1] in (COMPRESSED, COMPACT, b"{", DEFLATED)


def schema_id(value: bytes) -> str | None:
    """The schema a stored record needs to be read, or None (a JSON record needs none)."""
    head = value[:1]
    if head in _HEADED:
        return value[1:9].hex()
    if head != COMPACT:
        return None
    return _unpack(value)[0].hex()  # type: ignore[no-any-return]


def _unpack(value: bytes) -> list[Any]:
    return msgpack.unpackb(memoryview(value)[1:], raw=False, strict_map_key=False)  # type: ignore[no-any-return]


def header(value: bytes) -> tuple[str | None, str]:
    """(kind, body SHA-256 hex: its first `SHA_BYTES` in a compact record, compare with
    `same_body`) of a stored record of any format, without its schema."""
    head = value[:1]
    if head in _HEADED:
        return "decision", value[9:1 + _HEAD].hex()
    if head != COMPACT:
        record = loads(value)
        return record.get("kind"), record.get("body_sha256", "")
    return "decision", _unpack(value)[1].hex()


def _expanded(value: bytes, schema: Schema | None) -> list[Any]:
    """A compressed (or deflated) record's items as a compact record has them; without its
    schema's dictionary only the schema id and the body's hash (`decode`)."""
    sid, sha = value[1:9], value[9:1 + _HEAD]
    if schema is None or not schema.zdict:
        return [sid, sha, None, [None], None, None, [], None, None, None, None, None, None, None, None, [], [], [],
                None, None, None, None]
    body = memoryview(value)[1 + _HEAD:]
    if value[:1] == DEFLATED:
        packed = record_codec.inflated(body, schema.zdict)
    else:
        zdict = schema.codec.get("decompress")
        if zdict is None:
            zdict = schema.codec["decompress"] = record_codec.loaded(schema.zdict)
        packed = record_codec.decompressed(body, zdict)
    items: list[Any] = msgpack.unpackb(packed, raw=False, strict_map_key=False)
    items[0], items[1], items[20] = sid, sha, latency_of(items[20])
    return items


def decode(value: bytes, schema: Schema | None) -> dict[str, Any]:
    """The record as the service wrote it (any format). Without its schema (gone from
    Redis) a compact record keeps its decision but not its feature names: features are
    empty and the rule-set version and models unknown; a compressed one keeps only its
    body's hash (the schema outlives every record that names it: `Records`)."""
    head = value[:1]
    if head in _HEADED:
        items = _expanded(value, schema)
    elif head != COMPACT:
        return loads(value)  # type: ignore[no-any-return]
    else:
        items = _unpack(value)
    (sid, sha, decision_id, event_id, decision, score, reasons, grade, degraded, degraded_reason, lane, risk,
     decided_at, caller, event, values, shadow, missing, score_action, thresholds, latency_ms, extra) = items[:22]
    values = unscaled(values, items[22] if len(items) > 22 else None)
    if isinstance(thresholds, dict):
        thresholds = {THRESHOLD_NAMES[k] if isinstance(k, int) and k < len(THRESHOLD_NAMES) else k: v
                      for k, v in thresholds.items()}
    if isinstance(event, dict):
        event = named(event)
        values = resolved(values, event)
    names = schema.names if schema is not None else ()
    vocab = schema.vocab if schema is not None else ()
    record = {
        "kind": "decision", "body_sha256": sha.hex(),
        "decision_id": "d_" + decision_id.hex() if isinstance(decision_id, bytes) else decision_id,
        "event_id": event["event_id"] if event_id is None else event_id[0],
        "decision": decision, "score": score, "reasons": [_reason_dict(r, schema) for r in reasons],
        "merchant_grade": grade, "ruleset_version": schema.ruleset_version if schema is not None else None,
        "degraded": degraded, "degraded_reason": degraded_reason, "lane": lane, "risk": risk,
        "models": schema.models if schema is not None else None,
        "decided_at": iso_micros(decided_at) if isinstance(decided_at, int) else decided_at, "caller": caller,
        "event": event, "features": dict(zip(names, values)) if len(names) == len(values) else {},
        "shadow": [_reason_dict(r, schema) for r in shadow],
        "missing_features": [vocab[m] if isinstance(m, int) and m < len(vocab) else str(m) for m in missing],
        "score_action": score_action, "thresholds": thresholds, "latency_ms": latency_ms,
    }
    if extra:
        record.update(extra)
    return record
