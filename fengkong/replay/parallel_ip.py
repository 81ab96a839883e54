"""IP intelligence for a whole history, on every core.

On simulated (and real) traffic most addresses are distinct: home broadband hands
out a new one per connection. `IpIntel.lookup_many` answers once per distinct
address, in Python, and on a 500k-event history that is the largest single cost of
the offline twin. `ParallelIpIntel` wraps an `IpIntel` and splits the distinct
addresses of a `lookup_many` call between this process and forked workers, each
running the wrapped object's own `lookup_many` on its share: the answers are the
same by construction (tests/test_backtest.py checks it). Everything else is
delegated to the wrapped object.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from fengkong.features.ipintel import COLUMNS, IpIntel

_JOB: dict[str, Any] = {}  # set before forking: the children read their share from here


def _work(i: int) -> pd.DataFrame:
    intel, chunks = _JOB["intel"], _JOB["chunks"]
    return intel.lookup_many(pd.Series(chunks[i], dtype=object))


class ParallelIpIntel:
    """`IpIntel` with `lookup_many` spread over ``workers`` processes (fork)."""

    def __init__(self, intel: IpIntel, *, workers: int | None = None, min_distinct: int = 20_000) -> None:
        self._intel = intel
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.min_distinct = min_distinct

    def __getattr__(self, name: str) -> Any:
        return getattr(self._intel, name)

    def lookup_many(self, ips: pd.Series) -> pd.DataFrame:
        codes, uniques = pd.factorize(ips, use_na_sentinel=True)
        n = len(uniques)
        if self.workers < 2 or n < self.min_distinct or "fork" not in mp.get_all_start_methods():
            return self._intel.lookup_many(ips)
        values = np.asarray(uniques, dtype=object)
        chunks = np.array_split(values, self.workers)
        _JOB.update(intel=self._intel, chunks=chunks)
        try:
            with ProcessPoolExecutor(max_workers=self.workers - 1, mp_context=mp.get_context("fork")) as pool:
                futures = [pool.submit(_work, i) for i in range(1, self.workers)]
                parts = [_work(0)] + [f.result() for f in futures]
        finally:
            _JOB.clear()
        per_value = pd.concat(parts, ignore_index=True)
        take = np.where(codes >= 0, codes, n)  # missing picks the "nothing known" row
        blank = self._intel.lookup_many(pd.Series([None], dtype=object))
        table = pd.concat([per_value, blank], ignore_index=True)
        out = {}
        for name in COLUMNS:
            col = table[name].to_numpy()
            out[name] = pd.Series(col[take], index=ips.index, dtype=col.dtype)
        return pd.DataFrame(out, columns=list(COLUMNS))
