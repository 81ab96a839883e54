"""Dry-run: a candidate rule set evaluated next to the live one, deploying and counting nothing."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, cast

import redis

from fengkong.api.errors import Conflict, Invalid, NotFound, Unavailable
from fengkong.api.service import records
from fengkong.api.service.idempotency import body_hash
from fengkong.api.state import Runtime
from fengkong.engine import RuleSetError, load_ruleset
from fengkong.engine.testing import load_cases, run_cases
from fengkong.events import EventRejected, parse_event

RULE_FILE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}\.yaml$")


def dry_run(*, rt: Runtime, event: Mapping[str, Any] | None, features: Mapping[str, Any] | None,
            files: Mapping[str, str | None] | None) -> dict[str, Any]:
    """Evaluate a candidate rule set (rules/ with `files` overlaid) next to the live one; deploy nothing.

    Features come from the stored decision of `event` (same event_id and body), so
    nothing is counted; `features` are laid over them (or used alone)."""
    base: dict[str, Any] = {}
    source = "posted"
    if event is not None:
        parsed = parse_event(event)
        try:
            value = cast("bytes | None", rt.client.get(rt.keys.request(parsed.event_id)))
        except (redis.RedisError, OSError) as exc:
            raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None
        if value is None or not records.is_record(value):  # none, or only the claim of an undecided event
            raise NotFound("event.event_id", "no stored decision for this event: decide it first, or post `features`")
        kind, sha = records.header(value)
        if kind != "decision" or not records.same_body(sha, body_hash(event)):
            raise Conflict("event", "differs from the event stored under this event_id")
        sid = records.schema_id(value)
        schema = None
        if sid is not None:
            schema = rt.records.known(sid)
            if schema is None:
                try:
                    schema = rt.records.learn(cast("bytes | None", rt.client.get(rt.records.schema_key(sid))))
                except (redis.RedisError, OSError) as exc:
                    raise Unavailable(None, f"feature store unavailable: {type(exc).__name__}") from None
        base = dict(records.decode(value, schema).get("features") or {})
        source = "stored"
    if features:
        base.update(features)
        source = "stored+posted" if event is not None else "posted"
    if event is None and not features:
        raise EventRejected("event", "give an event that was decided, or `features`, or both")
    with tempfile.TemporaryDirectory(prefix="fengkong-dryrun-") as tmp:
        cand_dir = Path(tmp) / "rules"
        shutil.copytree(rt.rules.rules_dir, cand_dir)
        for name, text in (files or {}).items():
            if not RULE_FILE_RE.match(name):
                raise EventRejected(f"files.{name}", "must be a plain file name ending in .yaml (no folders)")
            target = cand_dir / name
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.write_text(text, encoding="utf-8")
        try:
            candidate = load_ruleset(cand_dir)
        except RuleSetError as exc:
            problems = [p.to_dict() for p in exc.problems]
            raise Invalid("files", f"the candidate rule set does not load ({len(problems)} problem(s))",
                          problems) from None
        try:
            cases, _problems = load_cases(cand_dir)
            failed = [f"{r.case.file}:{r.case.line} {r.case.name}: {'; '.join(r.failures)}"
                      for r in run_cases(candidate, cases) if not r.passed]
            cand = candidate.evaluate(base)
            live = rt.rules.evaluate(base)
        finally:
            candidate.close()
    cand_d, live_d = cand.to_dict(), live.to_dict()
    return {"candidate_version": cand.ruleset_version, "live_version": live.ruleset_version, "candidate": cand_d,
            "live": live_d, "changed": cand.decision != live.decision, "failed_cases": failed,
            "features_source": source}
