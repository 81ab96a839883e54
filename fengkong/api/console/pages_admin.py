"""Lists (analysts add and remove entries with a reason) and users (admins)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from fengkong.accounts import Role
from fengkong.api.console import data
from fengkong.api.console.app import ConsoleError, Page, acting, viewer
from fengkong.api.security import Caller
from fengkong.api.service import admin

router = APIRouter()
Viewer = Annotated[Page, Depends(viewer)]
Analyst = Annotated[Page, Depends(acting(Role.ANALYST))]
Admin = Annotated[Page, Depends(acting(Role.ADMIN))]

MAX_ENTRIES = 1000


def _lists_page(page: Page, name: str | None, **extra: Any) -> HTMLResponse:
    rt = page.rt
    declared = admin.list_lists(rt=rt)
    name = name or (declared[0]["name"] if declared else None)
    current = admin.list_entries(rt=rt, name=name) if name else None
    recent = data.changes(rt, prefix="list.", count=2000)[:50]
    return page.render("lists.html", lists=declared, current=current, name=name, recent=recent,
                       **extra)


@router.get("/lists", response_class=HTMLResponse)
async def lists(page: Viewer, name: str = "") -> HTMLResponse:
    return _lists_page(page, name or None)


@router.post("/lists/{name}/{action}", response_class=HTMLResponse)
async def change(name: str, action: str, page: Analyst) -> HTMLResponse:
    """Add or remove entries (one per line or comma-separated) with a required reason;
    the list service audits it with the user (``user:<name>``)."""
    if action not in ("add", "remove"):
        raise ConsoleError(404, "action", "must be add or remove")
    entries = [e.strip() for e in re.split(r"[\n,]", page.form.get("entries", "")) if e.strip()]
    reason = page.form.get("reason", "").strip()
    if not entries:
        raise ConsoleError(422, "entries", "give at least one entry")
    if len(entries) > MAX_ENTRIES:
        raise ConsoleError(422, "entries", f"at most {MAX_ENTRIES} per change")
    if not reason:
        raise ConsoleError(422, "reason", "say why (it is kept in the audit trail)")
    result = admin.change_list(rt=page.rt, name=name, action=action, entries=entries, reason=reason[:500],
                               caller=Caller(page.actor, frozenset()))
    return _lists_page(page, name, done=result)


@router.get("/users", response_class=HTMLResponse)
async def users(page: Viewer) -> HTMLResponse:
    if not page.user.can(Role.ADMIN):
        raise ConsoleError(403, "role", f"{page.user.role.value} may not manage users (needs admin)")
    return page.render("users.html", users=page.console.accounts.list())


@router.post("/users", response_class=HTMLResponse)
async def add_user(page: Admin) -> HTMLResponse:
    """Add a user (argon2 hashing runs off the event loop); audited."""
    form = page.form
    accounts = page.console.accounts
    user = await run_in_threadpool(lambda: accounts.create(
        username=form.get("username", "").strip(), password=form.get("password", ""), role=form.get("role", "")))
    page.audit("users.add", {"username": user.username, "role": user.role.value})
    return page.render("users.html", users=accounts.list(), done=f"+ {user.username} ({user.role.value})")


@router.post("/users/{username}/{action}", response_class=HTMLResponse)
async def change_user(username: str, action: str, page: Admin) -> HTMLResponse:
    """disable, enable, role (form ``role``) or password (form ``password``); audited."""
    accounts = page.console.accounts
    form = page.form
    if action in ("disable", "enable"):
        accounts.set_active(username=username, active=action == "enable")
        detail: dict[str, object] = {"username": username}
    elif action == "role":
        accounts.set_role(username=username, role=form.get("role", ""))
        detail = {"username": username, "role": form.get("role")}
    elif action == "password":
        await run_in_threadpool(lambda: accounts.set_password(username=username, password=form.get("password", "")))
        detail = {"username": username}
    else:
        raise ConsoleError(404, "action", "must be disable, enable, role or password")
    page.audit(f"users.{action}", detail)
    return page.render("users.html", users=accounts.list(), done=f"{username}: {action}")
