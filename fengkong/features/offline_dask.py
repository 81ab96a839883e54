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

import hashlib
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.features.ip_addresses import subnets_of
from fengkong.features.lists import ListSpec

#: A job of `bounded_tasks`: whatever names one task.
J = TypeVar("J")

#: pass name -> the flat-event key it splits on (subnet: computed from ``ip``)
PASSES: dict[str, str] = {"card": "card_fingerprint", "user": "user_id", "device": "device_id", "subnet": "ip",
                          "merchant": "merchant_id"}
_ENTITY_PASS = {"card": "card", "user": "user", "device": "device", "ip": "subnet", "subnet": "subnet",
                "merchant": "merchant", "merchant_card": "merchant"}
_ROW = "card"  # the pass the row's own features are taken from (any would do)
_LAST = "merchant"  # the pass that runs after the others (`_known_new`)


def _declared() -> dict[str, str]:
    """Feature name -> the entity its declaration is about."""
    out: dict[str, str] = {}
    for kind in (d.ROLLING, d.DISTINCT, d.SEEN, d.FIRST_SEEN, d.MOMENTS, d.HOUR_HABITS, d.RECENT_AMOUNTS,
                 d.MEMBER_FIRST_SEEN):
        for decl in kind:
            for name in decl.outputs():
                out[name] = decl.entity.name
    return out


def column_pass(name: str, declared: Mapping[str, str] | None = None) -> str:
    """Which pass computes the column ``name`` exactly."""
    declared = _declared() if declared is None else declared
    if name in declared:
        return _ENTITY_PASS[declared[name]]
    ns = name.split(".", 1)[0]
    if ns in ("card", "user", "device", "merchant"):
        return ns
    return _ROW  # event.*, lists.*, IP intelligence: the row's own


def split_keys(events: pd.DataFrame, pass_name: str, partitions: int) -> np.ndarray:
    """The part (0..partitions-1) of every row for one pass: a stable hash of its key.

    A row without the key (a login has no card) has none of the pass's entity features, so
    it may go to any part: it goes by its event_id (a retry with its first delivery), so
    that the rows without a card, say, do not all crowd into one part."""
    col = PASSES[pass_name]
    key = events[col].astype(object) if col in events.columns else pd.Series(None, index=events.index, dtype=object)
    if pass_name == "subnet":
        key = subnets_of(key.where(key.notna(), None))
    if "event_id" in events.columns:
        key = key.where(key.notna(), "\0" + events["event_id"].astype(str).to_numpy(dtype=object))
    text = key.where(key.notna(), "").astype(str)
    hashed = pd.util.hash_pandas_object(text, index=False).to_numpy()
    return (hashed % np.uint64(partitions)).astype(np.int64)


def _lists_files(lists_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(lists_dir).iterdir()) if p.is_file()}


@lru_cache(maxsize=4)
def _ipintel(digest: str, files: tuple[tuple[str, bytes], ...]) -> Any:
    """The IP intelligence a worker loads once per lists content (``digest`` keys the cache)."""
    from fengkong.features.ipintel import IpIntel

    folder = Path(tempfile.mkdtemp(prefix=f"fk-lists-{digest[:8]}-"))
    for name, data in files:
        (folder / name).write_bytes(data)
    return IpIntel.load(folder)


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
    shared = {"lists_files": _lists_files(lists_dir), "lists": lists,
              "list_entries": {k: list(v) for k, v in (list_entries or {}).items()}, "profiles": profiles, **kwargs}
    shared_f = {k: client.scatter(v, broadcast=True) if isinstance(v, pd.DataFrame) else v
                for k, v in shared.items()}
    declared = _declared()
    pieces: dict[str, list[pd.DataFrame]] = {name: [] for name in PASSES}
    names: list[str] = []
    by_pass: dict[str, pd.DataFrame] = {}
    # the merchant pass last: its make-up of today reads whether each payment's card and
    # account were new, which only the card and user passes see whole
    for stage in ([name for name in PASSES if name != _LAST], [_LAST]):
        known_new = _known_new(by_pass) if stage == [_LAST] else None
        for pass_name, result in _run_parts(client, flat, partitions, declared, shared_f, stage, known_new):
            frame, all_names = result
            pieces[pass_name].append(frame)
            names = names or all_names
        for name in stage:  # each pass's pieces freed once joined
            frames = pieces.pop(name)
            if frames:
                by_pass[name] = pd.concat(frames).sort_index()
            del frames
    base = by_pass[_ROW]
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


def bounded_tasks(client: Any, jobs: Iterable[J], submit: Callable[[J], Any]) -> Iterator[tuple[J, Any]]:
    """Each job's result with its job, in the order they finish, with at most two tasks per
    worker in flight: the workers then hold a few parts of a history, never all of it.
    ``submit`` sends one job (a future) or returns None for a job with nothing to do."""
    from distributed import as_completed

    todo = iter(jobs)
    running = as_completed()
    by_key: dict[str, J] = {}

    def submit_next() -> None:
        for job in todo:
            future = submit(job)
            if future is not None:
                by_key[future.key] = job
                running.add(future)
                return

    for _ in range(max(2, 2 * len(client.scheduler_info()["workers"]))):
        submit_next()
    for future in running:
        result = future.result()
        job = by_key.pop(future.key)
        future.release()
        submit_next()
        yield job, result


def pass_entities(pass_name: str) -> frozenset[str]:
    """The entities whose store features a pass keeps (and so computes)."""
    return frozenset(entity for entity, name in _ENTITY_PASS.items() if name == pass_name)


def _known_new(by_pass: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per decision row, whether its card and its account were new (`d.TodayMakeup`), from
    the card and user passes (their age in days against ``new_within_s``)."""
    days = d.TODAY_MAKEUP.new_within_s / 86400
    out = {}
    for name in ("card", "user"):
        age = by_pass[name][f"{name}.age_days"] if name in by_pass else pd.Series(dtype=float)
        out[name] = pd.to_numeric(age, errors="coerce").lt(days)
    return pd.DataFrame(out)


def _pass_task(rows: pd.DataFrame, *, pass_name: str, declared: Mapping[str, str], lists_files: dict[str, bytes],
               **kwargs: Any) -> tuple[pd.DataFrame, list[str]]:
    """One part of one pass on a worker: the columns this pass computes exactly (and only
    its own entities' store features are computed)."""
    from fengkong.features.offline import offline_features

    files = tuple(sorted(lists_files.items()))
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + b for n, b in files)).hexdigest()
    features = offline_features(rows, ipintel=_ipintel(digest, files), entities=pass_entities(pass_name), **kwargs)
    names = list(features.columns)
    keep = [c for c in names if column_pass(c, declared) == pass_name]
    return features[keep], names
