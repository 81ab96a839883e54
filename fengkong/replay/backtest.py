"""`fengkong rules backtest`: what a candidate rule directory would have done.

Features are computed ONCE for the whole history with the offline twin
(`offline_features`, held equal to the online store by tests/test_feature_twin.py),
then the live and the candidate rule sets are evaluated over that table with the
vectorised evaluator (`fengkong.engine.vectorized`, held equal to durable_rules by
tests/test_vectorized.py), both sharing one typed view of the table.

"Stopped" means a decision of review or deny. For every rule, and overall:

* ``decisions_changed``: events whose decision differs;
* ``fraud_newly_caught`` / ``fraud_lost``: labelled-fraud events stopped by the
  candidate and not by live / stopped by live and not by the candidate;
* ``good_newly_stopped`` / ``good_released``: the same for events labelled good;
* ``review_rate_change``: candidate review rate minus live review rate, over all
  decision events (percentage points).

A rule's row counts the events where that rule fires differently in the two sets
(added rules: where it fires; removed: where it fired; changed: where the answers
differ). An event can count under several rules if several changed; events whose
decision changed with no rule firing differently (a policy change) count under
``(policy)``. The overall row counts each event once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fengkong.engine.rule import Rule
from fengkong.engine.ruleset import RuleSet, load_ruleset
from fengkong.engine.vectorized import FeatureTable, VectorDecisions, VectorizedRules
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import load_list_specs
from fengkong.features.offline import offline_features, with_promotions
from fengkong.features.young import history_start_for
from fengkong.replay.inputs import list_entries, load_profiles, load_promotions
from fengkong.replay.mapping import Mapping
from fengkong.replay.reader import History, load_history, read_table

STOP = ("review", "deny")
COLUMNS = ("rule", "status", "fires_live", "fires_candidate", "events_affected", "decisions_changed",
           "fraud_newly_caught", "fraud_lost", "good_newly_stopped", "good_released", "review_rate_change_pp")


@dataclass
class BacktestResult:
    """A candidate rule set against the live one on the same features: per-rule table and both decisions."""

    table: pd.DataFrame  # one row per rule plus "(policy)" and "(all)" first; COLUMNS
    live: VectorDecisions
    candidate: VectorDecisions
    features: pd.DataFrame
    labels: pd.Series | None  # is_fraud per decision event (boolean, NA = unlabelled)
    timings: dict[str, float] = field(default_factory=dict)
    live_version: str = ""
    candidate_version: str = ""

    @property
    def overall(self) -> dict[str, Any]:
        """The first row of the table: the whole candidate against the whole live set."""
        return self.table.iloc[0].to_dict()

    def changed_events(self) -> pd.DataFrame:
        """Every event whose decision changed, with both decisions and rule lists."""
        idx = np.flatnonzero(self.live.decision != self.candidate.decision)
        out = pd.DataFrame({
            "event_id": self.features["event.event_id"].to_numpy(dtype=object)[idx],
            "type": self.features["event.type"].to_numpy(dtype=object)[idx],
            "live_decision": self.live.decision[idx], "candidate_decision": self.candidate.decision[idx],
            "live_score": self.live.score[idx], "candidate_score": self.candidate.score[idx],
            "live_rules": self.live.joined_fired()[idx], "candidate_rules": self.candidate.joined_fired()[idx],
        })
        if self.labels is not None:
            out["is_fraud"] = self.labels.to_numpy()[idx]
        return out


def _status(live: Rule | None, cand: Rule | None) -> str:
    if live is None:
        return "added"
    if cand is None:
        return "removed"
    same = (live.expr, live.then, live.score, live.mode, live.tags) == (cand.expr, cand.then, cand.score, cand.mode,
                                                                       cand.tags)
    return "same" if same else "changed"


def compare(live_rules: RuleSet, candidate_rules: RuleSet, features: pd.DataFrame,
            labels: pd.Series | None = None, *, stop: tuple[str, ...] = STOP) -> BacktestResult:
    """Evaluate both sets over one feature table and tabulate the differences."""
    t0 = time.perf_counter()
    vlive, vcand = VectorizedRules.from_ruleset(live_rules), VectorizedRules.from_ruleset(candidate_rules)
    table: pd.DataFrame | FeatureTable = vlive.table(features)
    a = vlive.evaluate(table)
    b = vcand.evaluate(table if vcand.dtypes == vlive.dtypes else features)
    t1 = time.perf_counter()
    n = len(features)
    stop_a, stop_b = np.isin(a.decision, stop), np.isin(b.decision, stop)
    changed = a.decision != b.decision
    rev_a, rev_b = a.decision == "review", b.decision == "review"
    if labels is not None:
        lab = pd.array(labels, dtype="boolean")
        fraud = lab.to_numpy(dtype=bool, na_value=False)
        good = (~lab).to_numpy(dtype=bool, na_value=False)
    else:
        fraud = good = None

    def row(name: str, status: str, fires_a: int | None, fires_b: int | None, mask: np.ndarray) -> dict[str, Any]:
        gained, lost = mask & stop_b & ~stop_a, mask & stop_a & ~stop_b
        r: dict[str, Any] = {
            "rule": name, "status": status, "fires_live": fires_a, "fires_candidate": fires_b,
            "events_affected": int(mask.sum()), "decisions_changed": int((mask & changed).sum()),
            "fraud_newly_caught": None, "fraud_lost": None, "good_newly_stopped": None, "good_released": None,
            "review_rate_change_pp": 100.0 * (int((mask & rev_b).sum()) - int((mask & rev_a).sum())) / max(n, 1),
        }
        if fraud is not None and good is not None:
            r.update(fraud_newly_caught=int((gained & fraud).sum()), fraud_lost=int((lost & fraud).sum()),
                     good_newly_stopped=int((gained & good).sum()), good_released=int((lost & good).sum()))
        return r

    rows = [row("(all)", "", None, None, np.ones(n, dtype=bool))]
    ids = list(dict.fromkeys([*a.rule_ids, *b.rule_ids]))
    col_a = {rid: j for j, rid in enumerate(a.rule_ids)}
    col_b = {rid: j for j, rid in enumerate(b.rule_ids)}
    zeros = np.zeros(n, dtype=bool)
    any_diff = np.zeros(n, dtype=bool)
    per_rule = []
    for rid in ids:
        fa = a.fired[:, col_a[rid]] if rid in col_a else zeros
        fb = b.fired[:, col_b[rid]] if rid in col_b else zeros
        status = _status(live_rules.by_id.get(rid), candidate_rules.by_id.get(rid))
        # a rule that changed counts wherever it fires in either set; an unchanged one where
        # its answers differ (never, on one feature table: kept as a check)
        diff = (fa != fb) if status == "same" else (fa | fb)
        any_diff |= diff
        per_rule.append(row(rid, status, int(fa.sum()) if rid in col_a else None,
                            int(fb.sum()) if rid in col_b else None, diff))
    rows.append(row("(policy)", "", None, None, changed & ~any_diff))
    rows += per_rule
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return BacktestResult(out, a, b, features, labels, {"evaluate_s": t1 - t0, "compare_s": time.perf_counter() - t1},
                          live_rules.version, candidate_rules.version)


def history_features(history: History, *, rules_dir: Path, lists_file: Path | None = None,
                     merchants_file: Path | None = None, dask_client: Any = None,
                     partitions: int = 8, history_start_us: int | None = None,
                     promotions_file: Path | None = None, parts_dir: Path | None = None,
                     columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Offline features of every decision event of a history, and their labels.

    With ``dask_client`` (a `distributed.Client`) the features are computed on its
    cluster (`offline_features_dask`: the same frame, split by entity into
    ``partitions`` parts per pass); else in this process. With ``parts_dir`` the twin
    runs in parts on disk under that folder (`offline_features_parts`, on the cluster
    if given, which must reach the folder), so that no process holds the whole twin at
    once, and only ``columns`` (those the twin has) are read back: for a history whose
    features would not fit in memory. ``history_start_us``: see `fengkong.features.young`
    (as the replay's store)."""
    lists_dir = Path(rules_dir) / "lists"
    specs = load_list_specs(lists_dir)
    entries = list_entries(lists_dir, specs, lists_file)
    profiles = load_profiles(merchants_file)
    if promotions_file is not None:  # the planned campaigns, as `fengkong replay --promotions` stores them
        load_promotions(promotions_file)  # every row checked: a bad one names its row and field
        profiles = with_promotions(profiles, read_table(promotions_file))
    if parts_dir is not None:
        from fengkong.features.offline_parts import offline_features_parts

        parts = offline_features_parts(history.events, Path(parts_dir), lists_dir=lists_dir, client=dask_client,
                                       partitions=partitions, lists=specs, list_entries=entries,
                                       profiles=profiles, history_start_us=history_start_us)
        features = parts.read(None if columns is None else [c for c in dict.fromkeys(columns) if c in parts.names])
    elif dask_client is not None:
        from fengkong.features.offline_dask import offline_features_dask

        features = offline_features_dask(history.events, client=dask_client, lists_dir=lists_dir, lists=specs,
                                         list_entries=entries, profiles=profiles,
                                         partitions=partitions, history_start_us=history_start_us)
    else:
        features = offline_features(history.events, ipintel=IpIntel.load(lists_dir), lists=specs,
                                    list_entries=entries, profiles=profiles,
                                    history_start_us=history_start_us)
    if columns is not None:
        features = features[[c for c in dict.fromkeys(columns) if c in features.columns]]
    labels = None
    if history.labelled:
        labels = history.events["is_fraud"].loc[features.index].reset_index(drop=True)
    return features.reset_index(drop=True), labels


