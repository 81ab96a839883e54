"""The rules page: live version, reload history, per-rule fires and precision, shadow
beside enforced, a dry-run form (analyst) and a reload button (admin); and the report
viewer for the HTML/CSV/Markdown reports under ``<data_dir>/reports``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse, Response

from fengkong.accounts import Role
from fengkong.api.console import data, labels
from fengkong.api.console.app import ConsoleError, Page, acting, viewer
from fengkong.api.security import Caller
from fengkong.api.service import admin, dryrun

router = APIRouter()
Viewer = Annotated[Page, Depends(viewer)]
Analyst = Annotated[Page, Depends(acting(Role.ANALYST))]
Admin = Annotated[Page, Depends(acting(Role.ADMIN))]


def _rules_context(page: Page) -> dict[str, Any]:
    rt = page.rt
    summary = data.metrics_summary(rt)
    current = rt.rules.current
    precision = labels.precision_by_rule(page.console)
    rows = []
    for rule in (current.rules if current else ()):
        fires = summary.fires.get((rule.id, rule.mode), 0)
        rows.append({"id": rule.id, "description": rule.description, "then": rule.then, "score": rule.score,
                     "mode": rule.mode, "tags": rule.tags, "file": rule.file, "fires": fires,
                     "rate": fires / summary.total if summary.total else None,
                     "precision": precision.get(rule.id)})
    rows.sort(key=lambda r: (r["mode"] != "enforce", r["file"], r["id"]))
    return {"info": admin.rules_info(rt=rt), "enforced": [r for r in rows if r["mode"] == "enforce"],
            "shadow": [r for r in rows if r["mode"] != "enforce"], "total": summary.total,
            "reloads": data.changes(rt, prefix="rules.reload", count=2000)[:50], "reports": data.reports(rt),
            "windows": labels.WINDOWS}


@router.get("/rules", response_class=HTMLResponse)
async def rules(page: Viewer) -> HTMLResponse:
    return page.render("rules.html", **_rules_context(page))


def _json_field(form: dict[str, str], name: str) -> Any:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConsoleError(422, name, f"is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(value, dict):
        raise ConsoleError(422, name, "must be a JSON object")
    return value


@router.post("/rules/dry-run", response_class=HTMLResponse)
def dry_run(page: Analyst) -> HTMLResponse:
    """The dry-run service (`fengkong.api.service.dryrun`) on the form's event, features
    and optional rule file; nothing is deployed or counted (audited all the same)."""
    form = page.form
    event, features = _json_field(form, "event"), _json_field(form, "features")
    name, text = form.get("file_name", "").strip(), form.get("file_text", "")
    files = {name: text} if name else None
    result = dryrun.dry_run(rt=page.rt, event=event, features=features, files=files)
    page.audit("rules.dry_run", {"file": name or None, "changed": result["changed"],
                                 "candidate_version": result["candidate_version"]})
    return page.render("rules.html", dry=result, form=form, **_rules_context(page))


@router.post("/rules/reload", response_class=HTMLResponse)
def reload(page: Admin) -> HTMLResponse:
    """Reload the live rules from the rules directory (audited with the user)."""
    result = admin.reload_rules(rt=page.rt, caller=Caller(page.actor, frozenset()))
    return page.render("rules.html", reloaded=result, **_rules_context(page))


@router.get("/reports/{relative:path}")
async def report(relative: str, page: Viewer) -> Response:
    """One report file. HTML is served sandboxed (no script, no same-origin access), to
    show in the rules page's frame; CSV and Markdown as text."""
    path = data.report_file(page.rt, relative)
    if path is None:
        raise ConsoleError(404, "path", "no report of this name under the reports folder")
    if path.suffix == ".html":
        return FileResponse(path, media_type="text/html", headers={
            "content-security-policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
            "x-frame-options": "SAMEORIGIN"})
    return FileResponse(path, media_type="text/plain; charset=utf-8")


@router.get("/report-view/{relative:path}", response_class=HTMLResponse)
async def report_view(relative: str, page: Viewer) -> HTMLResponse:
    if data.report_file(page.rt, relative) is None:
        raise ConsoleError(404, "path", "no report of this name under the reports folder")
    return page.render("report.html", relative=relative)
