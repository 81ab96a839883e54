"""The decision service over real HTTP against a real Redis: contract, keys and
scopes, idempotency (also concurrent, across two app instances), outcomes,
merchants, lists, rules, audit, metrics."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from api_fixtures import ADMIN_KEY, DECIDE_KEY, REPORT_KEY, T0, Served, event_id, payment, settings
from fengkong.api.audit import read_entry
from fengkong.api.schemas import (DecisionOut, DecisionRecordOut, DryRunOut, ListChangeOut, MerchantOut,
                                  OutcomeOut, ReloadOut, RulesOut)

PREFIX = "tapi"


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory):
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def api(redis_server, audit_path):
    with Served(settings(redis_server.url, PREFIX, audit_file=audit_path)) as served:
        yield served


@pytest.fixture
def c(api):
    with api.client(DECIDE_KEY) as client:
        yield client


@pytest.fixture
def admin(api):
    with api.client(ADMIN_KEY) as client:
        yield client


def decide(client: httpx.Client, ev: dict) -> dict:
    r = client.post("/v1/decisions", json=ev)
    assert r.status_code == 200, r.text
    return r.json()


def stored_features(client: httpx.Client, decision_id: str) -> dict:
    r = client.get(f"/v1/decisions/{decision_id}")
    assert r.status_code == 200, r.text
    return r.json()["features"]


# --- the contract -----------------------------------------------------------------------------
def test_a_decision_has_every_field_of_the_contract_and_is_stored_with_its_explanation(c):
    ev = payment(ip="185.220.101.7")  # a Tor exit in the bundled list: ip.tor_exit fires
    out = DecisionOut.model_validate(decide(c, ev))
    assert out.decision == "review" and not out.degraded and out.degraded_reason is None
    tor = next(r for r in out.reasons if r.id == "ip.tor_exit")
    assert tor.values == {"ip.is_tor": True} and tor.mode == "enforce"
    assert out.score == sum(r.score for r in out.reasons)
    assert out.merchant_grade == "NEW" and out.ruleset_version and out.event_id == ev["event_id"]
    record = DecisionRecordOut.model_validate(c.get(f"/v1/decisions/{out.decision_id}").json())
    assert record.decision_id == out.decision_id and record.caller == "gateway"
    assert record.event["event_id"] == ev["event_id"] and record.features["ip.is_tor"] is True
    assert "card.count_10m" in record.features and record.thresholds


def test_unknown_decision_id_is_404_naming_it(c):
    r = c.get("/v1/decisions/d_000000000000000000000000")
    assert r.status_code == 404 and r.json()["field"] == "decision_id"


def test_openapi_documents_the_event_and_every_resource(c):
    spec = c.get("/openapi.json").json()
    schemas = set(spec["components"]["schemas"])
    assert {"Event", "Card", "DecisionOut", "DecisionRecordOut", "MerchantProfileIn"} <= schemas
    body = spec["paths"]["/v1/decisions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Event"}
    for path in ("/v1/events", "/v1/decisions/{decision_id}", "/v1/merchants/{merchant_id}", "/v1/lists/{name}",
                 "/v1/rules", "/v1/rules/reload", "/v1/rules/dry-run", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    # every keyed route says so, whether it takes the key as a dependency or checks it itself
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    for path, method in (("/v1/decisions", "post"), ("/v1/events", "post"), ("/v1/lists", "get"),
                         ("/v1/decisions/{decision_id}", "get")):
        assert spec["paths"][path][method]["security"] == [{"APIKeyHeader": []}], path


def test_decision_ids_are_unique_random_hex_also_in_a_forked_worker():
    import os

    from fengkong.api.service.ids import new_decision_id

    ids = [new_decision_id() for _ in range(2000)]  # several refills of the id pool
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and i.startswith("d_") and int(i[2:], 16) >= 0 for i in ids)
    new_decision_id()  # the pool is not empty now: a fork must not inherit it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(new_decision_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1 << 16).decode()
    os.close(read)
    child_ids = {child[i:i + 26] for i in range(0, len(child), 26)}
    assert len(child_ids) == 300 and not child_ids & {new_decision_id() for _ in range(300)}


def _exchange(served: Served, ev: dict, refund: dict) -> list[tuple[int, object]]:
    """One scripted conversation with the two payment-flow routes: what each answer
    says, minus its ids, timings and the rule set's load time."""
    def shape(r: httpx.Response) -> tuple[int, object]:
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in ("decision_id", "event_id", "latency_ms",
                                                                "ruleset_version")}
            if r.status_code == 422:
                assert body["detail"].startswith(f"{body['field']}: ")
                body = {"field": body["field"]}
        return r.status_code, body

    out = []
    with served.client(DECIDE_KEY) as c, served.client(REPORT_KEY) as rep, served.client(None) as anon:
        out.append(shape(c.post("/v1/decisions", json=ev)))
        out.append(shape(c.post("/v1/decisions", json=ev)))  # the same event_id: the stored decision
        out.append(shape(anon.post("/v1/decisions", json=ev, headers={"Authorization": f"Bearer {DECIDE_KEY}"})))
        out.append(shape(anon.post("/v1/decisions", json=ev)))  # 401
        out.append(shape(rep.post("/v1/decisions", json=ev)))  # 403
        out.append(shape(c.post("/v1/decisions", json=dict(ev, amount=12.5))))  # 422 naming amount
        out.append(shape(c.post("/v1/decisions", content=b"{not json", headers={"content-type": "application/json"})))
        out.append(shape(c.post("/v1/decisions", content=b"x" * 20_000)))  # 413 by its Content-Length
        out.append(shape(c.post("/v1/decisions", content=iter([b"x" * 9_000] * 3))))  # 413 as it streams
        streamed = json.dumps(ev).encode()
        out.append(shape(c.post("/v1/decisions", content=iter([streamed[:40], streamed[40:]]))))  # duplicate
        out.append(shape(c.get("/v1/decisions")))  # 405
        out.append(shape(rep.post("/v1/events", json=refund)))
        out.append(shape(rep.post("/v1/events", json=refund)))  # counted once
        out.append(shape(c.post("/v1/events", json=refund)))  # 403
    return out


