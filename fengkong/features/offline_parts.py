"""The offline twin of a history larger than memory: split by entity into parts on disk,
each part's features written to a file beside it, read back only as far as asked.

The split is `offline_split`'s (as `offline_dask`'s) (each pass keys the history by one entity, and a part holds
every event of its entities, so their features are exact), but both the history's parts
and their features live in files under one folder, so no process ever holds the whole
history's features, nor the whole history as a frame: `split_history` streams the history
file in batches into one file per (pass, part); each part is then a task that reads its
file, runs the twin on it, writes its own columns to ``features/<pass>/part-NNNNN.pkl``
and returns only their names (and, from the card and user passes, whether each payment's
card and account were new, which the merchant pass needs: `offline_dask`'s ``known_new``).
The tasks run one after the other in this process (``client=None``) or on a Dask cluster,
at most two per worker at a time; the folder must then be one the workers can reach at
the same path (the local cluster's, or a shared mount).

The features are pickled, not Parquet: the twin's object columns mix None and NaN, and
bools with None, which a Parquet round trip would not give back exactly.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
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
ROW = "__row"  # a part's column holding each event's position in the whole history
_KEY_COLUMNS = sorted({*PASSES.values(), "event_id"})  # event_id: where a row without the key goes


@dataclass
class SplitHistory:
    """A history split into part files, per pass: ``folder/history/<pass>/part-NNNNN.<suffix>``.

    ``index``: the history's own index by position (None: the positions themselves).
    """

    folder: Path
    partitions: int
    rows: int
    suffix: str
    index: pd.Index | None = None

    def path(self, pass_name: str, part: int) -> Path:
        return self.folder / "history" / pass_name / f"part-{part:05d}.{self.suffix}"


def split_history(source: pd.DataFrame | Path, folder: Path, partitions: int, *,
                  batch_rows: int = 1_000_000) -> SplitHistory:
    """Split a history (a flat-event frame, or a Parquet file of one, read ``batch_rows`` at a
    time) into ``partitions`` parts per pass under ``folder``. A part keeps its events in the
    history's order, with their positions in column `ROW`."""
    if partitions < 1:
        raise ValueError(f"partitions: must be at least 1, got {partitions}")
    folder = Path(folder)
    for name in PASSES:
        (folder / "history" / name).mkdir(parents=True, exist_ok=True)
    if isinstance(source, pd.DataFrame):
        flat = source.reset_index(drop=True)
        flat[ROW] = np.arange(len(flat), dtype=np.int64)
        split = SplitHistory(folder, partitions, len(flat), "pkl", source.index)
        for name in PASSES:
            keys = split_keys(flat, name, partitions)
            for p in range(partitions):
                flat[keys == p].to_pickle(split.path(name, p))
        return split
    return _split_file(Path(source), folder, partitions, batch_rows)


def _split_file(source: Path, folder: Path, partitions: int, batch_rows: int) -> SplitHistory:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not source.is_file():
        raise FileNotFoundError(f"history: no such file {source}")
    file = pq.ParquetFile(source)
    schema = file.schema_arrow.append(pa.field(ROW, pa.int64()))
    index = pd.read_parquet(source, columns=[]).index  # the frame's own, when the file keeps one
    split = SplitHistory(folder, partitions, file.metadata.num_rows, "parquet",
                         None if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 else index)
    writers = {(name, p): pq.ParquetWriter(split.path(name, p), schema)
               for name in PASSES for p in range(partitions)}
    try:
        at = 0
        for batch in file.iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([batch]).append_column(
                ROW, pa.array(np.arange(at, at + batch.num_rows, dtype=np.int64)))
            at += batch.num_rows
            keyed = table.select([c for c in _KEY_COLUMNS if c in table.column_names]).to_pandas()
            for name in PASSES:
                keys = split_keys(keyed, name, partitions)
                order = np.argsort(keys, kind="stable")  # by part, each part's rows in history order
                by_part = table.take(pa.array(order))
                bounds = np.searchsorted(keys[order], np.arange(partitions + 1))
                for p in range(partitions):
                    writers[name, p].write_table(by_part.slice(bounds[p], bounds[p + 1] - bounds[p]))
                del by_part
    finally:
        for writer in writers.values():
            writer.close()
    return split


def read_part(path: Path) -> pd.DataFrame:
    """A part of a split history, indexed by the events' positions in the whole history."""
    frame = pd.read_pickle(path) if path.suffix == ".pkl" else pd.read_parquet(path)
    return frame.set_index(ROW).rename_axis(None)


@dataclass
class FeatureParts:
    """The twin's features of a split history, one file per (pass, part): `read` joins the
    columns asked for, in the twin's column order, with the history's index."""

    folder: Path
    partitions: int
    names: list[str]
    index: pd.Index | None = None
    declared: Mapping[str, str] = field(default_factory=declared_entities, repr=False)

    def path(self, pass_name: str, part: int) -> Path:
        return self.folder / "features" / pass_name / f"part-{part:05d}.pkl"

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The features (``columns``: only those, in that order), as `offline_features` gives
        them; each part's file is read once and only the asked columns kept."""
        wanted = list(self.names if columns is None else columns)
        unknown = [c for c in wanted if c not in self.names]
        if unknown:
            raise KeyError(f"columns: not features of this twin: {unknown[:5]}")
        by_pass: dict[str, list[str]] = {}
        for c in wanted:
            by_pass.setdefault(column_pass(c, self.declared), []).append(c)
        row_pass = next(iter(by_pass), ROW_PASS)
        got: dict[str, pd.DataFrame] = {}
        for name in dict.fromkeys([row_pass, *by_pass]):
            parts = [pd.read_pickle(self.path(name, p))[by_pass.get(name, [])] for p in range(self.partitions)]
            got[name] = pd.concat(parts).sort_index() if parts else pd.DataFrame()
            del parts
        base = got[row_pass]
        out = pd.DataFrame({c: got[column_pass(c, self.declared)][c] for c in wanted}, index=base.index)
        if self.index is not None:
            out.index = self.index[out.index.to_numpy()]
        return out


