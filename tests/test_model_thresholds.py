"""Model thresholds stated as a precision or a share of traffic, resolved from the artifact's calibration.

Rules read ``model.txn_precision`` / ``model.txn_share`` (`fengkong.models.calibration`); a rule set
asking a precision the loaded transactions artifact cannot reach is refused with file, line and id
(`fengkong.pipeline.threshold_problems`), at load (replay) and on every reload (`LiveRules(check=...)`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from fengkong.engine import LiveRules, load_ruleset
from fengkong.models.calibration import Calibration
from fengkong.pipeline import threshold_problems

ROOT = Path(__file__).resolve().parent.parent


def _rules(tmp_path: Path, when: str) -> Path:
    d = tmp_path / "rules"
    (d / "lists").mkdir(parents=True, exist_ok=True)
    (d / "lists" / "lists.yaml").write_text((ROOT / "rules" / "lists" / "lists.yaml").read_text())
    (d / "models.yaml").write_text(f"rules:\n  - id: model.precise\n    description: the model is sure\n"
                                   f"    when: {when}\n    then: review\n    score: 50\n")
    return d


@pytest.fixture()
def calibration() -> Calibration:
    # raw scores of a calibration day: most payments near 0, a thin tail near 1
    raw = np.concatenate([np.linspace(0.001, 0.05, 980), np.linspace(0.5, 0.99, 20)])
    return Calibration.from_scores(1.0, 0.0, raw)


def test_curves_are_monotone_and_read_as_precision_and_share(calibration: Calibration) -> None:
    r = np.linspace(0, 1, 50)
    p, s = calibration.precision_at(r), calibration.share_at(r)
    assert (np.diff(p) >= 0).all() and (np.diff(s) <= 0).all()
    # every payment is at or above the lowest risk: the share is 1 there, the precision the mean risk
    assert calibration.share_at(0.0) == pytest.approx(1.0)
    assert calibration.share_at(0.99) <= 0.002
    # the top 20 (the MIN_SLICE) have mean risk 0.745: the most the artifact can promise
    assert calibration.max_precision == pytest.approx(np.linspace(0.5, 0.99, 20).mean())
    again = Calibration.from_params(calibration.to_params())
    assert again.max_precision == calibration.max_precision
    assert np.allclose(again.precision_at(r), p)


def test_a_precision_the_artifact_cannot_reach_is_refused(tmp_path: Path, calibration: Calibration) -> None:
    rs = load_ruleset(_rules(tmp_path, "model.txn_precision >= 0.9"))
    try:
        problems = threshold_problems(rs, calibration, "20260101T000000Z-abc")
        assert len(problems) == 1
        text = str(problems[0])
        assert "models.yaml:2" in text and "model.precise" in text and "cannot reach" in text and "0.745" in text
        # rules-only (no transactions artifact): a model.* rule simply does not fire, no refusal
        assert threshold_problems(rs, None, None) == []
        # an artifact without a calibration cannot state precisions at all
        assert "carries no calibration" in str(threshold_problems(rs, None, "v1")[0])
    finally:
        rs.close()
    # a share of traffic is never refused: without a calibration it is missing and does not fire
    rs = load_ruleset(_rules(tmp_path, "model.txn_share <= 0.01"))
    try:
        assert threshold_problems(rs, None, "v1") == [] == threshold_problems(rs, None, None)
    finally:
        rs.close()
    rs = load_ruleset(_rules(tmp_path, "0.7 <= model.txn_precision and model.txn_share <= 0.05"))
    try:
        assert threshold_problems(rs, calibration, "v1") == []
    finally:
        rs.close()


def test_live_rules_refuse_a_reload_the_model_cannot_serve(tmp_path: Path, calibration: Calibration) -> None:
    d = _rules(tmp_path, "model.txn_precision >= 0.5")
    live = LiveRules(d, check=partial(threshold_problems, calibration=calibration, version="v1"))
    try:
        first = live.version
        (d / "models.yaml").write_text((d / "models.yaml").read_text().replace(">= 0.5", ">= 0.95"))
        result = live.reload()
        assert not result.ok and live.version == first
        assert any("cannot reach" in str(p) for p in result.problems)
    finally:
        live.current.close()
