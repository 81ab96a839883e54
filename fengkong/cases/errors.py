"""What the case service refuses, each naming the field at fault; the API maps them to
404, 409, 422 and 503 (`fengkong.api.errors`), the console to its messages."""

from __future__ import annotations


class CaseError(Exception):
    """Root of the case service's refusals. ``field`` is the input at fault (or None)."""

    status = 400

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class CaseNotFound(CaseError):
    """No case has this id."""

    status = 404


class IllegalTransition(CaseError):
    """The change does not apply to the case's current status (claim a resolved case...)."""

    status = 409


class InvalidCaseInput(CaseError):
    """A value the service cannot take (an unknown disposition, a filter of the wrong kind)."""

    status = 422


class LabelsUnavailable(CaseError):
    """The feature store did not take a resolution's label; nothing was changed, retry."""

    status = 503
