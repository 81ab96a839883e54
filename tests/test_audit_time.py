"""`change_audit.utc_now_iso`, the decision record's ``decided_at``: what
``datetime.now(timezone.utc).isoformat(timespec="microseconds")`` gives, though it
formats the date and time only once per second."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fengkong.features import change_audit


@pytest.mark.parametrize("start_ns", [1_764_950_399_999_998_000, 1_700_000_000_000_000_000, 946_684_800_000_000_999])
def test_utc_now_iso_is_isoformat_of_the_clock_across_seconds(monkeypatch, start_ns):
    clock = [start_ns]
    monkeypatch.setattr(change_audit.time, "time_ns", lambda: clock[0])
    # forwards across second boundaries, then back in time (a clock step), then forwards again
    steps = [0, 1_000, 999_000, 1_000, 7_000_000_000, -3_000_000_000, 500, 1_000_000_000, -1_000]
    for step in steps:
        clock[0] += step
        micros = clock[0] // 1000
        expected = datetime.fromtimestamp(micros // 1_000_000, timezone.utc).replace(
            microsecond=micros % 1_000_000).isoformat(timespec="microseconds")
        assert change_audit.utc_now_iso() == expected
