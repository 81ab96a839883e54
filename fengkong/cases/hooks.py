"""Who else hears of cases opening or being resolved: the one call site for webhooks.

Cases sit below the api and beside the webhooks, so neither imports the other: whoever
opens the case runtime (`fengkong.cases.runtime.open_cases`: the service's worker, or
`fengkong cases consume`) passes a `Publish` callable, which the `Desk` carries to the
consumer (``case.opened``) and to `resolve` (``case.resolved``). The payload is the
case's summary (`fengkong.cases.service.summary`). It takes a list of events, so the
consumer tells of a whole batch's opened cases in one call (one Redis pipeline).
A publisher that raises is logged and never fails the case change, which is already
committed when it is called.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

#: ``publish([(kind, payload), ...])``: queue these events for the webhooks.
Publish = Callable[[Sequence[tuple[str, dict[str, Any]]]], object]


def tell(publish: Publish | None, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Hand ``events`` to ``publish`` (none: nobody listens); after the change is
    committed, never raising."""
    if publish is None or not events:
        return
    try:
        publish(events)
    except Exception:  # a listener's fault is not the case's
        log.exception("case hook failed for %s", sorted({kind for kind, _ in events}))
