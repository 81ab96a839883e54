"""Errors of the feature store, one small tree so callers can act on them."""


class FeatureStoreError(Exception):
    """Root of the feature store's errors."""


class FeatureStoreUnavailable(FeatureStoreError):
    """Redis is down, slow past the deadline, or answered with an error.

    The API turns this into a degraded decision under its fail-open or
    fail-closed policy; it must never be read as "all counters are zero".
    """


class FeatureDefinitionError(FeatureStoreError):
    """A feature declaration is inconsistent (caught when definitions load)."""


class DuplicateEventConflict(FeatureStoreError):
    """An event_id seen before arrived again with another type or other entities.

    A true retry gets the features of its first delivery; this is not one, and
    nothing was counted for it (the API answers 409).
    """