#: What each step of `_exchange` answers (ids, timings and the rule set's load time left out).
_DECISION = {"decision": "allow", "score": 0.0, "reasons": [], "merchant_grade": "NEW", "degraded": False,
             "degraded_reason": None, "lane": None, "risk": None, "models": "rules-only: no model artifacts loaded"}
_401 = {"detail": "X-API-Key: missing or unknown API key (send it in the X-API-Key header)", "field": "X-API-Key"}
_413 = {"detail": "body: is larger than the limit of 16384 bytes", "field": "body"}
GOLDEN: list[tuple[int, dict]] = [
    (200, _DECISION | {"duplicate": False}),
    (200, _DECISION | {"duplicate": True}),
    (200, _DECISION | {"duplicate": True}),
    (401, _401),
    (403, {"detail": "X-API-Key: the key 'ledger' lacks the scope decide", "field": "X-API-Key"}),
    (422, {"field": "amount"}),  # the event contract's wording is its own (tests/test_events.py)
    (400, {"detail": "body: is not valid JSON (line 1 column 2 (char 1))", "field": "body"}),
    (413, _413),
    (413, _413),
    (200, _DECISION | {"duplicate": True}),
    (405, {"detail": "Method Not Allowed"}),
    (200, {"type": "refund", "recorded": True, "duplicate": False}),
    (200, {"type": "refund", "recorded": False, "duplicate": True}),
    (403, {"detail": "X-API-Key: the key 'gateway' lacks the scope report", "field": "X-API-Key"}),
]


