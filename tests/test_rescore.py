"""The nightly job: pandas and Dask give the same grades; grades reach Redis and the next decision."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fengkong.features.definitions import DEFAULT_GRADE
from fengkong.models.merchant_model import MerchantAnomalyModel
from fengkong.training.grade_policy import GradePolicy
from fengkong.training.merchant_features import daily_features
from fengkong.training.rescore import rescore, write_report, write_to_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    from fengkong.simulation import SimConfig, run

    s = run(SimConfig(seed=7, days=21, shoppers=1000, merchants=40))
    policy = GradePolicy.load(ROOT / "rules" / "grades" / "grades.yaml")
    model = MerchantAnomalyModel(n_estimators=25).fit(daily_features(s.events, profiles=s.merchants))
    return s.events, s.merchants, policy, model


def test_pandas_and_dask_give_identical_grades(setup) -> None:
    from dask.distributed import Client, LocalCluster

    events, merchants, policy, model = setup
    a = rescore(events, policy=policy, model=model, profiles=merchants, engine="pandas", parts=3)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        b = rescore(events, policy=policy, model=model, profiles=merchants, engine="dask", parts=4,
                    dask_client=client)
    assert len(a.current) == len(b.current) == events["merchant_id"].nunique()
    pd.testing.assert_frame_equal(a.current, b.current, check_dtype=False)
    cols = ["merchant_id", "day", "grade", "changed", "reason", "anomaly", "volume"]
    pd.testing.assert_frame_equal(a.daily[cols], b.daily[cols], check_dtype=False)


def test_partitioning_does_not_change_the_answer(setup) -> None:
    events, merchants, policy, model = setup
    one = rescore(events, policy=policy, model=model, profiles=merchants, parts=1)
    many = rescore(events, policy=policy, model=model, profiles=merchants, parts=5)
    pd.testing.assert_frame_equal(one.daily, many.daily)


def test_grades_reach_redis_and_the_next_decision(setup, redis_client, tmp_path: Path) -> None:
    from fengkong.events import parse_event
    from fengkong.features.ipintel import IpIntel
    from fengkong.features.online import OnlineStore

    events, merchants, policy, model = setup
    result = rescore(events, policy=policy, model=model, profiles=merchants, parts=2)
    store = OnlineStore(redis_client, ipintel=IpIntel.load(ROOT / "rules" / "lists"), prefix=f"rs{id(result)}")
    written = write_to_store(store, result.current, policy)
    assert written == len(result.current)
    row = result.current.iloc[0]
    profile = store.get_merchant_profile(row["merchant_id"])
    assert profile["grade"] == row["grade"] and profile["grade_reason"] == row["reason"]
    assert int(profile["daily_cap"]) == policy.daily_cap_minor[row["grade"]]
    ev = parse_event({"event_id": "rs-1", "type": "payment", "occurred_at": "2026-03-01T10:00:00+08:00",
                      "merchant_id": row["merchant_id"], "amount": 1000, "user_id": "u1"})
    feats = store.process(ev).features
    assert feats["merchant.grade"] == row["grade"]
    assert feats["merchant.single_limit"] * 100 == policy.single_limit_minor[row["grade"]]
    paths = write_report(result, tmp_path / "report")
    html = paths["html"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "Merchants that moved" in html
    assert len(pd.read_csv(paths["grades"])) == len(result.current)


def test_grade_changes_are_in_the_change_audit(setup, redis_client) -> None:
    """The console's grade history reads `merchant.*` records of the change audit: the
    nightly job's changes must be there (who, old and new grade, reason), and a rerun
    that changes nothing adds nothing."""
    import orjson

    from fengkong.features import keys
    from fengkong.features.ipintel import IpIntel
    from fengkong.features.online import OnlineStore

    events, merchants, policy, model = setup
    result = rescore(events, policy=policy, model=model, profiles=merchants, parts=2)
    prefix = f"rsa{id(result)}"
    store = OnlineStore(redis_client, ipintel=IpIntel.load(ROOT / "rules" / "lists"), prefix=prefix)
    current = result.current
    # one merchant already holds its new grade: that one is not a change
    same = current.iloc[0]
    store.set_grades({same["merchant_id"]: (same["grade"], "")})
    write_to_store(store, current, policy, actor="nightly-test")
    stream = keys.audit_stream(prefix, "changes")
    records = [orjson.loads(fields[b"record"]) for _, fields in redis_client.xrange(stream)]
    expected = {r["merchant_id"]: r["grade"] for r in current.to_dict("records")
                if r["grade"] != DEFAULT_GRADE and r["merchant_id"] != same["merchant_id"]}
    assert expected, "the simulated history should move some merchant off the default grade"
    assert {r["merchant_id"]: r["fields"]["grade"] for r in records} == expected
    assert all(r["action"] == "merchant.grade" and r["actor"] == "nightly-test" for r in records)
    assert all(r["fields"]["previous_grade"] == DEFAULT_GRADE for r in records)
    write_to_store(store, current, policy)
    assert redis_client.xlen(stream) == len(records)
