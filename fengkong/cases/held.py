"""The case items a worker holds while Redis cannot take them, kept so that they outlive
the worker.

A worker appends each held item (its ``XADD``, one JSON line) to a file of its own in
``<data-dir>/cases/held/`` before the decision is answered, and keeps the same items in
memory to queue them when Redis answers again (`HeldItems.release`). The file is there
for the crash: ``write(2)`` puts the line in the kernel's page cache, which outlives a
killed process, and a thread fsyncs it about once a second for a machine that dies. Each
worker holds an exclusive ``flock`` on its own files for as long as it lives; a file whose
lock can be taken belongs to a worker that died, and whichever worker releases next queues
its items and deletes it. A crash between queueing a file's items and deleting the file
queues them twice; filing takes each decision once (`fengkong.cases.filing`), so that
costs nothing.

Without a directory (tests, tools) the items are kept in memory only.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Sequence

import redis

log = logging.getLogger(__name__)

#: How often a dirty file is fsynced (the loss window when the machine itself dies).
SYNC_EVERY_S = 1.0


def held_dir(data_dir: Path | str) -> Path:
    """Where the workers of the service with this data directory keep held case items."""
    return Path(data_dir).resolve() / "cases" / "held"


class _Segment:
    """One locked append-only file of this worker's held items."""

    __slots__ = ("path", "fd", "dirty")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.dirty = False

    def write(self, line: bytes) -> None:
        os.write(self.fd, line)
        self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            self.dirty = False
            os.fsync(self.fd)

    def remove(self) -> None:
        """Delete the file (its items are queued), then let go of it."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)


class HeldItems:
    """This worker's held case items: in memory, and (with ``directory``) in its own files there.

    ``add`` runs on the decision path (one small ``write(2)``, no fsync); ``release`` on the
    worker's case thread. At ``max_items`` a new item is refused (`add` returns False), so
    an outage cannot exhaust the worker's memory or disk."""

    def __init__(self, directory: Path | None, *, max_items: int) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_items = max_items
        self.items: collections.deque[tuple[Any, ...]] = collections.deque()
        self._segment: _Segment | None = None  # where new items go; opened at the first one
        self._taken: list[_Segment] = []  # files whose items are in a batch not yet queued
        self._lock = threading.Lock()  # `add` against `release` taking its batch
        self._release_lock = threading.Lock()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.items)

    def add(self, command: tuple[Any, ...]) -> bool:
        """Keep ``command``; False when the bound is reached (the caller counts the loss).
        A file that cannot be written is logged and the item is kept in memory."""
        if len(self.items) >= self.max_items:
            return False
        with self._lock:
            if self.directory is not None:
                try:
                    if self._segment is None:
                        self._segment = self._open()
                    self._segment.write(json.dumps(command, separators=(",", ":")).encode() + b"\n")
                except OSError as exc:
                    log.error("case intake: held item not written to %s (%s); it is kept in memory only",
                              self.directory, exc)
            self.items.append(command)
        return True

    def release(self, client: redis.Redis) -> int:
        """Queue the held items on ``client``, this worker's first and then those of the
        files of workers that died; how many were queued. On a Redis fault what was not
        queued stays held (and the fault is raised) for the next call."""
        with self._release_lock:
            sent = self._release_own(client)
            return sent + self._release_orphans(client)

    def sync(self) -> None:
        """fsync this worker's file if it was written since the last call."""
        with self._lock:
            segment = self._segment
        if segment is not None:
            try:
                segment.sync()
            except OSError as exc:
                log.error("case intake: fsync of %s failed: %s", segment.path, exc)

    def close(self) -> None:
        """Stop the fsync thread and sync; the files stay for whoever releases next."""
        self._stop.set()
        self.sync()

    def _open(self) -> _Segment:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        segment = _Segment(self.directory / f"held-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl")
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="fengkong-cases-held-sync", daemon=True)
            self._syncer.start()
        return segment

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_EVERY_S):
            self.sync()

    def _release_own(self, client: redis.Redis) -> int:
        with self._lock:
            batch = list(self.items)
            if self._segment is not None:  # items held from now on go to a new file
                self._taken.append(self._segment)
                self._segment = None
        if not batch:
            return 0
        _queue(client, batch)
        with self._lock:  # only the items sent: those held meanwhile stay behind them
            sent = {id(command) for command in batch}
            while self.items and id(self.items[0]) in sent:
                self.items.popleft()
            taken, self._taken = self._taken, []
        for segment in taken:
            segment.remove()
        log.warning("case intake: %d case items of decisions made while Redis was away queued", len(batch))
        return len(batch)

    def _release_orphans(self, client: redis.Redis) -> int:
        if self.directory is None or not self.directory.is_dir():
            return 0
        mine = {s.path.name for s in self._taken} | ({self._segment.path.name} if self._segment else set())
        queued = 0
        for path in sorted(self.directory.glob("held-*.jsonl")):
            if path.name not in mine:
                queued += _release_file(client, path)
        return queued


def _release_file(client: redis.Redis, path: Path) -> int:
    """Queue the items of a dead worker's file and delete it; 0 when its worker is alive
    (its lock is held) or another worker took it first."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its worker lives and releases it
        if os.fstat(fd).st_nlink == 0:
            return 0  # released and deleted by another worker while this one waited
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        commands = []
        for line in data.splitlines():
            try:
                commands.append(tuple(json.loads(line)))
            except ValueError:  # a line cut short when the machine died
                log.error("case intake: an unreadable line in %s skipped", path.name)
        if commands:
            _queue(client, commands)
        path.unlink()
        log.warning("case intake: %d case items held by a worker that died queued (%s)", len(commands), path.name)
        return len(commands)
    finally:
        os.close(fd)


def _queue(client: redis.Redis, commands: Sequence[tuple[Any, ...]], chunk: int = 1000) -> None:
    for start in range(0, len(commands), chunk):
        with client.pipeline(transaction=False) as pipe:
            for command in commands[start:start + chunk]:
                pipe.execute_command(*command)
            pipe.execute()
