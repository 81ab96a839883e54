"""Merchant grade policy (`rules/grades/grades.yaml`) and the state machine that applies it.

`GradePolicy.load(path)` reads and checks the analysts' file (every problem
names the field); `grade_history(daily, policy)` runs the policy over every
merchant's days: vectorised over merchants, one step per calendar day, so the
same function runs on one partition of merchants (Dask) or all of them and gives
the same answer. The rules of movement are in the policy file's header comment
and docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml

from fengkong.features import definitions as d

DEFAULT_POLICY = Path("rules/grades/grades.yaml")


class GradePolicyError(ValueError):
    """The grade policy file is invalid; the message names the field."""


def _money_minor(value: Any, where: str) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise GradePolicyError(f"{where}: write money as a decimal string like \"5000.00\" (never a float)")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise GradePolicyError(f"{where}: {value!r} is not a decimal amount") from None
    if amount < 0:
        raise GradePolicyError(f"{where}: must not be negative")
    minor = amount * d.MINOR_PER_MAJOR
    if minor != minor.to_integral_value():
        raise GradePolicyError(f"{where}: at most two decimal places")
    return int(minor)


def _num(node: Mapping[str, Any], key: str, where: str, *, lo: float = 0.0, hi: float | None = None) -> float:
    if key not in node:
        raise GradePolicyError(f"{where}.{key}: required")
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GradePolicyError(f"{where}.{key}: must be a number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise GradePolicyError(f"{where}.{key}: must be between {lo} and {hi if hi is not None else 'inf'}")
    return float(value)


@dataclass(frozen=True)
class Trigger:
    anomaly_at_least: float
    chargeback_ratio_at_least: float
    min_chargebacks: int


@dataclass(frozen=True)
class Upgrade:
    to: str
    clean_days: int
    min_active_days: int
    min_volume_minor: int


@dataclass(frozen=True)
class GradePolicy:
    start: str
    ladder: tuple[str, ...]  # worst to best
    single_limit_minor: dict[str, int]
    daily_cap_minor: dict[str, int]
    severe: Trigger
    severe_to: str
    warning: Trigger
    warning_steps: int
    warning_cooldown_days: int
    clean_anomaly_below: float
    clean_chargeback_ratio_below: float
    upgrade: dict[str, Upgrade]
    source: str = ""

    @property
    def grades(self) -> tuple[str, ...]:
        return (*self.ladder, *(g for g in self.single_limit_minor if g not in self.ladder))

    def step_down(self, grade: str, steps: int) -> str:
        if grade not in self.ladder:
            return self.ladder[0]
        return self.ladder[max(0, self.ladder.index(grade) - steps)]

    @classmethod
    def load(cls, path: Path | str = DEFAULT_POLICY) -> "GradePolicy":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GradePolicyError(f"{path}: grade policy file not found") from None
        except yaml.YAMLError as exc:
            raise GradePolicyError(f"{path}: not valid YAML: {exc}") from None
        try:
            return cls.from_dict(data, source=str(path))
        except GradePolicyError as exc:
            raise GradePolicyError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> "GradePolicy":
        if not isinstance(data, dict):
            raise GradePolicyError("the policy must be a mapping")
        known = {"start", "ladder", "grades", "downgrade", "clean", "upgrade"}
        for key in data:
            if key not in known:
                raise GradePolicyError(f"{key}: unknown field (known: {', '.join(sorted(known))})")
        grades = data.get("grades")
        if not isinstance(grades, dict) or not grades:
            raise GradePolicyError("grades: required, a mapping of grade -> {single_limit, daily_cap}")
        single, cap = {}, {}
        for g, spec in grades.items():
            if not isinstance(spec, dict):
                raise GradePolicyError(f"grades.{g}: must be {{single_limit, daily_cap}}")
            single[str(g)] = _money_minor(spec.get("single_limit"), f"grades.{g}.single_limit")
            cap[str(g)] = _money_minor(spec.get("daily_cap"), f"grades.{g}.daily_cap")
        ladder = data.get("ladder")
        if not isinstance(ladder, list) or not ladder:
            raise GradePolicyError("ladder: required, the grades from worst to best, e.g. [D, C, B, A]")
        ladder = [str(g) for g in ladder]
        for g in ladder:
            if g not in single:
                raise GradePolicyError(f"ladder: {g} has no entry under grades")
        start = str(data.get("start", d.DEFAULT_GRADE))
        if start not in single:
            raise GradePolicyError(f"start: {start} has no entry under grades")

        down = data.get("downgrade")
        if not isinstance(down, dict) or "severe" not in down or "warning" not in down:
            raise GradePolicyError("downgrade: required, with `severe` and `warning`")

        def trigger(node: Any, where: str) -> Trigger:
            if not isinstance(node, dict):
                raise GradePolicyError(f"{where}: must be a mapping")
            return Trigger(_num(node, "anomaly_at_least", where, hi=1.0),
                           _num(node, "chargeback_ratio_at_least", where, hi=1.0),
                           int(_num(node, "min_chargebacks", where)))

        severe = trigger(down["severe"], "downgrade.severe")
        warning = trigger(down["warning"], "downgrade.warning")
        severe_to = str(down["severe"].get("to", ladder[0]))
        if severe_to not in single:
            raise GradePolicyError(f"downgrade.severe.to: {severe_to} has no entry under grades")
        clean = data.get("clean")
        if not isinstance(clean, dict):
            raise GradePolicyError("clean: required, {anomaly_below, chargeback_ratio_below}")
        clean_an = _num(clean, "anomaly_below", "clean", hi=1.0)
        clean_cb = _num(clean, "chargeback_ratio_below", "clean", hi=1.0)
        if clean_an > warning.anomaly_at_least:
            raise GradePolicyError("clean.anomaly_below: must not exceed downgrade.warning.anomaly_at_least "
                                   "(hysteresis: a clean day may not be a warning day)")
        if clean_cb > warning.chargeback_ratio_at_least:
            raise GradePolicyError("clean.chargeback_ratio_below: must not exceed "
                                   "downgrade.warning.chargeback_ratio_at_least")
        if warning.anomaly_at_least > severe.anomaly_at_least:
            raise GradePolicyError("downgrade.warning.anomaly_at_least: must not exceed severe's")
        ups = data.get("upgrade")
        if not isinstance(ups, dict):
            raise GradePolicyError("upgrade: required, grade -> {to, clean_days, min_active_days, min_volume}")
        upgrade = {}
        for g, spec in ups.items():
            where = f"upgrade.{g}"
            if str(g) not in single:
                raise GradePolicyError(f"{where}: {g} has no entry under grades")
            if not isinstance(spec, dict) or str(spec.get("to")) not in single:
                raise GradePolicyError(f"{where}.to: required, a grade listed under grades")
            upgrade[str(g)] = Upgrade(str(spec["to"]), int(_num(spec, "clean_days", where, lo=1)),
                                      int(_num(spec, "min_active_days", where)),
                                      _money_minor(spec.get("min_volume", "0"), f"{where}.min_volume"))
        dsteps = down["warning"].get("steps", 1)
        return cls(start, tuple(ladder), single, cap, severe, severe_to, warning, int(dsteps),
                   int(down["warning"].get("cooldown_days", 7)), clean_an, clean_cb, upgrade, source)


# -- the state machine ----------------------------------------------------------------------------
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

    names = list(policy.grades)
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
