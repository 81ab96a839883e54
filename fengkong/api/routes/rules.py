"""/v1/rules: the live rule-set version, reload from rules/, and dry-run of a candidate.

A reload is atomic (swapped only if the whole set compiles and its cases pass) and
audited. With several workers the one that gets the request reloads at once; the
others follow through their file watch (``rules_watch_s``), since they read the same
files. A dry-run deploys and counts nothing."""

from __future__ import annotations

from fastapi import APIRouter

from fengkong.api.service import admin, dryrun
from fengkong.api.deps import AdminCaller, RuntimeDep
from fengkong.api.errors import ERROR_RESPONSES
from fengkong.api.schemas import DryRunIn, DryRunOut, ReloadOut, RulesOut

router = APIRouter(prefix="/v1/rules", tags=["rules"])


@router.get("", response_model=RulesOut, responses=ERROR_RESPONSES, summary="The live rule set")
async def get_rules(rt: RuntimeDep, caller: AdminCaller) -> dict:
    return admin.rules_info(rt=rt)


@router.post("/reload", response_model=ReloadOut, responses=ERROR_RESPONSES, summary="Reload from rules/")
def reload_rules(rt: RuntimeDep, caller: AdminCaller) -> dict:
    """``ok: false`` with the problems when the files do not compile or a case fails;
    the live set is then untouched."""
    return admin.reload_rules(rt=rt, caller=caller)


@router.post("/dry-run", response_model=DryRunOut, responses=ERROR_RESPONSES,
             summary="Evaluate a candidate rule set on an event without deploying it")
def dry_run(body: DryRunIn, rt: RuntimeDep, caller: AdminCaller) -> dict:
    """The candidate is rules/ with ``files`` overlaid. Features are the stored ones of
    an event already decided (nothing is counted), with ``features`` laid over them."""
    return dryrun.dry_run(rt=rt, event=body.event, features=body.features, files=body.files)
