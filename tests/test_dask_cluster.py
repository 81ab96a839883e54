"""The batch jobs on a real Dask cluster: a local `distributed` cluster of 2 worker
processes that this module starts (and stops), addressed like a remote one.

* the offline twin split by entity (`offline_features_dask`) gives the pandas twin's
  frame, every row, column and dtype, on a history with every scenario, outcomes,
  retried event_ids, list entries and merchant profiles;
* `fengkong rules backtest --engine dask --scheduler ADDRESS` writes the pandas run's table;
* `rescore(engine="dask")` on the cluster gives the pandas grades, also when the workers
  read the Parquet history themselves (`fengkong rescore --history-on-workers`);
* the twin in parts on disk (`offline_parts`) reads back as the pandas twin, and
  `fengkong rules backtest --parts DIR` writes the in-memory run's table from it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fengkong.features import definitions as d
from fengkong.features.offline import offline_features
from fengkong.features.offline_dask import offline_features_dask
from fengkong.features.offline_split import PASSES, column_pass, pass_entities, split_keys
from fengkong.replay.inputs import list_entries

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
LISTS = RULES / "lists"


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc.scheduler_address) as client:
        yield client


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from fengkong.simulation import SimConfig, run, write_outputs

    out = tmp_path_factory.mktemp("dask_sim")
    sim = run(SimConfig.for_events(4_000, seed=9, days=21, fraud_scale=3.0))
    paths = write_outputs(sim, out, formats=("parquet",))
    events = pd.concat([sim.events, sim.events.iloc[::50]], ignore_index=True)  # retries: same body again
    events.index = events.index * 3 + 7  # an index that is not positions comes back as it was
    events.to_parquet(paths["events.parquet"])
    return events, sim.merchants, paths


def test_every_column_has_an_exact_pass() -> None:
    names = [n for n, spec in d.CATALOG.items() if spec.source != "model"]
    passes = {n: column_pass(n) for n in names}
    assert set(passes.values()) <= set(PASSES)
    assert passes["card.merchant_count_30d"] == "merchant"  # merchant x card: a pair lies in one merchant
    assert passes["ip.distinct_subnet_users_24h"] == passes["ip.count_10m"] == "subnet"
    assert passes["user.amount_zscore"] == "user" and passes["merchant.volume_ratio_today"] == "merchant"


def test_dask_twin_equals_the_pandas_twin(cluster, history, ipintel, list_specs) -> None:
    events, merchants, paths = history
    entries = list_entries(LISTS, list_specs, paths["blacklist.json"])
    assert any(entries.values())
    want = offline_features(events, ipintel=ipintel, lists=list_specs, list_entries=entries, profiles=merchants)
    got = offline_features_dask(events, client=cluster, lists_dir=LISTS, lists=list_specs, list_entries=entries,
                                profiles=merchants, partitions=3)
    assert len(want) > 4_000 and want.shape[1] > 140
    # today's make-up reads the card's and the account's whole history (the merchant pass is handed it)
    assert (want["merchant.new_card_count_today"] > 0).any() and (want["merchant.new_user_count_today"] > 0).any()
    pd.testing.assert_frame_equal(got, want)
    # the split matters: a pass's other columns are wrong in its parts (so the test can fail)
    part = events[split_keys(events, "card", 3) == 0]
    card_part = offline_features(part, ipintel=ipintel, lists=list_specs, list_entries=entries, profiles=merchants)
    pd.testing.assert_series_equal(card_part["card.count_24h"], want["card.count_24h"].loc[card_part.index])
    assert not card_part["user.count_30d"].equals(want["user.count_30d"].loc[card_part.index])


def test_a_pass_computes_only_its_own_entities(history, ipintel, list_specs) -> None:
    """Each pass runs only its entities' feature tasks (no repeated work), and its own
    columns are still exact; another entity's columns are then blanks."""
    from fengkong.features.offline import _TASKS, task_entity

    events, merchants, _ = history
    assert {task_entity(t) for t in _TASKS} == {"card", "user", "device", "ip", "subnet", "merchant", "merchant_card"}
    part = events[split_keys(events, "user", 3) == 1]
    full = offline_features(part, ipintel=ipintel, lists=list_specs, profiles=merchants)
    own = offline_features(part, ipintel=ipintel, lists=list_specs, profiles=merchants,
                           entities=pass_entities("user"))
    mine = [c for c in full.columns if column_pass(c) == "user"]
    assert len(mine) > 20
    pd.testing.assert_frame_equal(own[mine], full[mine])
    assert full["card.count_24h"].notna().any() and own["card.count_24h"].isna().all()  # not computed
    assert full["merchant.count_today"].notna().any() and own["merchant.count_today"].isna().all()


