"""The case desk on both databases (SQLite and a real PostgreSQL): grouping within the
window and not after it, the life cycle and its audit rows, bulk resolve, filters, queues."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from fengkong.cases import service
from fengkong.cases.errors import CaseNotFound, IllegalTransition, InvalidCaseInput
from fengkong.cases.filing import ingest
from fengkong.cases.models import Base

from case_desk import CONFIG, T0, desk  # noqa: F401 (desk: a fixture)

_n = itertools.count(1)


def item(*, card="c1", minutes=0.0, risk=0.5, score=60, rule="ip.tor_exit", tags=("proxy_ip",), merchant="m1",
         user="u1", decision="review"):
    n = next(_n)
    return {"decision_id": f"d_{n}", "event_id": f"e{n}", "type": "payment", "decision": decision, "score": score,
            "risk": risk, "reasons": [{"id": rule, "action": "review", "score": score, "tags": list(tags),
                                       "values": {"ip.is_tor": True}}],
            "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(), "amount_minor": 12000, "currency": "CNY",
            "card": card, "user_id": user, "merchant_id": merchant}


def file(desk, *items, now=None):
    out = []
    with desk.sessions() as session, session.begin():
        for it in items:
            got = ingest(session, it, desk.config, now=now)
            out.append(None if got is None else (got[0].id, got[1]))
    return out


def test_migration_matches_the_models(desk):
    """The hand-written migration creates what the ORM classes declare (columns and indexes)."""
    engine = desk.sessions.kw["bind"]
    inspector = sa.inspect(engine)
    for table in ("cases", "case_decisions", "case_events"):
        declared = Base.metadata.tables[table]
        assert {c["name"] for c in inspector.get_columns(table)} == {c.name for c in declared.columns}
        assert {i["name"] for i in inspector.get_indexes(table)} >= {i.name for i in declared.indexes}


def test_decisions_group_within_the_window_and_not_after(desk):
    first, second, later, other = file(desk, item(minutes=0, risk=0.4), item(minutes=59, risk=0.9, rule="r.two"),
                                       item(minutes=61), item(card="c2", minutes=1))
    assert first[1] is True and second == (first[0], False)  # joined the open case
    assert later[1] is True and later[0] != first[0]  # past the window: a new case
    assert other[1] is True and other[0] not in (first[0], later[0])  # another card
    case = service.get_case(desk, case_id=first[0])
    assert case["decision_count"] == 2 and len(case["decisions"]) == 2
    assert case["priority"] == 0.9  # the highest risk of the grouped decisions
    assert case["rule_ids"] == ["ip.tor_exit", "r.two"]
    assert case["entity"] == {"kind": "card", "id": "c1"}
    assert [h["action"] for h in case["history"]] == ["opened", "decision_added"]
    assert case["decisions"][0]["reasons"][0]["values"] == {"ip.is_tor": True}


def test_a_redelivered_decision_is_filed_once_and_resolved_cases_take_no_more(desk):
    it = item(card="c9")
    (case_id, _), again = file(desk, it, it)
    assert again is None
    service.resolve(desk, case_id=case_id, actor="ana", disposition="needs_info")
    (new_id, opened), = file(desk, item(card="c9", minutes=5))
    assert opened and new_id != case_id


def test_life_cycle_and_its_audit_rows(desk):
    (case_id, _), = file(desk, item(card="life"))
    claimed = service.claim(desk, case_id=case_id, actor="ana")
    assert claimed["status"] == "claimed" and claimed["assignee"] == "ana" and claimed["claimed_at"]
    assert service.claim(desk, case_id=case_id, actor="ana")["status"] == "claimed"  # holding it already
    with pytest.raises(IllegalTransition, match="claimed by ana"):
        service.claim(desk, case_id=case_id, actor="bo")
    with pytest.raises(IllegalTransition, match="claimed by ana"):
        service.resolve(desk, case_id=case_id, actor="bo", disposition="legit")
    with pytest.raises(IllegalTransition, match="not resolved"):
        service.reopen(desk, case_id=case_id, actor="ana")
    done = service.resolve(desk, case_id=case_id, actor="ana", disposition="needs_info", note="ask the bank")
    assert (done["status"], done["disposition"], done["note"]) == ("resolved", "needs_info", "ask the bank")
    assert done["resolved_at"]
    with pytest.raises(IllegalTransition, match="reopen it first"):
        service.claim(desk, case_id=case_id, actor="bo")
    with pytest.raises(IllegalTransition, match="resolved"):
        service.resolve(desk, case_id=case_id, actor="ana", disposition="fraud")
    back = service.reopen(desk, case_id=case_id, actor="bo", note="new evidence")
    assert (back["status"], back["assignee"], back["disposition"]) == ("open", None, None)
    rows = [(h["actor"], h["action"], h["from_status"], h["to_status"], h["note"]) for h in back["history"]]
    assert rows == [("intake", "opened", None, "open", None), ("ana", "claimed", "open", "claimed", None),
                    ("ana", "resolved", "claimed", "resolved", "ask the bank"),
                    ("bo", "reopened", "resolved", "open", "new evidence")]
    assert back["history"][2]["detail"] == {"disposition": "needs_info"}
    assert all(h["at"] for h in back["history"])
    # resolving an open case claims it for the resolver
    direct = service.resolve(desk, case_id=case_id, actor="bo", disposition="legit")
    assert direct["assignee"] == "bo" and direct["history"][-1]["from_status"] == "open"


def test_bad_input_names_the_field(desk):
    (case_id, _), = file(desk, item(card="bad"))
    with pytest.raises(InvalidCaseInput) as err:
        service.resolve(desk, case_id=case_id, actor="ana", disposition="maybe")
    assert err.value.field == "disposition"
    with pytest.raises(CaseNotFound):
        service.claim(desk, case_id=10**9, actor="ana")
    with pytest.raises(InvalidCaseInput) as err:
        service.list_cases(desk, status="pending")
    assert err.value.field == "status"
    with pytest.raises(InvalidCaseInput) as err:
        service.claim(desk, case_id=case_id, actor=" ")
    assert err.value.field == "actor"


def test_bulk_resolve_resolves_each_and_reports_the_refused(desk):
    ids = [file(desk, item(card=f"bulk{i}"))[0][0] for i in range(3)]
    service.claim(desk, case_id=ids[2], actor="bo")
    out = service.bulk_resolve(desk, case_ids=[ids[0], ids[1], ids[2], 10**9], actor="ana", disposition="legit")
    assert out["resolved"] == ids[:2]
    assert [(r["id"], r["status"]) for r in out["refused"]] == [(ids[2], 409), (10**9, 404)]
    assert [service.get_case(desk, case_id=i)["status"] for i in ids] == ["resolved", "resolved", "claimed"]


def test_filters_and_order(desk):
    now = datetime.now(timezone.utc)
    old = now - timedelta(hours=30)
    (a, _), = file(desk, item(card="fa", risk=0.2, merchant="mA", rule="card.theft", tags=("card_theft",)), now=old)
    (b, _), = file(desk, item(card="fb", risk=0.8, merchant="mB"), now=now)
    (c, _), = file(desk, item(card="fc", risk=None, score=90, merchant="mA", rule="x_y"), now=now)
    (d, _), = file(desk, item(card="fd", risk=None, score=10, merchant="mC", rule="xzy"), now=now)
    service.claim(desk, case_id=b, actor="ana")

    def ids(**kw):
        return [x["id"] for x in service.list_cases(desk, **kw)["cases"] if x["id"] in (a, b, c, d)]

    assert ids() == [b, a, c, d]  # risk first (nulls last), then rule score
    assert ids(status="claimed") == [b] and ids(assignee="ana") == [b]
    assert ids(queue="card_theft") == [a]
    assert ids(merchant="mA") == [a, c]
    assert ids(rule="x_y") == [c]  # "_" is not a wildcard
    assert ids(min_age_minutes=60 * 24) == [a] and ids(max_age_minutes=60) == [b, c, d]
    assert ids(entity_kind="card", entity_id="fd") == [d]
    page = service.list_cases(desk, merchant="mA", limit=1)
    assert page["total"] == 2 and len(page["cases"]) == 1
    card_theft = next(q for q in service.queues(desk, now=now) if q["queue"] == "card_theft")
    assert card_theft["open"] == 1 and card_theft["breached"] == 1 and card_theft["oldest_age_s"] >= 30 * 3600
    general = next(q for q in service.queues(desk, now=now) if q["queue"] == "general")
    assert (general["open"], general["claimed"], general["breached"]) == (2, 1, 0)