def test_the_payment_routes_answer_the_same_on_every_path(redis_server):
    """POST /v1/decisions and /v1/events are answered by the app's fast layer; with
    telemetry on, or the fast layer off, their FastAPI routes answer. Every step of
    one conversation (decisions, duplicates, key refusals, 422, 400, both 413s, an
    outcome and its retry) gets the golden answer on all three."""
    apps = {"fast": {}, "telemetry": {"otel": True}, "fastapi": {}}
    answers = {}
    for name, overrides in apps.items():
        with Served(settings(redis_server.url, f"tpath{name}", **overrides), fast_path=name != "fastapi") as served:
            # the same events on each app (the apps keep their keys under different prefixes)
            ev = payment(event_id=event_id("path"), merchant_id="m-path")
            refund = {"event_id": event_id("path"), "type": "refund", "merchant_id": "m-path", "amount": "5.00",
                      "occurred_at": (T0 + timedelta(minutes=5)).isoformat(), "refers_to": ev["event_id"]}
            answers[name] = _exchange(served, ev, refund)
    assert answers["fast"] == GOLDEN
    assert answers["telemetry"] == GOLDEN
    assert answers["fastapi"] == GOLDEN


# --- keys and scopes --------------------------------------------------------------------------
def test_missing_or_wrong_key_is_401_and_missing_scope_is_403(api):
    ev = payment()
    with api.client(None) as anon, api.client("not-a-key-at-all-0000") as wrong, api.client(REPORT_KEY) as rep:
        assert anon.post("/v1/decisions", json=ev).status_code == 401
        assert wrong.post("/v1/decisions", json=ev).status_code == 401
        assert rep.post("/v1/decisions", json=ev).status_code == 403
    with api.client(DECIDE_KEY) as dec:
        assert dec.get("/v1/lists").status_code == 403
        assert dec.post("/v1/rules/reload").status_code == 403
        assert dec.put("/v1/merchants/m-x", json={"grade": "A"}).status_code == 403
        assert dec.post("/v1/events", json={"event_id": event_id(), "type": "refund", "merchant_id": "m",
                                            "amount": 1, "occurred_at": T0.isoformat()}).status_code == 403
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {DECIDE_KEY}"}) as bearer:
        assert bearer.post("/v1/decisions", json=ev).status_code == 200
    with api.client(ADMIN_KEY) as adm:  # admin implies every scope
        assert adm.get("/v1/lists").status_code == 200


def test_keys_are_never_logged_nor_audited(api, caplog, audit_path, redis_client):
    caplog.set_level(logging.DEBUG)
    with api.client(DECIDE_KEY) as dec, api.client(ADMIN_KEY) as adm, api.client("wrong-key-xyz-1234567") as bad:
        dec.post("/v1/decisions", json=payment())
        bad.post("/v1/decisions", json=payment())
        adm.post("/v1/lists/blocked_users/entries", json={"entries": ["u-audit"]})
    logged = caplog.text
    stream = b"".join(b"".join(v.values()) for _, v in redis_client.xrange(f"{PREFIX}:v1:audit:decisions")
                      + redis_client.xrange(f"{PREFIX}:v1:audit:changes"))
    for secret in (DECIDE_KEY, ADMIN_KEY, "wrong-key-xyz-1234567"):
        assert secret not in logged
        assert secret.encode() not in stream
        assert secret not in audit_path.read_text()
    assert b"gateway" in stream and b'"actor":"analyst-ana"' in stream


# --- idempotency ------------------------------------------------------------------------------
def test_the_same_event_id_returns_the_stored_decision_and_counts_nothing(c):
    ev = payment()
    first = decide(c, ev)
    again = decide(c, dict(reversed(list(ev.items()))))  # key order does not make a different body
    assert again["decision_id"] == first["decision_id"] and again["duplicate"] and not first["duplicate"]
    nxt = decide(c, payment(card=ev["card"], occurred_at=(T0 + timedelta(seconds=30)).isoformat()))
    assert stored_features(c, nxt["decision_id"])["card.count_10m"] == 1  # counted once, not twice