def offline_features_parts(
    history: pd.DataFrame | Path,
    folder: Path,
    *,
    lists_dir: Path,
    client: Any = None,
    partitions: int = 8,
    lists: dict[str, ListSpec] | None = None,
    list_entries: Mapping[str, Iterable[str]] | None = None,
    profiles: pd.DataFrame | None = None,
    batch_rows: int = 1_000_000,
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> FeatureParts:
    """`offline_features` of ``history`` (a frame, or the Parquet file of one) written under
    ``folder`` part by part: in this process (``client`` None) or on the Dask cluster of
    ``client``, whose workers must reach ``folder`` at the same path. Returns the handle that
    reads them back (`FeatureParts.read`: the very frame `offline_features` returns).
    ``progress`` is called with the name of each step as it ends (``split``, ``passes``,
    ``merchant``): for a caller that measures them."""
    folder = Path(folder)
    step = progress or (lambda name: None)
    split = split_history(history, folder, partitions, batch_rows=batch_rows)
    step("split")
    shared = {"lists_files": lists_files(lists_dir), "lists": lists, "profiles": profiles,
              "list_entries": {k: list(v) for k, v in (list_entries or {}).items()}, **kwargs}
    if client is not None:
        shared = {k: client.scatter(v, broadcast=True) if isinstance(v, pd.DataFrame) else v
                  for k, v in shared.items()}
    out = FeatureParts(folder, partitions, [], split.index)
    for name in PASSES:
        (folder / "features" / name).mkdir(parents=True, exist_ok=True)
    new_pieces: dict[str, list[pd.Series]] = {"card": [], "user": []}
    first = [name for name in PASSES if name != LAST_PASS]
    jobs = [(name, p, None) for name in first for p in range(partitions)]
    for (name, _, _), (names, new) in _run(jobs, split, out, shared, client):
        out.names = out.names or names
        if name in new_pieces:
            new_pieces[name].append(new)
    step("passes")
    known_new = pd.DataFrame({k: pd.concat(v) if v else pd.Series(dtype=bool) for k, v in new_pieces.items()})
    del new_pieces
    merchant_part = _parts_of(split, LAST_PASS)
    jobs = [(LAST_PASS, p, known_new[merchant_part.reindex(known_new.index).to_numpy() == p]) for p in range(partitions)]
    del known_new
    for _, (names, _) in _run(jobs, split, out, shared, client):
        out.names = out.names or names
    step("merchant")
    return out


def _parts_of(split: SplitHistory, pass_name: str) -> pd.Series:
    """Each event's part in one pass, by position (read back from the split's files)."""
    pieces = []
    for p in range(split.partitions):
        path = split.path(pass_name, p)
        rows = (pd.read_pickle(path)[ROW] if path.suffix == ".pkl"
                else pd.read_parquet(path, columns=[ROW])[ROW]).to_numpy()
        pieces.append(pd.Series(np.int32(p), index=rows))
    return pd.concat(pieces)


def _run(jobs: list[tuple[str, int, pd.DataFrame | None]], split: SplitHistory, out: FeatureParts,
         shared: Mapping[str, Any], client: Any) -> Iterator[tuple[tuple[str, int, Any], Any]]:
    """Run each (pass, part, known_new) job as `part_task`: here one by one, or on the cluster
    at most two per worker at a time; each result with its job, in the order they finish."""
    def kwargs(job: tuple[str, int, pd.DataFrame | None]) -> dict[str, Any]:
        name, p, known_new = job
        extra = {} if known_new is None else {"known_new": known_new}
        return {"part": str(split.path(name, p)), "out": str(out.path(name, p)), "pass_name": name,
                "declared": dict(out.declared), **shared, **extra}

    if client is None:
        for job in jobs:
            yield job, part_task(**kwargs(job))
        return

    def submit(job: tuple[str, int, pd.DataFrame | None]) -> Any:
        args = kwargs(job)
        if "known_new" in args:
            args["known_new"] = client.scatter(args["known_new"])
        return client.submit(part_task, pure=False, **args)

    yield from bounded_tasks(client, jobs, submit)


def part_task(*, part: str, out: str, pass_name: str, declared: Mapping[str, str], lists_files: dict[str, bytes],
              **kwargs: Any) -> tuple[list[str], pd.Series | None]:
    """One part of one pass, wherever it runs: read the part's events, compute the twin with
    only this pass's entities, write the columns this pass owns to ``out``. Returns every
    column's name and, from the card and user passes, per decision row whether its card
    (account) was new (`d.TodayMakeup`)."""
    from fengkong.features.offline import offline_features

    rows = read_part(Path(part))
    features = offline_features(rows, ipintel=worker_ipintel(lists_files), entities=pass_entities(pass_name), **kwargs)
    del rows
    names = list(features.columns)
    own = features[[c for c in names if column_pass(c, declared) == pass_name]]
    with open(out, "wb") as fh:
        pickle.dump(own, fh, protocol=pickle.HIGHEST_PROTOCOL)
    new = None
    if pass_name in ("card", "user"):
        new = new_within(features[f"{pass_name}.age_days"])
    return names, new
