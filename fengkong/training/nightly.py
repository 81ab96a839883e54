"""The nightly job inside a replay (`fengkong replay --nightly`): grades, caps and anomaly
scores that move with event time, as they would live.

It lives beside `fengkong rescore`'s code (training) and the replay runner takes it as
a `fengkong.replay.runner.NightlyJob`: the replay layer never imports training.

Live, `fengkong rescore` runs after each business day closes and writes every
merchant's grade, the grade's daily cap and the merchant model's anomaly score into
the profiles the next day's decisions read. A replay without it keeps the profiles it
started with for the whole history. `Nightly.run` is that job at one boundary: the
same `fengkong.training.rescore.rescore` (daily features, the merchants artifact's
anomaly score, the grade policy) over the replay's history up to the boundary, never
past it, then the same `write_to_store`. The runner calls it once per business-day
boundary in event time, after every event before the boundary has been counted
(docs/replay.md, "The nightly job").

`Nightly.bootstrap` gives merchants that have no grade at the start what the policy
gives a merchant with no history yet: its ``start`` grade, with that grade's daily cap
written (a profile without one has no cap at all); a stated grade is kept and is the
grade the policy's state machine starts the merchant from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from redis.typing import EncodableT, FieldT

from fengkong.events import FLAT_COLUMNS
from fengkong.features.online import OnlineStore
from fengkong.training.grade_policy import GradePolicy
from fengkong.training.rescore import rescore, write_to_store

#: The reason a bootstrapped profile carries (the grade the policy starts every merchant at).
BOOTSTRAP_REASON = "replay start: no history yet, the policy's start grade"


#: Who the change audit says changed a grade during a replay (the live job is "rescore").
AUDIT_ACTOR = "replay-nightly"


class NightlyError(ValueError):
    """The replay's merchant profiles do not fit the grade policy (the grade and the policy file named)."""


@dataclass
class NightlyRun:
    """One run of the job: the last business day it graded and each merchant's grade after it."""

    day: date
    grades: pd.DataFrame  # merchant_id, grade, reason, since, anomaly, anomaly_day, single_limit, daily_cap
    cpu_s: float  # this process's CPU for the run (rescore and the profile writes)


@dataclass
class Nightly:
    """The nightly job of one replay: the grade policy, the merchant model (None: grading on
    chargebacks only, as `fengkong rescore` without a merchants artifact) and the merchant
    profiles the replay started with (given by `bootstrap`)."""

    policy: GradePolicy
    model: Any = None
    profiles: pd.DataFrame | None = None
    model_version: str = ""
    runs: list[NightlyRun] = field(default_factory=list)

    @classmethod
    def load(cls, *, policy_path: Path, models_dir: Path | None) -> "Nightly":
        """The job as `fengkong rescore` sets it up: the policy file (`GradePolicyError` naming
        the file and line) and the newest merchants artifact under ``models_dir``, if any."""
        from fengkong.models.artifacts import latest

        policy = GradePolicy.load(policy_path)
        art = latest(models_dir, "merchants") if models_dir is not None and Path(models_dir).exists() else None
        model = art.load_estimator() if art is not None else None
        return cls(policy, model, None, art.version if art is not None else "")

    @property
    def initial(self) -> dict[str, str]:
        """Grades stated in the starting profiles: where the state machine starts those merchants."""
        if self.profiles is None or "grade" not in self.profiles.columns:
            return {}
        stated = self.profiles[self.profiles["grade"].notna()]
        return {str(m): str(g) for m, g in zip(stated["merchant_id"], stated["grade"])}

    def check(self) -> None:
        """Refuse stated grades the policy does not know (the file and the grade named)."""
        bad = sorted({g for g in self.initial.values() if g not in self.policy.grades})
        if bad:
            raise NightlyError(f"merchant profiles: grade(s) {', '.join(bad)} unknown to the grade policy "
                             f"{self.policy.source} (grades: {', '.join(self.policy.names)})")

    def bootstrap(self, store: OnlineStore, profiles: pd.DataFrame | None, merchant_ids: Iterable[str]) -> int:
        """Take the replay's starting ``profiles`` and write the policy's start grade and its daily
        cap for each merchant of ``merchant_ids`` without a stated grade (a stated grade gets its
        grade's cap where the profile has none); returns how many profiles were written."""
        self.profiles = profiles
        self.check()
        stated = self.initial
        own_cap: set[str] = set()
        if self.profiles is not None and "daily_cap" in self.profiles.columns:
            own_cap = {str(m) for m in self.profiles.loc[self.profiles["daily_cap"].notna(), "merchant_id"]}
        caps = self.policy.daily_cap_minor
        pipe = store.client.pipeline(transaction=False)
        n = 0
        for m in sorted(set(map(str, merchant_ids))):
            fields: dict[FieldT, EncodableT] = {}  # redis-py's own types: what hset takes
            if m not in stated:
                fields.update(grade=self.policy.start, grade_reason=BOOTSTRAP_REASON)
            if m not in own_cap:
                fields["daily_cap"] = int(caps[stated.get(m, self.policy.start)])
            if fields:
                pipe.hset(store.profile_key(m), mapping=fields)
                n += 1
        pipe.execute()
        return n

    def run(self, store: OnlineStore, history: pd.DataFrame, day: date) -> NightlyRun:
        """Grade every merchant of ``history`` (flat events, all before the boundary that closes
        ``day``; ``occurred_at`` as ISO text or UTC datetimes) and write the grades, caps and anomaly scores the next day reads."""
        t0 = time.process_time()
        events = history[[c for c in FLAT_COLUMNS if c in history.columns]]
        # one partition: the same answer as any split (tests/test_rescore.py), without a model call per part
        result = rescore(events, policy=self.policy, model=self.model, profiles=self.profiles, parts=1,
                         initial=self.initial or None)
        # as `rescore --redis-url`, grade changes included in the change audit (under the replay's prefix)
        write_to_store(store, result.current, self.policy, write_caps=True, actor=AUDIT_ACTOR)
        run = NightlyRun(day, result.current, time.process_time() - t0)
        self.runs.append(run)
        return run

    @property
    def cpu_s(self) -> float:
        """CPU spent in every run so far (this process)."""
        return sum(r.cpu_s for r in self.runs)

    def describe(self) -> str:
        """One line for the console and the report."""
        model = f"merchant model {self.model_version}" if self.model is not None else \
            "no merchants artifact: grading on chargebacks only"
        per_day = f", {1000 * self.cpu_s / len(self.runs):,.0f} ms CPU per run" if self.runs else ""
        return f"{len(self.runs)} run(s), policy {self.policy.source}, {model}{per_day}"