def test_cli_backtest_on_a_dask_scheduler_equals_pandas(cluster, history, tmp_path) -> None:
    from fengkong.cli import app

    _, _, paths = history
    outs = {}
    for engine, extra in (("pandas", []), ("dask", ["--scheduler", cluster.scheduler_info()["address"], "--partitions", "2"])):
        outs[engine] = tmp_path / engine
        res = CliRunner().invoke(app, ["rules", "backtest", str(paths["events.parquet"]), "--candidate", str(RULES),
                                       "--live", str(RULES), "--lists", str(paths["blacklist.json"]),
                                       "--merchants", str(paths["merchants.parquet"]), "--out", str(outs[engine]),
                                       "--engine", engine, *extra])
        assert res.exit_code == 0, res.output
    a, b = (pd.read_csv(outs[e] / "backtest.csv") for e in ("pandas", "dask"))
    assert a["fires_live"].fillna(0).sum() > 0
    pd.testing.assert_frame_equal(a, b)


def test_cli_backtest_refuses_a_scheduler_without_dask(history) -> None:
    from fengkong.cli import app

    _, _, paths = history
    res = CliRunner().invoke(app, ["rules", "backtest", str(paths["events.parquet"]), "--candidate", str(RULES),
                                   "--scheduler", "tcp://127.0.0.1:1"])
    assert res.exit_code == 2 and "--scheduler" in res.output


def test_rescore_on_a_two_process_cluster_equals_pandas(cluster) -> None:
    from fengkong.models.merchant_model import MerchantAnomalyModel
    from fengkong.simulation import SimConfig, run
    from fengkong.training.grade_policy import GradePolicy
    from fengkong.training.merchant_features import daily_features
    from fengkong.training.rescore import rescore

    s = run(SimConfig(seed=7, days=21, shoppers=600, merchants=30))
    policy = GradePolicy.load(RULES / "grades" / "grades.yaml")
    model = MerchantAnomalyModel(n_estimators=25).fit(daily_features(s.events, profiles=s.merchants))
    a = rescore(s.events, policy=policy, model=model, profiles=s.merchants, engine="pandas", parts=3)
    b = rescore(s.events, policy=policy, model=model, profiles=s.merchants, engine="dask", parts=4,
                dask_client=cluster)
    assert len(a.current) == s.events["merchant_id"].nunique()
    assert set(a.current["grade"]) != {"NEW"} or a.daily["changed"].any()
    pd.testing.assert_frame_equal(a.current, b.current, check_dtype=False)
    cols = ["merchant_id", "day", "grade", "changed", "reason", "anomaly", "volume"]
    pd.testing.assert_frame_equal(a.daily[cols], b.daily[cols], check_dtype=False)


def test_twin_in_parts_on_disk_equals_the_pandas_twin(cluster, history, ipintel, list_specs, tmp_path) -> None:
    """A history file split into parts on disk, each part's features written by whoever ran
    it (this process, or the cluster's workers), reads back as the pandas twin's frame."""
    from fengkong.features.offline_parts import offline_features_parts

    events, merchants, paths = history
    entries = list_entries(LISTS, list_specs, paths["blacklist.json"])
    from_file = pd.read_parquet(paths["events.parquet"])
    want = offline_features(from_file, ipintel=ipintel, lists=list_specs, list_entries=entries, profiles=merchants)
    for name, client in (("here", None), ("dask", cluster)):
        parts = offline_features_parts(paths["events.parquet"], tmp_path / name, lists_dir=LISTS, client=client,
                                       partitions=3, lists=list_specs, list_entries=entries, profiles=merchants,
                                       batch_rows=1_500)
        assert len(list((tmp_path / name / "history" / "card").glob("part-*.parquet"))) == 3
        pd.testing.assert_frame_equal(parts.read(), want)
        some = ["merchant.new_card_count_today", "card.count_24h", "event.event_id"]
        pd.testing.assert_frame_equal(parts.read(some), want[some])
    # the parts of the merchant pass are not the whole: their card columns are not written
    one = pd.read_pickle(tmp_path / "here" / "features" / "merchant" / "part-00000.pkl")
    assert "merchant.count_today" in one.columns and "card.count_24h" not in one.columns
    assert 0 < len(one) < len(want)


def test_twin_in_parts_of_a_frame_keeps_its_index(history, ipintel, list_specs, tmp_path) -> None:
    from fengkong.features.offline_parts import offline_features_parts

    events, merchants, _ = history
    want = offline_features(events, ipintel=ipintel, lists=list_specs, profiles=merchants)
    parts = offline_features_parts(events, tmp_path, lists_dir=LISTS, partitions=2, lists=list_specs,
                                   profiles=merchants)
    got = parts.read()
    assert (got.index % 3 == 1).all()  # the history's own index (positions * 3 + 7), not positions
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(KeyError, match="not features"):
        parts.read(["card.no_such_feature"])


