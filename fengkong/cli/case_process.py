"""`fengkong serve`'s case consumer: one process beside the uvicorn workers that files the
queued review decisions as cases (`fengkong cases consume`).

Why a process and not a thread in each worker: filing is SQL work (SQLAlchemy, the SQLite
engine) that holds the GIL, so in a worker it takes turns with the decisions on the event
loop, adds its CPU to theirs and stalls them while a batch commits; when the models send
many payments to review, it was most of what they cost a worker (docs/benchmarks.md).
Apart, the decision path only queues a case (one ``XADD`` in its write-behind batch), as
the issue asks: opening a case never slows a decision.

It runs at a lower priority (`NICE`): when the cores are busy, decisions come first and
the queue holds the reviews until filing catches up (a backlog in Redis, bounded by its
``maxmemory`` like everything queued; docs/cases.md says how to watch it).

The parent starts it once the database is migrated and Redis answers, and restarts it
when it dies (after `RESTART_DELAY_S`, counted in ``restarts``): items it had read but not
filed stay pending in the consumer group, and the new process takes them over once idle
(`fengkong.cases.consumer`), so a crash loses no review. At exit the parent sends it
SIGTERM (it finishes its step) and waits; the kernel sends it SIGTERM if the parent is
killed (``PR_SET_PDEATHSIG``, as for the embedded Redis), so it never outlives the service.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

#: What the process runs: the `fengkong cases consume` command, with the parent's environment.
COMMAND = (sys.executable, "-c", "from fengkong.cli import app; app()", "cases", "consume")
#: Wait before starting a consumer that died again (so a consumer that cannot start does not spin).
RESTART_DELAY_S = 1.0
#: The consumer's niceness: on cores it shares with the workers, a decision's CPU comes
#: before filing (queued reviews wait in Redis meanwhile; filing catches up when the
#: workers leave CPU idle).
NICE = 10
#: How long a stopping consumer may take to finish its step before it is killed.
STOP_TIMEOUT_S = 10.0


class CaseConsumerProcess:
    """The supervised `fengkong cases consume` child of `fengkong serve` (see the module doc)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> "CaseConsumerProcess":
        """Start the process and the thread that restarts it when it dies. The thread also
        starts it (``PR_SET_PDEATHSIG`` follows the thread that forks, and that thread lives
        as long as the supervision does)."""
        started = threading.Event()

        def watch() -> None:
            self._try_spawn()
            started.set()
            while not self._stop.is_set():
                proc = self.proc
                if proc is not None and proc.poll() is not None and not self._stop.is_set():
                    log.error("case consumer (pid %d) exited with %s; restarting it in %.0f s",
                              proc.pid, proc.returncode, RESTART_DELAY_S)
                    if self._stop.wait(RESTART_DELAY_S):
                        break
                    self.restarts += 1
                    self._try_spawn()
                self._stop.wait(0.2)

        self._watch = threading.Thread(target=watch, name="fengkong-case-consumer-watch", daemon=True)
        self._watch.start()
        started.wait(30)
        return self

    def _try_spawn(self) -> None:
        """`_spawn`; a process that cannot be started is logged and tried again after the delay."""
        while not self._stop.is_set():
            try:
                self._spawn()
                return
            except OSError as exc:
                log.error("case consumer not started (%s: %s); retrying in %.0f s", type(exc).__name__, exc,
                          RESTART_DELAY_S)
                self._stop.wait(RESTART_DELAY_S)

    def _spawn(self) -> None:
        from fengkong.features.embedded_redis import die_with_parent  # here: `fengkong --help` stays light

        die = die_with_parent()

        def preexec() -> None:  # in the child, before it runs the command
            if die is not None:
                die()
            os.nice(NICE)

        with self._lock:
            if self._stop.is_set():
                return
            self.proc = subprocess.Popen(list(COMMAND), env=self.env, stdout=subprocess.DEVNULL, preexec_fn=preexec)

    def stop(self) -> None:
        """SIGTERM, wait for the current step to end (kill past `STOP_TIMEOUT_S`), stop watching."""
        self._stop.set()
        with self._lock:
            proc = self.proc
        if self._watch is not None:
            self._watch.join(timeout=5)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