def test_the_same_event_id_with_a_different_body_is_409_and_counts_nothing(c):
    ev = payment()
    decide(c, ev)
    r = c.post("/v1/decisions", json=dict(ev, amount="999.00", card=dict(ev["card"], fingerprint="tok-other")))
    assert r.status_code == 409 and r.json()["field"] == "event_id"
    nxt = decide(c, payment(card=dict(ev["card"], fingerprint="tok-other"),
                            occurred_at=(T0 + timedelta(seconds=5)).isoformat()))
    assert stored_features(c, nxt["decision_id"])["card.count_10m"] == 0


def test_concurrent_duplicates_on_two_app_instances_get_one_decision(redis_server):
    """Two apps (as two workers would be) share only Redis; 24 simultaneous requests
    with one event_id: one decision, counted once, returned to all."""
    with Served(settings(redis_server.url, "tdup")) as api, Served(settings(redis_server.url, "tdup")) as other:
        ev = payment()
        clients = [api.client(DECIDE_KEY), other.client(DECIDE_KEY)]
        barrier = threading.Barrier(24)

        def send(i: int) -> dict:
            barrier.wait()
            r = clients[i % 2].post("/v1/decisions", json=ev)
            assert r.status_code == 200, r.text
            return r.json()

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(send, range(24)))
        for cl in clients:
            cl.close()
        assert len({a["decision_id"] for a in answers}) == 1
        assert sum(not a["duplicate"] for a in answers) == 1
        assert not any(a["degraded"] for a in answers)
        with api.client(DECIDE_KEY) as c:
            nxt = decide(c, payment(card=ev["card"], occurred_at=(T0 + timedelta(seconds=1)).isoformat()))
            assert stored_features(c, nxt["decision_id"])["card.count_10m"] == 1


# --- outcomes ---------------------------------------------------------------------------------
def test_outcomes_update_features_without_a_decision(api, c):
    merchant = f"m-out-{event_id()}"
    with api.client(REPORT_KEY) as rep:
        pay = payment(merchant_id=merchant)
        decide(c, pay)
        refund = {"event_id": event_id("rf"), "type": "refund", "occurred_at": (T0 + timedelta(minutes=5)).isoformat(),
                  "merchant_id": merchant, "amount": "50.00", "refers_to": pay["event_id"]}
        out = OutcomeOut.model_validate(rep.post("/v1/events", json=refund).json())
        assert out.recorded and not out.duplicate
        again = rep.post("/v1/events", json=refund).json()
        assert again["duplicate"] and not again["recorded"]
        assert rep.post("/v1/events", json=dict(refund, amount="60.00")).status_code == 409
        wrong = rep.post("/v1/events", json=payment())
        assert wrong.status_code == 422 and wrong.json()["field"] == "type"
    r = c.post("/v1/decisions", json=dict(refund, event_id=event_id("rf")))
    assert r.status_code == 422 and r.json()["field"] == "type"
    decide(c, payment(merchant_id=merchant, occurred_at=(T0 + timedelta(minutes=10)).isoformat()))
    m = MerchantOut.model_validate(c.get(f"/v1/merchants/{merchant}").json())
    assert m.features["merchant.refund_sum_30d"] == 50.0  # once, not 100
    assert all(k.startswith("merchant.") for k in m.features) and "merchant.volume_today" in m.features


