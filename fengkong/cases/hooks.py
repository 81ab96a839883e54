"""Who else hears of a case opening or being resolved: the one call site for webhooks.

The service's runtime (`fengkong.api.state`) appends its webhooks' ``publish`` to
`SUBSCRIBERS` while it runs (cases sit below the api and beside the webhooks, so
neither imports the other). Kinds: ``case.opened`` and
``case.resolved``; the payload is the case's summary (`fengkong.cases.service.summary`).
A subscriber that raises is logged and never fails the case change, which is already
committed when it is called.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

#: Callables ``(kind, payload) -> None``; the running service adds its webhooks' publish.
SUBSCRIBERS: list[Callable[[str, dict[str, Any]], object]] = []


def publish(kind: str, payload: dict[str, Any]) -> None:
    """Tell every subscriber; after the change is committed, never raising."""
    for subscriber in list(SUBSCRIBERS):
        try:
            subscriber(kind, payload)
        except Exception:  # a listener's fault is not the case's
            log.exception("case hook %r failed for %s", subscriber, kind)
