"""The CPU of writing one decision down, part by part, on bench_decide's traffic.

    python benchmarks/bench_record.py [--decisions 1000] [--warmup 300] [--repeat 7] [--artifacts DIR]

Why: the record's encoder, the audit entry, the pointer and the write-behind's packing
are a few microseconds each, too little to see in bench_decide's service figure on a
shared machine. Here bench_decide's run (rules only; with ``--artifacts``, the models of
that folder, as bench_decide's) is made with its encoder and
write-behind watched; then, with no other work in the process, each part runs again on
the last ``--decisions`` records the service wrote, ``--repeat`` times, and the median CPU
per decision (``time.process_time``) is printed as JSON, with the mean sizes:

* ``encode``: `Records.encode` (the deflated record and its commands);
* ``audit``: `Audit.decision_command` (and ``hiredis.pack_command`` of it when it is a tuple);
* ``pointer_and_set``: `pointers.commands` and `set_record` (packed likewise);
* ``intake``: `Intake.command` (packed likewise), averaged over every decision;
* ``compress``: the schema's compressor on the record's packed values (zstd; in a checkout
  before it, a copy of the schema's deflater, compress and flush).

Run it in two checkouts (``PYTHONPATH=<checkout> python <checkout>/benchmarks/bench_record.py``)
alternately to compare them: the script only calls what both have.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_decide  # noqa: E402
import hiredis  # noqa: E402

from fengkong.api.service import decisions, pointers, records  # noqa: E402
from fengkong.api.service.idempotency import set_record  # noqa: E402
from fengkong.events import parse_event  # noqa: E402


def _packed(command: Any) -> bytes:
    return command if type(command) is bytes else hiredis.pack_command(tuple(command))


def _cpu_us(fn: Callable[[Any], Any], items: list[Any], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        cpu = time.process_time()
        for item in items:
            fn(item)
        runs.append((time.process_time() - cpu) / len(items) * 1e6)
    return round(statistics.median(runs), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--artifacts", type=Path, help="serve the models of this artifacts folder")
    args = parser.parse_args()
    seen: dict[str, Any] = {}
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = []
    encode = records.Records.encode
    write_behind = decisions._write_behind

    def watched_encode(self: Any, record: Any, **kw: Any) -> Any:
        seen["records"] = self
        calls.append((dict(record), kw))
        return encode(self, record, **kw)

    def watched_write_behind(rt: Any, *a: Any) -> None:
        seen["rt"] = rt
        write_behind(rt, *a)

    records.Records.encode = watched_encode  # type: ignore[method-assign]
    decisions._write_behind = watched_write_behind
    run = argparse.Namespace(decisions=args.decisions + 200, warmup=args.warmup, artifacts=args.artifacts,
                             consumer=False, callgrind=False, callgrind_redis=False)
    answers = asyncio.run(bench_decide._run(run))["answers_sha256"]
    records.Records.encode = encode  # type: ignore[method-assign]
    rt, store = seen["rt"], seen["records"]
    calls = calls[-args.decisions:]
    events = {id(record): parse_event(record["event"]) for record, _ in calls}
    schema = store._last[4]
    compressor = getattr(schema, "codec", {}).get("compress")
    deflater = store._deflaters[schema.id] if compressor is None else None
    packed = []
    for record, kw in calls:
        values = records._values(record, schema, list(kw["features"][1]), scale=False)
        values[0] = values[1] = None
        values[20] = records.thousandths(values[20])
        packed.append(records._packer.pack(values))

    def compress(data: bytes) -> bytes:
        if compressor is not None:
            return compressor(data)  # type: ignore[no-any-return]
        one = deflater.copy()
        return one.compress(data) + one.flush()

    def pointer_and_set(call: Any) -> None:
        record = call[0]
        _packed(set_record("k:{evt:" + record["event_id"] + "}:request", b"\x02" * 190, 259200,
                           only_if_absent=False))
        for command in pointers.commands(rt.keys.prefix, decision_id=record["decision_id"],
                                         event_id=record["event_id"], ttl_s=259200):
            _packed(command)

    def intake(call: Any) -> None:
        record = call[0]
        command = rt.intake.command(record, events[id(record)], record["event"].get("occurred_at"))
        if command is not None:
            _packed(command)

    out = {
        "decisions": len(calls), "answers_sha256": answers,
        "encode_us": _cpu_us(lambda call: encode(store, call[0], **call[1]), calls, args.repeat),
        "audit_us": _cpu_us(lambda call: _packed(rt.audit.decision_command(call[0])), calls, args.repeat),
        "pointer_and_set_us": _cpu_us(pointer_and_set, calls, args.repeat),
        "intake_us": _cpu_us(intake, calls, args.repeat),
        "compress_us": _cpu_us(compress, packed, args.repeat),
        "packed_bytes": round(sum(map(len, packed)) / len(packed), 1),
        "compressed_bytes": round(sum(len(compress(p)) for p in packed) / len(packed), 1),
        "load": os.getloadavg()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
