"""Checks the codebase holds as a whole: types (mypy, the project's config) and module size.

They run through the README's test command, so CI holds them like any behaviour:
mypy at 0 errors on `fengkong/`, and no module of `fengkong/` over 500 lines (a module
that grows past that is doing more than one job; split it by job).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500


def test_mypy_reports_no_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"), "fengkong"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = res.stdout + res.stderr
    assert res.returncode == 0, f"mypy found errors:\n{report}"
    assert "Success: no issues found" in report, report


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in (ROOT / "fengkong").rglob("*.py")}
    assert len(sizes) > 50, "the package was not found"
    over = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by job): {over}"
