"""`fengkong serve`'s case consumers: processes beside the uvicorn workers that file the
queued review decisions as cases (`fengkong cases consume`).

Why processes and not a thread in each worker: filing is SQL work (SQLAlchemy, the SQLite
engine) that holds the GIL, so in a worker it takes turns with the decisions on the event
loop, adds its CPU to theirs and stalls them while a batch commits; when the models send
many payments to review, it was most of what they cost a worker (docs/benchmarks.md).
Apart, the decision path only queues a case (one ``XADD`` in its write-behind batch), as
the issue asks: opening a case never slows a decision.

Two processes, so that filing yields to decisions with a bounded lag:

* the **steady** consumer runs at ``SCHED_IDLE`` (`IDLE`): it files only with CPU no
  decision wants, so on saturated cores the reviews wait queued in Redis. Where the
  policy cannot be set (not Linux) it runs at nice `NICE` and the parent says so.
* the **catch-up** consumer (``--catch-up``) runs at nice `NICE` (normal policy) and files
  only while filing is behind its bound (``FENGKONG_CASES_MAX_LAG_S``,
  ``FENGKONG_CASES_MAX_BACKLOG``: `fengkong.cases.lag`), until back under half of it.
  It is a process of its own, not the steady one changing its policy, because an
  unprivileged process cannot leave ``SCHED_IDLE`` (``RLIMIT_NICE`` is 0 by default,
  man 7 sched), and a starved process could not even notice that it is behind. It
  shares the consumer group, so it takes over what the steady one read but could not
  file (``XAUTOCLAIM`` once idle) and never files an item twice.

The parent starts them once the database is migrated and Redis answers, and restarts
either when it dies (after `RESTART_DELAY_S`, counted in ``restarts``): items it had read
but not filed stay pending in the consumer group, and the other or the new process takes
them over once idle (`fengkong.cases.consumer`), so a crash loses no review. At exit the
parent sends them SIGTERM (each finishes its step) and waits; the kernel sends them
SIGTERM if the parent is killed (``PR_SET_PDEATHSIG``, as for the embedded Redis), so
they never outlive the service.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

#: What the processes run: the `fengkong cases consume` command, with the parent's environment.
COMMAND = (sys.executable, "-c", "from fengkong.cli import app; app()", "cases", "consume")
#: The catch-up consumer's flag (`fengkong.cli.cases`).
CATCH_UP = "--catch-up"
#: Wait before starting a consumer that died again (so a consumer that cannot start does not spin).
RESTART_DELAY_S = 1.0
#: The catch-up consumer's niceness (and the steady one's where ``SCHED_IDLE`` is not to
#: be had): on cores it shares with the workers, a decision's CPU still comes first.
NICE = 10
#: The steady consumer's scheduling policy: only CPU that nothing else wants (None where
#: the platform has none).
IDLE: int | None = getattr(os, "SCHED_IDLE", None)
#: How long a stopping consumer may take to finish its step before it is killed.
STOP_TIMEOUT_S = 10.0


def _lower_priority(idle: bool) -> None:
    """In the child before it runs the command: nice `NICE`, and ``SCHED_IDLE`` if ``idle``
    (lowering needs no privilege; a failure leaves the child at nice `NICE`, which the
    parent reports)."""
    os.nice(NICE)
    if idle and IDLE is not None:
        try:
            os.sched_setscheduler(0, IDLE, os.sched_param(0))
        except OSError:
            pass


def policy_of(pid: int) -> int | None:
    """A process's scheduling policy (``os.SCHED_*``), None where it cannot be read."""
    try:
        return os.sched_getscheduler(pid)
    except (AttributeError, OSError):
        return None


class _Child:
    """One supervised consumer process: its command line and whether it runs at idle priority."""

    def __init__(self, name: str, args: tuple[str, ...], idle: bool) -> None:
        self.name = name
        self.args = args
        self.idle = idle
        self.proc: subprocess.Popen[bytes] | None = None


class CaseConsumerProcess:
    """The supervised `fengkong cases consume` children of `fengkong serve`: the steady
    consumer at idle priority and the catch-up consumer (see the module doc)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.steady = _Child("case consumer", COMMAND, idle=True)
        self.catch_up = _Child("catch-up case consumer", COMMAND + (CATCH_UP,), idle=False)
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.steady.proc

    @property
    def pid(self) -> int | None:
        """The steady consumer's pid."""
        return self.steady.proc.pid if self.steady.proc is not None else None

    @property
    def catch_up_pid(self) -> int | None:
        return self.catch_up.proc.pid if self.catch_up.proc is not None else None

    def start(self) -> "CaseConsumerProcess":
        """Start the processes and the thread that restarts them when they die. The thread
        also starts them (``PR_SET_PDEATHSIG`` follows the thread that forks, and that
        thread lives as long as the supervision does)."""
        started = threading.Event()
        children = (self.steady, self.catch_up)

        def watch() -> None:
            for child in children:
                self._try_spawn(child)
            started.set()
            while not self._stop.is_set():
                for child in children:
                    proc = child.proc
                    if proc is not None and proc.poll() is not None and not self._stop.is_set():
                        log.error("%s (pid %d) exited with %s; restarting it in %.0f s", child.name, proc.pid,
                                  proc.returncode, RESTART_DELAY_S)
                        if self._stop.wait(RESTART_DELAY_S):
                            return
                        self.restarts += 1
                        self._try_spawn(child)
                self._stop.wait(0.2)

        self._watch = threading.Thread(target=watch, name="fengkong-case-consumer-watch", daemon=True)
        self._watch.start()
        started.wait(30)
        return self

    def _try_spawn(self, child: _Child) -> None:
        """`_spawn`; a process that cannot be started is logged and tried again after the delay."""
        while not self._stop.is_set():
            try:
                self._spawn(child)
                return
            except OSError as exc:
                log.error("%s not started (%s: %s); retrying in %.0f s", child.name, type(exc).__name__, exc,
                          RESTART_DELAY_S)
                self._stop.wait(RESTART_DELAY_S)

    def _spawn(self, child: _Child) -> None:
        from fengkong.features.embedded_redis import die_with_parent  # here: `fengkong --help` stays light

        die = die_with_parent()

        def preexec() -> None:  # in the child, before it runs the command
            if die is not None:
                die()
            _lower_priority(child.idle)

        with self._lock:
            if self._stop.is_set():
                return
            child.proc = subprocess.Popen(list(child.args), env=self.env, stdout=subprocess.DEVNULL,
                                          preexec_fn=preexec)
        if child.idle and (IDLE is None or policy_of(child.proc.pid) != IDLE):
            log.warning("%s (pid %d) runs at nice %d: SCHED_IDLE is not available here, so filing competes "
                        "with decisions for the cores", child.name, child.proc.pid, NICE)

    def stop(self) -> None:
        """SIGTERM, wait for the current steps to end (kill past `STOP_TIMEOUT_S`), stop watching."""
        self._stop.set()
        with self._lock:
            procs = [p for p in (self.steady.proc, self.catch_up.proc) if p is not None]
        if self._watch is not None:
            self._watch.join(timeout=5)
        running = [p for p in procs if p.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
