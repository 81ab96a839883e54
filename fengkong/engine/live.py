"""The live rule set, and its atomic hot reload.

`reload` builds a complete new `RuleSet` off to the side (parse, type-check, policy,
durable_rules compile, warm-up), runs the directory's own ``*_test.yaml`` cases
against it, and only if all of that succeeds replaces the live reference in one
assignment. A decision reads ``self.current`` once, so it sees the old set or the
new one, never half of each. On any failure the live set is untouched and the
`ReloadResult` carries every problem.

A refused set is remembered by `ruleset.files_hash` (every file's name and content,
case files included): reloading it again, unchanged, compiles nothing and answers at
once with the same problems and ``refused_earlier`` set, so a watcher polling a bad
set left on disk costs a hash, not a compile. Any change to the files gives another
hash, which is built. A set over the size limit is refused before it is hashed.
`builds` counts the sets actually built. Reloading the very files of the live set
(the same hash) is a no-op as well: nothing is compiled or swapped, the version stays,
and the result says so (``unchanged``, "unchanged: ... nothing compiled").

Triggers: a direct call (CLI, admin endpoint), or `watch(interval_s)`, a daemon
thread that polls the files' names, sizes and mtimes and reloads on a change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from fengkong.engine.decision import Decision
from fengkong.engine.durable_backend import RuleSetClosed
from fengkong.engine.errors import EvaluationError, Problem, RuleSetError
from fengkong.engine.limits import DEFAULT_LIMITS, Limits
from fengkong.engine.ruleset import RuleSet, files_hash, load_ruleset, size_problem
from fengkong.engine.soft import Fuse
from fengkong.engine.testing import load_cases, run_cases

log = logging.getLogger(__name__)

#: refused sets remembered per `LiveRules` (the oldest is forgotten first)
REMEMBERED_REFUSALS = 16


@dataclass
class ReloadResult:
    """What one reload did: what an audit entry records (`to_dict`), with the actor.

    ``files_hash`` identifies the files the reload read (None when the set was refused
    for its size, unread); ``refused_earlier`` says the same files were refused before
    and were not built again (``problems`` and ``failed_cases`` are that refusal's)."""

    ok: bool
    version: str | None  # the live version after the call
    previous_version: str | None
    problems: list[Problem] = field(default_factory=list)
    failed_cases: list[str] = field(default_factory=list)
    files_hash: str | None = None
    refused_earlier: bool = False
    unchanged: bool = False  # the files are the live set's: nothing was built
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def changed(self) -> bool:
        return self.ok and self.version != self.previous_version

    @property
    def message(self) -> str:
        """One line for a log, an audit entry or a person: what happened, and why."""
        if self.ok:
            if self.unchanged:
                return f"unchanged: {self.version} (the files are those of the live set; nothing compiled)"
            return f"reloaded: {self.version}" if self.changed else f"unchanged: {self.version}"
        reasons = [str(p) for p in self.problems] + [f"case failed: {c}" for c in self.failed_cases]
        head = "refused earlier (the files have not changed since)" if self.refused_earlier else "refused"
        more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
        return f"{head}: {'; '.join(reasons[:3])}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "message": self.message, "version": self.version, "previous_version": self.previous_version,
            "problems": [p.to_dict() for p in self.problems], "failed_cases": list(self.failed_cases),
            "files_hash": self.files_hash, "refused_earlier": self.refused_earlier, "unchanged": self.unchanged,
            "at": self.at,
        }


def build_checked(rules_dir: Path, limits: Limits = DEFAULT_LIMITS
                  ) -> tuple[RuleSet | None, list[Problem], list[str]]:
    """Load a set and run its cases; (set, problems, failed case messages). Raises nothing:
    a case that cannot run is a failed case, anything else unexpected a problem."""
    try:
        candidate = load_ruleset(rules_dir, limits)
    except RuleSetError as exc:
        return None, exc.problems, []
    try:
        cases, problems = load_cases(rules_dir)
        failed = [f"{r.case.file}:{r.case.line} {r.case.name}: {'; '.join(r.failures)}"
                  for r in run_cases(candidate, cases) if not r.passed]
    except Exception as exc:
        log.exception("the cases of %s could not run", rules_dir)
        problems, failed = [Problem(str(rules_dir), None, None,
                                    f"the example cases could not run ({type(exc).__name__}: {exc})")], []
    if problems or failed:
        candidate.close()
        return None, problems, failed
    return candidate, [], []


