"""Every use of durable_rules in fengkong lives in this package.

durable_rules 2.0.28 is unmaintained, so it is kept behind one small class,
`DurableRuleset`, which drives its C module directly rather than through the Python
host (DESIGN.md, "durable_rules: what is known"). One job per module:

* `compiler`: the typed tree as durable's JSON conditions;
* `alpha`: the model of durable's alpha stack, and the packing of rules into shards
  that stay inside it;
* `facts`: one decision's features as the JSON fact durable reads;
* `classes`: a number compared only with constants as its class's representative;
* `fact_code`: each shard's fact writer, compiled once per rule set from its plan;
* `guards`: the fields a shard's rules cannot fire without (a fact lacking them all
  is not asserted; a fact keeps only the fields a rule able to fire reads);
* `session`: the rulesets in durable's C module, and the fires of a decision
  collected on the calling thread.

Only `session` imports durable's C module. tests/test_engine_durable.py compares
every fire with the plain-Python evaluator, under load and across threads.
"""

from fengkong.engine.durable_backend.alpha import ALPHA_STACK_BUDGET, DURABLE_ALPHA_STACK, alpha_stack_peak
from fengkong.engine.durable_backend.session import (
    DurableRefused,
    DurableRuleset,
    FireResult,
    RuleSetClosed,
    unique_name,
)

__all__ = [
    "ALPHA_STACK_BUDGET",
    "DURABLE_ALPHA_STACK",
    "DurableRefused",
    "DurableRuleset",
    "FireResult",
    "RuleSetClosed",
    "alpha_stack_peak",
    "unique_name",
]
