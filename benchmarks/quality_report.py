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
    python benchmarks/quality_report.py --seeds 1,3,7 --labels reported --events 30000 --days 30 --budget 0.01

With ``--budget`` (default 1%) the rules and policy are tuned to that legitimate friction on the
training days (`fengkong.training.tune`) and the tuned set's friction on the later days is the
``tuned`` line. Tune reads only labels that could be known at the end of the history
(`fengkong.training.tune_labels`): chargebacks and fraud reports of training payments at least
``--tune-maturity-days`` old then, and the analysts' dispositions of the training payments the
starting pack stopped (``--no-analyst`` to leave those out); never the evaluated days' labels.
``--pattern-floor`` keeps every fraud pattern's training-day friction within that share of the
starting rules'; the JSON line's top-level ``legit_friction``, ``promo_legit_friction``,
``min_pattern_friction`` and ``min_pattern_stopped`` are the worst seed's for the tuned set.
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
    ap.add_argument("--budget", type=float, default=0.01, help="tune to this legitimate friction on the training "
                    "days (fengkong.training.tune); 0: no tuning")
    ap.add_argument("--tune-passes", type=int, default=3)
    ap.add_argument("--tune-maturity-days", type=float, default=10.0, help="tune judges training payments at least "
                    "this old at the end of the history by their reports; younger ones are left out")
    ap.add_argument("--no-analyst", action="store_true", help="tune without the analysts' dispositions of the "
                    "payments the starting pack stopped on the training days")
    ap.add_argument("--pattern-floor", type=float, default=0.05, help="no fraud pattern's friction on the training "
                    "days may fall more than this below the starting rules' (negative: no floor)")
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
                      promotions=promotions, calibrate=not args.no_calibration,
                      tune_budget=args.budget or None, tune_passes=args.tune_passes,
                      tune_maturity_days=args.tune_maturity_days, tune_analyst=not args.no_analyst,
                      tune_pattern_floor=None if args.pattern_floor < 0 else args.pattern_floor)
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
            tuned = res.info.get("tune")
            if tuned:
                lab = tuned["labels"]
                print(f"tune's labels (known at {lab['cutoff']}, maturity {lab['maturity_days']:g} days): "
                      f"{lab['known']:,} training payments judged ({lab['fraud']} fraud; {lab['matured']:,} matured, "
                      f"{lab['analyst']:,} analyst-worked), {lab['left_out']:,} left out; pattern floor "
                      f"{tuned['pattern_floor']}")
                print(f"tuned to {tuned['budget']:.2%} on the training days ({tuned['evaluations']} candidates): "
                      f"training-day legit friction {tuned['train_before']['legit_friction']:.4f} -> "
                      f"{tuned['train_after']['legit_friction']:.4f}, fraud caught "
                      f"{tuned['train_before']['fraud_caught']:.3f} -> {tuned['train_after']['fraud_caught']:.3f}; "
                      + ", ".join(f"{c['what']} {c['old']:g}->{c['new']:g}" for c in tuned["changes"]))
            s["calibration"] = {k: v for k, v in s.get("calibration", {}).items() if k != "curve"}  # 200 points each
            out.append({"seed": seed, "events": args.events, "days": args.days, **s,
                        "fusion": res.info["fusion"]})
        print(f"(seed {seed}: {time.perf_counter() - t0:.1f} s)")
    keys = ("legit_friction", "promo_legit_friction", "min_pattern_friction", "min_pattern_stopped")
    worst = {}
    for name in ("rules", "soft", "tuned"):
        figs = [o["friction"][name] for o in out if "friction" in o]
        if figs:
            worst[name] = {k: (max if k.startswith(("legit", "promo")) else min)(f.get(k, float("nan")) for f in figs)
                           for k in keys}
    final = worst.get("tuned") or worst.get("soft") or {}  # what the system decides: tuned, with the fused risk
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
                      "worst_seed": worst, **{k: final.get(k) for k in keys},
                      "friction_target_met": bool(final) and final["legit_friction"] <= 0.01
                      and final["promo_legit_friction"] <= 0.05 and final["min_pattern_friction"] >= 0.8,
                      "rules_only_auc": first, "rules_only_auc_per_seed": rules_only, **export}, default=str))


if __name__ == "__main__":
    main()
