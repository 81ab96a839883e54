"""bench_batch_turns' pairing of windows (benchmarks/bench_batch_turns.py): each ratio compares
two adjacent windows of different waits, and windows not at full load pair with nothing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_batch_turns import pair_ratios  # noqa: E402


def test_adjacent_windows_of_the_two_waits_pair_and_idle_windows_are_left_out() -> None:
    windows = [
        [0, 0.05, 10],      # warm-up: under 60 % of the busiest, left out
        [2, 0.40, 1000],    # 400 us a decision
        [0, 0.50, 1000],    # 500
        [2, 0.36, 900],     # 400
        [0, 0.55, 1100],    # 500
        [2, 0.01, 30],      # the load's end: left out
    ]
    ratios, per = pair_ratios(windows, (0, 2))
    assert [round(r, 6) for r in ratios] == [0.8, 0.8, 0.8]
    assert [round(x, 3) for x in per[0]] == [500.0, 500.0] and [round(x, 3) for x in per[2]] == [400.0, 400.0]


def test_two_windows_of_one_wait_in_a_row_are_not_a_pair() -> None:
    windows = [[0, 0.5, 1000], [0, 0.5, 1000], [2, 0.4, 1000]]
    ratios, _ = pair_ratios(windows, (0, 2))
    assert [round(r, 6) for r in ratios] == [0.8]
