"""The merchant grade state machine: a `GradePolicy` applied to every merchant's days.

`grade_history(daily, policy)` runs the policy (`fengkong.training.grade_policy`)
over every merchant's days: vectorised over merchants, one step per calendar day,
so the same function runs on one partition of merchants (Dask) or all of them and
gives the same answer. `current_grades` keeps each merchant's last grade and why.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.training.grade_policy import GradePolicy

_REQUIRED = ("merchant_id", "day", "volume", "count", "chargeback_ratio_30d", "chargebacks_30d", "payments_30d")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def grade_history(daily: pd.DataFrame, policy: GradePolicy, *, initial: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Apply the policy day by day to every merchant of ``daily``.

    ``daily`` holds `merchant_features.daily_features` columns plus ``anomaly``
    (0-1, NaN when not scored). ``initial`` gives a starting grade per merchant
    (default: the policy's ``start``). Returns one row per input row (sorted by
    merchant_id, day) with ``grade`` (in force after the day), ``changed`` and
    ``reason`` (set on the days the grade changed, and on the first day).
    """
    for col in _REQUIRED:
        if col not in daily.columns:
            raise ValueError(f"daily features: missing column {col!r}")
    if len(daily) == 0:
        return pd.DataFrame(columns=["merchant_id", "day", "grade", "changed", "reason", "anomaly"])
    frame = daily.sort_values(["merchant_id", "day"], kind="stable").reset_index(drop=True)
    m_code, merchants = pd.factorize(frame["merchant_id"], sort=True)
    day_ord = pd.to_datetime(frame["day"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    d0 = int(day_ord.min())
    n_days = int(day_ord.max()) - d0 + 1
    n_m = len(merchants)
    col = day_ord - d0
    shape = (n_m, n_days)

    def dense(values: Any, fill: float = np.nan) -> np.ndarray:
        out = np.full(shape, fill)
        out[m_code, col] = np.asarray(values, dtype=np.float64)
        return out

    present = np.zeros(shape, dtype=bool)
    present[m_code, col] = True
    anomaly = dense(frame["anomaly"] if "anomaly" in frame.columns else np.full(len(frame), np.nan))
    cbr = dense(frame["chargeback_ratio_30d"])
    ncb = dense(frame["chargebacks_30d"], 0.0)
    npay = dense(frame["payments_30d"], 0.0)
    vol_minor = dense(frame["volume"] * d.MINOR_PER_MAJOR, 0.0)
    active = dense(frame["count"], 0.0) > 0

    names = list(policy.names)
    index = {g: i for i, g in enumerate(names)}
    down_lut = np.array([index[policy.step_down(g, policy.warning_steps)] for g in names])
    up_to = np.array([index[policy.upgrade[g].to] if g in policy.upgrade else -1 for g in names])
    up_days = np.array([policy.upgrade[g].clean_days if g in policy.upgrade else 10**9 for g in names])
    up_active = np.array([policy.upgrade[g].min_active_days if g in policy.upgrade else 0 for g in names])
    up_vol = np.array([policy.upgrade[g].min_volume_minor if g in policy.upgrade else 0 for g in names], dtype=np.float64)
    severe_to = index[policy.severe_to]

    start = np.full(n_m, index[policy.start])
    if initial:
        init = pd.Series(list(merchants)).map(initial)
        bad = sorted({g for g in init.dropna() if g not in index})
        if bad:
            raise ValueError(f"initial grades unknown to the policy: {', '.join(bad)}")
        start = np.where(init.notna(), init.map(index).fillna(0).to_numpy(dtype=np.int64), start)
    grade = start.copy()
    started = np.zeros(n_m, dtype=bool)
    streak = np.zeros(n_m, dtype=np.int64)
    streak_vol = np.zeros(n_m)
    streak_active = np.zeros(n_m, dtype=np.int64)
    last_warn = np.full(n_m, -10**9, dtype=np.int64)

    out_grade = np.zeros(shape, dtype=np.int64)
    out_kind = np.zeros(shape, dtype=np.int8)  # 0 none, 1 start, 2 severe, 3 warning, 4 upgrade
    out_from = np.zeros(shape, dtype=np.int64)
    streak_at = np.zeros(shape, dtype=np.int64)
    vol_at = np.zeros(shape)
    active_at = np.zeros(shape, dtype=np.int64)
    sv, wn = policy.severe, policy.warning

    for j in range(n_days):
        p = present[:, j]
        a = anomaly[:, j]
        r = cbr[:, j]
        nc = ncb[:, j]
        with np.errstate(invalid="ignore"):
            sev = p & ((a >= sv.anomaly_at_least) | ((r >= sv.chargeback_ratio_at_least) & (nc >= sv.min_chargebacks)))
            warn_hit = p & ~sev & ((a >= wn.anomaly_at_least)
                                   | ((r >= wn.chargeback_ratio_at_least) & (nc >= wn.min_chargebacks)))
            clean = p & ~sev & ~warn_hit & ~(a >= policy.clean_anomaly_below) \
                & ~(r >= policy.clean_chargeback_ratio_below)
        first = p & ~started
        started |= p
        out_kind[first, j] = 1
        before = grade.copy()
        warn = warn_hit & (j - last_warn >= policy.warning_cooldown_days)
        last_warn = np.where(warn, j, last_warn)
        grade = np.where(sev, severe_to, np.where(warn, down_lut[grade], grade))
        downed = sev | warn_hit
        streak = np.where(clean, streak + 1, 0)
        streak_vol = np.where(clean, streak_vol + vol_minor[:, j], 0.0)
        streak_active = np.where(clean, streak_active + active[:, j], 0)
        streak_at[:, j], vol_at[:, j], active_at[:, j] = streak, streak_vol, streak_active
        up = clean & ~downed & (up_to[grade] >= 0) & (streak >= up_days[grade]) \
            & (streak_active >= up_active[grade]) & (streak_vol >= up_vol[grade])
        grade = np.where(up, up_to[grade], grade)
        streak = np.where(up, 0, streak)
        streak_vol = np.where(up, 0.0, streak_vol)
        streak_active = np.where(up, 0, streak_active)
        changed = grade != before
        out_kind[changed & sev, j] = 2
        out_kind[changed & warn & ~sev, j] = 3
        out_kind[changed & up, j] = 4
        out_from[:, j] = before
        out_grade[:, j] = grade

    g_rows = out_grade[m_code, col]
    kind = out_kind[m_code, col]
    res = pd.DataFrame({
        "merchant_id": frame["merchant_id"].to_numpy(),
        "day": frame["day"].to_numpy(),
        "grade": np.asarray(names, dtype=object)[g_rows],
        "changed": kind >= 2,
        "reason": None,
        "anomaly": frame["anomaly"].to_numpy(dtype=np.float64) if "anomaly" in frame.columns else np.nan,
    })
    reasons = np.full(len(frame), None, dtype=object)
    for i in np.flatnonzero(kind > 0):
        m, j = m_code[i], col[i]
        old, new = names[out_from[m, j]], names[out_grade[m, j]]
        a, r, nc, npy = anomaly[m, j], cbr[m, j], ncb[m, j], npay[m, j]
        k = kind[i]
        if k == 1:
            reasons[i] = f"start {names[start[m]]}: first day of the merchant"
        elif k in (2, 3):
            trig = sv if k == 2 else wn
            why = []
            if not np.isnan(a) and a >= trig.anomaly_at_least:
                why.append(f"anomaly {a:.3f} >= {trig.anomaly_at_least}")
            if not np.isnan(r) and r >= trig.chargeback_ratio_at_least and nc >= trig.min_chargebacks:
                why.append(f"chargeback ratio {_pct(r)} >= {_pct(trig.chargeback_ratio_at_least)} "
                           f"({int(nc)} chargebacks / {int(npy)} payments, 30d)")
            label = "severe" if k == 2 else "warning"
            reasons[i] = f"downgrade {old}->{new} ({label}): " + "; ".join(why)
        else:
            up_spec = policy.upgrade[old]
            reasons[i] = (f"upgrade {old}->{new}: {streak_at[m, j]} clean days (>= {up_spec.clean_days}), "
                          f"{active_at[m, j]} active, volume {vol_at[m, j] / d.MINOR_PER_MAJOR:,.2f} "
                          f"(>= {up_spec.min_volume_minor / d.MINOR_PER_MAJOR:,.2f})")
        if k == 1 and out_grade[m, j] != start[m]:
            reasons[i] += "; then " + ("downgrade" if out_grade[m, j] in (severe_to,) else "moved") \
                + f" to {names[out_grade[m, j]]} the same day"
    res["reason"] = reasons
    return res


def current_grades(history: pd.DataFrame) -> pd.DataFrame:
    """Each merchant's last grade, the reason of its last change and its last anomaly score."""
    if len(history) == 0:
        return pd.DataFrame(columns=["merchant_id", "grade", "reason", "since", "anomaly", "anomaly_day"])
    h = history.sort_values(["merchant_id", "day"], kind="stable")
    last = h.groupby("merchant_id", sort=True).tail(1).set_index("merchant_id")
    with_reason = h[h["reason"].notna()].groupby("merchant_id", sort=True).tail(1).set_index("merchant_id")
    scored = h[h["anomaly"].notna()].groupby("merchant_id", sort=True).tail(1).set_index("merchant_id")
    out = pd.DataFrame({"grade": last["grade"]})
    out["reason"] = with_reason["reason"].reindex(out.index)
    out["since"] = with_reason["day"].reindex(out.index)
    out["anomaly"] = scored["anomaly"].reindex(out.index)
    out["anomaly_day"] = scored["day"].reindex(out.index)
    return out.reset_index()
