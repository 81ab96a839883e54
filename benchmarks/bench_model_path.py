"""What the models add to one decision, part by part, as CPU per payment.

    python benchmarks/bench_model_path.py [--artifacts /work/bench_out/s6/artifacts] [--payments 2000]

Why: bench_decide measures the whole decision with models or without; this one splits the
model path into its parts, each run alone in a loop over the same payments, so a change to
one part can be measured beside the others: the union row (`TransactionModels.write`), the
model outputs (`ModelRuntime._answer`), the fused risk (`_GuardedModels.fuse`, with
`base_score` and `RiskFusion.score_one` apart), the joint ONNX call for one row and for ten,
and the rules: `RuleSet.evaluate` on the store's features alone, with the model outputs,
then with a constant fused risk (the soft step's own cost is the difference) and with the
real fuse. The payments' store features are computed first by bench_decide's service (its
payloads, fixed seed, an embedded Redis). CPU is ``time.process_time``; the best and the
median of ``--repeats`` passes are printed as JSON with the load average. ``--callgrind``
(under ``valgrind --tool=callgrind --instr-atstart=no``): each part's loop is counted once,
after a warm pass, into a dump of its own (``callgrind.out.<pid>.N``, N the part's place).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_decide  # noqa: E402  (the service run whose store features are captured)


def _store_features(artifacts: Path, payments: int) -> list[dict[str, Any]]:
    """The store features bench_decide's service computed for its payloads (payments only)."""
    from fengkong import pipeline

    captured: list[dict[str, Any]] = []
    original = pipeline.decide_on

    def capture(features: Any, **kw: Any) -> Any:
        captured.append(dict(features))
        return original(features, **kw)

    pipeline.decide_on = capture
    try:
        args = argparse.Namespace(decisions=payments, warmup=0, artifacts=artifacts, consumer=False, callgrind=False)
        asyncio.run(bench_decide._run(args))
    finally:
        pipeline.decide_on = original
    return [f for f in captured[:payments] if f.get("event.type", "payment") == "payment"]


def _cpu(loop: Callable[[], Any], n: int, repeats: int) -> dict[str, float]:
    passes = []
    for _ in range(repeats):
        t = time.process_time()
        loop()
        passes.append((time.process_time() - t) / n * 1e6)
    return {"best_us": round(min(passes), 2), "median_us": round(statistics.median(passes), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("/work/bench_out/s6/artifacts"))
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: count each part's loop once "
                             "(dump N is the Nth part; instructions per payment = its totals / count)")
    args = parser.parse_args()

    from fengkong.api.service.decisions import _GuardedModels
    from fengkong.engine import LiveRules
    from fengkong.models.fusion import base_score
    from fengkong.models.runtime import ModelRuntime
    from fengkong.pipeline import threshold_problems

    pay = _store_features(args.artifacts, args.payments)
    rt = ModelRuntime.load(args.artifacts)
    txn = rt.transactions
    if txn is None or txn.joint is None or rt.fusion is None:
        raise SystemExit(f"bench_model_path: {args.artifacts} has no joint transactions model and fusion: {rt.status}")
    rules = LiveRules(ROOT / "rules", check=partial(threshold_problems, calibration=rt.calibration,
                                                    version=rt.loaded.get("transactions")))
    rows = np.zeros((64, txn.joint.width))
    scores = [txn.joint.score_one(txn.row.cells(f)) for f in pay]
    full = [dict(f, **rt._answer(r, h, f)) for f, (r, h) in zip(pay, scores)]
    decisions = [rules.evaluate(f) for f in full]
    guarded = _GuardedModels(rt)
    fusion = rt.fusion
    for i, f in enumerate(pay[:64]):
        txn.row.pack_into(f, rows, i)
    one, ten = txn.joint.rows_scorer(rows), txn.joint.rows_scorer(rows)
    n = len(pay)

    def pack() -> None:
        write = txn.write  # the service's writer: only the columns the joint graph reads
        for i, f in enumerate(pay):
            write(f, rows, i & 63)

    parts: dict[str, tuple[Callable[[], Any], int]] = {
        "row": (pack, n),
        "answer": (lambda: [rt._answer(r, h, f) for f, (r, h) in zip(pay, scores)], n),
        "fuse": (lambda: [guarded.fuse(f, d) for f, d in zip(full, decisions)], n),
        "base_score": (lambda: [base_score(d) for d in decisions], n),
        "score_one": (lambda: [fusion.score_one(0.3, 50.0) for _ in decisions], n),
        "onnx_1_row_per_call": (lambda: [one(1) for _ in range(n // 10)], n // 10),
        "onnx_10_rows_per_row": (lambda: [ten(10) for _ in range(n // 10)], n),
        "evaluate_store_features": (lambda: [rules.evaluate(f) for f in pay], n),
        "evaluate_with_model_outputs": (lambda: [rules.evaluate(f) for f in full], n),
        "evaluate_constant_risk": (lambda: [rules.evaluate(f, lambda d: 0.3) for f in full], n),
        "evaluate_with_fuse": (lambda: [rules.evaluate(f, partial(guarded.fuse, f)) for f in full], n),
    }
    out: dict[str, Any] = {"payments": n}
    for number, (name, (loop, count)) in enumerate(parts.items(), start=1):
        if args.callgrind:  # a warm pass, then the counted one, into a dump of its own
            loop()
            bench_decide._callgrind("start")
            loop()
            bench_decide._callgrind("dump")
            out[name] = {"dump": number, "count": count}
            continue
        out[name] = _cpu(loop, count, args.repeats)
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
