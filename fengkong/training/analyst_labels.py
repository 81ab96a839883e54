"""Analysts' labels for training: the case resolutions on the labels stream.

Resolving a case (`fengkong.cases`) appends ``fraud_report`` (fraud) or
``legit_confirmed`` (legit) outcome events to ``{prefix}:v1:labels``, the stream POST
/v1/events also feeds. `from_stream` reads it back as history rows and `with_labels` adds
them to a history, so `fusion.reported_labels` counts an analyst's fraud as a positive and
legit as a confirmed negative (over a chargeback: a friendly-fraud chargeback cleared).
``fengkong train transactions --labels-stream URL`` does both.

A case reopened and resolved the other way leaves both labels on the stream: only the
latest analyst label of a payment is kept. Label events carry the payment's own time, so
an analyst's label counts for its payment's training day whenever it was given: the
conclusion is what the platform knows when it trains (unlike a chargeback, whose arrival
the training cutoff models).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pandas as pd
import redis

from fengkong.events import event_to_flat, parse_event
from fengkong.features.keys import labels_stream


def rows(entries: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """History rows of the labels stream's entries (records as JSON-decoded dicts, oldest
    first); of an analyst's labels (entries with a ``case_id``) only each payment's latest."""
    out: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate(entries):
        try:
            row = event_to_flat(parse_event(entry["event"]))
        except (KeyError, TypeError, ValueError):
            continue
        if entry.get("case_id") is not None and row.get("refers_to"):
            key = f"case:{row['refers_to']}"
            out.pop(key, None)  # a later resolution of the payment replaces the earlier one
        else:
            key = str(n)
        out[key] = row
    return pd.DataFrame(list(out.values()))


def from_stream(client: redis.Redis, prefix: str = "fk", batch: int = 10_000) -> pd.DataFrame:
    """Every entry of the labels stream (capped: the oldest may have been trimmed), as rows."""
    key = labels_stream(prefix)
    entries: list[dict[str, Any]] = []
    start = "-"
    while True:
        chunk: Any = client.xrange(key, min=start, max="+", count=batch)
        entries += [json.loads(fields[b"record"]) for _, fields in chunk]
        if len(chunk) < batch:
            return rows(entries)
        ms, seq = chunk[-1][0].decode().split("-")
        start = f"{ms}-{int(seq) + 1}"


def with_labels(history: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The history plus the label rows it does not already hold (by event id); columns the
    labels lack get the history's empty value (False for flags such as ``is_fraud``)."""
    if labels.empty:
        return history
    new = labels[~labels["event_id"].isin(set(history["event_id"].astype(str)))].copy()
    for column in history.columns:
        if column not in new.columns:
            new[column] = False if history[column].dtype == bool else None
    return pd.concat([history, new[list(history.columns)].astype(history.dtypes.to_dict(), errors="ignore")],
                     ignore_index=True)


__all__ = ["from_stream", "rows", "with_labels"]
