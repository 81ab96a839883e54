"""Write a candidate rule set: the original files with some numbers changed, nothing else.

`fengkong tune` moves tunable constants (`tunable.py`) and the policy's thresholds; the
candidate it hands to `rules check`, `rules backtest` and a reload must read like the
author's own files, comments and layout included. So the folder is copied as it is and
only the changed numbers are rewritten in place, found through the line numbers the
YAML loader keeps (`yamlio.Located`); the result is parsed back and compared with the
intended values, and any difference is an error rather than a silently different set.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fengkong.engine.errors import RuleSetError
from fengkong.engine.policy import Policy
from fengkong.engine.rule import Rule
from fengkong.engine.ruleset import POLICY_FILE, parse_rules
from fengkong.engine.tunable import Tunable, format_number, rewrite_constants, substitute
from fengkong.engine.yamlio import line_of, load_yaml

#: a policy threshold: ("default", None, action), ("grade", "A", action), ("channel", name, action)
#: or ("soft", None, action)
PolicyKey = tuple[str, "str | None", str]


@dataclass(frozen=True)
class Change:
    """One number of the candidate: a rule's tunable constant, or a policy threshold."""

    rule_id: str | None  # None: the policy
    key: Any  # a Tunable (rules) or a PolicyKey (policy)
    old: float
    new: float

    def label(self) -> str:
        if self.rule_id is not None:
            return f"{self.rule_id}: {self.key.key}"
        table, name, action = self.key
        return f"policy {table}{'.' + name if name else ''}.{action}"


def policy_value(policy: Policy, key: PolicyKey) -> float | None:
    """The current value of a policy threshold (None when the policy has no such entry)."""
    table, name, action = key
    got: Mapping[str, float] | None
    if table == "default":
        got = policy.default
    elif table == "grade":
        got = policy.by_grade.get(name or "")
    elif table == "channel":
        got = policy.by_channel.get(name or "")
    else:
        got = policy.soft
    return None if got is None or action not in got else float(got[action])


def with_policy(policy: Policy, values: Mapping[PolicyKey, float]) -> Policy:
    """``policy`` with some thresholds replaced (a new, fully built `Policy`)."""
    default = dict(policy.default)
    grades = {g: dict(t) for g, t in policy.by_grade.items()}
    channels = {c: dict(t) for c, t in policy.by_channel.items()}
    soft = dict(policy.soft) if policy.soft is not None else None
    for (table, name, action), v in values.items():
        if table == "default":
            default[action] = v
        elif table == "grade":
            grades[name or ""][action] = v
        elif table == "channel":
            channels[name or ""][action] = v
        elif soft is not None:
            soft[action] = v
    return Policy(policy.severity, default, grades, channels, policy.lanes, soft)


def with_constants(rules: tuple[Rule, ...], values: Mapping[tuple[str, str], float]) -> tuple[Rule, ...]:
    """``rules`` with tunable constants replaced: ``values[(rule id, tunable key)]``."""
    from dataclasses import replace

    out = []
    for r in rules:
        expr = r.expr
        tunables = []
        for t in r.tunables:
            v = values.get((r.id, t.key))
            if v is not None and v != t.value:
                expr = substitute(expr, t, v)
                t = replace(t, value=float(v))
            tunables.append(t)
        out.append(replace(r, expr=expr, tunables=tuple(tunables)) if expr is not r.expr else r)
    return tuple(out)


def write_candidate(rules_dir: Path, out_dir: Path, changes: list[Change]) -> Path:
    """Copy ``rules_dir`` to ``out_dir`` and write ``changes`` into the copied files.

    Raises ValueError naming the file and line when a number cannot be found where the
    loader says it is, or when the written set does not parse back to the intended values."""
    rules_dir, out_dir = Path(rules_dir), Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(rules_dir, out_dir)
    rules, policy, _, problems = parse_rules(rules_dir)
    if problems or policy is None:
        raise RuleSetError(problems)
    by_id = {r.id: r for r in rules}
    per_file: dict[str, list[Change]] = {}
    for c in changes:
        if c.new == c.old:
            continue
        name = POLICY_FILE if c.rule_id is None else Path(by_id[c.rule_id].file).name
        per_file.setdefault(name, []).append(c)
    for name, items in per_file.items():
        path = out_dir / name
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        data = load_yaml(path)
        for c in items:
            if c.rule_id is None:
                _policy_number(lines, data, c, name)
            else:
                _rule_number(lines, data, c, name)
        path.write_text("".join(lines), encoding="utf-8")
    _verify(out_dir, rules, policy, changes)
    return out_dir


def _policy_number(lines: list[str], data: Any, c: Change, name: str) -> None:
    table, gname, action = c.key
    node = data.get("soft") if table == "soft" else (data.get("thresholds") or {}).get(table)
    if table in ("grade", "channel") and isinstance(node, dict):
        node = node.get(gname)
    line = line_of(node, action) if isinstance(node, dict) and action in node else None
    if line is None:
        raise ValueError(f"{name}: {c.label()} is not in the file")
    pat = re.compile(rf"(\b{re.escape(action)}\s*:\s*)(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
    text, n = pat.subn(lambda m: m.group(1) + format_number(c.new), lines[line - 1], count=1)
    if not n:
        raise ValueError(f"{name}:{line}: no number for {action} on this line")
    lines[line - 1] = text


def _rule_number(lines: list[str], data: Any, c: Change, name: str) -> None:
    nodes = data.get("rules") or []
    idx = next(i for i, n in enumerate(nodes) if isinstance(n, dict) and n.get("id") == c.rule_id)
    node = nodes[idx]
    start = line_of(node, "when") or 0
    later = [ln for ln in node.lines.values() if ln > start]
    if idx + 1 < len(nodes):
        later.append(line_of(nodes[idx + 1]) or len(lines) + 1)
    end = min(later, default=len(lines) + 1)  # the when's text: its key's line up to the next key
    t: Tunable = c.key
    region = "".join(lines[start - 1: end - 1])
    try:
        new = rewrite_constants(region, t.feature, t.op, c.old, c.new)
    except ValueError as exc:
        raise ValueError(f"{name}:{start} {c.rule_id}: {exc}") from None
    lines[start - 1: end - 1] = new.splitlines(keepends=True)


def _verify(out_dir: Path, rules: list[Rule], policy: Policy, changes: list[Change]) -> None:
    """The written set parses to exactly the rules and policy the changes describe."""
    got_rules, got_policy, _, problems = parse_rules(out_dir)
    if problems or got_policy is None:
        raise RuleSetError(problems)
    consts = {(c.rule_id, c.key.key): c.new for c in changes if c.rule_id is not None}
    want = {r.id: r.expr for r in with_constants(tuple(rules), consts)}  # type: ignore[arg-type]
    for r in got_rules:
        if r.expr != want.get(r.id):
            raise ValueError(f"{r.file}:{r.line} {r.id}: the written `when` does not read back as intended")
    pol = with_policy(policy, {c.key: c.new for c in changes if c.rule_id is None})
    if (got_policy.default, got_policy.by_grade, got_policy.by_channel, got_policy.soft) != \
            (pol.default, pol.by_grade, pol.by_channel, pol.soft):
        raise ValueError(f"{out_dir / POLICY_FILE}: the written thresholds do not read back as intended")


__all__ = ["Change", "PolicyKey", "policy_value", "with_constants", "with_policy", "write_candidate"]
