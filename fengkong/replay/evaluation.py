"""Which decisions the replay report scores, and the fraud team's daily top-k of cards.

A replay runs the whole history (so features are warm on the first day scored),
but a model scored on the days it was trained on overstates. ``Window`` keeps the
decisions of an evaluation window: inclusive dates, ``--evaluate-from`` and
``--evaluate-until``, in the business time zone (`business_days`: the offset the
merchant features use, `fengkong.features.definitions.DEFAULT_BUSINESS_UTC_OFFSET_MIN`,
UTC+08:00), whatever offset each event carries.

Daily top-k card precision, as a fraud team's daily list works: each business day,
the cards with a labelled payment that day are ranked by their highest score of the
day (ties by card id) and the first k are worked. A card already known to be
compromised is no candidate: one with a fraud report or chargeback seen before that
day's start (in any day of the history, the window's or before), or one that an
earlier day's top-k found (it had a fraud payment on the day it was listed). The
precision of a day is the share of its top-k with a fraud payment that day; the
report's figure is the mean over the window's days that had fraud among their
candidates (a day without any says nothing about ranking).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from fengkong.features.definitions import DEFAULT_BUSINESS_UTC_OFFSET_MIN

US_PER_DAY = 86_400_000_000


def business_days(occurred_at: pd.Series, offset_min: int = DEFAULT_BUSINESS_UTC_OFFSET_MIN) -> np.ndarray:
    """The business date (``YYYY-MM-DD`` text) of each ISO 8601 time with offset."""
    if len(occurred_at) == 0:
        return np.array([], dtype=object)
    t = pd.to_datetime(occurred_at.astype(str), utc=True, format="ISO8601")
    us = t.astype("datetime64[us, UTC]").astype("int64").to_numpy() + offset_min * 60_000_000
    return (us // US_PER_DAY).astype("datetime64[D]").astype(str).astype(object)


@dataclass(frozen=True)
class Window:
    """Inclusive business dates the report scores; None = open on that side."""

    start: date | None = None
    end: date | None = None

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> "Window":
        """From ``YYYY-MM-DD`` texts; ValueError naming the option when one is not a date or they cross."""
        def one(text: str | None, name: str) -> date | None:
            if text is None or str(text).strip() == "":
                return None
            try:
                return date.fromisoformat(str(text).strip())
            except ValueError:
                raise ValueError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None

        w = cls(one(start, "--evaluate-from"), one(end, "--evaluate-until"))
        if w.start and w.end and w.start > w.end:
            raise ValueError(f"--evaluate-from {w.start} is after --evaluate-until {w.end}")
        return w

    @property
    def whole(self) -> bool:
        """Whether the window is the whole history."""
        return self.start is None and self.end is None

    def mask(self, days: np.ndarray) -> np.ndarray:
        """Which of ``days`` (business dates as text) lie in the window."""
        keep = np.ones(len(days), dtype=bool)
        if self.start is not None:
            keep &= days >= self.start.isoformat()
        if self.end is not None:
            keep &= days <= self.end.isoformat()
        return keep

    def describe(self) -> str:
        """The window in words, for the report."""
        if self.whole:
            return "the whole history"
        return (f"business days {self.start.isoformat() if self.start else 'first'} to "
                f"{self.end.isoformat() if self.end else 'last'} (inclusive, UTC+08:00)")


def known_compromised(reports: pd.DataFrame | None, decisions: pd.DataFrame) -> dict[str, str]:
    """Card -> the first business day a fraud report or chargeback about it was seen.

    ``reports`` has ``occurred_at``, ``card_fingerprint`` and ``refers_to``; a report
    without a card takes the card of the payment it refers to."""
    if reports is None or reports.empty:
        return {}
    card = reports["card_fingerprint"].astype(object)
    by_payment = dict(zip(decisions["event_id"], decisions["card_fingerprint"]))
    card = card.where(card.notna(), reports["refers_to"].map(by_payment))
    days = business_days(reports["occurred_at"])
    out: dict[str, str] = {}
    for c, day in zip(card, days):
        if isinstance(c, str) and c and (c not in out or day < out[c]):
            out[c] = day
    return out


def daily_top_k(pay: pd.DataFrame, days: np.ndarray, k: int, *, window: Window,
                known: dict[str, str] | None = None) -> pd.DataFrame | None:
    """Per business day of the window: candidates, top-k, compromised in it, its precision,
    whether the day had fraud, and cards left out as already known (see the module docstring).

    ``pay`` holds labelled payments (``card_fingerprint``, ``score``, ``is_fraud``) of the
    whole history; ``days`` their business days."""
    has_card = pay["card_fingerprint"].notna().to_numpy()
    if not has_card.any():
        return None
    frame = pd.DataFrame({"day": days[has_card], "card": pay["card_fingerprint"].to_numpy()[has_card],
                          "score": pay["score"].to_numpy(dtype=float)[has_card],
                          "fraud": pay["is_fraud"].to_numpy(dtype=bool, na_value=False)[has_card]})
    cards = frame.groupby(["day", "card"], sort=False).agg(score=("score", "max"), fraud=("fraud", "any"))
    cards = cards.reset_index().sort_values(["day", "score", "card"], ascending=[True, False, True])
    reported = known or {}
    found: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    in_window = set(np.asarray(sorted(cards["day"].unique()), dtype=object)[window.mask(
        np.asarray(sorted(cards["day"].unique()), dtype=object))])
    for day, g in cards.groupby("day", sort=True):
        drop = np.fromiter(((c in reported and reported[c] < day) or c in found for c in g["card"]),
                           dtype=bool, count=len(g))
        cand = g[~drop]
        top = cand.head(k)
        for c in top.loc[top["fraud"], "card"]:
            found.setdefault(c, str(day))
        if day in in_window:
            rows.append({"day": day, "candidates": len(cand), "known_left_out": int(drop.sum()),
                         "top": len(top), "compromised": int(top["fraud"].sum()),
                         "precision": float(top["fraud"].mean()) if len(top) else None,
                         "fraud_cards": int(cand["fraud"].sum()), "had_fraud": bool(cand["fraud"].any())})
    return pd.DataFrame(rows, columns=["day", "candidates", "known_left_out", "top", "compromised", "precision",
                                       "fraud_cards", "had_fraud"])
