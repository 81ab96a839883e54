"""`fengkong serve` files cases from a consumer process beside its workers, at idle
priority (with a catch-up consumer at nice 10 for a backlog past its bound): a decision
worker only queues (a stopped consumer means no case is filed, however long the worker
runs), a killed consumer is restarted and files what was queued meanwhile, and stopping
the service stops them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from api_fixtures import payment
from fengkong.cli.case_process import CATCH_UP, NICE
from serve_process import ServeProcess, pid_alive, wait_until

TOR = "185.220.101.7"  # on the default rules' Tor list: the payment is answered `review`


def consumer_pids(parent: int, catch_up: bool = False) -> list[int]:
    """The supervisor's children running `fengkong cases consume` (the steady ones, or
    with ``catch_up`` those run with ``--catch-up``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if (ppid == parent and b"cases" in argv and b"consume" in argv and (CATCH_UP.encode() in argv) == catch_up
                and pid_alive(int(stat.parent.name))):
            found.append(int(stat.parent.name))
    return found


def _nice(pid: int) -> int:
    """A process's niceness (/proc/<pid>/stat, field 19)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _cases(c, card: str) -> list[dict]:
    r = c.get("/v1/cases", params={"entity_kind": "card", "entity_id": card})
    assert r.status_code == 200, r.text
    return r.json()["cases"]


def _review(c) -> str:
    ev = payment(ip=TOR)
    assert c.post("/v1/decisions", json=ev).json()["decision"] == "review"
    return ev["card"]["fingerprint"]


def test_the_workers_only_queue_and_a_killed_consumer_is_restarted(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path / "data", tmp_path / "serve.log", workers=1).start()
    try:
        assert serve.proc is not None
        assert wait_until(lambda: len(consumer_pids(serve.proc.pid)) == 1, 30), serve.output()
        [consumer] = consumer_pids(serve.proc.pid)
        assert f"cases: a consumer process (pid {consumer})" in serve.output()
        [catch_up] = consumer_pids(serve.proc.pid, catch_up=True)
        # decisions come first on shared cores: the steady consumer files with idle CPU only,
        # the catch-up one (filing only past the lag bound) at nice 10, the service at 0
        assert os.sched_getscheduler(consumer) == os.SCHED_IDLE
        assert os.sched_getscheduler(catch_up) == os.SCHED_OTHER and _nice(catch_up) == NICE
        assert os.sched_getscheduler(serve.proc.pid) == os.SCHED_OTHER and _nice(serve.proc.pid) == 0
        with serve.client() as c:
            filed = _review(c)
            assert wait_until(lambda: bool(_cases(c, filed)), 30), serve.output()

            # the consumer stopped: the worker files nothing itself, nor does the catch-up
            # consumer while the review is younger than the lag bound (30 s): it waits queued
            os.kill(consumer, signal.SIGSTOP)
            try:
                waiting = _review(c)
                time.sleep(3.0)  # longer than a consumer step and its linger
                assert _cases(c, waiting) == []
            finally:
                os.kill(consumer, signal.SIGKILL)  # a crash of the consumer
            assert wait_until(lambda: consumer_pids(serve.proc.pid) not in ([], [consumer]), 30), serve.output()
            [restarted] = consumer_pids(serve.proc.pid)
            assert restarted != consumer and "case consumer (pid" in serve.output()
            # the new process files what waited, and what comes after
            after = _review(c)
            assert wait_until(lambda: bool(_cases(c, after)), 30), serve.output()
            # the review queued while it was stopped is filed too: new to the group, or handed
            # to the stopped process's blocked read (pending in its name), then taken over once
            # idle (the consumer's claim_idle_ms, 30 s)
            assert wait_until(lambda: bool(_cases(c, waiting)), 60), serve.output()
        serve.send(signal.SIGTERM)
        serve.wait(60)
        assert wait_until(lambda: not pid_alive(restarted), 15), "the consumer outlived the service"
        assert wait_until(lambda: not pid_alive(catch_up), 15), "the catch-up consumer outlived the service"
    finally:
        serve.close()
