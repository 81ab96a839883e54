"""CPU per candidate of `fengkong.training.tune`: the search on a small simulated history, three runs.

    python benchmarks/bench_tune.py

Prints, per run, the payments, the candidates decided and the CPU seconds (`time.process_time`,
so a busy machine changes it little; say the load beside a figure).
"""

from __future__ import annotations

import time
from pathlib import Path

from fengkong.engine.ruleset import parse_rules
from fengkong.simulation import SimConfig, run
from fengkong.training.train import transaction_frame
from fengkong.training.tune import Rows, tune


def main() -> None:
    sim = run(SimConfig.for_events(4000, days=10, seed=1))
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=Path("rules/lists"),
                              promotions=sim.promotions)
    rules, policy, schema, _ = parse_rules(Path("rules"))
    rows = Rows(feats, feats["is_fraud"].to_numpy(bool), feats["scenario"].to_numpy(object))
    for i in range(3):
        t = time.process_time()
        res = tune(rules, policy, schema.dtypes, rows, budget=0.01, max_passes=2, curve=())
        cpu = time.process_time() - t
        print(f"run {i}: {len(rows.frame)} payments, {res.evaluations} candidates, {cpu:.2f} s CPU, "
              f"{1000 * cpu / res.evaluations:.3f} ms CPU per candidate")


if __name__ == "__main__":
    main()
