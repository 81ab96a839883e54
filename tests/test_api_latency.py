"""The decision latency histogram: counted in plain numbers, scraped as prometheus_client's.

`LatencyHistogram` must give /metrics the very text a prometheus_client `Histogram`
of the same name and buckets gives for the same observations (bucket edges
included), and `Metrics` must keep prometheus_client's own histogram when values
have to reach other workers' scrapes (``PROMETHEUS_MULTIPROC_DIR``)."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest

from fengkong.api.latency import LatencyHistogram
from fengkong.api.metrics import _LATENCY_BUCKETS, Metrics

NAME = "fengkong_decision_latency_seconds"


def test_the_scrape_is_byte_for_byte_a_prometheus_histograms() -> None:
    disable_created_metrics()
    theirs, ours = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    reference = Histogram(NAME, "doc", buckets=_LATENCY_BUCKETS, registry=theirs)
    histogram = LatencyHistogram(NAME, "doc", _LATENCY_BUCKETS)
    ours.register(histogram)  # type: ignore[arg-type]
    assert generate_latest(ours) == generate_latest(theirs)  # empty
    rng = random.Random(7)
    values = [*_LATENCY_BUCKETS, 0.0, 2.5, 1e-9, *(b * (1 + 1e-12) for b in _LATENCY_BUCKETS)]
    values += [rng.expovariate(300) for _ in range(2000)]
    for v in values:
        reference.observe(v)
        histogram.observe(v)
    text = generate_latest(ours)
    assert text == generate_latest(theirs)
    assert f'{NAME}_bucket{{le="+Inf"}} {float(len(values))}'.encode() in text
    assert f'{NAME}_bucket{{le="0.0005"}}'.encode() in text


def test_buckets_out_of_order_are_refused_naming_the_histogram() -> None:
    with pytest.raises(ValueError, match=NAME):
        LatencyHistogram(NAME, "doc", (0.01, 0.001))


def test_metrics_count_latency_in_its_registry_and_keep_prometheus_histogram_for_several_workers(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    m = Metrics()
    assert isinstance(m.latency, LatencyHistogram)
    m.decided("allow", False, [], 0.0007)
    m.decided("deny", False, [], 0.3)
    assert m.registry.get_sample_value(f"{NAME}_count") == 2
    assert m.registry.get_sample_value(f"{NAME}_bucket", {"le": "0.001"}) == 1
    assert m.registry.get_sample_value(f"{NAME}_sum") == pytest.approx(0.3007)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert isinstance(Metrics().latency, Histogram)
