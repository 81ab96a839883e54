"""The review queue over HTTP: the case desk's functions (`fengkong.cases.service`), run
in a thread (they block on SQL), with their refusals turned into the service's errors
(404, 409, 422 naming the field, 503). The acting analyst is the API key's name."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from starlette.concurrency import run_in_threadpool

from fengkong.api.errors import Conflict, Invalid, NotFound, Unavailable
from fengkong.api.state import Runtime
from fengkong.cases import service
from fengkong.cases.errors import CaseError, CaseNotFound, IllegalTransition, InvalidCaseInput, LabelsUnavailable

T = TypeVar("T")


def _desk(rt: Runtime) -> service.Desk:
    if rt.cases is None:
        raise Unavailable(None, "the cases database is not available (see the service log); review decisions "
                                "stay queued and are filed when it is")
    return rt.cases.desk


async def call(rt: Runtime, fn: Callable[..., T], **kwargs: Any) -> T:
    """``fn(desk, **kwargs)`` in a worker thread, its refusals as the service's errors."""
    desk = _desk(rt)
    try:
        return await run_in_threadpool(fn, desk, **kwargs)
    except CaseNotFound as exc:
        raise NotFound(exc.field, exc.reason) from None
    except IllegalTransition as exc:
        raise Conflict(exc.field, exc.reason) from None
    except InvalidCaseInput as exc:
        raise Invalid(exc.field, exc.reason) from None
    except LabelsUnavailable as exc:
        raise Unavailable(exc.field, exc.reason) from None
    except CaseError as exc:  # a refusal added later without a mapping: still the caller's
        raise Invalid(exc.field, exc.reason) from None


__all__ = ["call", "service"]
