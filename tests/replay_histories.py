"""The simulated history with retries that the in-flight replay tests (one Redis and a
Redis Cluster) replay several ways, and how they compare two replays."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fengkong.events import Event, EventRejected, flat_to_dict, parse_event
from fengkong.replay.reader import load_history
from fengkong.replay.runner import ReplayResult, event_stream, run_replay

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"


def history_with_retries(out: Path, *, events: int, seed: int, late_every: int | None = None) -> Path:
    """A simulated history (every scenario, outcomes) in `out`, with every 40th event sent
    again unchanged, optionally every `late_every`-th again a day later, and one row the
    event contract refuses (an IP that is not one)."""
    from fengkong.simulation import SimConfig, run, write_outputs

    sim = run(SimConfig.for_events(events, seed=seed, days=21, fraud_scale=3.0))
    paths = write_outputs(sim, out, formats=("parquet",))
    ev = pd.read_parquet(paths["events.parquet"])
    parts = [ev, ev.iloc[::40]]
    if late_every:
        late = ev.iloc[::late_every].copy()
        late["occurred_at"] = (pd.to_datetime(late["occurred_at"], format="ISO8601") + pd.Timedelta(days=1)).map(
            lambda t: t.isoformat())
        parts.append(late)
    parts.append(ev[ev["type"] == "payment"].iloc[[7]].assign(event_id="bad-ip-row", ip="999.1.2.3"))
    pd.concat(parts, ignore_index=True).to_parquet(paths["events.parquet"], index=False)
    return out


def parsed_events(history: Path) -> list[Event | None]:
    """The history's stream as replay sends it (labels reported two days late), each row
    parsed by the event contract (None where the contract refuses it)."""
    stream = event_stream(load_history(history / "events.parquet"), 2 * 86400, emit_reports=True)
    out: list[Event | None] = []
    for row in stream.astype(object).where(stream.notna(), None).to_dict("records"):
        try:
            out.append(parse_event(flat_to_dict(row)))
        except EventRejected:
            out.append(None)
    return out


def replay(history: Path, url: str, prefix: str, in_flight: int) -> ReplayResult:
    """`fengkong replay` of the history (labels reported two days late) at this depth."""
    return run_replay(history / "events.parquet", rules_dir=RULES, redis_url=url, prefix=prefix,
                      lists_file=history / "blacklist.json", merchants_file=history / "merchants.parquet",
                      label_delay_s=2 * 86400, emit_reports=True, in_flight=in_flight)


def assert_varied(one: ReplayResult) -> None:
    """The replayed history has what the in-flight tests claim: every scenario, outcomes,
    label-derived reports, retries, the refused row and every kind of decision."""
    from fengkong.simulation.config import SCENARIOS

    d = one.decisions
    assert set(SCENARIOS) <= set(d["scenario"])
    assert one.outcomes_sent > 300 and one.reports_generated > 0 and one.rejected == 1
    assert d["event_id"].duplicated().sum() > 100
    assert set(d["decision"]) >= {"allow", "review", "deny"}


def assert_same_replay(a: ReplayResult, b: ReplayResult) -> None:
    """The same decisions (the rule-set version aside: it ends with its load time), outcomes
    sent, reports, refusals and card reports."""
    cols = [c for c in a.decisions.columns if c != "ruleset_version"]
    pd.testing.assert_frame_equal(b.decisions[cols], a.decisions[cols])
    assert (b.decisions["ruleset_version"].str.split("@").str[0]
            == a.decisions["ruleset_version"].str.split("@").str[0]).all()
    assert (b.outcomes_sent, b.reports_generated, b.rejected, b.rejects) == (
        a.outcomes_sent, a.reports_generated, a.rejected, a.rejects)
    pd.testing.assert_frame_equal(b.card_reports, a.card_reports)
