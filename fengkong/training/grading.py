"""Merchant grade policy (`rules/grades/grades.yaml`) and the state machine that applies it.

`GradePolicy.load(path)` reads and checks the analysts' file: a pydantic model
checks each field's type and range, then how the fields relate (every grade
named is listed under ``grades``; the clean thresholds sit below the warning
ones), and every problem names the file, the line and the field, so an analyst
goes straight to it. `grade_history(daily, policy)` runs the policy over every
merchant's days: vectorised over merchants, one step per calendar day, so the
same function runs on one partition of merchants (Dask) or all of them and gives
the same answer. The rules of movement are in the policy file's header comment
and docs/models.md.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Mapping, get_args, get_origin

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from fengkong.engine.yamlio import Located, YamlSyntax, line_of, load_yaml
from fengkong.features import definitions as d

DEFAULT_POLICY = Path("rules/grades/grades.yaml")


class GradePolicyError(ValueError):
    """The grade policy file is invalid; each line of the message names the file, line and field."""


class _Problems(ValueError):
    """Problems found after every field is valid, each at its own location in the file (a plain
    model validator would report them all at the root)."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


def _money_minor(value: Any) -> int:
    """A decimal amount in major units (a string like "5000.00", or an integer) -> minor units."""
    if isinstance(value, (bool, float)):
        raise ValueError('write money as a decimal string like "5000.00" (never a float)')
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a finite amount, not negative")
    minor = amount * d.MINOR_PER_MAJOR
    if minor != minor.to_integral_value():
        raise ValueError("at most two decimal places")
    return int(minor)


