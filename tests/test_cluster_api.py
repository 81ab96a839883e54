"""The decision service on a real 3-master Redis Cluster (``FENGKONG_REDIS_URL`` is the
``redis+cluster://`` URL of tests/redis_cluster.py): the service tests of test_api.py
run here unchanged against it (contract, idempotency also across two app instances,
outcomes, merchant profiles, lists, audit, health), then one master is killed: the
answers degrade by the failure policy, the worker's snapshot still denies a
blacklisted card, and decisions are whole again once the master is back on its port
and directory."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from api_fixtures import ADMIN_KEY, DECIDE_KEY, Served, payment, settings
from redis_cluster import master_of
from test_api import (PREFIX, decide, stored_features,  # noqa: F401  (the tests below run here on the cluster)
                      test_a_decision_has_every_field_of_the_contract_and_is_stored_with_its_explanation,
                      test_a_merchant_profile_is_read_by_the_next_decision,
                      test_an_event_id_reused_by_another_kind_of_event_is_409,
                      test_concurrent_duplicates_on_two_app_instances_get_one_decision,
                      test_every_decision_is_in_the_audit_stream_and_file, test_health_ready_and_metrics,
                      test_ip_lists_take_cidrs_and_refuse_bad_entries,
                      test_list_changes_take_effect_on_the_next_decision_and_are_audited,
                      test_outcomes_update_features_without_a_decision,
                      test_the_same_event_id_returns_the_stored_decision_and_counts_nothing,
                      test_the_same_event_id_with_a_different_body_is_409_and_counts_nothing)
from fengkong.features import keys


@pytest.fixture(scope="module")
def redis_server(redis_cluster):
    """test_api.py's server fixture, as the cluster (its tests read only ``.url``)."""
    return SimpleNamespace(url=redis_cluster.url)


@pytest.fixture
def redis_client(cluster_client):
    return cluster_client


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory):
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def api(redis_server, audit_path):
    with Served(settings(redis_server.url, PREFIX, audit_file=audit_path)) as served:
        assert type(served.runtime.store).__name__ == "ClusterOnlineStore"
        yield served


@pytest.fixture
def c(api):
    with api.client(DECIDE_KEY) as client:
        yield client


@pytest.fixture
def admin(api):
    with api.client(ADMIN_KEY) as client:
        yield client


def _until(predicate, limit_s: float = 20.0):
    stop = time.monotonic() + limit_s
    while True:
        out = predicate()
        if out or time.monotonic() > stop:
            return out
        time.sleep(0.1)


def test_a_killed_master_degrades_by_policy_the_snapshot_still_denies_and_it_recovers(redis_cluster):
    prefix = "tclkill"
    base = dict(breaker_s=0.2, snapshot_refresh_s=0.05)
    with Served(settings(redis_cluster.url, prefix, **base)) as api, \
            Served(settings(redis_cluster.url, prefix, failure_policy="fail_closed", **base)) as closed, \
            api.client(DECIDE_KEY) as c, closed.client(DECIDE_KEY) as cc, api.client(ADMIN_KEY) as admin:
        stolen = payment()
        card = stolen["card"]["fingerprint"]
        assert admin.post("/v1/lists/blocked_cards/entries", json={"entries": [card]}).status_code == 200
        assert decide(c, payment(card=stolen["card"]))["decision"] == "deny"
        # a payment whose card lives on the shard about to die, and whose event id does not
        victim = master_of(redis_cluster, keys.entity_key(prefix, "card", card, "x"))
        plain = payment(card=dict(stolen["card"], fingerprint=card + "-x"))
        while (master_of(redis_cluster, keys.entity_key(prefix, "card", plain["card"]["fingerprint"], "x")) != victim
               or master_of(redis_cluster, keys.request_key(prefix, plain["event_id"])) == victim):
            plain = payment(card=dict(plain["card"], fingerprint=plain["card"]["fingerprint"] + "x"))
        assert _until(lambda: cc.get("/readyz").status_code == 200)
        # the other app (another worker) picked the list change up into its snapshot
        assert _until(lambda: closed.runtime.snapshot.current.lists["blocked_cards"].contains(card) is True)
        redis_cluster.kill(victim)
        try:
            denied = decide(c, payment(card=stolen["card"]))
            assert denied["degraded"] and denied["decision"] == "deny", denied
            time.sleep(0.3)  # past the breaker the deny opened: this one reaches the cluster
            opened = decide(c, plain)
            assert opened["degraded"] and opened["decision"] == "allow" and "feature store" in opened["degraded_reason"]
            shut = decide(cc, dict(plain, event_id=plain["event_id"] + "-c"))
            assert shut["degraded"] and shut["decision"] == "review", shut
            assert decide(cc, payment(card=stolen["card"]))["decision"] == "deny"
        finally:
            redis_cluster.restart(victim)
        whole = _until(lambda: (lambda out: out if not out["degraded"] else None)(decide(c, payment())))
        assert whole and not whole["degraded"], whole
        again = _until(lambda: (lambda out: out if not out["degraded"] else None)(decide(c, payment(card=stolen["card"]))))
        assert again and again["decision"] == "deny" and not again["degraded"]
        # the event counted on the live shards only: its claim says so, and a retry counts
        # nothing anywhere (answered by the policy, without opening the breaker)
        retry = decide(c, plain)
        assert retry["degraded"] and retry["decision"] == "allow" and not retry["duplicate"]
        assert not decide(c, payment())["degraded"]
        nxt = decide(c, payment(card=plain["card"]))
        assert not nxt["degraded"] and stored_features(c, nxt["decision_id"])["card.count_10m"] == 0


def test_a_review_on_the_cluster_becomes_a_case_its_label_reaches_the_features_and_webhooks_tell(redis_cluster,
                                                                                                 tmp_path):
    """The case consumer, the analysts' labels (one script per slot, as a decision's
    features) and the webhooks' delivery loop use the cluster too; case.opened and
    case.resolved reach a subscribed receiver, signed."""
    from test_cases_api import ANALYST_KEY, CASE_KEYS, review_resolve_fraud_and_pay_again
    from webhook_receiver import Receiver

    from fengkong.webhooks import verify

    sqlite_url = f"sqlite:///{tmp_path / 'cases.sqlite3'}"
    s = settings(redis_cluster.url, "tclcase", database_url=sqlite_url, api_keys=CASE_KEYS, webhook_poll_s=0.05)
    with Served(s) as api, api.client(DECIDE_KEY) as pay, api.client(ANALYST_KEY) as desk, \
            api.client(ADMIN_KEY) as admin, Receiver() as receiver:
        sub = admin.post("/v1/webhooks", json={"url": receiver.url, "kinds": [
            "decision.review", "case.opened", "case.resolved"]})
        assert sub.status_code == 201, sub.text
        review_resolve_fraud_and_pay_again(pay, desk)

        def kinds() -> set[str]:
            return {x["headers"]["x-fengkong-event"] for x in receiver.accepted()}

        assert _until(lambda: {"decision.review", "case.opened", "case.resolved"} <= kinds()), kinds()
        secret = sub.json()["secret"]
        assert all(verify(secret, x["headers"]["x-fengkong-signature"], x["body"]) for x in receiver.accepted())
        resolved = [x for x in receiver.bodies() if x["kind"] == "case.resolved"]
        assert resolved[0]["data"]["disposition"] == "fraud"
