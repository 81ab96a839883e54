"""Instructions Redis spends per feature-script call, counted by callgrind: a figure that
does not move with the machine's load, so two versions of `lua/update_read.lua` compare
on a busy machine (wall-clock and even `INFO cpu` figures drift by 5-10 % there).

Two steps. ``capture`` replays a simulated history in flight as `fengkong replay` does
(`run_replay`, rules only) and saves every EVALSHA it sent, with the store's keys as
they were before the first one (the merchant profiles, the lists). ``measure`` starts a
redis-server under ``valgrind --tool=callgrind`` (instrumentation off), loads the keys,
sends the first ``--warm`` calls uninstrumented (entities known, make-up hashes made),
then counts the instructions of the next ``--calls`` with the given script (its SHA
replaces the captured one). The same capture serves every script that reads the same
arguments; a change of the arguments needs a capture of its own.

    PYTHONPATH=<root> python benchmarks/bench_script_ir.py capture --events 30000 --out /tmp/cap
    PYTHONPATH=<root> python benchmarks/bench_script_ir.py measure --capture /tmp/cap \\
        --script fengkong/features/lua/update_read.lua [--warm 3000] [--calls 1000] [--keep /tmp/cg.out]

    PYTHONPATH=<root> python benchmarks/bench_script_ir.py load --script fengkong/features/lua/update_read.lua

``load`` counts the instructions of one SCRIPT LOAD of the cached script (Redis hashes its
whole text each time), which the in-flight replay sends once per window of calls.
The last line of ``measure`` is JSON: ``ir_per_call`` (instructions per call, Redis's
whole process: parsing, the script, its commands, the reply).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

import fengkong
from fengkong.features import inflight
from fengkong.features.embedded_redis import EmbeddedRedis, find_redis_server
from fengkong.replay.runner import run_replay
from fengkong.simulation import SimConfig, run, write_outputs


def capture(events: int, out: Path) -> None:
    """Replay a simulated history in flight, keeping every feature call (``out``.calls) and
    the keys that were there before the first (``out``.keys)."""
    import hiredis

    root = Path(fengkong.__file__).resolve().parent.parent
    sent: list[bytes] = []
    before: dict[str, str] = {}
    server = EmbeddedRedis(persist=False).start()

    def keep(self: Any) -> None:  # SocketWriter._run, keeping what it sends
        while (data := self.chunks.get()) is not None:
            if not before:
                client = server.client()
                before.update({k.decode("latin1"): client.dump(k).hex() for k in client.keys("*")})
            sent.append(data)
            self.conn.send_packed_command([data], check_health=False)

    # (the class was `_Writer` before 2026-12-05: so older code captures the same way)
    writer = getattr(inflight, "SocketWriter", None) or getattr(inflight, "_Writer")
    original = writer._run
    writer._run = keep
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sim = Path(tmp)
            write_outputs(run(SimConfig.for_events(events, seed=1)), sim, formats=("parquet",))
            run_replay(sim / "events.parquet", rules_dir=root / "rules", redis_url=server.url, prefix="ir",
                       lists_file=sim / "blacklist.json", merchants_file=sim / "merchants.parquet", in_flight=1024)
    finally:
        writer._run = original
        server.stop()
    reader, calls = hiredis.Reader(), []
    for data in sent:  # fed chunk by chunk: one feed of everything is quadratic in hiredis
        reader.feed(data)
        while (command := reader.gets()) is not False:
            if command[0] != b"SCRIPT":  # each chunk's SCRIPT LOAD
                calls.append(command)
    Path(f"{out}.calls").write_bytes(pickle.dumps(calls))
    Path(f"{out}.keys").write_text(json.dumps(before))
    print(json.dumps({"calls": len(calls), "keys_before": len(before)}))


def _server(tmp: str) -> tuple[subprocess.Popen[bytes], redis.Redis, str]:
    """A redis-server under callgrind (instrumentation off), its client, callgrind's output file."""
    sock, out = f"{tmp}/redis.sock", f"{tmp}/callgrind.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                             find_redis_server(), "--port", "0", "--unixsocket", sock, "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=sock)
    for _ in range(600):
        try:
            client.ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.2)
    return proc, client, out


def load_cost(script: Path, count: int) -> None:
    """Callgrind's instruction count of one SCRIPT LOAD of a script already cached (what the
    in-flight replay sends before a window of calls), over ``count`` loads."""
    text = script.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        proc, client, out = _server(tmp)
        client.script_load(text)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        pipe = client.pipeline(transaction=False)
        for _ in range(count):
            pipe.script_load(text)
        pipe.execute()
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        proc.wait()
        totals = [int(line.split()[1]) for line in Path(out).read_text().splitlines()
                  if line.startswith(("summary:", "totals:"))]
    print(json.dumps({"script": str(script), "bytes": len(text.encode()), "loads": count,
                      "ir_per_load": round(totals[-1] / count)}))


def measure(cap: Path, script: Path, warm: int, count: int, keep: Path | None = None) -> None:
    """Callgrind's instruction count of ``count`` calls after ``warm`` uninstrumented ones
    (``keep``: where to copy callgrind's output, for ``callgrind_annotate``)."""
    calls = pickle.loads(Path(f"{cap}.calls").read_bytes())[:warm + count]
    if len(calls) < warm + count:
        raise SystemExit(f"bench_script_ir: the capture has {len(calls)} calls, fewer than --warm + --calls")
    text = script.read_text(encoding="utf-8")
    sha = hashlib.sha1(text.encode()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        proc, client, out = _server(tmp)
        for key, value in json.loads(Path(f"{cap}.keys").read_text()).items():
            client.restore(key, 0, bytes.fromhex(value), replace=True)
        client.script_load(text)
        errors = 0

        def send(lo: int, hi: int) -> int:
            bad = 0
            for at in range(lo, hi, 256):
                pipe = client.pipeline(transaction=False)
                for command in calls[at:min(hi, at + 256)]:
                    pipe.execute_command(command[0], sha, *command[2:])
                bad += sum(isinstance(r, Exception) for r in pipe.execute(raise_on_error=False))
            return bad

        errors += send(0, warm)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True)
        errors += send(warm, warm + count)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True)
        memory = client.info("memory")["used_memory"]
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        proc.wait()
        if keep is not None:
            shutil.copyfile(out, keep)
        totals = [int(line.split()[1]) for line in Path(out).read_text().splitlines()
                  if line.startswith(("summary:", "totals:"))]
    if errors:
        raise SystemExit(f"bench_script_ir: {errors} calls were refused: the script does not read these arguments")
    print(json.dumps({"script": str(script), "warm": warm, "calls": count, "ir_per_call": round(totals[-1] / count),
                      "used_memory": memory, "load": os.getloadavg()[0]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--events", type=int, default=30_000)
    cap.add_argument("--out", type=Path, required=True)
    mes = sub.add_parser("measure")
    mes.add_argument("--capture", type=Path, required=True)
    mes.add_argument("--script", type=Path, required=True)
    mes.add_argument("--warm", type=int, default=3000)
    mes.add_argument("--calls", type=int, default=1000)
    mes.add_argument("--keep", type=Path, help="copy callgrind's output here (for callgrind_annotate)")
    load = sub.add_parser("load")
    load.add_argument("--script", type=Path, required=True)
    load.add_argument("--loads", type=int, default=100)
    args = ap.parse_args()
    if args.step == "capture":
        capture(args.events, args.out)
    elif args.step == "load":
        load_cost(args.script, args.loads)
    else:
        measure(args.capture, args.script, args.warm, args.calls, args.keep)


if __name__ == "__main__":
    main()
