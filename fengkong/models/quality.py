"""Quality on simulated history: rules alone, the model alone, and both together.

Train on the earlier days, evaluate on the later days' payments. Per scenario
(fraudulent payments of that scenario against every legitimate payment):

* recall at a 1% review rate: the share of the scenario's fraudulent payments
  among the top 1% of ALL evaluated payments by score (ties at the cut count
  fractionally);
* average precision (sklearn's, ties grouped).

Scores: "rules" = the decision score of the default rule pack (sum of enforced
rule scores), evaluated with `fengkong.engine.vectorized`; "model" =
``model.txn_risk``; "rules+model" = the decision score of the pack plus
`proposed_rules/models.yaml` (rules that read model.*), ties broken by
``model.txn_risk`` (a reviewer works the highest score first).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fengkong.models.transaction_model import recall_at_rate

PROPOSED_RULES = Path(__file__).parent / "proposed_rules" / "models.yaml"


def rule_scores(feats: pd.DataFrame, rules_dir: Path, extra: list[Path] | None = None) -> np.ndarray:
    from fengkong.engine import load_ruleset
    from fengkong.engine.vectorized import VectorizedRules

    if extra:
        tmp = Path(tempfile.mkdtemp(prefix="fk-rules-"))
        try:
            shutil.copytree(rules_dir, tmp / "rules")
            for p in extra:
                shutil.copy(p, tmp / "rules" / p.name)
            rs = load_ruleset(tmp / "rules")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        rs = load_ruleset(rules_dir)
    out = VectorizedRules.from_ruleset(rs).evaluate(feats)
    return np.asarray(out.score, dtype=np.float64)


def evaluate(feats: pd.DataFrame, scores: dict[str, np.ndarray], rate: float = 0.01) -> pd.DataFrame:
    """One row per (scenario, scorer): recall at ``rate`` and average precision."""
    from sklearn.metrics import average_precision_score

    y = feats["is_fraud"].to_numpy(dtype=bool)
    scen = feats["scenario"].to_numpy()
    rows: list[dict[str, Any]] = []
    scenarios = sorted(set(scen[y]))
    for s in ["(all)", *scenarios]:
        pos = y if s == "(all)" else y & (scen == s)
        keep = ~y | pos
        if pos.sum() == 0:
            continue
        for name, score in scores.items():
            sc = np.nan_to_num(score, nan=-1e9)
            # recall at the review rate of ALL payments, counted on this scenario's frauds
            rec = _recall_subset(sc, y, pos, rate)
            ap = float(average_precision_score(pos[keep], sc[keep]))
            rows.append({"scenario": s, "scorer": name, "frauds": int(pos.sum()), "recall_at_1pct": rec,
                         "average_precision": ap})
    return pd.DataFrame(rows)


def _recall_subset(score: np.ndarray, y: np.ndarray, pos: np.ndarray, rate: float) -> float:
    k = rate * len(score)
    order = np.sort(score)[::-1]
    cut = order[max(0, min(int(np.ceil(k)) - 1, len(order) - 1))]
    above = score > cut
    tie = score == cut
    take = min(1.0, max(0.0, (k - above.sum()) / tie.sum())) if tie.sum() else 0.0
    return float((pos[above].sum() + take * pos[tie].sum()) / pos.sum())


def quality_table(feats: pd.DataFrame, *, txn_risk: np.ndarray, habit: np.ndarray | None, rules_dir: Path) -> pd.DataFrame:
    f = feats.copy()
    f["model.txn_risk"] = txn_risk
    if habit is not None:
        f["model.habit_anomaly"] = habit
    rules = rule_scores(f, rules_dir)
    both = rule_scores(f, rules_dir, [PROPOSED_RULES])
    scores = {"rules": rules, "model": txn_risk, "rules+model": both + np.clip(txn_risk, 0, 1) * 1e-3}
    table = evaluate(f, scores)
    return table.pivot_table(index=["scenario", "frauds"], columns="scorer",
                             values=["recall_at_1pct", "average_precision"]).round(3)


__all__ = ["quality_table", "evaluate", "rule_scores", "recall_at_rate"]
