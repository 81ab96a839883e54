"""The rule engine: analyst rule files -> typed tree -> durable_rules -> decision.

Public API (the decision service and replay import these):

* `load_ruleset(rules_dir, limits=Limits()) -> RuleSet` (raises `RuleSetError` with
  `.problems`, and nothing else: a hostile set is refused, never a crash)
* `RuleSet`: ``.version``, ``.rules``, ``.policy``, ``.features_read``, ``.evaluate(features)``
* `LiveRules(rules_dir)`: ``.current``, ``.evaluate``, ``.reload() -> ReloadResult``, ``.watch()``,
  ``.refused_earlier()``, ``.builds`` (a refused set is not built again until its files change)
* `Limits`: bytes per file and per set, rules per set (`limits.py` holds every limit)
* `Decision`, `FiredRule`, `Problem` and the error tree under `RuleError`.

docs/rules.md is the analyst's guide to the language and the policy.
"""

from fengkong.engine.decision import Decision, FiredRule
from fengkong.engine.errors import (
    EvaluationError,
    ExpressionError,
    Problem,
    RuleError,
    RuleSetError,
    RuleSyntaxError,
    RuleTypeError,
)
from fengkong.engine.limits import Limits
from fengkong.engine.live import LiveRules, ReloadResult
from fengkong.engine.ruleset import RuleSet, load_ruleset

__all__ = [
    "Decision",
    "EvaluationError",
    "ExpressionError",
    "FiredRule",
    "Limits",
    "LiveRules",
    "Problem",
    "ReloadResult",
    "RuleError",
    "RuleSet",
    "RuleSetError",
    "RuleSyntaxError",
    "RuleTypeError",
    "load_ruleset",
]
