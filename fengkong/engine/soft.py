"""The soft step of the policy: soft rules are evidence, the calibrated fused risk decides.

A rule marked ``soft: true`` (a volume ratio, a velocity count) says "this is unusual",
not "this is fraud": a promotion day makes a shop's volume jump, and an established
customer buying there is not a thief. When the policy has a ``soft`` table
(fused-risk thresholds per action) and the decision has a fused risk (the model
runtime's `RiskFusion`, fit on the rules' score and ``model.txn_risk``), the decision is

    most severe of (the hard rules' decision, policy.soft_action(risk))

where "the hard rules' decision" is the policy (actions, score thresholds, lanes)
applied to the enforced rules that are not soft, as if the soft ones had not fired.
So a payment whose only enforced hits are soft rules takes its action from the fused
risk alone, a high-risk payment that no rule caught still meets friction, and a hard
rule (blacklist, Tor, limits) decides as before; a lane that decides (trusted) still
decides. The soft rules' scores still reach the fused risk (it reads the whole
enforced score), and they are still reported in ``reasons``.

Without a fused risk (no model loaded, a non-payment) or without a ``soft`` table the
decision is the one every rule gives, soft or not: nothing changes for a rules-only
deployment. `settle` is the live path (one decision), `settle_arrays` the backtest
(`fengkong.engine.vectorized`); tests/test_engine_soft.py holds the two equal.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from fengkong.engine.decision import Decision
from fengkong.engine.policy import Policy
from fengkong.engine.rule import Rule

if TYPE_CHECKING:  # the vectorised module imports this one
    from fengkong.engine.vectorized import VectorDecisions, _Table

#: What the decision path hands a rule set to get the fused risk of a first decision.
Fuse = Callable[[Decision], "float | None"]


def applies(policy: Policy, risk: float | None) -> bool:
    """Whether the soft step runs: the policy has a soft table and there is a fused risk."""
    return policy.soft is not None and risk is not None and risk == risk


def settle(decision: Decision, hard: str, hard_lane: str | None, policy: Policy, risk: float) -> Decision:
    """The decision after the soft step: ``hard`` and ``hard_lane`` are what the policy
    gives over the hard rules alone (`RuleSet.verdict` without the soft ids); ``decision``
    is the one over every rule, whose reasons, score and thresholds the answer keeps (the
    explanation)."""
    soft_action = policy.soft_action(risk)
    final = hard if hard_lane is not None else policy.more_severe(hard, soft_action)
    return decision.with_outcome(decision=final, lane=hard_lane, risk=risk, soft_action=soft_action, hard_action=hard)


def settle_arrays(rules: Sequence[Rule], policy: Policy, fired: np.ndarray, lanes: dict[str, np.ndarray],
                  table: "_Table", full: "VectorDecisions", risk: np.ndarray,
                  decide: Callable[..., Any]) -> "VectorDecisions":
    """`settle` over arrays: rows with a fused risk (not NaN) take the soft step, the others
    keep ``full`` (the policy over every rule). ``decide`` is `vectorized.decide_arrays`."""
    risk = np.asarray(risk, dtype=np.float64)
    if policy.soft is None or len(risk) == 0:
        return full
    soft_cols = np.array([r.soft for r in rules], dtype=bool)
    hard_fired = fired & ~soft_cols if len(rules) else fired
    hard = decide(rules, policy, hard_fired, lanes, table)
    rank_of = {a: policy.rank(a) for a in policy.severity}
    hard_rank = np.array([rank_of[a] for a in hard.decision], dtype=np.int8)
    has_risk = ~np.isnan(risk)
    soft_rank = np.zeros(len(risk), dtype=np.int8)
    for action, limit in policy.soft.items():
        soft_rank = np.maximum(soft_rank, np.where(has_risk & (risk >= limit), rank_of[action], 0).astype(np.int8))
    no_lane = np.array([lane is None for lane in hard.lane], dtype=bool)
    settled = np.where(no_lane, np.maximum(hard_rank, soft_rank), hard_rank)
    names = np.array(policy.severity, dtype=object)
    decision = np.where(has_risk, names[settled], full.decision)
    lane = np.where(has_risk, hard.lane, full.lane)
    return replace(full, decision=decision, lane=lane)


__all__ = ["Fuse", "applies", "settle", "settle_arrays"]
