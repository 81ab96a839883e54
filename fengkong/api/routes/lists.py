"""/v1/lists: the analyst lists (cards, users, devices, IPs and CIDRs, merchants).

Changes need an ``admin`` key, are audited, and take effect on the next decision
(the feature store reads list membership inside its one Lua call)."""

from __future__ import annotations

from fastapi import APIRouter

from fengkong.api.service import admin
from fengkong.api.deps import AdminCaller, RuntimeDep
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.schemas import ListChangeIn, ListChangeOut, ListEntriesOut, ListInfoOut

router = APIRouter(prefix="/v1/lists", tags=["lists"])


@router.get("", response_model=list[ListInfoOut], responses=ERROR_RESPONSES, summary="The declared lists")
async def get_lists(rt: RuntimeDep, caller: AdminCaller) -> list[dict]:
    return admin.list_lists(rt=rt)


@router.get("/{name}", response_model=ListEntriesOut, responses=ERROR_RESPONSES, summary="A list's entries")
async def get_list(name: str, rt: RuntimeDep, caller: AdminCaller) -> dict:
    return admin.list_entries(rt=rt, name=name)


@router.post("/{name}/entries", response_model=ListChangeOut, responses=ERROR_RESPONSES, summary="Add entries")
async def add_entries(name: str, body: ListChangeIn, rt: RuntimeDep, caller: AdminCaller) -> dict:
    return admin.change_list(rt=rt, name=name, action="add", entries=body.entries, reason=body.reason,
                               caller=caller)


@router.post("/{name}/entries:remove", response_model=ListChangeOut, responses=ERROR_RESPONSES,
             summary="Remove entries")
async def remove_entries(name: str, body: ListChangeIn, rt: RuntimeDep, caller: AdminCaller) -> dict:
    return admin.change_list(rt=rt, name=name, action="remove", entries=body.entries, reason=body.reason,
                               caller=caller)


@router.delete("/{name}/entries/{entry:path}", response_model=ListChangeOut, responses=ERROR_RESPONSES,
               summary="Remove one entry (a CIDR's slash may stay in the path)")
async def delete_entry(name: str, entry: str, rt: RuntimeDep, caller: AdminCaller) -> dict:
    return admin.change_list(rt=rt, name=name, action="remove", entries=[entry], reason=None, caller=caller)
