"""`fengkong replay`: a history through the full online path, in event-time order.

For each event, in the order of its ``occurred_at`` (ties keep the file's order):
decision events (payment, signup, login, card_bind) go through
`fengkong.pipeline.decide` — the same function the decision service calls: Redis
features (one Lua call), the models when artifacts are given, the rules — and
outcome events (refund, chargeback, fraud_report, ...) through
`pipeline.record_outcome`, so features fed by outcomes update as they would live.

By default many events are in flight: their feature-script calls are sent ahead in
event-time order on one connection (`fengkong.features.inflight`; on a Redis Cluster
one connection per master, `fengkong.features.inflight_cluster`) and each decision
is made from its call's reply with `pipeline.decide_on` (what `decide` does after the
store). The script is the only Redis access on the path and a replay writes no
decision back, so every event gets the one-by-one features and decision
(docs/replay.md, "Many events in flight"; tests/test_replay_inflight.py).

Labels: with a mapping whose ``label`` has ``emit_reports`` (the default), every
payment labelled fraud gets a ``fraud_report`` outcome event (``refers_to`` the
payment, same merchant, user, card and amount) delivered ``delay`` after the payment,
unless the source already holds a fraud report for it; so a feature fed by
outcomes learns the truth when a real system would, not before. Reports that
would arrive after the history's last event are not sent.

A row the event contract refuses is skipped and counted (the first ones are listed
in the report with the field and the reason); everything else is decided. Rows the
mapping could not convert were left out before (up to its ``max_bad_share``); both
kinds are in ``ReplayResult.refusals``.

The decisions carry every model score the decision had as its own column
(`MODEL_COLUMNS`, empty without models; any other ``model.*`` output gets a column
too), the fused risk as ``risk``, the merchant's grade the decision read as
``merchant_grade``, and ``scenario`` as text ("" when none).

With a `NightlyJob` (``--nightly``), the stream is cut at every business-day boundary
in event time: the day's events are all sent and counted (the in-flight window
drained), the job grades every merchant from the events before the boundary and
writes their profiles, and only then is the next day's first event sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import pandas as pd

from fengkong import pipeline
from fengkong.engine.errors import RuleSetError
from fengkong.engine.ruleset import RuleSet, load_ruleset
from fengkong.events import FLAT_COLUMNS, Event, EventRejected, flat_to_dict, parse_event
from fengkong.features.inflight_cluster import in_flight_for
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import ListStore, load_list_specs
from fengkong.features.definitions import DEFAULT_BUSINESS_UTC_OFFSET_MIN
from fengkong.features.online import FeatureResult, OnlineStore
from fengkong.features import promotions
from fengkong.features.young import history_start_for
from fengkong.replay.inputs import list_entries, load_profiles, load_promotions
from fengkong.replay.mapping import Mapping, MappingError
from fengkong.replay.reader import History, load_history
from fengkong.replay.refusals import Refusals

MAX_REJECTS_LISTED = 20
#: Events whose feature calls a replay keeps sent ahead of the one being decided (1: one by one).
DEFAULT_IN_FLIGHT = 1024
#: The model outputs `fengkong.models.runtime.ModelRuntime.score` gives, one column each.
MODEL_COLUMNS = ("model.txn_risk", "model.habit_anomaly", "model.merchant_anomaly")
DECISION_COLUMNS = ("event_id", "type", "occurred_at", "merchant_id", "user_id", "card_fingerprint", "amount",
                    "channel", "decision", "score", "score_action", "lane", "rules", "shadow_rules",
                    "missing_features", "ruleset_version", *MODEL_COLUMNS, "risk", "merchant_grade")
CARD_REPORT_COLUMNS = ("occurred_at", "card_fingerprint", "refers_to", "type")


class NightlyJob(Protocol):
    """The nightly job a replay runs at each business-day boundary (`fengkong.training.nightly.Nightly`:
    the replay layer takes it from its caller and never imports training)."""

    def bootstrap(self, store: OnlineStore, profiles: pd.DataFrame | None, merchant_ids: Iterable[str]) -> int:
        """Before the first event: the starting profiles, and what merchants without a grade get."""
        ...

    def run(self, store: OnlineStore, history: pd.DataFrame, day: Any) -> Any:
        """After business day ``day`` closed: grade from ``history`` (flat events, all before the
        boundary, ``occurred_at`` as UTC datetimes) and write the profiles the next day reads."""
        ...

    def describe(self) -> str:
        """One line for the console and the report."""
        ...


@dataclass
class ReplayResult:
    """What a replay produced: the decisions, what was sent and refused, and how long it took."""

    decisions: pd.DataFrame  # DECISION_COLUMNS (+ is_fraud, scenario when labelled)
    events_in: int  # rows of the source
    outcomes_sent: int  # outcome events recorded (source and generated)
    reports_generated: int  # label-derived fraud reports sent
    rejected: int
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (source row, field, reason)
    seconds: float = 0.0
    ruleset_version: str = ""
    rules: RuleSet | None = None
    source: str = ""
    models_status: str = ""
    refusals: Refusals = field(default_factory=Refusals)  # mapping and event-contract refusals, per field/reason
    card_reports: pd.DataFrame | None = None  # CARD_REPORT_COLUMNS: fraud reports and chargebacks sent
    unused: list[str] = field(default_factory=list)  # source columns nothing read
    nightly: str = ""  # what the nightly job did ("" without --nightly)

    @property
    def events_per_s(self) -> float:
        """Events sent (source rows and generated reports) per second of replay."""
        return (self.events_in + self.reports_generated) / max(self.seconds, 1e-9)


def label_reports(history: History, delay_s: float | None = None) -> pd.DataFrame:
    """The fraud_report events that the labels stand for (flat rows, with ``ts`` and ``row`` = -1)."""
    ev = history.events
    label = history.mapping.label
    if label is None or "is_fraud" not in ev.columns:
        return ev.iloc[0:0]
    delay = label.delay_s if delay_s is None else delay_s
    fraud = ev["is_fraud"].to_numpy(dtype=bool, na_value=False) & (ev["type"] == "payment").to_numpy()
    reported = set(ev.loc[ev["type"] == "fraud_report", "refers_to"].dropna())
    sel = ev[fraud & ~ev["event_id"].isin(reported).to_numpy()]
    sel = sel[sel["ts"] + delay <= ev["ts"].max()]
    if sel.empty:
        return ev.iloc[0:0]
    out = sel.copy()
    out["refers_to"] = sel["event_id"]
    out["event_id"] = [_report_id(e) for e in sel["event_id"]]
    out["type"] = "fraud_report"
    out["occurred_at"] = [(datetime.fromisoformat(t) + timedelta(seconds=delay)).isoformat()
                          for t in sel["occurred_at"]]
    out["ts"] = sel["ts"] + delay
    out["ip"] = None
    out["device_id"] = None
    out["row"] = -1
    return out


def _report_id(payment_id: str) -> str:
    rid = f"{payment_id}:fraud_report"
    if len(rid) <= 128:
        return rid
    import hashlib

    return "fr:" + hashlib.sha256(payment_id.encode()).hexdigest()[:40]


def event_stream(history: History, delay_s: float | None = None, *, emit_reports: bool | None = None) -> pd.DataFrame:
    """Source events plus label-derived reports, in event-time order (a report after the
    source events of the same instant)."""
    label = history.mapping.label
    emit = (label is not None and label.emit_reports) if emit_reports is None else emit_reports
    reports = label_reports(history, delay_s) if emit else history.events.iloc[0:0]
    frames = [history.events.assign(_gen=0)]
    if len(reports):
        frames.append(reports.assign(_gen=1))
    stream = pd.concat(frames, ignore_index=True)
    order = np.lexsort((stream["_gen"].to_numpy(), stream["ts"].to_numpy()))
    return stream.iloc[order].reset_index(drop=True)


def _fired(d: Any, shadow: bool = False) -> str:
    return ";".join(r.id for r in (d.shadow if shadow else d.reasons))


def replay_stream(stream: pd.DataFrame, *, store: OnlineStore, rules: Any, models: Any = None,
                  progress: Callable[[int], None] | None = None,
                  in_flight: int = DEFAULT_IN_FLIGHT,
                  nightly: NightlyJob | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Send every event through the online path; the decisions (one row per decision event).

    ``in_flight`` > 1 keeps up to that many events' feature calls sent ahead on one
    connection per Redis master (`fengkong.features.inflight`, `inflight_cluster`), in
    event-time order, so each gets the features of a one-by-one replay; 1 sends each event and waits for it
    (`pipeline.decide` / `pipeline.record_outcome`, as the service's path).
    ``nightly`` runs at each business-day boundary, between the day's last event and the
    next day's first (`_days`); the caller has bootstrapped it."""
    out: dict[str, list[Any]] = {c: [] for c in DECISION_COLUMNS}
    label_cols = [c for c in ("is_fraud", "scenario") if c in stream.columns]
    labels: dict[str, list[Any]] = {c: [] for c in label_cols}
    rejects: list[tuple[int, str, str]] = []
    stats: dict[str, Any] = {"outcomes": 0, "generated": 0, "rejected": 0}
    refusals = Refusals()
    card_reports: list[tuple[Any, ...]] = []  # fraud reports and chargebacks sent: the cards a team knows about
    extra_models: dict[str, list[Any]] = {}  # model.* outputs beyond MODEL_COLUMNS, by decision position
    cols = [c for c in (*FLAT_COLUMNS, "row", "_gen", *label_cols) if c in stream.columns]
    accepted = np.ones(len(stream), dtype=bool)  # rows the store counted: the nightly job's history
    for i, (row, event, result) in enumerate(_days(stream, cols, store, in_flight, nightly, accepted)):
        if progress is not None and i % 256 == 0:
            progress(i)
        if isinstance(event, EventRejected):
            accepted[i] = False
            stats["rejected"] += 1
            if len(rejects) < MAX_REJECTS_LISTED:
                rejects.append((int(row.get("row", -1)) + 1, event.field, event.reason))
            refusals.add_row("event contract", event.field, event.reason, int(row.get("row", -1)) + 1)
            continue
        if pipeline.is_outcome(event):
            if result is None:  # one by one; in flight, the store has counted it already
                pipeline.record_outcome(event, store=store)
            if event.type.value in ("fraud_report", "chargeback"):
                card_reports.append((row["occurred_at"], event.card.fingerprint if event.card else None,
                                     event.refers_to, event.type.value))
            stats["outcomes"] += 1
            stats["generated"] += int(row.get("_gen", 0) or 0)
            continue
        if result is None:
            decision, features = pipeline.decide(event, store=store, rules=rules, models=models)
        else:
            decision, features = pipeline.decide_on(result.features, rules=rules, models=models)
        out["event_id"].append(event.event_id)
        out["type"].append(event.type.value)
        out["occurred_at"].append(row["occurred_at"])
        out["merchant_id"].append(event.merchant_id)
        out["user_id"].append(event.user_id)
        out["card_fingerprint"].append(event.card.fingerprint if event.card else None)
        out["amount"].append(event.amount_minor)
        out["channel"].append(event.channel.value if event.channel else None)
        out["decision"].append(decision.decision)
        out["score"].append(float(decision.score))
        out["score_action"].append(decision.score_action)
        out["lane"].append(decision.lane)
        out["rules"].append(_fired(decision))
        out["shadow_rules"].append(_fired(decision, shadow=True))
        out["missing_features"].append(len(decision.missing_features))
        out["ruleset_version"].append(decision.ruleset_version)
        for c in MODEL_COLUMNS:
            out[c].append(_score(features.get(c)))
        out["risk"].append(_score(features.get("model.risk")))  # the fused model+rules risk, with models
        out["merchant_grade"].append(features.get("merchant.grade"))  # what the limits and rules read
        # a model output beyond MODEL_COLUMNS still gets its column (looked for only while a
        # model is loaded, which the nightly job may do mid-run: without one there is none)
        if models is not None and getattr(models, "available", True):
            for k, v in features.items():
                if k.startswith("model.") and k not in MODEL_COLUMNS and k != "model.risk":
                    extra_models.setdefault(k, [None] * (len(out["event_id"]) - 1)).append(_score(v))
            for k in extra_models:
                extra_models[k] += [None] * (len(out["event_id"]) - len(extra_models[k]))
        for c in label_cols:
            v = row.get(c)
            labels[c].append(None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else v)
    if progress is not None:
        progress(len(stream))
    frame = pd.DataFrame(out)
    frame["amount"] = frame["amount"].astype("Int64")
    for c in (*MODEL_COLUMNS, "risk"):
        frame[c] = frame[c].astype("float64")
    for k, vals in extra_models.items():
        frame[k] = pd.Series(vals, dtype="float64")
    for c in label_cols:
        if c == "is_fraud":
            frame[c] = pd.array(labels[c], dtype="boolean")
        else:  # scenario: text, "" for none
            frame[c] = pd.Series(["" if v is None else str(v) for v in labels[c]], dtype="str")
    stats["rejects"] = rejects
    stats["refusals"] = refusals
    stats["card_reports"] = pd.DataFrame(card_reports, columns=list(CARD_REPORT_COLUMNS))
    return frame, stats