def rules_columns(*rulesets: RuleSet) -> list[str]:
    """The feature columns the vectorised evaluation of these rule sets reads, and those a
    backtest's report shows (`BacktestResult.changed_events`): the only ones a backtest
    needs to hold."""
    out: dict[str, None] = dict.fromkeys(["event.event_id", "event.type"])
    for rs in rulesets:
        for rule in rs.rules:
            out.update(dict.fromkeys(rule.reads))
        out.update(dict.fromkeys(sorted(rs.policy.features_read)))
    return list(out)


def backtest(history_path: Path, candidate_dir: Path, *, live_dir: Path = Path("rules"),
             mapping: Mapping | None = None, lists_file: Path | None = None,
             merchants_file: Path | None = None, dask_client: Any = None, partitions: int = 8,
             promotions_file: Path | None = None, parts_dir: Path | None = None) -> BacktestResult:
    """Read a history, compute its features once, compare the candidate with the live rules
    (features on the Dask cluster of ``dask_client`` when given, and in parts on disk under
    ``parts_dir`` when given, keeping only the columns the rules read: see `history_features`)."""
    t0 = time.perf_counter()
    live_rules = load_ruleset(live_dir)
    cand_rules = load_ruleset(candidate_dir)
    try:
        t1 = time.perf_counter()
        history = load_history(history_path, mapping)
        t2 = time.perf_counter()
        features, labels = history_features(history, rules_dir=live_dir, lists_file=lists_file,
                                            merchants_file=merchants_file, dask_client=dask_client,
                                            partitions=partitions,
                                            history_start_us=history_start_for(  # as `fengkong replay`'s default
                                                None, history.events["occurred_at"], mapped=mapping is not None),
                                            promotions_file=promotions_file, parts_dir=parts_dir,
                                            columns=rules_columns(live_rules, cand_rules) if parts_dir else None)
        t3 = time.perf_counter()
        result = compare(live_rules, cand_rules, features, labels)
    finally:
        live_rules.close()
        cand_rules.close()
    result.timings.update(load_rules_s=t1 - t0, read_s=t2 - t1, features_s=t3 - t2,
                          total_s=time.perf_counter() - t0, events=len(history.events))
    return result
