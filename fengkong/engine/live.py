"""The live rule set, and its atomic hot reload.

`reload` builds a complete new `RuleSet` off to the side (parse, type-check, policy,
durable_rules compile, warm-up), runs the directory's own ``*_test.yaml`` cases
against it, and only if all of that succeeds replaces the live reference in one
assignment. A decision reads ``self.current`` once, so it sees the old set or the
new one, never half of each. On any failure the live set is untouched and the
`ReloadResult` carries every problem.

Triggers: a direct call (CLI, admin endpoint), or `watch(interval_s)`, a daemon
thread that polls the files' names, sizes and mtimes and reloads on a change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fengkong.engine.decision import Decision
from fengkong.engine.durable_backend import RuleSetClosed
from fengkong.engine.errors import EvaluationError, Problem, RuleSetError
from fengkong.engine.ruleset import RuleSet, load_ruleset
from fengkong.engine.testing import load_cases, run_cases

log = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    ok: bool
    version: str | None  # the live version after the call
    previous_version: str | None
    problems: list[Problem] = field(default_factory=list)
    failed_cases: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.ok and self.version != self.previous_version

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "version": self.version, "previous_version": self.previous_version,
            "problems": [p.to_dict() for p in self.problems], "failed_cases": list(self.failed_cases),
        }


def build_checked(rules_dir: Path) -> tuple[RuleSet | None, list[Problem], list[str]]:
    """Load a set and run its cases; (set, problems, failed case messages)."""
    try:
        candidate = load_ruleset(rules_dir)
    except RuleSetError as exc:
        return None, exc.problems, []
    cases, problems = load_cases(rules_dir)
    failed = [f"{r.case.file}:{r.case.line} {r.case.name}: {'; '.join(r.failures)}"
              for r in run_cases(candidate, cases) if not r.passed]
    if problems or failed:
        candidate.close()
        return None, problems, failed
    return candidate, [], []


class LiveRules:
    """Holds the live compiled rule set for a directory and swaps it atomically."""

    def __init__(self, rules_dir: Path | str, *, load: bool = True) -> None:
        self.rules_dir = Path(rules_dir)
        self._current: RuleSet | None = None
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

    def evaluate(self, features: Mapping[str, Any]) -> Decision:
        """Decide with the live set (one read of the reference per decision)."""
        for _ in range(3):
            ruleset = self.current
            try:
                return ruleset.evaluate(features)
            except RuleSetClosed:  # retired by a reload between our read and our call
                continue
        return self.current.evaluate(features)

    def reload(self) -> ReloadResult:
        """Build, test, and only then swap. Never leaves a half-built set live."""
        with self._reload_lock:
            previous = self._current
            prev_version = previous.version if previous else None
            candidate, problems, failed = build_checked(self.rules_dir)
            if candidate is None:
                result = ReloadResult(False, prev_version, prev_version, problems, failed)
                log.warning("rule reload rejected: %d problem(s), %d failed case(s)", len(problems), len(failed))
            else:
                self._current = candidate  # the atomic swap: one reference assignment
                result = ReloadResult(True, candidate.version, prev_version)
                log.info("rules reloaded: %s -> %s", prev_version, candidate.version)
                if previous is not None:
                    previous.close()  # a decision still inside it finishes first (its lock)
            self.last_result = result
            return result

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
