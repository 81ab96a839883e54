"""Time one decision through durable_rules (features already in hand).

Prints p50/p99 for: the default pack (rules/), a generated pack of 200 rules, and
the same 200 rules as plain Python predicates (`fengkong.engine.predicates`). The
last line is one JSON object (keys in the issue). Run: python benchmarks/bench_rules.py
Targets: rules200_p99_us < 1000, default_pack_p99_us < 500.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fengkong.engine import load_ruleset  # noqa: E402
from fengkong.engine.predicates import compile_predicate  # noqa: E402
from fengkong.features.definitions import CATALOG  # noqa: E402

N_EVENTS = 3000
NUMBER_FEATURES = sorted(n for n, s in CATALOG.items() if s.dtype == "number")
BOOL_FEATURES = sorted(n for n, s in CATALOG.items() if s.dtype == "bool")
STRINGS = {"card.type": ["credit", "debit", "prepaid"], "merchant.grade": ["NEW", "A", "B", "C", "D"],
           "event.channel": ["quick_pay", "online_banking", "wallet", "pos"], "event.type": ["payment", "signup"]}


def random_features(rng: random.Random) -> dict[str, Any]:
    f: dict[str, Any] = {}
    for name in NUMBER_FEATURES:
        if rng.random() < 0.9:
            f[name] = round(rng.expovariate(1 / 20), 3)
    for name in BOOL_FEATURES:
        f[name] = rng.random() < 0.1
    for name, values in STRINGS.items():
        f[name] = rng.choice(values)
    for lst in ("blocked_cards", "blocked_users", "blocked_devices", "blocked_ips", "blocked_merchants",
                "proxy_ips", "trusted_cards", "trusted_users", "trusted_merchants"):
        f[f"lists.{lst}"] = rng.random() < 0.02
    return f


def generated_pack(n: int, rng: random.Random) -> str:
    """n rules of 2-4 comparisons, arithmetic and `in` over random catalog features."""
    lines = ["rules:"]
    for i in range(n):
        parts = []
        for _ in range(rng.randint(2, 4)):
            kind = rng.random()
            if kind < 0.55:
                parts.append(f"{rng.choice(NUMBER_FEATURES)} >= {rng.randint(20, 90)}")
            elif kind < 0.7:
                parts.append(f"{rng.choice(NUMBER_FEATURES)} > 3 * {rng.choice(NUMBER_FEATURES)}")
            elif kind < 0.85:
                name, values = rng.choice(list(STRINGS.items()))
                parts.append(f"{name} in {json.dumps(rng.sample(values, 1 + (len(values) > 3)))}")
            else:
                parts.append(f"{'not ' if rng.random() < 0.3 else ''}{rng.choice(BOOL_FEATURES)}")
        joiner = " and " if rng.random() < 0.9 else " or "
        lines += [f"  - id: gen.r{i}", f"    description: generated rule {i}",
                  f"    when: '{joiner.join(parts)}'", f"    then: {rng.choice(['challenge', 'review', 'deny'])}",
                  f"    score: {rng.randint(0, 30)}", "    tags: [generated]"]
    return "\n".join(lines) + "\n"


def time_us(fn: Callable[[dict[str, Any]], Any], events: list[dict[str, Any]]) -> list[float]:
    for e in events[:200]:
        fn(e)
    out = []
    gc.disable()
    try:
        for e in events:
            t0 = time.perf_counter_ns()
            fn(e)
            out.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        gc.enable()
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    rng = random.Random(7)
    events = [random_features(rng) for _ in range(N_EVENTS)]
    default = load_ruleset(ROOT / "rules")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "rules"
        (d / "lists").mkdir(parents=True)
        (d / "lists" / "lists.yaml").write_text((ROOT / "rules/lists/lists.yaml").read_text())
        (d / "gen.yaml").write_text(generated_pack(200, rng))
        gen = load_ruleset(d)
    preds = [(r.id, compile_predicate(r.expr, gen.schema.dtypes)) for r in gen.rules]

    def plain(features: dict[str, Any]) -> list[str]:
        return [rid for rid, p in preds if p(features)]

    fired = [len(gen.evaluate(e).fired_ids) for e in events[:500]]
    mismatches = sum(sorted(gen.evaluate(e).fired_ids) != sorted(plain(e)) for e in events[:500])
    results: dict[str, float] = {}
    for label, fn in (("default_pack", default.evaluate), ("rules200", gen.evaluate), ("plain200", plain)):
        ts = time_us(fn, events)
        results[f"{label}_p50_us"] = round(pct(ts, 0.50), 1)
        results[f"{label}_p99_us"] = round(pct(ts, 0.99), 1)
        print(f"{label:14s} p50 {results[f'{label}_p50_us']:8.1f} us   p99 {results[f'{label}_p99_us']:8.1f} us"
              f"   ({len(ts)} decisions)")
    print(f"rules200: {statistics.mean(fired):.1f} rules fire per decision on average; "
          f"{mismatches} mismatches against plain Python on 500 events")
    summary = {
        "default_pack_p50_us": results["default_pack_p50_us"],
        "default_pack_p99_us": results["default_pack_p99_us"],
        "rules200_p50_us": results["rules200_p50_us"],
        "rules200_p99_us": results["rules200_p99_us"],
        "plain200_p50_us": results["plain200_p50_us"],
        "ratio200_p50": round(results["rules200_p50_us"] / max(results["plain200_p50_us"], 1e-9), 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
