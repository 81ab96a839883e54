"""The review queue: open cases by priority (claim, resolve with keyboard shortcuts) and
one case with its decisions. Built on `fengkong.cases.service` (the same functions the
/v1/cases routes call), acting as ``user:<username>``; the case service audits every
change in its own history (case_events) and the console adds a change-audit record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fengkong.accounts import Role
from fengkong.api.console.app import ConsoleError, ConsoleState, Page, acting, base_url, viewer

router = APIRouter()
Viewer = Annotated[Page, Depends(viewer)]
Analyst = Annotated[Page, Depends(acting(Role.ANALYST))]

DISPOSITIONS = ("fraud", "legit", "needs_info")


def desk(console: ConsoleState) -> Any:
    """The case desk: the service's own when its runtime holds one, else one on the same
    database, queue configuration and label sink."""
    rt = console.runtime
    own = getattr(rt, "cases", None)  # the worker's CasesRuntime (fengkong.cases.runtime), when it has one
    if own is not None:
        return own.desk
    built = console.extras.get("desk")
    if built is None:
        try:
            from fengkong.cases import config as cases_config
            from fengkong.cases.labels import StoreLabels
            from fengkong.cases.service import Desk
        except ImportError:
            return None
        from fengkong.db.engine import session_factory

        labels = StoreLabels(rt.store, rt.client, prefix=rt.settings.key_prefix,
                             maxlen=rt.settings.audit_stream_maxlen)
        built = console.extras["desk"] = Desk(sessions=session_factory(console.accounts.engine),
                                              config=cases_config.load(Path(rt.settings.rules_dir)), labels=labels)
    return built


def _service() -> Any:
    from fengkong.cases import service

    return service


async def _call(page: Page, name: str, **kwargs: Any) -> Any:
    """A case-service function, off the event loop (it blocks on SQL), refusals as pages."""
    d = desk(page.console)
    if d is None:
        raise ConsoleError(404, None, "cases are not available in this build")
    from fengkong.cases.errors import CaseError

    try:
        return await run_in_threadpool(lambda: getattr(_service(), name)(d, **kwargs))
    except CaseError as exc:
        raise ConsoleError(exc.status, exc.field, exc.reason) from None


@router.get("/queue", response_class=HTMLResponse)
async def queue(page: Viewer, queue: str = "", status: str = "open") -> HTMLResponse:
    if desk(page.console) is None:
        return page.render("queue.html", cases=None, queues=[], queue="", status=status)
    if status not in ("open", "claimed", "resolved", "all"):
        raise ConsoleError(422, "status", "must be open, claimed, resolved or all")
    listed = await _call(page, "list_cases", status=None if status == "all" else status, queue=queue or None,
                         limit=200)
    if status == "open":  # what an analyst works: the open cases and the ones they hold
        mine = await _call(page, "list_cases", status="claimed", assignee=page.actor, queue=queue or None, limit=200)
        listed["cases"] = mine["cases"] + listed["cases"]
    queues = await _call(page, "queues")
    return page.render("queue.html", cases=listed["cases"], total=listed["total"], queues=queues, queue=queue,
                       status=status, dispositions=DISPOSITIONS)


@router.get("/cases/{case_id}", response_class=HTMLResponse)
async def case(case_id: int, page: Viewer) -> HTMLResponse:
    found = await _call(page, "get_case", case_id=case_id)
    return page.render("case.html", case=found, dispositions=DISPOSITIONS)


def _back(page: Page, case_id: int) -> Response:
    target = page.form.get("next", "")
    base = base_url(page.request)
    if not target.startswith(base + "/") or target.startswith("//"):
        target = f"{base}/cases/{case_id}"
    return RedirectResponse(target, status_code=303)


@router.post("/cases/{case_id}/claim")
async def claim(case_id: int, page: Analyst) -> Response:
    await _call(page, "claim", case_id=case_id, actor=page.actor)
    page.audit("case.claim", {"case_id": case_id})
    return _back(page, case_id)


@router.post("/cases/{case_id}/resolve")
async def resolve(case_id: int, page: Analyst) -> Response:
    """Resolve as fraud, legit or needs_info with a note; fraud and legit are labels the
    case service sends to the feature store and the labels stream."""
    disposition = page.form.get("disposition", "")
    if disposition not in DISPOSITIONS:
        raise ConsoleError(422, "disposition", f"must be one of {', '.join(DISPOSITIONS)}")
    note = page.form.get("note", "").strip() or None
    await _call(page, "resolve", case_id=case_id, actor=page.actor, disposition=disposition, note=note)
    page.audit("case.resolve", {"case_id": case_id, "disposition": disposition})
    return _back(page, case_id)


@router.post("/cases/{case_id}/reopen")
async def reopen(case_id: int, page: Analyst) -> Response:
    note = page.form.get("note", "").strip() or None
    await _call(page, "reopen", case_id=case_id, actor=page.actor, note=note)
    page.audit("case.reopen", {"case_id": case_id})
    return _back(page, case_id)
