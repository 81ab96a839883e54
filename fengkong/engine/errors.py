"""The engine's errors: one small tree under `RuleError`.

Load-time problems (syntax, unknown names, types, bad fields) are collected as
`Problem` records so `fengkong rules check` can report every one in a single run;
`RuleSetError` carries them all. Evaluation-time failures are a separate branch
(`EvaluationError`) so a caller can tell "your rule file is wrong" from "the engine
failed on this payment".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rule set, located for the analyst who must fix it."""

    file: str
    line: int | None
    rule_id: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        who = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{where}{who}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RuleError(Exception):
    """Root of every error the rule engine raises."""


class ExpressionError(RuleError):
    """A `when` expression is not valid (syntax outside the grammar, or a type error).

    ``column`` is 0-based within the expression text, ``line`` 1-based within it.
    """

    def __init__(self, reason: str, line: int = 1, column: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column


class RuleSyntaxError(ExpressionError):
    """The text is not in the whitelisted grammar."""


class RuleTypeError(ExpressionError):
    """The text parses but names an unknown feature or mixes types."""


class RuleSetError(RuleError):
    """A rule set that cannot be loaded; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        head = f"{len(self.problems)} problem(s) in the rule set"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems[:20]))


class EvaluationError(RuleError):
    """The engine failed while evaluating a decision (a bug or a broken backend)."""