# --- merchants --------------------------------------------------------------------------------
def test_a_merchant_profile_is_read_by_the_next_decision(c, admin):
    merchant = f"m-prof-{event_id()}"
    assert c.get(f"/v1/merchants/{merchant}").status_code == 404
    r = admin.put(f"/v1/merchants/{merchant}", json={"grade": "B", "single_limit_minor": 10_000,
                                                      "onboarded_at": "2026-01-05", "mcc": "5411", "reason": "kyc"})
    assert r.status_code == 200, r.text
    m = MerchantOut.model_validate(r.json())
    assert m.grade == "B" and m.profile["onboarded_at"] == "2026-01-05" and m.profile["single_limit"] == "10000"
    out = decide(c, payment(merchant_id=merchant, amount="150.00"))  # 15,000 fen > 10,000
    assert out["merchant_grade"] == "B"
    assert "limits.over_single_limit" in [x["id"] for x in out["reasons"]]
    assert admin.put(f"/v1/merchants/{merchant}", json={"grade": "Z"}).json()["field"] == "grade"
    assert admin.put(f"/v1/merchants/{merchant}", json={"limit": 1}).status_code == 422


def test_planned_promotions_are_checked_stored_audited_and_read_by_the_next_decision(c, admin, redis_client):
    merchant = f"m-promo-{event_id()}"
    window = {"start": (T0 - timedelta(hours=2)).isoformat(), "end": (T0 + timedelta(hours=10)).isoformat(),
              "expected_multiple": 6}
    assert c.put(f"/v1/merchants/{merchant}/promotions", json={"promotions": [window]}).status_code == 403
    r = admin.put(f"/v1/merchants/{merchant}/promotions", json={"promotions": [window]})
    assert r.status_code == 200, r.text
    assert r.json()["promotions"][0]["expected_multiple"] == 6.0
    assert c.get(f"/v1/merchants/{merchant}/promotions").json()["promotions"] == r.json()["promotions"]
    out = decide(c, payment(merchant_id=merchant))
    feats = stored_features(c, out["decision_id"])
    assert feats["merchant.in_promotion"] is True and feats["merchant.promotion_multiple"] == 6.0
    later = decide(c, payment(merchant_id=merchant, occurred_at=(T0 + timedelta(hours=11)).isoformat()))
    assert stored_features(c, later["decision_id"])["merchant.in_promotion"] is False
    # bad campaigns: 422 naming the field, nothing stored
    bad = admin.put(f"/v1/merchants/{merchant}/promotions",
                    json={"promotions": [{**window, "end": (T0 - timedelta(hours=3)).isoformat()}]})
    assert bad.status_code == 422 and bad.json()["field"] == "promotions[0].end", bad.text
    bad = admin.put(f"/v1/merchants/{merchant}/promotions", json={"promotions": [{**window, "expected_multiple": 500}]})
    assert bad.status_code == 422 and bad.json()["field"] == "promotions[0].expected_multiple", bad.text
    assert admin.put(f"/v1/merchants/{merchant}/promotions", json={"promotions": [window] * 51}).status_code == 422
    assert c.get(f"/v1/merchants/{merchant}/promotions").json()["promotions"] == r.json()["promotions"]
    changes = [json.loads(v[b"record"]) for _, v in redis_client.xrange(f"{PREFIX}:v1:audit:changes")]
    mine = [x for x in changes if x.get("action") == "merchant.promotions" and x.get("merchant_id") == merchant]
    assert len(mine) == 1 and mine[0]["promotions"][0]["expected_multiple"] == 6.0 and mine[0]["actor"]
    # an empty list removes them
    assert admin.put(f"/v1/merchants/{merchant}/promotions", json={"promotions": []}).json()["promotions"] == []


# --- lists ------------------------------------------------------------------------------------
def test_list_changes_take_effect_on_the_next_decision_and_are_audited(c, admin, redis_client):
    card = {"fingerprint": f"tok-stolen-{event_id()}", "bin": "622202", "type": "debit", "issuer_country": "CN"}
    assert decide(c, payment(card=card))["decision"] == "allow"
    r = admin.post("/v1/lists/blocked_cards/entries", json={"entries": [card["fingerprint"]], "reason": "case 17"})
    assert ListChangeOut.model_validate(r.json()).changed == 1
    assert card["fingerprint"] in admin.get("/v1/lists/blocked_cards").json()["entries"]
    blocked = decide(c, payment(card=card))
    assert blocked["decision"] == "deny" and any(x["values"].get("lists.blocked_cards") for x in blocked["reasons"])
    assert admin.delete(f"/v1/lists/blocked_cards/entries/{card['fingerprint']}").json()["changed"] == 1
    assert decide(c, payment(card=card))["decision"] == "allow"
    changes = [json.loads(v[b"record"]) for _, v in redis_client.xrange(f"{PREFIX}:v1:audit:changes")]
    mine = [x for x in changes if card["fingerprint"] in x.get("entries", [])]
    assert [x["action"] for x in mine] == ["list.add", "list.remove"]
    assert all(x["actor"] == "analyst-ana" and x["ruleset_version"] and x["at"] for x in mine)