def test_rows_without_the_key_spread_over_the_parts(history) -> None:
    """Rows that lack a pass's key (a login has no card) go by their event_id, so that they do
    not all crowd into one part; a retry still goes with its first delivery."""
    events, _, _ = history
    no_card = events["card_fingerprint"].isna()
    assert no_card.sum() > 300
    keys = pd.Series(split_keys(events, "card", 4), index=events.index)
    assert keys[no_card].nunique() == 4 and keys[no_card].value_counts().max() < 0.4 * no_card.sum()
    assert (keys.groupby(events["event_id"]).nunique() == 1).all()


TRIAL_RULE = {"id": "trial.big_new_card", "description": "large amount on a card first seen today",
              "when": "event.amount >= 2000 and card.age_days < 1", "then": "review", "score": 10}


def test_cli_backtest_in_parts_equals_the_whole_twin(cluster, history, tmp_path) -> None:
    """`rules backtest --parts DIR`, here and on the cluster, writes the in-memory run's table and
    changed events, while holding only the columns the two rule sets read."""
    from fengkong.cli import app
    from fengkong.engine.ruleset import load_ruleset
    from fengkong.replay.backtest import backtest, rules_columns
    from fengkong.replay.rulegen import copy_rules_dir, write_rules_file

    _, _, paths = history
    cand = copy_rules_dir(RULES, tmp_path / "cand")
    write_rules_file(cand / "trial.yaml", [TRIAL_RULE])
    address = cluster.scheduler_info()["address"]
    runs = {"memory": [], "parts": ["--parts", str(tmp_path / "p1"), "--partitions", "3"],
            "parts_dask": ["--parts", str(tmp_path / "p2"), "--partitions", "2", "--engine", "dask",
                           "--scheduler", address]}
    got = {}
    for name, extra in runs.items():
        res = CliRunner().invoke(app, ["rules", "backtest", str(paths["events.parquet"]), "--candidate", str(cand),
                                       "--live", str(RULES), "--lists", str(paths["blacklist.json"]),
                                       "--merchants", str(paths["merchants.parquet"]), "--out", str(tmp_path / name),
                                       *extra])
        assert res.exit_code == 0, res.output
        got[name] = [pd.read_csv(tmp_path / name / f) for f in ("backtest.csv", "changed_events.csv")]
    table, changed = got["memory"]
    assert int(table.loc[table["rule"] == TRIAL_RULE["id"], "fires_candidate"].iloc[0]) > 0 and len(changed) > 0
    for name in ("parts", "parts_dask"):
        pd.testing.assert_frame_equal(got[name][0], table)
        pd.testing.assert_frame_equal(got[name][1], changed)
    assert len(list((tmp_path / "p2" / "features" / "merchant").glob("part-*.pkl"))) == 2
    result = backtest(paths["events.parquet"], cand, live_dir=RULES, lists_file=paths["blacklist.json"],
                      merchants_file=paths["merchants.parquet"], parts_dir=tmp_path / "p3", partitions=2)
    assert "card.age_days" in result.features.columns and result.features.shape[1] < 100  # the whole twin: > 140
    live, candidate = load_ruleset(RULES), load_ruleset(cand)
    try:
        assert set(result.features.columns) <= set(rules_columns(live, candidate))
    finally:
        live.close()
        candidate.close()


def test_cli_rescore_reading_the_history_on_the_workers_equals_pandas(cluster, history, tmp_path) -> None:
    """`fengkong rescore --engine dask --history-on-workers`: the workers read the Parquet history
    (only the columns the job reads) and the grades are pandas' on the whole frame."""
    from fengkong.cli import app
    from fengkong.training.grade_policy import GradePolicy
    from fengkong.training.rescore import rescore

    events, merchants, paths = history
    (tmp_path / "artifacts").mkdir()
    address = cluster.scheduler_info()["address"]
    common = ["rescore", "--history", str(paths["events.parquet"]), "--merchants", str(paths["merchants.parquet"]),
              "--artifacts", str(tmp_path / "artifacts")]
    for name, extra in (("pandas", []), ("dask", ["--engine", "dask", "--scheduler", address, "--partitions", "3",
                                                  "--history-on-workers"])):
        res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
    a, b = (pd.read_csv(tmp_path / name / "grades.csv") for name in ("pandas", "dask"))
    want = rescore(events, policy=GradePolicy.load(RULES / "grades" / "grades.yaml"), model=None, profiles=merchants)
    want.current.to_csv(tmp_path / "want.csv", index=False)
    assert len(a) == events["merchant_id"].nunique() and a["grade"].nunique() > 1
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "want.csv"))
    pd.testing.assert_frame_equal(b, a)
    res = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "x"), "--history-on-workers"])
    assert res.exit_code == 2 and "--history-on-workers" in res.output
