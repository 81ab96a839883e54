"""The import direction of DESIGN.md, held by the import-linter contracts in pyproject.toml.

The contracts are run on this checkout (they must be kept), and on a copy of the
package with one forbidden import added (they must then be broken, naming it), so
a contract that checks nothing cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"

_RUN = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filenames=(sys.argv[1],), no_cache=True, no_logo=True))")


def _lint(package_parent: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run every contract of pyproject.toml on the `fengkong` package found in ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent), "COLUMNS": "200"}  # no wrapped report lines
    return subprocess.run([sys.executable, "-c", _RUN, str(CONFIG)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_contracts_are_kept(tmp_path: Path) -> None:
    res = _lint(ROOT, tmp_path)
    report = res.stdout + res.stderr
    assert res.returncode == 0, f"import-linter contracts broken:\n{report}"
    assert "2 kept, 0 broken" in report, report


@pytest.mark.parametrize(("module", "forbidden", "contract"), [
    ("models/fusion.py", "fengkong.engine.decision", "Imports go one way"),  # models never import engine
    ("engine/decision.py", "fengkong.models.fusion", "Imports go one way"),  # ... nor the other way
    ("api/state.py", "fengkong.training.train", "Imports go one way"),  # the service never imports training
    ("api/state.py", "fengkong.replay.runner", "Imports go one way"),  # ... nor replay
    ("features/keys.py", "fengkong.models.artifacts", "Imports go one way"),  # features import nothing above
    ("models/runtime.py", "fengkong.pipeline", "Imports go one way"),  # models sit below the pipeline
    ("simulation/config.py", "fengkong.features.definitions", "simulator stands beside"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, forbidden: str, contract: str) -> None:
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "fengkong", copy / "fengkong", ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "fengkong" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\nimport {forbidden}  # noqa: E402,F401\n",
                      encoding="utf-8")
    res = _lint(copy, tmp_path)
    report = res.stdout + res.stderr
    assert res.returncode != 0, report
    assert "Broken contracts" in report, report
    broken = report.split("Broken contracts", 1)[1]
    assert contract in broken, report
    importer = "fengkong." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {forbidden}" in broken, report
