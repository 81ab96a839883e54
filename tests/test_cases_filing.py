"""Filing a batch of intake items at once (fengkong.cases.filing), on SQLite and a real
PostgreSQL: a batch files exactly what the same items filed one transaction each
would (the oracle), redeliveries are filed once (also by two consumers at the same
time), a malformed item costs only itself, and the opened cases reach the publisher."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from fengkong.cases import service
from fengkong.cases.consumer import GROUP, Consumer
from fengkong.cases.filing import file_items
from fengkong.cases.intake import stream_key

from case_desk import CONFIG, T0, desk  # noqa: F401 (desk: a fixture)

_n = itertools.count(1)


def item(card: str | None, minutes: float, *, risk: float | None = 0.5, score: float = 40, rule: str = "ip.tor_exit",
         tags: tuple[str, ...] = ("proxy_ip",), user: str = "u1", merchant: str | None = None,
         challenge: bool = False) -> dict:
    n = next(_n)
    out = {"decision_id": f"d_f{n}", "event_id": f"ef{n}", "type": "payment", "decision": "review", "score": score,
           "risk": risk, "reasons": [{"id": rule, "action": "review", "score": score, "tags": list(tags),
                                      "values": {"n": n}}],
           "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(), "amount_minor": 100 * n, "currency": "CNY",
           "card": card, "user_id": user, "merchant_id": f"m{n % 3}" if merchant is None else merchant}
    if challenge:
        out["challenge"] = {"event_id": f"ch{n}", "passed": False, "occurred_at": out["occurred_at"], "method": "sms"}
    return out


def traffic() -> list[dict]:
    """Items whose grouping needs every rule: same card inside and past the window (also
    out of order in event time), a risk-less decision joining, a user-only entity, a
    decision naming no entity, rules of two queues merged, a failed challenge. Entity and
    decision ids start with ``x-`` (`_renamed` makes copies)."""
    c1, c2, u = "x-c1", "x-c2", "x-u"
    items = [
        item(c1, 0, risk=0.4), item(c1, 59, risk=0.9, rule="r.two", tags=("card_theft",)),
        item(c2, 10, risk=None, score=90, rule="theft.x", tags=("card_theft",)), item(c1, 61, risk=0.2),
        item(c1, -30, risk=None, score=95), item(c2, 75, risk=0.3, challenge=True), item(None, 5, user=u),
        item(None, 6, user=u, risk=0.7, rule="r.three"), item(None, 1, user="", merchant=""),
        item(c1, 200, risk=0.1), item(c2, 11, risk=0.35, rule="r.four"),
    ]
    for it in items:
        it["decision_id"] = "x-" + it["decision_id"]
    return items


def shape(desk: service.Desk, tag: str) -> list[dict]:
    """Every case of the tag's entities with its decisions and audit rows, ids and the tag
    taken out (so a batch's cases compare with one-by-one's)."""
    out = []
    for kind in ("card", "user"):
        listed = service.list_cases(desk, entity_kind=kind, limit=500)["cases"]
        for c in sorted((c for c in listed if c["entity"]["id"].startswith(tag)), key=lambda c: c["id"]):
            full = service.get_case(desk, case_id=c["id"])
            keep = {k: full[k] for k in ("status", "queue", "priority", "max_score", "first_occurred_at",
                                         "last_occurred_at", "merchant_id", "rule_ids", "decision_count", "sla_hours")}
            keep["entity"] = (full["entity"]["kind"], full["entity"]["id"].removeprefix(tag))
            keep["decisions"] = [(d["decision_id"].removeprefix(tag), d["event_id"], d["decision"], d["score"], d["risk"], d["reasons"], d["rule_ids"],
                                  d["occurred_at"], d["amount_minor"], d["card"] and d["card"].removeprefix(tag))
                                 for d in full["decisions"]]
            keep["history"] = [(h["actor"], h["action"], h["from_status"], h["to_status"],
                                dict(h["detail"], decision_id=h["detail"]["decision_id"].removeprefix(tag)))
                               for h in full["history"]]
            out.append(keep)
    return out


def file(desk: service.Desk, items: list[dict]):
    with desk.sessions() as session, session.begin():
        return file_items(session.connection(), items, desk.config)


def _renamed(items: list[dict], tag: str) -> list[dict]:
    return [json.loads(json.dumps(i).replace('"x-', f'"{tag}-')) for i in items]


def test_a_batch_files_what_one_item_per_transaction_files(desk):
    base = traffic()
    batch = _renamed(base, "a")
    one_by_one = _renamed(base, "b")  # the same decisions of other entities: the oracle
    got = file(desk, batch)
    for it in one_by_one:
        file(desk, [it])
    a, b = shape(desk, "a"), shape(desk, "b")
    assert a == b
    # and what that is: card c1 grouped 0, 59 and -30 (within 60 min of the case's first), not 61, 200
    c1 = [c for c in a if c["entity"] == ("card", "-c1")]
    assert [c["decision_count"] for c in c1] == [3, 1, 1]
    assert c1[0]["priority"] == 0.9 and c1[0]["max_score"] == 95 and c1[0]["rule_ids"] == ["ip.tor_exit", "r.two"]
    assert c1[0]["first_occurred_at"] == (T0 - timedelta(minutes=30)).isoformat()
    assert c1[0]["queue"] == "general" and c1[0]["sla_hours"] == 24.0
    assert [h[1] for h in c1[0]["history"]] == ["opened", "decision_added", "decision_added"]
    c2 = [c for c in a if c["entity"] == ("card", "-c2")]
    assert [c["decision_count"] for c in c2] == [2, 1] and c2[0]["queue"] == "card_theft"
    assert c2[0]["priority"] == 0.35  # a risk-less first decision, then one with a risk
    assert c2[1]["history"][0][4]["challenge"]["method"] == "sms"
    user = [c for c in a if c["entity"] == ("user", "-u")]
    assert len(user) == 1 and user[0]["decision_count"] == 2 and user[0]["priority"] == 0.7
    assert got.results[8] is None  # no entity at all: nothing filed
    assert [r[1] for r in got.results if r] == [True, False, True, True, False, True, True, False, True, False]
    assert sorted((c.entity_id, c.decision_count) for c in got.opened) == [
        ("a-c1", 1), ("a-c1", 1), ("a-c1", 3), ("a-c2", 1), ("a-c2", 2), ("a-u", 2)]


def test_a_batch_joins_cases_already_open_and_skips_what_is_filed(desk):
    first = item("j1", 0, risk=0.3)
    (case_id, opened), = file(desk, [first]).results
    service.claim(desk, case_id=case_id, actor="ana")
    joining = item("j1", 20, risk=0.8)
    again = file(desk, [first, joining, first, item("j1", 30), joining])
    assert again.results[0] is None and again.results[2] is None  # filed before, twice
    assert again.results[4] is None  # twice in the batch
    assert again.results[1] == (case_id, False) and again.results[3] == (case_id, False) and not again.opened
    case = service.get_case(desk, case_id=case_id)
    assert case["decision_count"] == 3 and case["priority"] == 0.8 and case["status"] == "claimed"
    assert [(h["action"], h["from_status"], h["to_status"]) for h in case["history"]] == [
        ("opened", None, "open"), ("claimed", "open", "claimed"), ("decision_added", "claimed", "claimed"),
        ("decision_added", "claimed", "claimed")]
    service.resolve(desk, case_id=case_id, actor="ana", disposition="legit")
    (new_id, opened), = file(desk, [item("j1", 40)]).results
    assert opened and new_id != case_id  # a resolved case takes no more


def test_two_consumers_filing_the_same_items_at_once_file_each_once(desk):
    """An item redelivered (XAUTOCLAIM) while its first consumer still files it: the
    entity locks serialise them and the second files nothing."""
    items = [item(f"k{i % 5}", i) for i in range(40)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            file(desk, items)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    engine = desk.sessions.kw["bind"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM case_decisions")).scalar_one() == 40
        per_card = conn.execute(sa.text("SELECT entity_id, count(*), sum(decision_count) FROM cases "
                                        "GROUP BY entity_id ORDER BY entity_id")).all()
    assert [tuple(r) for r in per_card] == [(f"k{i}", 1, 8) for i in range(5)]


def test_a_malformed_item_costs_only_itself_and_opened_cases_are_published(desk, redis_client, prefix):
    told: list[list[tuple[str, dict]]] = []
    desk.publish = told.append
    stream = stream_key(prefix)
    good = [item("p1", 0, risk=0.2), item("p1", 5, risk=0.6), item("p2", 0)]
    bad = dict(item("p3", 1), occurred_at="yesterday")
    for it in (good[0], bad, good[1], good[2]):
        redis_client.xadd(stream, {"item": json.dumps(it)})
    redis_client.xadd(stream, {"item": "not json"})
    consumer = Consumer(redis_client, desk, stream=stream, name="c1")
    assert consumer.step(block_ms=0) == 5  # all acknowledged: the bad ones dropped, the rest filed
    assert (consumer.filed, consumer.dropped) == (3, 2)
    assert redis_client.xpending(stream, GROUP)["pending"] == 0
    cases = service.list_cases(desk)["cases"]
    assert sorted((c["entity"]["id"], c["decision_count"]) for c in cases) == [("p1", 2), ("p2", 1)]
    # filed item by item after the failure: one call per opened case
    opened = [payload for events in told for kind, payload in events if kind == "case.opened"]
    assert sorted(p["entity"]["id"] for p in opened) == ["p1", "p2"]
    # a clean batch tells all its opened cases in one call, as they stand after it
    told.clear()
    for it in (item("p4", 0, risk=0.1), item("p4", 3, risk=0.95), item("p5", 0)):
        redis_client.xadd(stream, {"item": json.dumps(it)})
    assert consumer.step(block_ms=0) == 3
    assert len(told) == 1
    summaries = {p["entity"]["id"]: p for _, p in told[0]}
    assert summaries["p4"]["decision_count"] == 2 and summaries["p4"]["priority"] == 0.95
    assert summaries["p4"]["status"] == "open" and summaries["p4"]["sla_hours"] == 24.0
    # and a resolution reaches the same publisher
    service.resolve(desk, case_id=summaries["p5"]["id"], actor="ana", disposition="needs_info")
    assert told[-1][0][0] == "case.resolved" and told[-1][0][1]["id"] == summaries["p5"]["id"]
