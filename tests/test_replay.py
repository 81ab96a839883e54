"""`fengkong replay`: the replayed decision is the online decision for the same event sequence.

* via the shared pipeline: the runner's decisions equal `pipeline.decide` called event
  by event on a fresh store, and equal the decision service's answers over HTTP;
* and, independently, the offline twin + vectorised rules give the same decisions;
* mapping: a file with foreign column names, codes, local times and yuan amounts
  replays to exactly the decisions of the flat file; a bad mapping is refused with
  the column named;
* labels become fraud reports `delay` after the payment, only when none exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fengkong import pipeline
from fengkong.events import flat_to_dict, parse_event
from fengkong.replay.mapping import Mapping, MappingError
from fengkong.replay.reader import load_history, prepare
from fengkong.replay.runner import event_stream, label_reports, run_replay

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    from fengkong.simulation import SimConfig, run, write_outputs

    out = tmp_path_factory.mktemp("replay_sim")
    write_outputs(run(SimConfig.for_events(2_500, seed=4, days=14, fraud_scale=2.0)), out,
                  formats=("parquet", "jsonl"))
    return out


@pytest.fixture(scope="module")
def replayed(sim, redis_server):
    return run_replay(sim / "events.parquet", rules_dir=RULES, redis_url=redis_server.url, prefix="trp1",
                      lists_file=sim / "blacklist.json", merchants_file=sim / "merchants.parquet",
                      label_delay_s=3 * 86400, emit_reports=True)


def _key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("event_id")[["decision", "score", "rules", "shadow_rules", "lane"]]


def test_replay_equals_pipeline_decide_event_by_event(sim, replayed, redis_server, ipintel, list_specs) -> None:
    from fengkong.replay.runner import setup

    d = replayed.decisions
    assert len(d) > 1500 and replayed.reports_generated > 0 and replayed.rejected == 0
    assert set(d["decision"]) >= {"allow", "deny"}
    env = setup(rules_dir=RULES, redis_url=redis_server.url, prefix="trp2", lists_file=sim / "blacklist.json",
                merchants_file=sim / "merchants.parquet")
    try:
        stream = event_stream(load_history(sim / "events.parquet"), 3 * 86400, emit_reports=True)
        got = {}
        for row in stream.astype(object).where(stream.notna(), None).to_dict("records"):
            event = parse_event(flat_to_dict(row))
            decision, _ = pipeline.handle(event, store=env.store, rules=env.rules, models=env.models)
            if decision is not None:
                got[event.event_id] = (decision.decision, decision.score, ";".join(r.id for r in decision.reasons),
                                       decision.lane)
    finally:
        env.close()
    want = {r.event_id: (r.decision, r.score, r.rules, r.lane) for r in d.itertuples()}
    assert got == want


def test_replay_equals_offline_twin_with_vectorised_rules(sim, replayed, ipintel, list_specs) -> None:
    """An independent route to the same decisions: offline features + vectorised rules."""
    from fengkong.engine import load_ruleset
    from fengkong.engine.vectorized import VectorizedRules
    from fengkong.features.offline import offline_features
    from fengkong.replay.inputs import list_entries, load_profiles
    from fengkong.replay.reader import History

    history = load_history(sim / "events.parquet")
    stream = event_stream(history, 3 * 86400, emit_reports=True)
    feats = offline_features(stream, ipintel=ipintel, lists=list_specs,
                             list_entries=list_entries(RULES / "lists", list_specs, sim / "blacklist.json"),
                             profiles=load_profiles(sim / "merchants.parquet"))
    rs = load_ruleset(RULES)
    try:
        out = VectorizedRules.from_ruleset(rs).evaluate(feats)
    finally:
        rs.close()
    offline = pd.DataFrame({"event_id": feats["event.event_id"].to_numpy(), "decision": out.decision,
                            "score": out.score, "rules": out.joined_fired(enforced=True)}).set_index("event_id")
    online = replayed.decisions.set_index("event_id")[["decision", "score", "rules"]]
    assert len(offline) == len(online)
    joined = online.merge(offline, left_index=True, right_index=True, suffixes=("", "_offline"))
    diff = joined[(joined["decision"] != joined["decision_offline"]) | (joined["rules"] != joined["rules_offline"])]
    assert diff.empty, diff.head()
    assert np.allclose(joined["score"], joined["score_offline"])
    _ = History


def test_replay_equals_the_decision_service_over_http(sim, replayed, redis_server) -> None:
    api_fixtures = pytest.importorskip("api_fixtures")
    from fengkong.features.lists import ListStore, load_list_specs
    from fengkong.features.online import OnlineStore
    from fengkong.features.ipintel import IpIntel
    from fengkong.replay.inputs import list_entries, load_profiles

    prefix = "trp3"
    specs = load_list_specs(RULES / "lists")
    client = redis_server.client()
    try:  # the same static inputs the replay loaded, written under the service's prefix
        lists = ListStore(client, specs, prefix=prefix)
        for name, entries in list_entries(RULES / "lists", specs, sim / "blacklist.json").items():
            lists.add(name, entries)
        store = OnlineStore(client, ipintel=IpIntel.load(RULES / "lists"), lists=specs, prefix=prefix)
        profiles = load_profiles(sim / "merchants.parquet")
        for p in profiles.astype(object).where(profiles.notna(), None).to_dict("records"):
            store.set_merchant_profile(p["merchant_id"], single_limit_minor=int(p["single_limit"]),
                                       onboarded_at=p["onboarded_at"], mcc=p["mcc"])
    finally:
        client.close()
    stream = event_stream(load_history(sim / "events.parquet"), 3 * 86400, emit_reports=True)
    settings = api_fixtures.settings(redis_server.url, prefix, deadline_ms=10_000)
    got = {}
    with api_fixtures.Served(settings) as served, served.client(api_fixtures.DECIDE_KEY) as http, \
            served.client(api_fixtures.REPORT_KEY) as ledger:
        for row in stream.astype(object).where(stream.notna(), None).to_dict("records"):
            event = flat_to_dict(row)
            if event["type"] in ("payment", "signup", "login", "card_bind"):
                r = http.post("/v1/decisions", json=event)
                assert r.status_code == 200, r.text
                body = r.json()
                assert not body.get("degraded"), body
                got[event["event_id"]] = (body["decision"], body["score"],
                                          ";".join(x["id"] for x in body["reasons"]))
            else:
                r = ledger.post("/v1/events", json=event)
                assert r.status_code in (200, 201, 202), r.text
    want = {r.event_id: (r.decision, r.score, r.rules) for r in replayed.decisions.itertuples()}
    assert got == want


# --- mapping ---------------------------------------------------------------------------------
FOREIGN_MAPPING = {
    "columns": {
        "event_id": "txn_no",
        "type": {"column": "kind", "map": {"P": "payment", "R": "refund", "C": "chargeback", "F": "fraud_report",
                                           "S": "settlement", "W": "withdrawal", "D": "decline", "L": "login",
                                           "U": "signup", "B": "card_bind"}},
        "occurred_at": {"column": "txn_time", "type": "datetime", "format": "%Y/%m/%d %H:%M:%S",
                        "timezone": "+08:00"},
        "amount": {"column": "amt_yuan", "type": "decimal"},
        "merchant_id": "shop", "user_id": "cust", "channel": "chan", "card_fingerprint": "card_token",
        "card_bin": "bin", "card_type": {"column": "card_kind", "map": {"CR": "credit", "DB": "debit",
                                                                          "PP": "prepaid"}},
        "card_issuer_country": "issuer", "ip": "client_ip", "device_id": "device", "merchant_mcc": "mcc",
        "refers_to": "orig_txn",
    },
    "constants": {"currency": "CNY"},
    "label": {"column": "fraud_flag", "true_values": ["Y"], "delay": "3d", "scenario_column": "fraud_type"},
}


def _foreign_csv(sim: Path, path: Path) -> None:
    ev = pd.read_parquet(sim / "events.parquet")
    code = {v: k for k, v in FOREIGN_MAPPING["columns"]["type"]["map"].items()}
    cards = {v: k for k, v in FOREIGN_MAPPING["columns"]["card_type"]["map"].items()}
    t = pd.to_datetime(ev["occurred_at"], format="ISO8601")
    amt = ev["amount"].astype("Int64")
    foreign = pd.DataFrame({
        "txn_no": ev["event_id"], "kind": ev["type"].map(code), "txn_time": t.dt.strftime("%Y/%m/%d %H:%M:%S"),
        "amt_yuan": [None if pd.isna(a) else f"{a // 100}.{a % 100:02d}" for a in amt],
        "shop": ev["merchant_id"], "cust": ev["user_id"], "chan": ev["channel"], "card_token": ev["card_fingerprint"],
        "bin": ev["card_bin"], "card_kind": ev["card_type"].map(cards), "issuer": ev["card_issuer_country"],
        "client_ip": ev["ip"], "device": ev["device_id"], "mcc": ev["merchant_mcc"], "orig_txn": ev["refers_to"],
        "fraud_flag": np.where(ev["is_fraud"], "Y", "N"), "fraud_type": ev["scenario"], "extra": "ignored",
    })
    # a bank's export need not be in time order: shuffle the instants (events of the same
    # second keep their order, which is the only order the replay has for them)
    instants = foreign["txn_time"].unique()
    rank = dict(zip(instants, np.random.default_rng(3).permutation(len(instants))))
    foreign = foreign.iloc[np.argsort(foreign["txn_time"].map(rank).to_numpy(), kind="stable")]
    assert not foreign["txn_time"].is_monotonic_increasing
    foreign.to_csv(path, index=False)


def test_a_file_with_foreign_columns_replays_to_the_same_decisions(sim, replayed, redis_server, tmp_path) -> None:
    assert all(ts.endswith("+08:00") for ts in pd.read_parquet(sim / "events.parquet")["occurred_at"].head(50))
    csv, mfile = tmp_path / "bank_export.csv", tmp_path / "mapping.yaml"
    _foreign_csv(sim, csv)
    import yaml

    mfile.write_text(yaml.safe_dump(FOREIGN_MAPPING, allow_unicode=True), encoding="utf-8")
    mapping = Mapping.load(mfile)
    mapped = load_history(csv, mapping).events
    flat = load_history(sim / "events.parquet").events
    cols = ["event_id", "type", "occurred_at", "merchant_id", "amount", "card_fingerprint", "card_type", "ip",
            "refers_to", "is_fraud"]
    pd.testing.assert_frame_equal(mapped[cols].astype(object).where(mapped[cols].notna(), None),
                                  flat[cols].astype(object).where(flat[cols].notna(), None))
    # the flat file's default history start (none): a mapped export defaults to its first event
    result = run_replay(csv, mapping=mapping, rules_dir=RULES, redis_url=redis_server.url, prefix="trp4",
                        lists_file=sim / "blacklist.json", merchants_file=sim / "merchants.parquet",
                        history_start="none")
    assert result.reports_generated == replayed.reports_generated > 0
    pd.testing.assert_frame_equal(_key(result.decisions).sort_index(), _key(replayed.decisions).sort_index())
    assert result.decisions["is_fraud"].sum() == replayed.decisions["is_fraud"].sum() > 0


def test_json_lines_read_like_parquet(sim) -> None:
    a, b = load_history(sim / "events.jsonl").events, load_history(sim / "events.parquet").events
    pd.testing.assert_frame_equal(a.astype(object).where(a.notna(), None), b.astype(object).where(b.notna(), None))


def test_a_bad_mapping_is_refused_naming_the_column(sim, tmp_path) -> None:
    csv = tmp_path / "bank_export.csv"
    _foreign_csv(sim, csv)
    bad = json.loads(json.dumps(FOREIGN_MAPPING))
    bad["columns"]["amount"]["column"] = "amount_yuan"  # the file has amt_yuan
    with pytest.raises(MappingError) as err:
        load_history(csv, Mapping.from_dict(bad))
    assert "'amount_yuan'" in str(err.value) and "did you mean 'amt_yuan'" in str(err.value)
    assert err.value.column == "amount_yuan" and err.value.field == "columns.amount"
    # through the CLI: exit 2 and the column named
    import yaml

    mfile = tmp_path / "bad.yaml"
    mfile.write_text(yaml.safe_dump(bad), encoding="utf-8")
    from fengkong.cli import app

    res = CliRunner().invoke(app, ["replay", str(csv), "--mapping", str(mfile), "--rules-dir", str(RULES),
                                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 2 and "amount_yuan" in res.output


@pytest.mark.parametrize("change, words", [
    (lambda m: m["columns"].update(amout="amt_yuan"), ["amout", "did you mean 'amount'"]),
    (lambda m: m["columns"].pop("event_id"), ["event_id", "required"]),
    (lambda m: m["columns"]["occurred_at"].update(format="%d.%m.%Y"), ["txn_time", "row", "does not match"]),
    (lambda m: m["columns"]["occurred_at"].pop("timezone"), ["txn_time", "timezone"]),
    (lambda m: m["columns"]["amount"].update(type="minor"), ["amt_yuan", "whole number of minor units"]),
    (lambda m: m["label"].update(column="is_fraud"), ["label.column", "is_fraud"]),
    (lambda m: m["label"].update(delay="a week"), ["label.delay"]),
])
def test_mapping_errors_name_what_is_wrong(sim, tmp_path, change, words) -> None:
    csv = tmp_path / "bank_export.csv"
    _foreign_csv(sim, csv)
    bad = json.loads(json.dumps(FOREIGN_MAPPING))
    change(bad)
    with pytest.raises(MappingError) as err:
        load_history(csv, Mapping.from_dict(bad))
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_flat_file_without_the_required_columns_asks_for_a_mapping(tmp_path) -> None:
    csv = tmp_path / "x.csv"
    pd.DataFrame({"id": ["a"], "when": ["2025-10-01T00:00:00+08:00"]}).to_csv(csv, index=False)
    with pytest.raises(MappingError, match="event_id, type.*--mapping"):
        load_history(csv)


# --- labels -> outcome events ----------------------------------------------------------------
def test_labels_become_fraud_reports_after_the_delay_unless_already_reported(sim) -> None:
    history = load_history(sim / "events.parquet")
    ev = history.events
    reports = label_reports(history, 3 * 86400)
    fraud_pay = ev[(ev["type"] == "payment") & ev["is_fraud"].fillna(False)]
    already = set(ev.loc[ev["type"] == "fraud_report", "refers_to"].dropna())
    assert len(reports) > 0 and not (set(reports["refers_to"]) & already)
    assert set(reports["refers_to"]) <= set(fraud_pay["event_id"])
    pay = fraud_pay.set_index("event_id")
    for r in reports.head(50).itertuples():
        p = pay.loc[r.refers_to]
        assert r.ts == pytest.approx(p["ts"] + 3 * 86400)
        assert r.occurred_at.endswith("+08:00") and r.merchant_id == p["merchant_id"]
        assert r.card_fingerprint == p["card_fingerprint"] and r.amount == p["amount"]
        assert parse_event(flat_to_dict(r._asdict())).type.value == "fraud_report"
    # every report comes after its payment in the stream, and nothing after the history ends
    stream = event_stream(history, 3 * 86400, emit_reports=True)
    pos = {e: i for i, e in enumerate(stream["event_id"])}
    assert all(pos[f"{p}:fraud_report"] > pos[p] for p in reports["refers_to"])
    assert stream["ts"].is_monotonic_increasing and stream["ts"].max() == ev["ts"].max()
    # without a mapping, the simulator's own outcomes are used and none are made up
    assert len(event_stream(history)) == len(ev)


def test_reports_reach_outcome_features_only_after_the_delay(ipintel, list_specs, store) -> None:
    """merchant.chargeback_count_30d counts the generated report only once its time has come."""
    rows = [
        {"event_id": "p1", "type": "payment", "occurred_at": "2025-10-01T10:00:00+08:00", "merchant_id": "mX",
         "user_id": "u1", "amount": 1000, "card_fingerprint": "c1", "is_fraud": True},
        {"event_id": "p2", "type": "payment", "occurred_at": "2025-10-02T10:00:00+08:00", "merchant_id": "mX",
         "user_id": "u2", "amount": 1000, "card_fingerprint": "c2", "is_fraud": False},
        {"event_id": "p3", "type": "payment", "occurred_at": "2025-10-09T10:00:00+08:00", "merchant_id": "mX",
         "user_id": "u3", "amount": 1000, "card_fingerprint": "c3", "is_fraud": False},
    ]
    history = prepare(pd.DataFrame(rows), Mapping.from_dict({
        "columns": {c: c for c in ("event_id", "type", "occurred_at", "merchant_id", "user_id", "amount",
                                   "card_fingerprint")},
        "label": {"column": "is_fraud", "delay": "7d"}}))
    stream = event_stream(history)
    assert list(stream["event_id"]) == ["p1", "p2", "p1:fraud_report", "p3"]
    seen = {}
    for row in stream.astype(object).where(stream.notna(), None).to_dict("records"):
        event = parse_event(flat_to_dict(row))
        if pipeline.is_outcome(event):
            pipeline.record_outcome(event, store=store)
        else:
            seen[event.event_id] = store.process(event).features["merchant.chargeback_count_30d"]
    assert seen == {"p1": 0, "p2": 0, "p3": 1}


# --- the CLI and the report ------------------------------------------------------------------
def test_cli_replay_writes_decisions_and_a_report(sim, tmp_path, redis_server) -> None:
    from fengkong.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["replay", str(sim / "events.jsonl"), "--out", str(out), "--rules-dir", str(RULES),
                                   "--lists", str(sim / "blacklist.json"), "--merchants",
                                   str(sim / "merchants.parquet"), "--redis-url", redis_server.url,
                                   "--format", "csv", "--top-k", "20", "--no-progress"])
    assert res.exit_code == 0, res.output
    d = pd.read_csv(out / "decisions.csv")
    assert {"event_id", "decision", "score", "rules", "is_fraud"} <= set(d.columns)
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("Decisions by outcome", "ROC AUC", "average precision", "card precision top-20",
                    "Recall per scenario", "## Rules"):
        assert heading in md, heading
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 3


def test_top_k_card_precision_and_rule_metrics_by_hand() -> None:
    from fengkong.replay.report import compute

    d = pd.DataFrame({
        "event_id": list("abcdefgh"), "type": ["payment"] * 8,
        "occurred_at": ["2025-10-01T01:00:00+08:00"] * 4 + ["2025-10-02T01:00:00+08:00"] * 4,
        "card_fingerprint": ["c1", "c2", "c3", "c1", "c1", "c2", "c3", "c4"],
        "score": [90, 10, 50, 0, 0, 80, 70, 60],
        "decision": ["deny", "allow", "review", "allow", "allow", "deny", "review", "challenge"],
        "rules": ["r1;r2", "", "r2", "", "", "r1", "r2", "r3"], "shadow_rules": [""] * 8,
        "is_fraud": pd.array([True, False, False, False, False, True, False, True], dtype="boolean"),
        "scenario": [None] * 8,
    })
    info = {"r1": {"mode": "enforce", "then": "deny"}, "r2": {"mode": "enforce", "then": "review"},
            "r3": {"mode": "enforce", "then": "challenge"}}
    m = compute(d, top_k=2, rule_info=info)
    # day 1: cards c1 (90, fraud), c3 (50), c2 (10) -> top2 = c1, c3 -> 1/2; day 2: c1 was found on day 1 and
    # is left out; c2 (80, fraud), c3 (70) -> 1/2
    assert list(m.daily_top_k["precision"]) == [0.5, 0.5] and m.card_precision_top_k == 0.5
    assert m.stop_rate == 4 / 8 and m.precision == 2 / 4 and m.recall == 2 / 3
    r = m.per_rule.set_index("rule")
    assert r.loc["r1", "fires"] == 2 and r.loc["r1", "precision"] == 1.0 and r.loc["r1", "fires_alone"] == 1
    assert r.loc["r2", "fires_alone"] == 2 and r.loc["r3", "fires_alone"] == 1
    # only rules that stop count fraud only they caught: r1 alone among stopping rules on f (fraud); r2 fires
    # with r1 on a and alone on c, g (good); r3 challenges, so it stops nothing
    assert r.loc["r1", "fraud_only_it_caught"] == 1 and r.loc["r2", "fraud_only_it_caught"] == 0
    assert r.loc["r3", "fraud_only_it_caught"] is pd.NA
    assert list(m.daily_top_k["known_left_out"]) == [0, 1]
