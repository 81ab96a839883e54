"""One place for the models: `FENGKONG_ARTIFACTS_DIR` (or `--artifacts`), resolved by
`fengkong.models.artifacts.default_root`, is where `fengkong train` writes and where
`fengkong serve`, `fengkong replay` and `fengkong rescore` read. The older
`FENGKONG_ARTIFACTS` still works with a warning; the two naming different folders is
refused before any work.

End to end on a small simulated history: train with only the variable set, start
`fengkong serve` (a real process) with the same variable, and a decision names the
model that scored it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from api_fixtures import payment
from fengkong.api.config import Settings
from fengkong.cli import app
from fengkong.models.artifacts import ARTIFACTS_ENV, DEPRECATED_ARTIFACTS_ENV, default_root, versions
from fengkong.models.runtime import ModelRuntime
from serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A small simulated history and its models, trained with only `FENGKONG_ARTIFACTS_DIR` set."""
    base = tmp_path_factory.mktemp("location")
    sim, artifacts = base / "sim", base / "artifacts"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the default --rules is ./rules; ROOT holds no ./artifacts
        mp.delenv(DEPRECATED_ARTIFACTS_ENV, raising=False)
        mp.setenv(ARTIFACTS_ENV, str(artifacts))
        code, out = _invoke("simulate", "--out", str(sim), "--shoppers", "300", "--merchants", "30", "--days", "14",
                            "--seed", "3", "--format", "parquet")
        assert code == 0, out
        history = ["--history", str(sim / "events.parquet"), "--merchants", str(sim / "merchants.parquet")]
        code, out = _invoke("train", "transactions", *history, "--max-iter", "20")
        assert code == 0, out
        code, out = _invoke("train", "merchants", *history, "--trees", "20")
        assert code == 0, out
    yield sim, artifacts


def _version(artifacts: Path, kind: str) -> str:
    (path,) = versions(artifacts, kind)
    return path.name


def test_train_with_the_variable_then_serve_with_it_decides_with_that_model(trained, tmp_path) -> None:
    _, artifacts = trained
    version = _version(artifacts, "transactions")  # train wrote under the variable, nowhere else
    assert not (ROOT / "artifacts").exists()
    served = ServeProcess(tmp_path / "data", tmp_path / "serve.log", env={ARTIFACTS_ENV: str(artifacts)})
    try:
        served.start()
        with served.client() as c:
            checks = c.get("/readyz").json()["checks"]
            assert f"transactions {version}" in checks["models"] and "rules-only" not in checks["models"]
            out = c.post("/v1/decisions", json=payment()).json()
            assert f"transactions {version}" in out["models"] and not out["degraded"]
            assert isinstance(out["risk"], float) and 0.0 < out["risk"] < 1.0  # the artifact's fused score
            record = c.get(f"/v1/decisions/{out['decision_id']}").json()
            assert isinstance(record["features"]["model.txn_risk"], float)
    finally:
        served.close()
    assert f"artifacts: {artifacts.resolve()}" in served.output()
    assert "rules alone" not in served.output()


def test_replay_and_rescore_read_the_same_variable(trained, tmp_path, monkeypatch) -> None:
    sim, artifacts = trained
    monkeypatch.chdir(ROOT)  # default --rules-dir and --policy
    monkeypatch.delenv(DEPRECATED_ARTIFACTS_ENV, raising=False)
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts))
    head = tmp_path / "head.parquet"
    pd.read_parquet(sim / "events.parquet").head(200).to_parquet(head, index=False)
    code, out = _invoke("replay", str(head), "--out", str(tmp_path / "replay"), "--no-report", "--no-progress")
    assert code == 0, out
    assert f"models: transactions {_version(artifacts, 'transactions')}" in " ".join(out.split())
    code, out = _invoke("rescore", "--history", str(sim / "events.parquet"), "--merchants",
                        str(sim / "merchants.parquet"), "--out", str(tmp_path / "rescore"))
    assert code == 0, out
    assert f"model: {_version(artifacts, 'merchants')}" in out


def test_the_old_name_still_works_with_a_warning(trained, tmp_path, monkeypatch, caplog) -> None:
    _, artifacts = trained
    old = tmp_path / "old-name"
    (old / "transactions").mkdir(parents=True)
    src = artifacts / "transactions" / _version(artifacts, "transactions")
    (old / "transactions" / src.name).symlink_to(src, target_is_directory=True)
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    monkeypatch.setenv(DEPRECATED_ARTIFACTS_ENV, str(old))
    with caplog.at_level(logging.WARNING, logger="fengkong.models.artifacts"):
        assert default_root() == old
    assert f"{DEPRECATED_ARTIFACTS_ENV} is deprecated; use {ARTIFACTS_ENV}" in caplog.text
    assert Settings().artifacts_dir == old  # what each service worker reads
    assert ModelRuntime.load(None).loaded == {"transactions": src.name}  # what replay and rescore read
    assert default_root(tmp_path / "flag") == tmp_path / "flag"  # --artifacts wins over both names


def test_two_names_for_two_folders_are_refused_before_any_work(trained, tmp_path, monkeypatch) -> None:
    sim, _ = trained
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "new"))
    monkeypatch.setenv(DEPRECATED_ARTIFACTS_ENV, str(tmp_path / "old"))
    history = ["--history", str(sim / "events.parquet")]
    for args in (["serve", "--data-dir", str(tmp_path / "data")], ["train", "transactions", *history],
                 ["train", "merchants", *history], ["rescore", *history, "--out", str(tmp_path / "r")],
                 ["replay", str(sim / "events.parquet"), "--out", str(tmp_path / "replay")]):
        code, out = _invoke(*args)
        text = " ".join(out.split())
        assert code == 2, (args, out)
        assert ARTIFACTS_ENV in text and DEPRECATED_ARTIFACTS_ENV in text and "--artifacts" in text, (args, out)
    assert not any(p.exists() for p in (tmp_path / "new", tmp_path / "old", tmp_path / "data", tmp_path / "r",
                                        tmp_path / "replay"))
