"""The offline twin on a Dask cluster: the same features as `offline_features`, exactly.

Why partition by entity. Every feature of a row is about ONE entity of that row
(its card, user, device, IP or /24, merchant, merchant x card) and reads only that
entity's own earlier events, or is about the row alone (the event's fields, IP
intelligence, list membership, the merchant's static profile). So the history is
split five times, each time by one key, and the twin runs unchanged on every part:

| pass | key | exact features |
| --- | --- | --- |
| card | card fingerprint | ``card.*`` (not merchant x card) and the row's own |
| user | user_id | ``user.*`` |
| device | device_id | ``device.*`` |
| subnet | the IP's /24 (IPv6 /64) | ``ip.*`` of the IP and of the subnet (an IP lies in one subnet) |
| merchant | merchant_id | ``merchant.*`` and merchant x card (a pair lies in one merchant) |

Within a part, every event of the key's entity is present, in its original order,
so that entity's features are the whole history's; the others in that part are
wrong and are dropped. A column's entity is the one its declaration names
(`definitions`), else its namespace; ``ip.*`` columns no declaration names are IP
intelligence (the row's own). Splitting by time with carried state would need every
kind's state handed across the cut; splitting by entity needs nothing but the key.
Each pass computes only the store features of its own entities (`offline_features`'s
``entities``): the other entities' columns are blanks it drops. What every pass still
repeats is the per-row work (reading the events, IP intelligence, the event's own
columns and the assembly), and the history goes out and the features come back, so
the cluster spends about four times the CPU of one pandas run, spread over its
workers (docs/scale.md, "Batch on Dask"). At most two parts per worker are in flight,
so the workers hold a few parts of the history at a time, not five copies of it.

One kind reads two entities: today's make-up of a merchant's payments counts those whose
card or account was new (`definitions.TodayMakeup`), which only the card and user passes
see whole. So the merchant pass runs after the others and is handed, per payment,
whether its card and account were new (their ``age_days`` from those passes).

A retry (the same event_id, the same body) lands in the same part as its first
delivery. An event_id reused with OTHER entities (which the online store refuses)
could land in two parts, and each would count it: not the pandas twin's answer.

Workers need nothing from this machine's disk: the IP lists travel with the tasks
(a few KB) and are loaded once per worker process. The price is that this process holds
the history and gathers every part's features; for a history past its memory,
`offline_parts` runs the same passes from files and leaves the features in files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd

from fengkong.features.lists import ListSpec
from fengkong.features.offline_split import (
    LAST_PASS,
    PASSES,
    ROW_PASS,
    bounded_tasks,
    column_pass,
    declared_entities,
    lists_files,
    new_within,
    pass_entities,
    split_keys,
    worker_ipintel,
)


def offline_features_dask(
    events: pd.DataFrame,
    *,
    client: Any,
    lists_dir: Path,
    lists: dict[str, ListSpec] | None = None,
    list_entries: Mapping[str, Iterable[str]] | None = None,
    profiles: pd.DataFrame | None = None,
    partitions: int = 8,
    **kwargs: Any,
) -> pd.DataFrame:
    """`offline_features` of ``events`` computed on the Dask cluster of ``client`` (a
    `distributed.Client`), split by entity (see the module's docstring): the same frame,
    row for row and column for column. ``lists_dir`` is the folder `IpIntel.load` reads."""
    if partitions < 1:
        raise ValueError(f"partitions: must be at least 1, got {partitions}")
    original_index = events.index
    flat = events.reset_index(drop=True)
    shared = {"lists_files": lists_files(lists_dir), "lists": lists,
              "list_entries": {k: list(v) for k, v in (list_entries or {}).items()}, "profiles": profiles, **kwargs}
    shared_f = {k: client.scatter(v, broadcast=True) if isinstance(v, pd.DataFrame) else v
                for k, v in shared.items()}
    declared = declared_entities()
    pieces: dict[str, list[pd.DataFrame]] = {name: [] for name in PASSES}
    names: list[str] = []
    by_pass: dict[str, pd.DataFrame] = {}
    # the merchant pass last: its make-up of today reads whether each payment's card and
    # account were new, which only the card and user passes see whole
    for stage in ([name for name in PASSES if name != LAST_PASS], [LAST_PASS]):
        known_new = _known_new(by_pass) if stage == [LAST_PASS] else None
        for pass_name, result in _run_parts(client, flat, partitions, declared, shared_f, stage, known_new):
            frame, all_names = result
            pieces[pass_name].append(frame)
            names = names or all_names
        for name in stage:  # each pass's pieces freed once joined
            frames = pieces.pop(name)
            if frames:
                by_pass[name] = pd.concat(frames).sort_index()
            del frames
    base = by_pass[ROW_PASS]
    columns = {c: by_pass[column_pass(c, declared)][c] for c in names}
    out = pd.DataFrame(columns, index=base.index)
    out.index = original_index[out.index.to_numpy()]
    return out


def _run_parts(client: Any, flat: pd.DataFrame, partitions: int, declared: Mapping[str, str],
               shared: Mapping[str, Any], stage: list[str],
               known_new: pd.DataFrame | None) -> Iterator[tuple[str, Any]]:
    """Every part of every pass of `stage` as a task, at most two per worker sent at a
    time (so the workers hold a few parts of the history, not five copies of it); each
    result with its pass, in the order they finish. ``known_new`` goes to each part
    (the merchant pass's make-up of today)."""
    keys = {name: split_keys(flat, name, partitions) for name in stage}

    def submit(job: tuple[str, int]) -> Any:
        name, p = job
        rows = flat[keys[name] == p]
        if not len(rows):
            return None
        extra = {"known_new": client.scatter(known_new.reindex(rows.index))} if known_new is not None else {}
        return client.submit(_pass_task, client.scatter(rows), pass_name=name, declared=declared,
                             pure=False, **shared, **extra)

    jobs = ((name, p) for name in stage for p in range(partitions))
    for (name, _), result in bounded_tasks(client, jobs, submit):
        yield name, result


def _known_new(by_pass: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per decision row, whether its card and its account were new (`d.TodayMakeup`), from
    the card and user passes."""
    return pd.DataFrame({name: new_within(by_pass[name][f"{name}.age_days"] if name in by_pass
                                          else pd.Series(dtype=float)) for name in ("card", "user")})


def _pass_task(rows: pd.DataFrame, *, pass_name: str, declared: Mapping[str, str], lists_files: dict[str, bytes],
               **kwargs: Any) -> tuple[pd.DataFrame, list[str]]:
    """One part of one pass on a worker: the columns this pass computes exactly (and only
    its own entities' store features are computed)."""
    from fengkong.features.offline import offline_features

    features = offline_features(rows, ipintel=worker_ipintel(lists_files), entities=pass_entities(pass_name), **kwargs)
    names = list(features.columns)
    keep = [c for c in names if column_pass(c, declared) == pass_name]
    return features[keep], names
