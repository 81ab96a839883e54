"""The entity split that both distributed engines of the offline twin share.

`offline_dask` (the history in the client, parts sent to the workers) and `offline_parts`
(the history in part files on disk) split a history the same way: once per pass, each
pass keyed by one entity, so that a part holds every event of its entities and their
features are exact (`offline_dask`'s docstring says why). This module holds what the two
have in common: the passes, which pass owns which column, the split itself, the IP
lists a worker loads once, and the bounded submission of tasks to a cluster.
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

#: A job of `bounded_tasks`: whatever names one task.
J = TypeVar("J")

#: pass name -> the flat-event key it splits on (subnet: computed from ``ip``)
PASSES: dict[str, str] = {"card": "card_fingerprint", "user": "user_id", "device": "device_id", "subnet": "ip",
                          "merchant": "merchant_id"}
_ENTITY_PASS = {"card": "card", "user": "user", "device": "device", "ip": "subnet", "subnet": "subnet",
                "merchant": "merchant", "merchant_card": "merchant"}
#: the pass the row's own features (event.*, lists.*, IP intelligence) are taken from (any would do)
ROW_PASS = "card"
#: the pass that runs after the others: its make-up of today reads whether cards and accounts were new
LAST_PASS = "merchant"


def declared_entities() -> dict[str, str]:
    """Feature name -> the entity its declaration is about (`definitions`)."""
    out: dict[str, str] = {}
    for kind in (d.ROLLING, d.DISTINCT, d.SEEN, d.FIRST_SEEN, d.MOMENTS, d.HOUR_HABITS, d.RECENT_AMOUNTS,
                 d.MEMBER_FIRST_SEEN):
        for decl in kind:
            for name in decl.outputs():
                out[name] = decl.entity.name
    return out


def column_pass(name: str, declared: Mapping[str, str] | None = None) -> str:
    """Which pass computes the column ``name`` exactly (``declared``: `declared_entities`, given
    by a caller that asks for many columns)."""
    declared = declared_entities() if declared is None else declared
    if name in declared:
        return _ENTITY_PASS[declared[name]]
    ns = name.split(".", 1)[0]
    if ns in ("card", "user", "device", "merchant"):
        return ns
    return ROW_PASS  # event.*, lists.*, IP intelligence: the row's own


def pass_entities(pass_name: str) -> frozenset[str]:
    """The entities whose store features a pass keeps (and so computes)."""
    return frozenset(entity for entity, name in _ENTITY_PASS.items() if name == pass_name)


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


def lists_files(lists_dir: Path) -> dict[str, bytes]:
    """The IP lists folder's files by name: they travel with the tasks, so that workers need
    nothing from this machine's disk."""
    return {p.name: p.read_bytes() for p in sorted(Path(lists_dir).iterdir()) if p.is_file()}


def worker_ipintel(files: Mapping[str, bytes]) -> Any:
    """The IP intelligence of the lists ``files`` (`lists_files`), loaded once per worker
    process and lists content."""
    items = tuple(sorted(files.items()))
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + b for n, b in items)).hexdigest()
    return _ipintel(digest, items)


@lru_cache(maxsize=4)
def _ipintel(digest: str, files: tuple[tuple[str, bytes], ...]) -> Any:
    from fengkong.features.ipintel import IpIntel

    folder = Path(tempfile.mkdtemp(prefix=f"fk-lists-{digest[:8]}-"))
    for name, data in files:
        (folder / name).write_bytes(data)
    return IpIntel.load(folder)


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


def new_within(age_days: pd.Series) -> pd.Series:
    """Per decision row, whether its card (account) was new as today's make-up counts it
    (`d.TodayMakeup`), from that pass's ``age_days``."""
    return pd.to_numeric(age_days, errors="coerce").lt(d.TODAY_MAKEUP.new_within_s / 86400)
