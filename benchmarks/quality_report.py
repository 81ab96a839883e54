"""Quality report: rules alone, the model alone, the pack, and the fused score, per scenario.

Simulates a history per seed (``fengkong simulate --events N --days D --seed S``),
trains on the first 70% of the days and evaluates on the rest (see
`fengkong.training.quality`). Prints one table per (seed, labels) and ends with one
JSON line: the "(all)" figures, whether the target (fused AP above both rules
and model) is met, ``rules_only_auc`` (ROC AUC of the rules' score alone on the first
seed's payments) and the export run (`quality_export`: a simulated bank export trained
with `fengkong train transactions --mapping` and scored by `fengkong replay
--evaluate-from` on a later week: ``export_auc``, ``export_ap``,
``export_topk_card_precision``).

    python benchmarks/quality_report.py                       # seeds 3 and 7, both label regimes, the export
    python benchmarks/quality_report.py --seeds 3 --labels reported --events 200000 --days 45
    python benchmarks/quality_report.py --export-only         # rules_only_auc and the export run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def frame_for(seed: int, events: int, days: int, lists_dir: Path
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from fengkong.features.lists import load_list_specs
    from fengkong.replay.inputs import list_entries
    from fengkong.simulation import SimConfig, run
    from fengkong.training.train import transaction_frame

    sim = run(SimConfig.for_events(events, days=days, seed=seed))
    entries = list_entries(lists_dir, load_list_specs(lists_dir))
    for name, values in sim.blacklist.items():  # the analysts' lists, as `fengkong replay --lists` loads them
        entries[name] = sorted(set(entries.get(name, [])) | set(values))
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=lists_dir, list_entries=entries,
                              promotions=sim.promotions)  # the campaigns merchants planned, as replay --promotions
    return sim.events, feats, sim.promotions


def main() -> None:
    from fengkong.training.quality import run, summary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="3,7")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--labels", default="reported,oracle", help="reported, oracle or both (comma-separated)")
    ap.add_argument("--rules", type=Path, default=ROOT / "rules")
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--no-calibration", action="store_true", help="serve the model's raw score (as before issue 14)")
    ap.add_argument("--export-only", action="store_true", help="only rules_only_auc (first seed) and the export run")
    ap.add_argument("--no-export", action="store_true", help="skip the export run")
    ap.add_argument("--export-customers", type=int, default=1000)
    ap.add_argument("--export-terminals", type=int, default=2000)
    ap.add_argument("--export-seed", type=int, default=0)
    args = ap.parse_args()
    pd.set_option("display.width", 200)
    from fengkong.training.quality import rules_auc

    out = []
    rules_only: dict[int, float | None] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        t0 = time.perf_counter()
        events, feats, promotions = frame_for(seed, args.events, args.days, args.rules / "lists")
        rules_only[seed] = rules_auc(feats, args.rules)
        print(f"seed {seed}: rules' score alone, ROC AUC on every payment: {rules_only[seed]}")
        if args.export_only:
            break
        for labels in args.labels.split(","):
            res = run(feats, rules_dir=args.rules, events=events, labels=labels, max_iter=args.max_iter,
                      promotions=promotions, calibrate=not args.no_calibration)
            s = summary(res)
            print(f"\n== seed {seed}, --events {args.events} --days {args.days}, training labels: {labels} "
                  f"({s['train_labelled_fraud']} labelled of {s['train_true_fraud']} true frauds in "
                  f"{s['train_payments']:,} training payments; eval {s['eval_payments']:,} payments, "
                  f"{s['eval_fraud']:,} fraud, recall cap at 1% {s['recall_cap_at_1pct']:.3f})")
            print(res.wide().to_string())
            f = res.fusion
            print(f"fused = expit({f.intercept_:+.3f} {f.coef_[0]:+.3f}*logit(txn_risk) {f.coef_[1]:+.3f}*rules_score/100)"
                  f"; target met: {s['target_met']}; fused beats both in {len(s['scenarios_fused_beats_both'])}"
                  f"/{s['scenarios']} scenarios")
            cal = res.info.get("calibration", {})
            if "a" in cal:
                print(f"calibration: expit({cal['a']:.3f}*logit(raw){cal['b']:+.3f}) on {cal['calibration_days']}, "
                      f"max precision {cal['max_precision']:.3f}; reliability (predicted/observed/count): "
                      + ", ".join(f"{r['mean_predicted']:.3f}/{r['observed']:.3f}/{r['count']}"
                                  for r in cal["reliability"]))
            print("friction (challenge/review/deny) and stopped (review/deny), per payment on the evaluated days:")
            for name, fr in res.info["friction"].items():
                print(f"  {name:5s} legit_friction {fr['legit_friction']:.4f}  promo_legit_friction "
                      f"{fr.get('promo_legit_friction', float('nan')):.4f} ({fr.get('promo_legit_payments', 0)} payments)"
                      f"  min_pattern_friction {fr['min_pattern_friction']:.3f}  min_pattern_stopped "
                      f"{fr['min_pattern_stopped']:.3f}")
                print("        " + ", ".join(f"{k} {v['friction']:.2f}/{v['stopped']:.2f}"
                                           for k, v in fr["per_pattern"].items()))
            s["calibration"] = {k: v for k, v in s.get("calibration", {}).items() if k != "curve"}  # 200 points each
            out.append({"seed": seed, "events": args.events, "days": args.days, **s,
                        "fusion": res.info["fusion"]})
        print(f"(seed {seed}: {time.perf_counter() - t0:.1f} s)")
    keys = ("legit_friction", "promo_legit_friction", "min_pattern_friction", "min_pattern_stopped")
    worst = {}
    for name in ("rules", "soft"):
        figs = [o["friction"][name] for o in out if "friction" in o]
        if figs:
            worst[name] = {k: (max if k.startswith(("legit", "promo")) else min)(f.get(k, float("nan")) for f in figs)
                           for k in keys}
    export: dict[str, object] = {}
    if not args.no_export:
        import tempfile

        from quality_export import run_export

        with tempfile.TemporaryDirectory(prefix="fk-export-") as work:
            export = run_export(Path(work), seed=args.export_seed, customers=args.export_customers,
                                terminals=args.export_terminals)
        print(f"\n== export run: {json.dumps(export, default=str)}")
    first = next(iter(rules_only.values()))
    print(json.dumps({"quality": out, "target_met_all": all(o["target_met"] for o in out if o["labels"] == "reported"),
                      "worst_seed": worst, "rules_only_auc": first, "rules_only_auc_per_seed": rules_only,
                      **export}, default=str))


if __name__ == "__main__":
    main()
