"""Grade policy: downgrade at once with a reason, upgrade only after the stretch, no flapping."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.features.definitions import DEFAULT_GRADE_LIMITS
from fengkong.training.grade_policy import GradePolicy, GradePolicyError
from fengkong.training.grading import grade_history

POLICY = Path(__file__).resolve().parents[1] / "rules" / "grades" / "grades.yaml"


@pytest.fixture(scope="module")
def policy() -> GradePolicy:
    return GradePolicy.load(POLICY)


def days(n: int, *, volume: float = 2000.0, count: float = 20.0, anomaly: float = 0.45, cbr: float = 0.0,
         cbs: float = 0.0, merchant: str = "m1") -> pd.DataFrame:
    start = date(2025, 10, 1)
    return pd.DataFrame({
        "merchant_id": merchant, "day": [start + timedelta(days=i) for i in range(n)],
        "volume": volume, "count": count, "anomaly": anomaly, "chargeback_ratio_30d": cbr,
        "chargebacks_30d": cbs, "payments_30d": 600.0,
    })


def test_limits_match_the_feature_store(policy: GradePolicy) -> None:
    assert policy.single_limit_minor == DEFAULT_GRADE_LIMITS


def test_new_merchant_starts_new_and_moves_up_only_after_the_stretch(policy: GradePolicy) -> None:
    need = policy.upgrade["NEW"].clean_days
    h = grade_history(days(need + 2), policy)
    assert h["grade"].iloc[0] == "NEW"
    assert (h["grade"].iloc[: need - 1] == "NEW").all()
    assert h["grade"].iloc[need - 1] == policy.upgrade["NEW"].to
    assert h["reason"].iloc[need - 1].startswith(f"upgrade NEW->{policy.upgrade['NEW'].to}")


def test_no_upgrade_without_enough_volume(policy: GradePolicy) -> None:
    h = grade_history(days(40, volume=1.0, count=1.0), policy)
    assert (h["grade"] == "NEW").all()


def test_chargeback_spike_downgrades_at_once_with_reason(policy: GradePolicy) -> None:
    frame = days(60)
    frame.loc[50, ["chargeback_ratio_30d", "chargebacks_30d"]] = [0.05, 30]
    h = grade_history(frame, policy)
    assert h["grade"].iloc[49] != "D"
    assert h["grade"].iloc[50] == policy.severe_to
    assert h["changed"].iloc[50]
    assert "chargeback ratio 5.00%" in h["reason"].iloc[50]
    assert "severe" in h["reason"].iloc[50]


def test_high_anomaly_downgrades_one_step(policy: GradePolicy) -> None:
    frame = days(60)
    frame.loc[45, "anomaly"] = policy.warning.anomaly_at_least + 0.01
    h = grade_history(frame, policy)
    before, after = h["grade"].iloc[44], h["grade"].iloc[45]
    assert after == policy.step_down(before, 1) and after != before
    assert "anomaly" in h["reason"].iloc[45]


def test_no_flapping_at_the_threshold(policy: GradePolicy) -> None:
    # a score that hovers just around the warning threshold, day after day
    frame = days(120)
    thr = policy.warning.anomaly_at_least
    frame["anomaly"] = np.where(np.arange(120) % 2 == 0, thr + 0.001, thr - 0.001)
    frame.loc[:29, "anomaly"] = 0.45  # a clean start: it climbs first
    h = grade_history(frame, policy)
    ups = h["reason"].fillna("").str.startswith("upgrade")
    assert not ups.iloc[30:].any(), "no upgrade while the score hovers at the threshold"
    downs = h["reason"].fillna("").str.startswith("downgrade")
    # at most one step down per cooldown, never back up
    assert downs.iloc[30:].sum() <= 90 // policy.warning_cooldown_days + 1
    changes = h.loc[h["changed"], "grade"].tolist()
    assert all(policy.ladder.index(b) <= policy.ladder.index(a) for a, b in zip(changes[1:], changes[2:]))


def test_downgrade_restarts_the_stretch(policy: GradePolicy) -> None:
    frame = days(40)
    frame.loc[10, ["chargeback_ratio_30d", "chargebacks_30d"]] = [0.05, 30]
    h = grade_history(frame, policy)
    need = policy.upgrade["D"].clean_days
    assert (h["grade"].iloc[10: 10 + need] == "D").all()
    assert h["grade"].iloc[10 + need] == policy.upgrade["D"].to


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _bad(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    text = POLICY.read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "grades.yaml"
    bad.write_text(text.replace(old, new), encoding="utf-8")
    return bad, text.replace(old, new)


@pytest.mark.parametrize(("old", "new", "line_of", "field", "reason"), [
    ('NEW: {single_limit: "5000.00"', "NEW: {single_limit: 5000.5", "NEW: {single_limit", "grades.NEW.single_limit",
     "never a float"),
    ("anomaly_below: 0.58", "anomaly_below: 0.9", "anomaly_below:", "clean.anomaly_below", "hysteresis"),
    ("    min_chargebacks: 3", "    min_chargebacks: three", "min_chargebacks: three",
     "downgrade.severe.min_chargebacks", "integer"),
    ("    to: D", "    to: Z", "    to: Z", "downgrade.severe.to", "Z has no entry under grades"),
    ("ladder: [D, C, B, A]", "ladder: [D, C, X, A]", "ladder:", "ladder.2", "X has no entry under grades"),
    ("    cooldown_days: 7", "    cooldown_days: 7\n    cooldown: 3", "cooldown: 3", "downgrade.warning.cooldown",
     "unknown field (known: anomaly_at_least, chargeback_ratio_at_least, cooldown_days, min_chargebacks, steps)"),
    ("  chargeback_ratio_below: 0.004\n", "", "clean:", "clean.chargeback_ratio_below", "required"),
    ("  anomaly_below: 0.58\n", "  anomaly_below: 0.58\n  anomaly_below: 0.5\n", "anomaly_below: 0.5",
     "clean.anomaly_below", "written twice"),
    ("  B:   {to: A,", "  B:   {to: AA,", "B:   {to: AA", "upgrade.B.to", "AA has no entry under grades"),
])
def test_policy_errors_name_file_line_and_field(tmp_path: Path, old: str, new: str, line_of: str, field: str,
                                                reason: str) -> None:
    bad, text = _bad(tmp_path, old, new)
    # the last line holding the text: the upgrade block's B comes after the grades block's B
    line = max(i for i, row in enumerate(text.splitlines(), 1) if line_of in row)
    with pytest.raises(GradePolicyError) as info:
        GradePolicy.load(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}:{line}: {field}: "), message
    assert reason in message, message


def test_policy_lists_every_problem_in_one_error(tmp_path: Path) -> None:
    text = POLICY.read_text(encoding="utf-8")
    text = text.replace('NEW: {single_limit: "5000.00"', "NEW: {single_limit: -1").replace("    to: D", "    to: Z")
    bad = tmp_path / "grades.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(GradePolicyError) as info:
        GradePolicy.load(bad)
    lines = str(info.value).splitlines()
    assert any(f":{_line_of(text, 'NEW: {single_limit: -1')}: grades.NEW.single_limit: " in x for x in lines), lines
    # the cross-field check runs only once every field is valid: fix the limit, the grade is then named
    text = text.replace("single_limit: -1", 'single_limit: "5000.00"')
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(GradePolicyError, match=rf":{_line_of(text, '    to: Z')}: downgrade\.severe\.to: Z has no entry"):
        GradePolicy.load(bad)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad, text = _bad(tmp_path, "ladder: [D, C, B, A]", "ladder: [D, C, B, A")
    with pytest.raises(GradePolicyError, match=rf"^{re.escape(str(bad))}:\d+: YAML syntax"):
        GradePolicy.load(bad)


def test_the_default_policy_reads_as_written() -> None:
    policy = GradePolicy.load(POLICY)
    assert policy.source == str(POLICY)
    assert policy.ladder == ("D", "C", "B", "A") and policy.start == "NEW"
    assert policy.names == ("D", "C", "B", "A", "NEW")
    assert policy.daily_cap_minor["A"] == 500_000_000 and policy.upgrade["NEW"].min_volume_minor == 1_000_000
    assert (policy.severe_to, policy.warning_steps, policy.warning_cooldown_days) == ("D", 1, 7)
    assert policy.severe.min_chargebacks == 3 and policy.clean_anomaly_below == 0.58