class LiveRules:
    """Holds the live compiled rule set for a directory and swaps it atomically."""

    def __init__(self, rules_dir: Path | str, *, load: bool = True, limits: Limits = DEFAULT_LIMITS,
                 check: Callable[[RuleSet], list[Problem]] | None = None) -> None:
        self.rules_dir = Path(rules_dir)
        self.limits = limits
        #: problems of a built set beyond its files (the service: model thresholds the loaded
        #: artifact cannot meet, `pipeline.threshold_problems`); a set with any is refused
        self.check = check
        #: how many candidate sets were built (parsed, compiled, their cases run)
        self.builds = 0
        #: files_hash -> the refusal (problems, failed cases) of a set refused by it
        self._refused: OrderedDict[str, tuple[list[Problem], list[str]]] = OrderedDict()
        self._current: RuleSet | None = None
        #: the files hash the live set was built from (None: unknown, the files changed during its build)
        self._live_digest: str | None = None
        self._reload_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_result: ReloadResult | None = None
        if load:
            result = self.reload()
            if not result.ok:
                raise RuleSetError(result.problems or [Problem(str(self.rules_dir), None, None, msg)
                                                       for msg in result.failed_cases])

    @property
    def current(self) -> RuleSet:
        current = self._current
        if current is None:
            raise EvaluationError("no rule set is loaded")
        return current

    @property
    def version(self) -> str | None:
        return self._current.version if self._current else None

    def evaluate(self, features: Mapping[str, Any], fuse: Fuse | None = None) -> Decision:
        """Decide with the live set (one read of the reference per decision); ``fuse`` as
        `RuleSet.evaluate` takes it (the soft step)."""
        for _ in range(4):
            ruleset = self.current
            try:
                return ruleset.evaluate(features, fuse)
            except RuleSetClosed:  # retired by a reload between our read and our call
                continue
        return self.current.evaluate(features, fuse)

    def reload(self) -> ReloadResult:
        """Build, test, and only then swap. Never leaves a half-built set live, and
        never raises for what the files hold: every refusal is in the result."""
        with self._reload_lock:
            previous = self._current
            prev_version = previous.version if previous else None
            too_big, digest = self._key()
            earlier = self._refused.get(digest) if digest is not None else None
            if previous is not None and digest is not None and digest == self._live_digest:
                result = ReloadResult(True, prev_version, prev_version, files_hash=digest, unchanged=True)
                log.info("rules reload: the files are those of the live set %s; nothing compiled", prev_version)
            elif earlier is not None:
                result = ReloadResult(False, prev_version, prev_version, list(earlier[0]), list(earlier[1]),
                                      files_hash=digest, refused_earlier=True)
            elif too_big is not None:
                if digest is not None:
                    self._remember(digest, [too_big], [])
                result = ReloadResult(False, prev_version, prev_version, [too_big], files_hash=digest)
            else:
                self.builds += 1
                candidate, problems, failed = build_checked(self.rules_dir, self.limits)
                if candidate is not None and self.check is not None:
                    problems = self.check(candidate)
                    if problems:
                        candidate.close()
                        candidate = None
                if candidate is None:
                    if digest is not None and self._key()[1] == digest:  # not if the files changed meanwhile:
                        self._remember(digest, problems, failed)         # the build judged other bytes
                    result = ReloadResult(False, prev_version, prev_version, problems, failed, files_hash=digest)
                else:
                    self._current = candidate  # the atomic swap: one reference assignment
                    self._live_digest = digest if digest is not None and self._key()[1] == digest else None
                    result = ReloadResult(True, candidate.version, prev_version, files_hash=digest)
                    log.info("rules reloaded: %s -> %s", prev_version, candidate.version)
                    if previous is not None:
                        previous.close()  # a decision still inside it finishes first (its lock)
            if not result.ok:
                log.warning("rule reload rejected%s: %d problem(s), %d failed case(s)",
                            " (refused earlier)" if result.refused_earlier else "", len(result.problems),
                            len(result.failed_cases))
            self.last_result = result
            return result

    def refused_earlier(self) -> bool:
        """Whether the files as they are now were refused before (a watcher need not
        reload, nor record the same refusal again)."""
        return self._key()[1] in self._refused

    def _key(self) -> tuple[Problem | None, str | None]:
        """(the size refusal, if any; what the files are remembered by). A set over the
        size limit is not read: it is known by its files' names, sizes and mtimes."""
        if not self.rules_dir.is_dir():
            return None, None
        too_big = size_problem(self.rules_dir, self.limits)
        if too_big is None:
            return None, files_hash(self.rules_dir)
        return too_big, "stat:" + hashlib.sha256(repr(self._fingerprint()).encode()).hexdigest()

    def _remember(self, digest: str, problems: list[Problem], failed: list[str]) -> None:
        self._refused[digest] = (list(problems), list(failed))
        self._refused.move_to_end(digest)
        while len(self._refused) > REMEMBERED_REFUSALS:
            self._refused.popitem(last=False)

    # --- file watching -----------------------------------------------------------
    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for p in sorted(self.rules_dir.glob("*.yaml")) + sorted((self.rules_dir / "lists").glob("*.yaml")):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((str(p), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def watch(self, interval_s: float = 2.0) -> threading.Thread:
        """Poll the rules directory and reload when a file changes (daemon thread)."""
        if self._watcher and self._watcher.is_alive():
            return self._watcher
        self._stop.clear()

        first = self._fingerprint()  # taken now, so a change made right after watch() is seen

        def loop() -> None:
            seen = first
            while not self._stop.wait(interval_s):
                now = self._fingerprint()
                if now != seen:
                    seen = now
                    try:
                        self.reload()
                    except Exception:  # pragma: no cover - keep watching whatever happens
                        log.exception("rule reload crashed")

        self._watcher = threading.Thread(target=loop, name="fengkong-rules-watch", daemon=True)
        self._watcher.start()
        return self._watcher

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher:
            self._watcher.join(timeout=5)
