"""Precision of each rule from analysts' labels: of the resolved cases (fraud or legit)
whose decisions the rule fired in, the share resolved as fraud, over the last 24 hours
and 7 days (by resolution time). Cases are `fengkong.cases`' tables; without them the
rules page shows no precision."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

WINDOWS: tuple[tuple[str, timedelta], ...] = (("24h", timedelta(hours=24)), ("7d", timedelta(days=7)))
MAX_CASES = 20_000


def precision_by_rule(console: Any) -> dict[str, dict[str, tuple[int, int]]]:
    """rule id -> window -> (fraud, fraud + legit) over resolved cases."""
    engine = console.cases_engine()
    if engine is None:
        return {}
    import sqlalchemy as sa

    from fengkong.cases.models import Case

    now = datetime.now(timezone.utc)
    longest = max(w for _, w in WINDOWS)
    query = (sa.select(Case.rule_ids, Case.disposition, Case.resolved_at)
             .where(Case.status == "resolved", Case.disposition.in_(("fraud", "legit")),
                    Case.resolved_at >= now - longest)
             .order_by(Case.resolved_at.desc()).limit(MAX_CASES))
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with engine.connect() as connection:
        for rule_ids, disposition, resolved_at in connection.execute(query):
            if resolved_at is not None and resolved_at.tzinfo is None:
                resolved_at = resolved_at.replace(tzinfo=timezone.utc)
            for name, width in WINDOWS:
                if resolved_at is None or resolved_at < now - width:
                    continue
                for rule in (rule_ids or "").split():
                    fraud, labelled = out.setdefault(rule, {}).get(name, (0, 0))
                    out[rule][name] = (fraud + (disposition == "fraud"), labelled + 1)
    return out