def _days(stream: pd.DataFrame, cols: list[str], store: OnlineStore, in_flight: int, nightly: NightlyJob | None,
          accepted: np.ndarray) -> Iterator[tuple[dict[str, Any], Event | EventRejected, FeatureResult | None]]:
    """`_flow` over the stream, one business day at a time when there is a nightly job.

    A day's events go through their own `_flow`, which returns only once every one of
    them has been sent, counted and handed to the caller (in flight: every reply read,
    so the window is drained); the caller asks for the next event only after deciding
    the last one. Then the job grades from the rows before the boundary that the store
    counted (``accepted``, which the caller clears for refused rows; a retried
    ``event_id`` once) and writes the profiles, and the next day starts. No event after the boundary reached the store
    before the job, and none before it after."""
    if nightly is None:
        yield from _flow(_records(stream, cols), store, in_flight)
        return
    when = _utc(stream["occurred_at"])  # parsed once, not by every run
    days = business_day(when, store.biz_offset_min)
    flat = stream[[c for c in FLAT_COLUMNS if c in stream.columns]].assign(occurred_at=when)
    cuts = np.flatnonzero(np.diff(days)) + 1
    bounds = [0, *cuts.tolist(), len(stream)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield from _flow(_records(stream.iloc[lo:hi], cols), store, in_flight)
        if hi < len(stream):  # the business day of rows lo..hi-1 has closed
            history = flat.iloc[:hi][accepted[:hi]].drop_duplicates("event_id")  # a retry is no new event
            nightly.run(store, history, date(1970, 1, 1) + timedelta(days=int(days[lo])))


def _utc(occurred_at: pd.Series) -> pd.Series:
    """ISO times (any offset) as UTC datetimes, to the microsecond."""
    return pd.to_datetime(occurred_at.astype(str), utc=True, format="ISO8601").astype("datetime64[us, UTC]")


def business_day(occurred_at: pd.Series, offset_min: int = DEFAULT_BUSINESS_UTC_OFFSET_MIN) -> np.ndarray:
    """The business day (days since 1970-01-01 in the business time zone) of each time (ISO text
    with any offset, or UTC datetimes), as the store counts merchant days and `fengkong rescore`
    closes them."""
    us = occurred_at if isinstance(occurred_at.dtype, pd.DatetimeTZDtype) else _utc(occurred_at)
    return (us.astype("datetime64[us, UTC]").astype("int64").to_numpy() + offset_min * 60_000_000) // 86_400_000_000


def _flow(records: Iterable[dict[str, Any]], store: OnlineStore, in_flight: int
          ) -> Iterator[tuple[dict[str, Any], Event | EventRejected, FeatureResult | None]]:
    """Each row with its parsed event (or the contract's refusal) and, in flight, the
    store's result for it (None: the caller sends the event itself, one by one)."""
    def parsed() -> Iterator[tuple[dict[str, Any], Event | EventRejected]]:
        for row in records:
            try:
                yield row, parse_event(flat_to_dict(row))
            except EventRejected as exc:
                yield row, exc

    if in_flight <= 1:
        for row, event in parsed():
            yield row, event, None
        return
    calls = (((row, event), event if isinstance(event, Event) else None) for row, event in parsed())
    for (row, event), _, result in in_flight_for(store, depth=in_flight).run(calls):
        yield row, event, result


def _score(v: Any) -> float | None:
    """A model output as a float (None when absent or not a number)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _records(frame: pd.DataFrame, cols: list[str]) -> Iterator[dict[str, Any]]:
    """Rows as dicts, in chunks (bounded memory for long histories)."""
    step = 50_000
    for lo in range(0, len(frame), step):
        chunk = frame.iloc[lo:lo + step][cols].astype(object)
        chunk = chunk.where(chunk.notna(), None)
        yield from chunk.to_dict("records")


@dataclass
class ReplaySetup:
    """Everything the online path needs, built as `fengkong serve` builds it."""

    store: OnlineStore
    rules: RuleSet
    models: Any
    close: Callable[[], None]
    profiles: pd.DataFrame | None = None  # the merchant profiles written at the start


def setup(*, rules_dir: Path, redis_url: str | None = None, prefix: str | None = None,
          lists_file: Path | None = None, merchants_file: Path | None = None,
          models_dir: Path | None = None, promotions_file: Path | None = None) -> ReplaySetup:
    """Start (or connect to) Redis, load lists, merchant profiles, planned promotions, rules and models."""
    from fengkong.features.cluster import client_for_url
    from fengkong.features.cluster_store import store_class_for
    from fengkong.features.embedded_redis import EmbeddedRedis
    from fengkong.models.runtime import ModelRuntime

    rules_dir = Path(rules_dir)
    lists_dir = rules_dir / "lists"
    server = None
    store_class: type[OnlineStore] = OnlineStore
    if redis_url:  # one server, or a Redis Cluster (redis+cluster://seed1,seed2,...)
        client = client_for_url(redis_url)
        store_class = store_class_for(redis_url)
        prefix = prefix or f"replay{int(time.time() * 1000)}"  # never touch a live service's keys
    else:
        server = EmbeddedRedis(persist=False).start()
        client = server.client()
        prefix = prefix or "fk"
    specs = load_list_specs(lists_dir)
    store = store_class(client, ipintel=IpIntel.load(lists_dir), lists=specs, prefix=prefix)
    lists = ListStore(client, specs, prefix=prefix)
    for name, entries in list_entries(lists_dir, specs, lists_file).items():
        if entries:
            lists.add(name, entries)
    profiles = load_profiles(merchants_file)
    if profiles is not None:
        recs = profiles.astype(object).where(profiles.notna(), None).to_dict("records")
        for p in recs:
            store.set_merchant_profile(
                str(p["merchant_id"]), grade=p.get("grade"),
                single_limit_minor=int(p["single_limit"]) if p.get("single_limit") is not None else None,
                daily_cap_minor=int(p["daily_cap"]) if p.get("daily_cap") is not None else None,
                onboarded_at=str(p["onboarded_at"]) if p.get("onboarded_at") is not None else None,
                mcc=str(p["mcc"]) if p.get("mcc") is not None else None,
            )
    for merchant_id, text in (load_promotions(promotions_file) or {}).items():
        store.profiles.set_promotions(merchant_id, promotions.from_text(text))
    rules = load_ruleset(rules_dir)
    models = ModelRuntime.load(models_dir)
    refused = pipeline.threshold_problems(rules, models.calibration, models.loaded.get("transactions"))
    if refused:  # a precision the loaded model cannot reach: refused like any rule problem
        rules.close()
        raise RuleSetError(refused)

    def close() -> None:
        rules.close()
        client.close()
        if server is not None:
            server.stop()

    return ReplaySetup(store, rules, models, close, profiles)


def run_replay(path: Path, *, mapping: Mapping | None = None, rules_dir: Path = Path("rules"),
               redis_url: str | None = None, prefix: str | None = None, lists_file: Path | None = None,
               merchants_file: Path | None = None, models_dir: Path | None = None,
               label_delay_s: float | None = None, emit_reports: bool | None = None,
               progress: bool = False, max_bad_share: float | None = None,
               in_flight: int = DEFAULT_IN_FLIGHT, promotions_file: Path | None = None,
               nightly: NightlyJob | None = None, history_start: str | None = None) -> ReplayResult:
    """Replay the history at ``path`` through the online decision path, in event-time order.

    ``history_start`` (`fengkong.features.young.history_start_for`): when the store's past
    begins; ``first`` (the default with a mapping: an export) makes ages and "new" flags
    missing until the history is as old as their window, ``none`` (the default without).

    Labels become fraud reports after ``label_delay_s`` (the mapping's delay if
    None), so the store learns the truth when a real system would. ``in_flight``: see
    `replay_stream` (the decisions are the same for every value). ``nightly``: the
    nightly job, bootstrapped with the starting profiles and every merchant of the
    profiles and the history before the first event, then run at each business-day
    boundary.
    """
    history = load_history(path, mapping, max_bad_share=max_bad_share)
    stream = event_stream(history, label_delay_s, emit_reports=emit_reports)
    try:
        start_us = history_start_for(history_start, history.events["occurred_at"], mapped=mapping is not None)
    except ValueError as exc:
        raise MappingError(str(exc), field="history_start") from None
    env = setup(rules_dir=rules_dir, redis_url=redis_url, prefix=prefix, lists_file=lists_file,
                merchants_file=merchants_file, models_dir=models_dir, promotions_file=promotions_file)
    env.store.history_start_us = start_us
    t0 = time.perf_counter()
    try:
        if nightly is not None:
            merchants = set(stream["merchant_id"].dropna().astype(str))
            if env.profiles is not None:
                merchants |= set(env.profiles["merchant_id"].dropna().astype(str))
            nightly.bootstrap(env.store, env.profiles, merchants)
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as bar:
                task = bar.add_task("replay", total=len(stream), rate="")

                def tick(i: int) -> None:
                    elapsed = time.perf_counter() - t0
                    bar.update(task, completed=i, rate=f"{i / elapsed:,.0f} events/s" if elapsed > 0 else "")

                decisions, stats = replay_stream(stream, store=env.store, rules=env.rules, models=env.models,
                                                 progress=tick, in_flight=in_flight, nightly=nightly)
        else:
            decisions, stats = replay_stream(stream, store=env.store, rules=env.rules, models=env.models,
                                             in_flight=in_flight, nightly=nightly)
        seconds = time.perf_counter() - t0
        version = env.rules.version
        models_status = getattr(env.models, "status", "")
    finally:
        env.close()
    refusals = history.refusals
    refusals.merge(stats["refusals"])
    return ReplayResult(decisions, len(history.events), stats["outcomes"], stats["generated"], stats["rejected"],
                        stats["rejects"], seconds, version, env.rules, str(path), models_status, refusals,
                        stats["card_reports"], history.unused, nightly.describe() if nightly is not None else "")
