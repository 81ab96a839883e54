"""The merchant grade policy file (`rules/grades/grades.yaml`), read and checked.

`GradePolicy.load(path)` reads the analysts' file: a pydantic model checks each
field's type and range, then how the fields relate (every grade named is listed
under ``grades``; the clean thresholds sit below the warning ones), and every
problem names the file, the line and the field, so an analyst goes straight to
it. `fengkong.training.grading` applies the policy day by day; the rules of
movement are in the policy file's header comment and docs/models.md.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

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
