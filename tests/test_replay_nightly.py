"""`fengkong replay --nightly`: grades, caps and the merchant anomaly score move with event time.

A small hand-built history (about 1,300 events over 20 business days, UTC+08:00)
has a merchant whose steady volume earns C after its 14th clean day, a merchant
whose chargeback burst sends it to D, quiet and busy background merchants, and
probes sent one second either side of a business-day boundary (written in UTC, so
a UTC-midnight cut would put them on the wrong side). The grade every decision read
is checked against `fengkong rescore` run on the history cut at that decision's
business-day boundary, so nothing after a boundary reaches the grade before it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fengkong.replay.runner import business_day, run_replay
from fengkong.training.grade_policy import GradePolicy
from fengkong.training.nightly import BOOTSTRAP_REASON, Nightly
from fengkong.training.rescore import rescore

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
POLICY = GradePolicy.load(RULES / "grades" / "grades.yaml")
BIZ = timezone(timedelta(hours=8))
DAY0 = datetime(2026, 10, 1, tzinfo=BIZ)  # business day 0 starts at 2026-09-30T16:00Z
DAYS = 20
UP_DAY = 13  # m_up's 14th clean day: C from day 14 on
CB_DAY = 16  # m_cb's chargeback burst: D from day 17 on


def _at(day: int, hour: float) -> datetime:
    return DAY0 + timedelta(days=day, hours=hour)


def _history() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    rows: list[dict] = []

    def pay(eid: str, when: datetime, merchant: str, amount_yuan: float, *, iso_utc: bool = False) -> None:
        n = len(rows)
        stamp = when.astimezone(timezone.utc).isoformat() if iso_utc else when.isoformat()
        rows.append({"event_id": eid, "type": "payment", "occurred_at": stamp, "merchant_id": merchant,
                     "user_id": f"u{n % 700}", "amount": int(round(amount_yuan * 100)), "currency": "CNY",
                     "channel": "quick_pay", "card_fingerprint": f"c{n % 900}", "card_bin": "622202",
                     "card_type": "debit", "card_issuer_country": "CN", "ip": f"113.{n % 200 + 1}.7.{n % 250 + 1}",
                     "device_id": f"d{n % 650}"})

    steady = ("m_up", "m_cb", "m_bg1", "m_bg2")
    for day in range(DAYS):
        for m in steady:
            for k in range(12):
                pay(f"{m}-{day}-{k}", _at(day, 9 + k * 0.9 + rng.uniform(0, 0.5)), m, rng.uniform(150, 250))
        if day >= 5:  # a merchant that starts later, busier
            for k in range(20):
                pay(f"m_late-{day}-{k}", _at(day, 8 + k * 0.6), "m_late", rng.uniform(300, 900))
        if day % 3 == 0:  # a quiet one: too few active days to climb
            pay(f"m_quiet-{day}", _at(day, 12), "m_quiet", 88.0)
    # the chargeback burst: 5 chargebacks on day CB_DAY, on payments of days 2..6
    for j in range(5):
        rows.append({"event_id": f"cb-{j}", "type": "chargeback", "occurred_at": _at(CB_DAY, 10 + j).isoformat(),
                     "merchant_id": "m_cb", "user_id": None, "amount": 20000, "currency": "CNY",
                     "refers_to": f"m_cb-{2 + j}-3"})
    # probes one second either side of the boundaries that matter, written in UTC
    for day, tag in ((UP_DAY, "before"), (UP_DAY + 1, "after")):
        edge = _at(day + (tag == "before"), 0) + timedelta(seconds=-1 if tag == "before" else 1)
        pay(f"probe-up-{tag}", edge, "m_up", 8000.0, iso_utc=True)
    for day, tag in ((CB_DAY, "before"), (CB_DAY + 1, "after")):
        edge = _at(day + (tag == "before"), 0) + timedelta(seconds=-1 if tag == "before" else 1)
        pay(f"probe-cb-{tag}", edge, "m_cb", 1800.0, iso_utc=True)
    # a retried event (counted once by the grades) and a row the event contract refuses (never)
    rows.append(dict(rows[40]))
    rows.append({**rows[41], "event_id": "bad-ip", "ip": "999.1.2.3"})
    frame = pd.DataFrame(rows)
    return frame.sort_values("occurred_at", key=lambda s: pd.to_datetime(s, utc=True, format="ISO8601"),
                             kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nightly")
    frame = _history()
    frame.to_parquet(out / "events.parquet", index=False)
    # profiles without a grade or a limit: the grade's limit applies; one merchant with a stated grade
    pd.DataFrame({"merchant_id": ["m_up", "m_cb", "m_bg1", "m_bg2", "m_late", "m_quiet"],
                  "onboarded_at": ["2026-10-01"] * 4 + ["2026-10-06", "2026-10-01"],
                  "grade": [None, None, None, "B", None, None]}).to_parquet(out / "merchants.parquet", index=False)
    return out


def _replay(history: Path, redis_server, prefix: str, *, in_flight: int = 1024, nightly: Nightly | None = None,
            models_dir: Path | None = None):
    return run_replay(history / "events.parquet", rules_dir=RULES, redis_url=redis_server.url, prefix=prefix,
                      merchants_file=history / "merchants.parquet", in_flight=in_flight, nightly=nightly,
                      models_dir=models_dir)


@pytest.fixture(scope="module")
def nightly_run(history, redis_server):
    job = Nightly(POLICY)
    return _replay(history, redis_server, "nly1", nightly=job), job


def _one(decisions: pd.DataFrame, event_id: str) -> pd.Series:
    row = decisions[decisions["event_id"] == event_id]
    assert len(row) == 1, event_id
    return row.iloc[0]


def test_volume_earns_a_better_grade_and_its_limit_from_the_next_day(nightly_run) -> None:
    result, job = nightly_run
    d = result.decisions
    assert result.rejected == 1 and len(d) > 1200  # only the bad IP is refused
    up = d[d["merchant_id"] == "m_up"].assign(day=lambda f: business_day(f["occurred_at"]) - business_day(
        pd.Series([DAY0.isoformat()]))[0])
    assert set(up.loc[up["day"] <= UP_DAY, "merchant_grade"]) == {"NEW"}
    assert set(up.loc[up["day"] > UP_DAY, "merchant_grade"]) == {"C"}
    before, after = _one(d, "probe-up-before"), _one(d, "probe-up-after")
    # 8,000 yuan: over NEW's 5,000 limit one second before the boundary, within C's 10,000 after
    assert before["merchant_grade"] == "NEW" and "limits.new_merchant_over_single_limit" in before["rules"]
    assert before["decision"] == "deny"
    assert after["merchant_grade"] == "C" and "limits." not in after["rules"]
    assert len(job.runs) == DAYS - 1  # every boundary but none after the last day
    assert job.runs[UP_DAY].grades.set_index("merchant_id").loc["m_up", "reason"].startswith("upgrade NEW->C")


def test_chargeback_burst_downgrades_the_next_day(nightly_run) -> None:
    result, _ = nightly_run
    d = result.decisions
    before, after = _one(d, "probe-cb-before"), _one(d, "probe-cb-after")
    assert before["merchant_grade"] == "C" and "limits.low_grade_large_payment" not in before["rules"]
    # D: 2,000 yuan limit, and 1,800 is above 80% of it
    assert after["merchant_grade"] == "D" and "limits.low_grade_large_payment" in after["rules"]


def test_the_grade_of_each_day_is_rescore_on_the_history_cut_at_its_boundary(nightly_run, history) -> None:
    result, _ = nightly_run
    d = result.decisions.copy()
    d["bday"] = business_day(d["occurred_at"])
    events = pd.read_parquet(history / "events.parquet")
    # refused by the event contract: never counted; a retried event_id counts once
    events = events[events["event_id"] != "bad-ip"].drop_duplicates("event_id")
    eday = business_day(events["occurred_at"])
    profiles = pd.read_parquet(history / "merchants.parquet")
    initial = {"m_bg2": "B"}
    first = int(eday.min())
    checked = 0
    for day in sorted(set(d["bday"])):
        got = d[(d["bday"] == day) & d["merchant_id"].notna()].groupby("merchant_id")["merchant_grade"].agg(set)
        if day == first:  # before any nightly run: the bootstrap
            want = {m: POLICY.start for m in got.index} | initial
        else:
            cut = rescore(events[eday < day], policy=POLICY, model=None, profiles=profiles, initial=initial)
            want = dict(zip(cut.current["merchant_id"], cut.current["grade"]))
        for m, grades in got.items():
            assert grades == {want.get(m, POLICY.start)}, (day - first, m, grades, want.get(m))
            checked += 1
    assert checked > 100
    # and a grade that only the future earns was never read early: m_cb's D comes after its burst
    cb = d[(d["merchant_id"] == "m_cb") & (d["merchant_grade"] == "D")]
    assert len(cb) and (cb["bday"] > first + CB_DAY).all()


def test_bootstrap_gives_the_policy_start_grade_with_its_daily_cap(nightly_run, history, redis_server) -> None:
    import redis

    from fengkong.features.ipintel import IpIntel
    from fengkong.features.online import OnlineStore
    from fengkong.replay.inputs import load_profiles

    client = redis.Redis.from_url(redis_server.url)
    store = OnlineStore(client, ipintel=IpIntel.load(RULES / "lists"), prefix="nlyboot")
    job = Nightly(POLICY)
    written = job.bootstrap(store, load_profiles(history / "merchants.parquet"), ["m_up", "m_bg2", "m_unknown"])
    assert written == 3
    up = store.get_merchant_profile("m_up")
    assert up["grade"] == "NEW" and up["grade_reason"] == BOOTSTRAP_REASON
    assert int(up["daily_cap"]) == POLICY.daily_cap_minor["NEW"]
    bg2 = store.get_merchant_profile("m_bg2")  # a stated grade stays, with its cap
    assert "grade" not in bg2 and int(bg2["daily_cap"]) == POLICY.daily_cap_minor["B"]
    assert store.get_merchant_profile("m_unknown")["grade"] == "NEW"
    bad = Nightly(POLICY)
    with pytest.raises(ValueError, match="grade\\(s\\) Z unknown to the grade policy"):
        bad.bootstrap(store, pd.DataFrame({"merchant_id": ["m1"], "grade": ["Z"]}), ["m1"])
    client.close()
    # in the replay, the stated grade B is what m_bg2's first day read
    d = nightly_run[0].decisions
    assert set(d.loc[d["event_id"].str.startswith("m_bg2-0-"), "merchant_grade"]) == {"B"}


def test_in_flight_and_one_by_one_give_equal_decisions_with_nightly(nightly_run, history, redis_server) -> None:
    many = nightly_run[0].decisions
    one = _replay(history, redis_server, "nly2", in_flight=1, nightly=Nightly(POLICY)).decisions
    shallow = _replay(history, redis_server, "nly3", in_flight=7, nightly=Nightly(POLICY)).decisions
    cols = [c for c in many.columns if c != "ruleset_version"]
    pd.testing.assert_frame_equal(one[cols], many[cols])
    pd.testing.assert_frame_equal(shallow[cols], many[cols])
    assert (many["merchant_grade"] == "D").any() and (many["merchant_grade"] == "C").any()


def test_without_nightly_the_profiles_stay_as_they_started(nightly_run, history, redis_server) -> None:
    plain = _replay(history, redis_server, "nly4").decisions
    assert plain["merchant_grade"].where(plain["merchant_id"].notna(), "NEW").tolist() == \
        ["B" if m == "m_bg2" else "NEW" for m in plain["merchant_id"]]
    assert "limits.new_merchant_over_single_limit" in _one(plain, "probe-up-after")["rules"]
    assert "limits.low_grade_large_payment" not in _one(plain, "probe-cb-after")["rules"]
    assert plain["model.merchant_anomaly"].isna().all()
    # the first business day, before any nightly run, is decided alike (the bootstrap's NEW is the default)
    with_n = nightly_run[0].decisions
    first = business_day(plain["occurred_at"]) == business_day(plain["occurred_at"]).min()
    cols = ["event_id", "decision", "score", "rules", "merchant_grade"]
    pd.testing.assert_frame_equal(plain.loc[first, cols], with_n.loc[first, cols])


def test_the_merchant_model_scores_each_night_and_the_next_day_reads_it(history, redis_server, tmp_path) -> None:
    from fengkong.training.train import train_merchants

    events = pd.read_parquet(history / "events.parquet")
    profiles = pd.read_parquet(history / "merchants.parquet")
    train_merchants(events, profiles=profiles, root=tmp_path, n_estimators=20, min_payments=3)
    job = Nightly.load(policy_path=RULES / "grades" / "grades.yaml", models_dir=tmp_path)
    assert job.model is not None and "merchant model" in job.describe()
    result = _replay(history, redis_server, "nly5", nightly=job, models_dir=tmp_path)
    d = result.decisions.copy()
    d["bday"] = business_day(d["occurred_at"])
    first = int(d["bday"].min())
    assert d.loc[d["bday"] == first, "model.merchant_anomaly"].isna().all()  # nothing scored yet
    events = events[events["event_id"] != "bad-ip"].drop_duplicates("event_id")
    eday = business_day(events["occurred_at"])
    for day in (first + 6, first + CB_DAY + 1):
        cut = rescore(events[eday < day], policy=POLICY, model=job.model, profiles=profiles,
                      initial={"m_bg2": "B"})
        want = cut.current.set_index("merchant_id")["anomaly"]
        got = d[d["bday"] == day].groupby("merchant_id")["model.merchant_anomaly"]
        scored = 0
        for m, scores in got:
            if pd.isna(want[m]):  # too few payments to score: no anomaly in the profile
                assert scores.isna().all(), (day, m)
            else:
                assert set(scores) == {float(f"{want[m]:.6f}")}, (day, m)
                scored += 1
        assert scored >= 4
    assert result.nightly.startswith(f"{DAYS - 1} run(s)")


def test_cli_nightly_writes_the_grades_into_decisions_and_report(history, redis_server, tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-c", "from fengkong.cli import app; app(prog_name='fengkong')", "replay",
           str(history / "events.parquet"), "--rules-dir", str(RULES), "--merchants",
           str(history / "merchants.parquet"), "--redis-url", redis_server.url, "--no-progress",
           "--artifacts", str(tmp_path / "no-models"), "--out", str(tmp_path / "out"), "--nightly"]
    proc = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"nightly job: {DAYS - 1} run(s)" in proc.stdout and "grading on chargebacks only" in proc.stdout
    d = pd.read_parquet(tmp_path / "out" / "decisions.parquet")
    assert _one(d, "probe-up-after")["merchant_grade"] == "C" and _one(d, "probe-cb-after")["merchant_grade"] == "D"
    assert "nightly job" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    # a policy file that is not there: a plain error naming it, before any event is read
    bad = subprocess.run([*cli, "--grade-policy", str(tmp_path / "nope.yaml")], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "nope.yaml" in bad.stderr, bad.stderr


def test_grade_changes_reach_the_change_audit_as_the_replay_nightly_job(history, redis_server) -> None:
    import orjson
    import redis

    from fengkong.features.change_audit import changes_key

    _replay(history, redis_server, "nly6", nightly=Nightly(POLICY))
    client = redis.Redis.from_url(redis_server.url)
    records = [orjson.loads(fields[b"record"]) for _, fields in client.xrange(changes_key("nly6"))]
    client.close()
    moves = {(r["merchant_id"], r["fields"]["previous_grade"], r["fields"]["grade"]) for r in records}
    assert {("m_up", "NEW", "C"), ("m_cb", "C", "D")} <= moves
    assert {r["actor"] for r in records} == {"replay-nightly"}
