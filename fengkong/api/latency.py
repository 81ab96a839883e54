"""The decision latency histogram, counted in plain Python numbers and handed to
prometheus_client when /metrics is scraped.

prometheus_client's `Histogram.observe` takes a lock and walks the buckets in Python
on every decision; this one finds the bucket by bisection and adds to a list, and
its `collect` (a custom collector, prometheus_client's public interface for them)
gives the scrape the very samples a `Histogram` of the same name and buckets gives:
cumulative ``_bucket`` series, ``_count`` and ``_sum``. It serves one process:
`fengkong.api.metrics.Metrics` uses prometheus_client's own `Histogram` when values
must reach other processes' scrapes (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import bisect
import math
from typing import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class LatencyHistogram:
    """``observe(seconds)`` on the event loop; ``collect()`` at scrape time (a collector)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError(f"{name}: buckets must be in increasing order")
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(bounds)
        self._labels = tuple(floatToGoString(b) for b in bounds)
        self._counts = [0] * len(bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        """Count one value in the first bucket whose upper bound is not below it (as
        `Histogram.observe` does)."""
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts = list(self._counts)
        total = self._sum
        buckets = []
        acc = 0.0
        for label, count in zip(self._labels, counts):
            acc += count
            buckets.append((label, acc))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)