def test_ip_lists_take_cidrs_and_refuse_bad_entries(c, admin):
    r = admin.post("/v1/lists/blocked_ips/entries", json={"entries": ["203.0.113.0/24"]})
    assert r.status_code == 200 and r.json()["entries"] == ["203.0.113.0/24"]
    assert decide(c, payment(ip="203.0.113.77"))["decision"] == "deny"
    assert admin.delete("/v1/lists/blocked_ips/entries/203.0.113.0/24").json()["changed"] == 1
    bad = admin.post("/v1/lists/blocked_ips/entries", json={"entries": ["10.0.0.1", "not-an-ip"]})
    assert bad.status_code == 422 and bad.json()["field"] == "entries[1]"
    pan = admin.post("/v1/lists/blocked_cards/entries", json={"entries": ["4111111111111111"]})
    assert pan.status_code == 422 and "4111" not in pan.text
    assert admin.get("/v1/lists/no_such_list").status_code == 404


# --- rules ------------------------------------------------------------------------------------
def test_rules_version_reload_and_audit(admin, redis_client):
    info = RulesOut.model_validate(admin.get("/v1/rules").json())
    assert info.rules > 0 and info.version and info.content_hash and info.version.startswith(info.content_hash[:12])
    # the files are those of the live set: a no-op that says so (nothing compiled, no new version)
    out = ReloadOut.model_validate(admin.post("/v1/rules/reload").json())
    assert out.ok and not out.changed and out.unchanged and out.version == out.previous_version == info.version
    assert "nothing compiled" in out.message
    assert RulesOut.model_validate(admin.get("/v1/rules").json()).loaded_at == info.loaded_at  # not rebuilt
    changes = [json.loads(v[b"record"]) for _, v in redis_client.xrange(f"{PREFIX}:v1:audit:changes")]
    reload = [x for x in changes if x["action"] == "rules.reload"][-1]
    assert reload["actor"] == "analyst-ana" and reload["ruleset_version"] == out.version
    assert reload["result"]["unchanged"] is True and "nothing compiled" in reload["result"]["message"]


def test_dry_run_tries_a_candidate_on_a_decided_event_without_deploying_or_counting(c, admin):
    ev = payment(amount="4000.00")
    first = decide(c, ev)
    assert first["decision"] == "allow"
    candidate = ("rules:\n  - id: test.big_amount\n    description: big\n    when: event.amount >= 3000\n"
                 "    then: deny\n    score: 100\n    tags: [test]\n")
    r = admin.post("/v1/rules/dry-run", json={"event": ev, "files": {"zz_candidate.yaml": candidate}})
    assert r.status_code == 200, r.text
    out = DryRunOut.model_validate(r.json())
    assert out.candidate["decision"] == "deny" and out.live["decision"] == "allow" and out.changed
    assert out.features_source == "stored"
    assert decide(c, ev)["decision"] == "allow"  # not deployed
    nxt = decide(c, payment(card=ev["card"], occurred_at=(T0 + timedelta(seconds=2)).isoformat()))
    assert stored_features(c, nxt["decision_id"])["card.count_10m"] == 1  # the dry run counted nothing
    broken = admin.post("/v1/rules/dry-run", json={"features": {"event.amount": 1.0},
                                                   "files": {"zz.yaml": "rules:\n  - id: x\n    when: nope >\n"}})
    assert broken.status_code == 422 and broken.json()["problems"]
    posted = admin.post("/v1/rules/dry-run", json={"features": {"ip.is_tor": True}}).json()
    assert posted["candidate"]["decision"] == "review" and posted["features_source"] == "posted"
    unknown = admin.post("/v1/rules/dry-run", json={"event": payment()})
    assert unknown.status_code == 404 and unknown.json()["field"] == "event.event_id"
    assert admin.post("/v1/rules/dry-run", json={"features": {"a": 1}, "files": {"../x.yaml": ""}}).status_code == 422