Money = Annotated[int, BeforeValidator(_money_minor)]
#: A share or score between 0 and 1 (a number: never a string or a boolean).
Share = Annotated[float, Field(strict=True, ge=0.0, le=1.0)]
Count = Annotated[int, Field(strict=True, ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Model):
    """One grade's limits: the single-payment limit and the daily cap, in minor units."""

    single_limit_minor: Money = Field(alias="single_limit")
    daily_cap_minor: Money = Field(alias="daily_cap")


class Trigger(_Model):
    """When a day counts as a severe (or warning) day."""

    anomaly_at_least: Share
    chargeback_ratio_at_least: Share
    min_chargebacks: Count


class SevereTrigger(Trigger):
    to: str | None = None


class WarningTrigger(Trigger):
    steps: Annotated[int, Field(strict=True, ge=1)] = 1
    cooldown_days: Count = 7


class Downgrade(_Model):
    severe: SevereTrigger
    warning: WarningTrigger


class Clean(_Model):
    anomaly_below: Share
    chargeback_ratio_below: Share


class Upgrade(_Model):
    """Where a grade moves after a clean stretch, and what the stretch needs."""

    to: str
    clean_days: Annotated[int, Field(strict=True, ge=1)]
    min_active_days: Count
    min_volume_minor: Money = Field(default=0, alias="min_volume")


class GradePolicy(_Model):
    """The analysts' grade policy file, checked whole; grades are named as in the file."""

    start: str = d.DEFAULT_GRADE
    ladder: tuple[str, ...] = Field(min_length=1)  # worst to best
    grades: dict[str, Limits] = Field(min_length=1)
    downgrade: Downgrade
    clean: Clean
    upgrade: dict[str, Upgrade]
    _source: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _relations(self) -> "GradePolicy":
        known = self.grades
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, g in enumerate(self.ladder):
            if g not in known:
                problems.append((("ladder", i), f"{g} has no entry under grades"))
        if self.start not in known:
            problems.append((("start",), f"{self.start} has no entry under grades"))
        if self.downgrade.severe.to is not None and self.downgrade.severe.to not in known:
            problems.append((("downgrade", "severe", "to"), f"{self.downgrade.severe.to} has no entry under grades"))
        warning, severe = self.downgrade.warning, self.downgrade.severe
        if self.clean.anomaly_below > warning.anomaly_at_least:
            problems.append((("clean", "anomaly_below"), "must not exceed downgrade.warning.anomaly_at_least "
                             "(hysteresis: a clean day may not be a warning day)"))
        if self.clean.chargeback_ratio_below > warning.chargeback_ratio_at_least:
            problems.append((("clean", "chargeback_ratio_below"),
                             "must not exceed downgrade.warning.chargeback_ratio_at_least (hysteresis)"))
        if warning.anomaly_at_least > severe.anomaly_at_least:
            problems.append((("downgrade", "warning", "anomaly_at_least"), "must not exceed severe's"))
        for g, up in self.upgrade.items():
            if g not in known:
                problems.append((("upgrade", g), f"{g} has no entry under grades"))
            if up.to not in known:
                problems.append((("upgrade", g, "to"), f"{up.to} has no entry under grades"))
        if problems:
            raise _Problems(problems)
        return self

    # -- what the state machine reads -------------------------------------------------------------
    @property
    def source(self) -> str:
        """The file the policy was read from ("" when built from a mapping)."""
        return self._source

    @property
    def names(self) -> tuple[str, ...]:
        """Every grade: the ladder (worst to best), then those outside it (NEW)."""
        return (*self.ladder, *(g for g in self.grades if g not in self.ladder))

    @property
    def single_limit_minor(self) -> dict[str, int]:
        return {g: lim.single_limit_minor for g, lim in self.grades.items()}

    @property
    def daily_cap_minor(self) -> dict[str, int]:
        return {g: lim.daily_cap_minor for g, lim in self.grades.items()}

    @property
    def severe(self) -> SevereTrigger:
        return self.downgrade.severe

    @property
    def warning(self) -> WarningTrigger:
        return self.downgrade.warning

    @property
    def severe_to(self) -> str:
        return self.downgrade.severe.to if self.downgrade.severe.to is not None else self.ladder[0]

    @property
    def warning_steps(self) -> int:
        return self.downgrade.warning.steps

    @property
    def warning_cooldown_days(self) -> int:
        return self.downgrade.warning.cooldown_days

    @property
    def clean_anomaly_below(self) -> float:
        return self.clean.anomaly_below

    @property
    def clean_chargeback_ratio_below(self) -> float:
        return self.clean.chargeback_ratio_below

    def step_down(self, grade: str, steps: int) -> str:
        if grade not in self.ladder:
            return self.ladder[0]
        return self.ladder[max(0, self.ladder.index(grade) - steps)]

    # -- reading the file -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str = DEFAULT_POLICY) -> "GradePolicy":
        """Read and check a policy file; `GradePolicyError` lists every problem with its line."""
        path = Path(path)
        try:
            data = load_yaml(path)
        except FileNotFoundError:
            raise GradePolicyError(f"{path}: grade policy file not found") from None
        except YamlSyntax as exc:
            raise GradePolicyError(f"{path}:{exc.line or 1}: {exc.reason}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "") -> "GradePolicy":
        """Check a parsed policy; lines are named when ``data`` came from `load_yaml`."""
        if not isinstance(data, dict):
            raise GradePolicyError(_where(source, None, "", "the policy must be a mapping"))
        problems = [_where(source, line, key, "written twice in one mapping") for key, line in _duplicates(data)]
        if not problems:
            try:
                policy = cls.model_validate(data)
            except ValidationError as exc:
                problems = [_where(source, _line(data, loc), ".".join(map(str, loc)), msg)
                            for loc, msg in _explain(exc)]
            else:
                policy._source = source
                return policy
        raise GradePolicyError("\n".join(problems))


def _explain(exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, reason) of each problem pydantic found, in the file's own words."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Problems):
            out.extend((loc + sub, msg) for sub, msg in cause.problems)
        elif isinstance(cause, ValueError):
            out.append((loc, str(cause)))
        elif err["type"] == "extra_forbidden":
            known = _fields_at(loc[:-1])
            out.append((loc, "unknown field" + (f" (known: {', '.join(known)})" if known else "")))
        elif err["type"] == "missing":
            out.append((loc, "required"))
        else:
            out.append((loc, f"{err['msg']}, got {err['input']!r}"))
    return out


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The field names a mapping at ``loc`` of the policy may hold (for "unknown field")."""
    model: Any = GradePolicy
    for key in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = next((f for n, f in model.model_fields.items() if (f.alias or n) == key), None)
            if field is None:
                return []
            model = field.annotation
        elif get_origin(model) is dict:
            model = get_args(model)[1]
        else:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(f.alias or n for n, f in model.model_fields.items())
    return []


def _line(data: Any, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest key of ``loc`` found in the parsed file."""
    node, line = data, line_of(data)
    for key in loc:
        if isinstance(node, Located) and str(key) in node.lines:
            line = node.lines[str(key)]
            node = node[key] if key in node else None
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            break
    return line


def _duplicates(node: Any, at: str = "") -> list[tuple[str, int]]:
    """(dotted key, line) of keys written twice in one mapping, anywhere in the file (YAML alone
    would keep the last one silently)."""
    found: list[tuple[str, int]] = []
    if isinstance(node, Located):
        found.extend((f"{at}{key}", line) for key, line in node.duplicate_keys)
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_duplicates(value, f"{at}{key}."))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_duplicates(value, f"{at}{i}."))
    return found


def _where(source: str, line: int | None, field: str, reason: str) -> str:
    """One problem as "file:line: field: reason" (the parts that are known)."""
    place = f"{source}:{line}" if source and line else source
    return ": ".join(part for part in (place, field, reason) if part)


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
