"""Friction figures of a set of decisions: what legitimate customers meet, and what fraud meets.

Counted the way a decision is used (issue 14): *friction* = challenge, review or deny;
*stopped* = review or deny. Per payment:

* ``legit_friction``: the share of legitimate payments that met friction;
* ``promo_legit_friction``: the same over legitimate payments made at a merchant during
  one of its planned promotions (the simulator's ``promotions.parquet``; absent without one);
* per fraud scenario, the share of its payments that met friction and that were stopped,
  and ``min_pattern_friction`` / ``min_pattern_stopped``, the worst scenario's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FRICTION: tuple[str, ...] = ("challenge", "review", "deny")
STOPPED: tuple[str, ...] = ("review", "deny")


def in_promotion(merchants: np.ndarray, occurred_at: pd.Series, promotions: pd.DataFrame | None) -> np.ndarray:
    """Whether each payment falls inside a planned promotion of its merchant (start <= t < end)."""
    out = np.zeros(len(merchants), dtype=bool)
    if promotions is None or len(promotions) == 0:
        return out
    when = pd.to_datetime(occurred_at, utc=True, format="ISO8601").to_numpy()
    mer = pd.Series(np.asarray(merchants, dtype=object)).astype(str).to_numpy()
    for m, start, end in zip(promotions["merchant_id"].astype(str),
                             pd.to_datetime(promotions["start"], utc=True, format="ISO8601").to_numpy(),
                             pd.to_datetime(promotions["end"], utc=True, format="ISO8601").to_numpy()):
        out |= (mer == m) & (when >= start) & (when < end)
    return out


def friction_figures(decision: np.ndarray, is_fraud: np.ndarray, scenario: np.ndarray,
                     promo: np.ndarray | None = None) -> dict[str, Any]:
    """The figures of the module docstring for one array of decisions (one per payment)."""
    decision = np.asarray(decision, dtype=object)
    y = np.asarray(is_fraud, dtype=bool)
    fr = np.isin(decision, FRICTION)
    st = np.isin(decision, STOPPED)
    out: dict[str, Any] = {"legit_friction": float(fr[~y].mean()) if (~y).any() else float("nan"),
                           "legit_stopped": float(st[~y].mean()) if (~y).any() else float("nan")}
    if promo is not None:
        lp = np.asarray(promo, dtype=bool) & ~y
        out["promo_legit_payments"] = int(lp.sum())
        out["promo_legit_friction"] = float(fr[lp].mean()) if lp.any() else float("nan")
    per: dict[str, dict[str, float]] = {}
    scen = np.asarray(scenario, dtype=object)
    for s in sorted({str(v) for v in scen[y]}):
        m = y & (scen == s)
        per[s] = {"payments": int(m.sum()), "friction": float(fr[m].mean()), "stopped": float(st[m].mean())}
    out["per_pattern"] = per
    out["min_pattern_friction"] = min((v["friction"] for v in per.values()), default=float("nan"))
    out["min_pattern_stopped"] = min((v["stopped"] for v in per.values()), default=float("nan"))
    return out


__all__ = ["FRICTION", "STOPPED", "friction_figures", "in_promotion"]