# --- audit, health, metrics -------------------------------------------------------------------
def test_every_decision_is_in_the_audit_stream_and_file(c, redis_client, audit_path):
    ev = payment(ip="185.220.101.7")
    out = decide(c, ev)
    entries = [read_entry(i, v) for i, v in redis_client.xrange(f"{PREFIX}:v1:audit:decisions")]
    rec = next(x for x in entries if x["decision_id"] == out["decision_id"])
    # the stream holds a reference to the decision, not a second copy of the record
    assert rec["rules"] == [r["id"] for r in out["reasons"]] and "ip.tor_exit" in rec["rules"]
    assert rec["ruleset_version"] == out["ruleset_version"] and rec["decision"] == out["decision"]
    assert rec["event_id"] == out["event_id"] and rec["caller"] == "gateway" and rec["at"]
    assert rec["score"] == out["score"] and type(rec["score"]) is type(out["score"])
    assert rec["degraded"] is False and rec["card"] == ev["card"]["fingerprint"] and rec["shadow"] == []
    assert "event" not in rec and "features" not in rec
    # its values only, under the same field names in every entry: no JSON document per entry
    raw = next(v for _, v in redis_client.xrange(f"{PREFIX}:v1:audit:decisions")
               if v.get(b"decision_id") == out["decision_id"].encode())
    assert b"record" not in raw and raw[b"rules"].split() == [r.encode() for r in rec["rules"]]
    # an entry of the format before (one JSON field) still reads
    old = {"decision_id": "d_1", "event_id": "e1", "rules": ["a"], "at": "2026-01-01T00:00:00+00:00"}
    assert read_entry(b"1-0", {b"record": json.dumps(old).encode()}) == old
    # the file has the whole record
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    line = next(x for x in lines if x.get("decision_id") == out["decision_id"])
    assert line["event"]["ip"] == "185.220.101.7" and line["features"]["ip.is_tor"] is True
    assert [r["id"] for r in line["reasons"]] == [r["id"] for r in out["reasons"]]


def test_health_ready_and_metrics(api, c):
    assert c.get("/healthz").status_code == 200
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
    before = _metric(c.get("/metrics").text, 'fengkong_decisions_total{decision="review",degraded="false"}')
    decide(c, payment(ip="185.220.101.7"))
    text = c.get("/metrics").text
    assert _metric(text, 'fengkong_decisions_total{decision="review",degraded="false"}') == before + 1
    assert _metric(text, 'fengkong_rule_fires_total{mode="enforce",rule="ip.tor_exit"}') >= 1
    assert "fengkong_decision_latency_seconds_bucket" in text and "fengkong_degraded_total" in text


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_event_id_reused_by_another_kind_of_event_is_409(api, c):
    """Found by the property test: the store cannot replay a payment's features for a
    refund with the same event_id; the service answers 409 from the body hash."""
    pay = payment()
    decide(c, pay)
    refund = {"event_id": pay["event_id"], "type": "refund", "occurred_at": T0.isoformat(),
              "merchant_id": "m-other", "amount": "1.00"}
    with api.client(REPORT_KEY) as rep:
        r = rep.post("/v1/events", json=refund)
    assert r.status_code == 409 and r.json()["field"] == "event_id"
