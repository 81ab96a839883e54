"""The labels `fengkong tune` may judge a candidate by: the ones that could be known when it runs.

A payment's fraud label arrives late (a chargeback or fraud report weeks after it) or never
(fraud nobody disputed), so "no report yet" is not "legitimate". Tuning on every payment
with "no report" read as legitimate counts fraud the rules caught as friction on
legitimate customers, and the search then buys friction back by dropping the rules that
catch it. So tune judges only payments whose label is known at its cut-off:

* payments at least ``maturity`` old at the cut-off (the window in which most reports
  arrive, as `fengkong train`'s ``--label-maturity-days``, `train.mature`): fraud if
  reported before the cut-off, else legitimate;
* payments an analyst dispositioned (a worked case: fraud or confirmed legitimate), at any
  age: the analyst's conclusion, which also overrides a report (a friendly-fraud
  chargeback cleared);
* every other payment is left out: neither fraud nor legitimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

import numpy as np
import pandas as pd

from fengkong.training.fusion import reported_labels
from fengkong.training.train import mature


@dataclass(frozen=True)
class KnownLabels:
    """Per payment: whether its label is known at the cut-off (``known``) and, if so, whether it is fraud."""

    is_fraud: np.ndarray
    known: np.ndarray
    matured: int
    analyst: int

    def summary(self) -> dict[str, int]:
        """Counts for a report: payments judged, left out, labelled fraud, and where the labels came from."""
        return {"known": int(self.known.sum()), "left_out": int((~self.known).sum()),
                "fraud": int((self.is_fraud & self.known).sum()), "matured": self.matured, "analyst": self.analyst}


def known_labels(payments: pd.DataFrame, *, cutoff: pd.Timestamp, maturity: timedelta,
                 events: pd.DataFrame | None = None, reported: np.ndarray | None = None,
                 analyst: Mapping[str, bool] | None = None) -> KnownLabels:
    """The labels of ``payments`` (``event.event_id``, ``occurred_at``) known at ``cutoff``.

    Reported fraud comes from ``events`` (chargebacks, fraud reports, `fusion.reported_labels`)
    or, for a history whose label column already holds what was known at its end, from
    ``reported`` (one flag per payment). ``analyst``: payment id -> the analyst's conclusion."""
    if "occurred_at" not in payments.columns:
        raise ValueError("occurred_at: the payments need their time to tell which labels have matured")
    if maturity < timedelta(0):
        raise ValueError(f"label maturity: {maturity} is negative")
    if reported is None:
        if events is None or "event.event_id" not in payments.columns:
            raise ValueError("labels: give the events (chargebacks and fraud reports) or the reported flags")
        reported = reported_labels(events, payments["event.event_id"], cutoff)
    y = np.asarray(reported, dtype=bool).copy()
    if len(y) != len(payments):
        raise ValueError(f"labels: {len(y)} flags for {len(payments)} payments")
    ripe = mature(payments, cutoff, maturity)
    known = ripe.copy()
    n_analyst = 0
    if analyst:
        ids = payments["event.event_id"].astype(str).to_numpy(dtype=object)
        seen = np.fromiter((i in analyst for i in ids), dtype=bool, count=len(ids))
        verdict = np.fromiter((bool(analyst.get(i, False)) for i in ids), dtype=bool, count=len(ids))
        y[seen] = verdict[seen]
        known |= seen
        n_analyst = int(seen.sum())
    return KnownLabels(y, known, int(ripe.sum()), n_analyst)


__all__ = ["KnownLabels", "known_labels"]
