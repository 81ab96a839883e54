"""The ``model.*`` features: what the model runtime (`fengkong.models.runtime`) supplies.

Declared here, apart from the store's features in `definitions.py` (which turns them into
`FeatureSpec` entries of the catalog), so the rule checker knows their names and types;
neither store computes them. Without a model artifact they are missing, and a rule that
compares a missing value does not fire.
"""

from __future__ import annotations

from typing import Literal

#: (name, type, description) of each model output.
MODEL_OUTPUTS: tuple[tuple[str, Literal["number", "string", "bool"], str], ...] = (
    ("model.txn_risk", "number", "supervised fraud probability of this payment (0-1; calibrated when the artifact "
     "carries a calibration)"),
    ("model.habit_anomaly", "number", "how unlike the cardholder's habits (0-1, 1 = most unusual)"),
    ("model.merchant_anomaly", "number", "merchant anomaly score from the nightly model (0-1)"),
    ("model.txn_precision", "number", "expected precision (0-1) of flagging every payment whose model.txn_risk is "
     "at least this one's, from the artifact's calibration days: a threshold stated as a precision"),
    ("model.txn_share", "number", "share of traffic (0-1) whose model.txn_risk is at least this one's, on the "
     "artifact's calibration days: a threshold stated as a share of traffic"),
)

__all__ = ["MODEL_OUTPUTS"]
