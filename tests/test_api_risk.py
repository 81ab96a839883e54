"""The fused risk on the decision API: null without models, the artifact's fusion of
model.txn_risk and the rules-alone score with them (real small artifacts trained here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api_fixtures import DECIDE_KEY, T0, Served, event_id, payment, settings
from fengkong.api.schemas import DecisionOut, DecisionRecordOut
from fengkong.models.fusion import MODEL_PREFIX

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"


@pytest.fixture(scope="module")
def artifacts_root(tmp_path_factory):
    from fengkong.training.train import train_transactions, transaction_frame
    from fengkong.simulation import SimConfig, run

    sim = run(SimConfig(seed=3, days=14, shoppers=800, merchants=40))
    feats = transaction_frame(sim.events, profiles=sim.merchants, lists_dir=RULES / "lists")
    root = tmp_path_factory.mktemp("artifacts")
    train_transactions(feats, root=root, max_iter=20, habit_trees=20, rules_dir=RULES, labels="reported",
                       events=sim.events)
    return root


def _decide(c, ev: dict) -> dict:
    r = c.post("/v1/decisions", json=ev)
    assert r.status_code == 200, r.text
    return DecisionOut.model_validate(r.json()).model_dump()


def _record(c, decision_id: str) -> dict:
    r = c.get(f"/v1/decisions/{decision_id}")
    assert r.status_code == 200, r.text
    return DecisionRecordOut.model_validate(r.json()).model_dump()


def test_without_models_risk_is_null(redis_server):
    with Served(settings(redis_server.url, "trisk0")) as api, api.client(DECIDE_KEY) as c:
        assert not api.runtime.models.available
        out = _decide(c, payment(ip="185.220.101.7"))
        assert out["risk"] is None and out["decision"] == "review"
        assert out["models"].startswith("rules-only")  # each decision says it ran without models
        assert "risk" in c.post("/v1/decisions", json=payment()).json()  # present, as null
        rec = _record(c, out["decision_id"])
        assert rec["risk"] is None and "model.risk" not in rec["features"]


def test_with_a_fusion_artifact_risk_is_the_fused_score(redis_server, artifacts_root):
    with Served(settings(redis_server.url, "trisk1", artifacts_dir=artifacts_root)) as api, \
            api.client(DECIDE_KEY) as c:
        fusion = api.runtime.models.fusion
        assert fusion is not None, api.runtime.models.status
        for ev in (payment(), payment(ip="185.220.101.7", amount="4990.00")):
            out = _decide(c, ev)
            assert not out["degraded"]
            assert isinstance(out["risk"], float) and 0.0 < out["risk"] < 1.0
            assert "transactions" in out["models"] and not out["models"].startswith("rules-only")
            rec = _record(c, out["decision_id"])
            assert rec["risk"] == out["risk"]
            # the record's features are what the rules read: the risk is not among them
            assert "model.risk" not in rec["features"] and rec["features"]["model.txn_risk"] is not None
            alone = sum(r["score"] for r in rec["reasons"] if not any(k.startswith(MODEL_PREFIX) for k in r["values"]))
            assert out["risk"] == pytest.approx(fusion.score_one(rec["features"]["model.txn_risk"], alone))
            again = c.post("/v1/decisions", json=ev).json()  # a retry gets the stored answer, risk included
            assert again["duplicate"] and again["risk"] == out["risk"]
        login = _decide(c, {"event_id": event_id("login"), "type": "login", "occurred_at": T0.isoformat(),
                            "user_id": "u-risk-login", "ip": "113.5.6.7", "device_id": "dev-risk"})
        assert login["risk"] is None  # no txn_risk for a non-payment


def test_a_failing_fusion_costs_only_the_risk(redis_server, artifacts_root):
    with Served(settings(redis_server.url, "trisk2", artifacts_dir=artifacts_root)) as api, \
            api.client(DECIDE_KEY) as c:
        def boom(model_outputs, decision):
            raise RuntimeError("fusion exploded")

        api.runtime.models.fuse = boom
        out = _decide(c, payment(ip="185.220.101.7"))
        assert out["risk"] is None and not out["degraded"] and out["decision"] == "review"
