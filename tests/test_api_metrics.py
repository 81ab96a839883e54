"""The decision counters are counted per loop tick and still read exactly.

`Metrics.decided` counts decisions and rule fires in plain dicts and adds them to the
Prometheus counters at the end of the event loop's tick, or before a render: a scrape
(and the console, which reads `render`) sees every decision made before it."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from fengkong.api.metrics import Metrics

FIRED = [("ip.tor", "enforce"), ("velocity.card_10m", "shadow")]


def _value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def _rendered(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(m.render().decode()) for s in family.samples}


def test_outside_a_loop_each_decision_is_counted_at_once() -> None:
    m = Metrics()
    m.decided("deny", False, FIRED, 0.004)
    m.decided("allow", True, [], 0.002)
    assert _value(m, "fengkong_decisions_total", decision="deny", degraded="false") == 1
    assert _value(m, "fengkong_decisions_total", decision="allow", degraded="true") == 1
    assert _value(m, "fengkong_rule_fires_total", rule="ip.tor", mode="enforce") == 1
    assert _value(m, "fengkong_decision_latency_seconds_count") == 2


def test_in_a_loop_the_tick_counts_reach_the_counters_once() -> None:
    async def run() -> None:
        m = Metrics()
        for _ in range(5):
            m.decided("review", False, FIRED, 0.01)
        m.decided("allow", False, FIRED[:1], 0.001)
        # within the tick: counted, not yet added (the latency histogram is observed at once)
        assert _value(m, "fengkong_decisions_total", decision="review", degraded="false") == 0
        assert _value(m, "fengkong_decision_latency_seconds_count") == 6
        await asyncio.sleep(0)  # the tick ends: its flush ran
        assert _value(m, "fengkong_decisions_total", decision="review", degraded="false") == 5
        assert _value(m, "fengkong_decisions_total", decision="allow", degraded="false") == 1
        assert _value(m, "fengkong_rule_fires_total", rule="ip.tor", mode="enforce") == 6
        assert _value(m, "fengkong_rule_fires_total", rule="velocity.card_10m", mode="shadow") == 5
        # a render within a tick sees that tick's decisions too
        m.decided("deny", True, FIRED, 0.02)
        seen = _rendered(m)
        assert seen[("fengkong_decisions_total", (("decision", "deny"), ("degraded", "true")))] == 1
        assert seen[("fengkong_rule_fires_total", (("mode", "enforce"), ("rule", "ip.tor")))] == 7
        await asyncio.sleep(0)  # nothing is counted twice by the flush the tick still runs
        assert _value(m, "fengkong_decisions_total", decision="deny", degraded="true") == 1
        assert _value(m, "fengkong_rule_fires_total", rule="ip.tor", mode="enforce") == 7

    asyncio.run(run())
