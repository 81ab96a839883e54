"""The export run of the quality report: a simulated bank export trained and replayed through the CLI.

`fengkong.simulation.export` writes the history (customers and terminals only, fraud from
compromised terminals and customers and large amounts, the flag as a fraud report 7 days
late) and its mapping. Then, as a bank would: `fengkong train transactions` on the first
``train_days`` days with the mapping (``--until`` leaves the last ``valid_days`` of them
for choosing the model), and `fengkong replay` of the whole history with the same mapping,
scored from ``--evaluate-from`` (the test week, a week after the training file ends, as the
published protocol's gap). The figures are the replay report's (`fengkong.replay.report.compute`)
on the fused ``risk`` the service returns, and on ``model.txn_risk`` and the rules' ``score``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from fengkong.cli import app; app()"]


def _cli(args: list[str]) -> tuple[str, float]:
    """Run a `fengkong` command; its stdout and the CPU seconds it used (children's rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"fengkong {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, cpu


def card_reports(decisions: pd.DataFrame, delay: timedelta) -> pd.DataFrame:
    """The fraud reports the replay sent from the labels: one per fraud payment, ``delay``
    later, none after the last event (`fengkong.replay.runner.event_stream`)."""
    t = pd.to_datetime(decisions["occurred_at"].astype(str), utc=True, format="ISO8601")
    fraud = decisions["is_fraud"].fillna(False).astype(bool).to_numpy() & (t + delay <= t.max()).to_numpy()
    return pd.DataFrame({"occurred_at": (t[fraud] + delay).map(lambda x: x.isoformat()).to_numpy(),
                         "card_fingerprint": decisions.loc[fraud, "card_fingerprint"].to_numpy(),
                         "refers_to": decisions.loc[fraud, "event_id"].to_numpy()})


def figures(decisions: pd.DataFrame, column: str, *, window: Any, reports: pd.DataFrame, top_k: int) -> dict[str, Any]:
    """AUC, AP and the daily top-k card precision of one score column, as the replay report
    computes them over the window."""
    from fengkong.replay.report import compute

    m = compute(decisions.assign(score=pd.to_numeric(decisions[column], errors="coerce").fillna(0.0)),
                top_k=top_k, window=window, card_reports=reports)
    out = {"auc": m.roc_auc, "ap": m.average_precision, "topk_card_precision": m.card_precision_top_k}
    if m.daily_top_k is not None and len(m.daily_top_k):
        days = m.daily_top_k[m.daily_top_k["had_fraud"]]
        out["topk_ceiling"] = float((days["fraud_cards"].clip(upper=top_k) / days["top"].clip(lower=1)).mean())
    return out


def run_export(work: Path, *, seed: int = 0, customers: int = 1000, terminals: int = 2000, train_days: int = 70,
               valid_days: int = 10, gap_days: int = 7, test_days: int = 7, top_k: int = 100) -> dict[str, Any]:
    """Generate, train through the CLI, replay through the CLI, and score the test week."""
    from fengkong.replay.evaluation import Window
    from fengkong.simulation.export import ExportConfig, write_export

    days = train_days + gap_days + test_days
    cfg = ExportConfig(customers=customers, terminals=terminals, days=days, seed=seed)
    paths = write_export(cfg, work, until_day=train_days)
    rows = pd.read_csv(paths["export.csv"], usecols=["TX_FRAUD"])
    until = cfg.start + timedelta(days=train_days - valid_days - 1)
    test_from = cfg.start + timedelta(days=train_days + gap_days)
    t0 = time.perf_counter()
    train_out, train_cpu = _cli(["train", "transactions", "--history", str(paths["export_train.csv"]),
                                 "--mapping", str(paths["mapping.yaml"]), "--artifacts", str(work / "artifacts"),
                                 "--until", until.isoformat(), "--rules", str(ROOT / "rules"), "--seed", str(seed)])
    t1 = time.perf_counter()
    _, replay_cpu = _cli(["replay", str(paths["export.csv"]), "--mapping", str(paths["mapping.yaml"]),
                          "--artifacts", str(work / "artifacts"), "--rules-dir", str(ROOT / "rules"),
                          "--out", str(work / "replay"), "--evaluate-from", test_from.isoformat(),
                          "--top-k", str(top_k), "--no-progress"])
    t2 = time.perf_counter()
    decisions = pd.read_parquet(work / "replay" / "decisions.parquet")
    window = Window(start=test_from)
    reports = card_reports(decisions, timedelta(days=cfg.label_delay_days))
    fig = {name: figures(decisions, col, window=window, reports=reports, top_k=top_k)
           for name, col in (("risk", "risk"), ("txn_risk", "model.txn_risk"), ("rules", "score"))}
    kept = next((line.split("kept: ")[1] for line in train_out.splitlines() if "kept: " in line), "")
    metas = sorted((work / "artifacts" / "transactions").glob("*/meta.json"))
    fusion_rules = json.loads(metas[-1].read_text())["metrics"].get("fusion_rules") if metas else None
    return {
        "export_auc": fig["risk"]["auc"], "export_ap": fig["risk"]["ap"],
        "export_topk_card_precision": fig["risk"]["topk_card_precision"],
        "export_topk_ceiling": fig["risk"].get("topk_ceiling"),
        "export_txn_risk": fig["txn_risk"], "export_rules": fig["rules"],
        "export_model_kept": kept, "export_fusion_rules": fusion_rules,
        "export_size": {"rows": len(rows), "fraud_share": round(float(rows["TX_FRAUD"].mean()), 5),
                        "customers": customers, "terminals": terminals, "days": days,
                        "train_until": until.isoformat(), "train_file_days": train_days,
                        "test_from": test_from.isoformat(), "seed": seed},
        "export_cpu_s": {"train": round(train_cpu, 1), "replay": round(replay_cpu, 1)},
        "export_wall_s": {"train": round(t1 - t0, 1), "replay": round(t2 - t1, 1)},
        "export_config": {k: str(v) for k, v in asdict(cfg).items()},
    }


def history_start_ab(work: Path, *, train_until: str = "2026-05-23", test_from: str = "2026-06-17",
                     kind: str = "forest") -> dict[str, dict[str, float]]:
    """Test-week AP and AUC of one txn_risk kind on the export's twin features, with the
    history start (`--history-start first`: ages missing) and without (``none``); oracle
    labels, training days up to ``train_until`` (an export written by `run_export` in ``work``)."""
    from datetime import date

    from sklearn.metrics import average_precision_score, roc_auc_score

    from fengkong.cli.models import mapped_history
    from fengkong.features.young import history_start_for
    from fengkong.training.candidates import fit_kind
    from fengkong.training.train import fitted_vectorizers, transaction_frame

    events, _ = mapped_history(work / "export.csv", work / "mapping.yaml")
    out = {}
    for word in ("first", "none"):
        t0 = time.process_time()
        f = transaction_frame(events, profiles=None, lists_dir=ROOT / "rules" / "lists",
                              history_start_us=history_start_for(word, events["occurred_at"], mapped=True))
        train = f[f["day"] <= date.fromisoformat(train_until)]
        test = f[f["day"] >= date.fromisoformat(test_from)]
        tv, _, _ = fitted_vectorizers(train)
        model = fit_kind(kind, tv.frame(train), train["is_fraud"].to_numpy(dtype=bool))
        p, y = model.predict_proba(tv.frame(test))[:, 1], test["is_fraud"].to_numpy(dtype=bool)
        out[word] = {"features": len(tv.names), "ap": float(average_precision_score(y, p)),
                     "auc": float(roc_auc_score(y, p)), "cpu_s": time.process_time() - t0}
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="The export run alone, or the history-start A/B on its files.")
    ap.add_argument("--work", type=Path, required=True, help="folder for the export, artifacts and replay")
    ap.add_argument("--ab", action="store_true", help="only the history-start A/B on an export already in --work")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(history_start_ab(args.work) if args.ab else run_export(args.work), indent=1, default=str))
