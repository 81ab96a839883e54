"""The offline twin: for every event of a history, the features the online store
would have returned when that event arrived.

Models are trained and rule changes backtested on these, so they must hold no
future: every value is computed from the events before the row in event-time
order, with the same windows as `lua/update_read.lua` (see `definitions.py`). A
test streams a generated history through the real Redis store and holds every
feature equal to this.

The twin is split by job: `offline_history` (the history in event-time order,
its shared codes, the output layout), `offline_kinds` (per-entity windows,
distinct counts, moments, habits), `offline_merchant` (merchant periods,
baselines, top card) and `offline_frame` (the output frame). This module runs
them: many small tasks (`_TASKS`) on two threads, sharing the entity codes and
query orders of `History`, each computed once by the first task that needs it;
every task writes its features straight into output order, so no column is
gathered a second time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Collection, Iterable, Mapping

import numpy as np
import pandas as pd

from fengkong.features import definitions as d
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import ListSpec, StaticLists
from fengkong.features.offline_frame import assemble_frame, event_columns, merchant_table
from fengkong.features.offline_history import History, history
from fengkong.features.offline_kinds import (
    distinct,
    first_seen,
    first_used,
    hour_habit,
    moments,
    recent_amounts,
    rolling,
    seen,
)
from fengkong.features.offline_merchant import baselines, period_volume, today_makeup, top_share
from fengkong.features.promotions import texts_by_merchant
from fengkong.features.rows import frame_rows

_NUM, _DEN = d.NEAR_LIMIT_FRACTION


def offline_features(
    events: pd.DataFrame,
    *,
    ipintel: IpIntel,
    lists: dict[str, ListSpec] | None = None,
    list_entries: Mapping[str, Iterable[str]] | None = None,
    profiles: pd.DataFrame | None = None,
    grade_limits: Mapping[str, int] | None = None,
    default_limit: int | None = None,
    business_utc_offset_min: int = d.DEFAULT_BUSINESS_UTC_OFFSET_MIN,
    promotions: pd.DataFrame | None = None,
    entities: Collection[str] | None = None,
    history_start_us: int | None = None,
    known_new: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features of every row of a flat-event DataFrame, as the online store gives them.

    ``profiles`` (merchant_id, grade, single_limit, daily_cap, onboarded_at, anomaly) and
    ``list_entries`` are taken as static for the whole history, and so are ``promotions``
    (merchant_id, start, end, expected_multiple: the merchants' planned campaigns,
    `fengkong.features.promotions`), which the profiles' ``promotions`` column may also hold. Rows may come in
    any order; a repeated event_id gets the features of its first delivery and
    counts once. The result holds the decision events (payment, signup, login,
    card_bind) in the input's order and with its index; outcome rows (refund,
    chargeback, ...) count but get no row, as they get no decision online.
    The ~130 columns are kept as computed, not consolidated (that would copy the
    whole frame): join new columns with ``pd.concat(axis=1)`` rather than inserting
    them one by one, or ``.copy()`` the frame first.

    ``entities`` (names of `definitions.Entity`, e.g. ``{"card"}``): compute only the
    store features kept per those entities; every other entity's columns are then
    blanks, not features. For `offline_dask`, whose passes each keep the columns of the
    entities they split by, so that no pass repeats another's work.

    ``history_start_us``: when the
    history began (as `OnlineStore`'s): ages and "new" flags younger than their window
    are missing (`fengkong.features.young`).

    ``known_new`` (boolean columns ``card`` and ``user``, indexed like ``events``): whether
    each payment's card and account were new (`definitions.TodayMakeup`), as found over
    the whole history, for a part of it that lacks their other events (`offline_dask`).
    """
    grade_limits = dict(grade_limits or d.DEFAULT_GRADE_LIMITS)
    if default_limit is None:
        default_limit = grade_limits.get(d.DEFAULT_GRADE, 500_000)
    h, original_index = history(frame_rows(events, ipintel, business_utc_offset_min))
    order = h.order
    if known_new is not None:
        given = known_new.reindex(events.index)
        h.known_new = {name: given[name].fillna(False).to_numpy(dtype=bool)[order] for name in ("card", "user")}
    if promotions is not None:
        profiles = with_promotions(profiles, promotions)
    merchants = merchant_table(h.distinct("merchant_id"), profiles, grade_limits, default_limit)
    limit = merchants["limit"].to_numpy()[h.code("merchant_id")]
    h.rows["near_limit"] = h.type_mask(("payment",)) & (h.amount * _DEN >= limit * _NUM) & (h.amount <= limit)
    lists = lists or {}
    event_task = partial(event_columns, lay=h.out, merchants=merchants, lists=lists,
                         entries=StaticLists(lists, dict(list_entries) if list_entries is not None else None))
    skip = None if entities is None or not len(events) else [
        i for i, t in enumerate(_TASKS) if task_entity(t) not in entities]
    raw, event = _run_tasks(h, event_task, skip=skip,
                            blanks=lambda: _blank_template(events, ipintel, business_utc_offset_min))
    h.forget()  # the assembly below can reuse the memory of the shared codes and orders
    for values in raw.values():
        h.out.fill_repeats(values)
    features = assemble_frame(h, raw, event, h.out, lists, history_start_us)
    features.index = original_index[order[h.out.sel]]
    return features


def with_promotions(profiles: pd.DataFrame | None, promotions: pd.DataFrame) -> pd.DataFrame:
    """``profiles`` with each merchant's planned campaigns as its ``promotions`` text (the profile
    field the online store reads), merchants with campaigns but no profile added."""
    texts = texts_by_merchant(promotions)
    base = profiles.copy() if profiles is not None else pd.DataFrame({"merchant_id": pd.Series(dtype=object)})
    known = set(base["merchant_id"].astype(str))
    extra = [m for m in texts if m not in known]
    if extra:
        base = pd.concat([base, pd.DataFrame({"merchant_id": extra})], ignore_index=True)
    base["promotions"] = base["merchant_id"].astype(str).map(texts).astype(object)
    return base


def _tasks() -> list[Callable[[History], dict[str, np.ndarray]]]:
    """Every feature computation, in output column order; each reads only the shared `History`."""
    by_entity: dict[str, list[d.Rolling]] = {}
    for r in d.ROLLING:
        by_entity.setdefault(r.entity.column, []).append(r)
    return [
        *(partial(rolling, rollings=rollings) for rollings in by_entity.values()),
        *(partial(distinct, x=x) for x in d.DISTINCT),
        *(partial(seen, s=s) for s in d.SEEN),
        *(partial(first_seen, f=f) for f in d.FIRST_SEEN),
        *(partial(moments, m=m) for m in d.MOMENTS),
        *(partial(hour_habit, hh=hh) for hh in d.HOUR_HABITS),
        *(partial(recent_amounts, ra=ra) for ra in d.RECENT_AMOUNTS),
        *(partial(first_used, mf=mf) for mf in d.MEMBER_FIRST_SEEN),
        period_volume,
        baselines,
        top_share,
        today_makeup,
    ]


_TASKS = _tasks()
_MERCHANT_TASKS = (period_volume, baselines, top_share, today_makeup)


def task_entity(task: Callable[[History], dict[str, np.ndarray]]) -> str:
    """The entity (a `definitions.Entity` name) whose store features a task computes."""
    if task in _MERCHANT_TASKS:
        return "merchant"
    keywords = getattr(task, "keywords", {})
    decls = [decl for value in keywords.values() for decl in (value if isinstance(value, list) else [value])]
    names = {decl.entity.name for decl in decls}
    if len(names) != 1:
        raise ValueError(f"feature task {task!r} is not about one entity: {sorted(names)}")  # a bug, never the caller's
    return names.pop()


#: each task's output names and dtypes, by task position
Blanks = dict[int, list[tuple[str, np.dtype[Any]]]]
_BLANKS: Blanks = {}


def _blank_template(events: pd.DataFrame, ipintel: IpIntel, offset_min: int) -> Blanks:
    """Every task's output names and dtypes (by task position), learnt once per process from
    the twin of one event: what a skipped task's blanks are made of."""
    if not _BLANKS:
        tiny, _ = history(frame_rows(events.iloc[:1], ipintel, offset_min))
        tiny.rows["near_limit"] = False
        for i, task in enumerate(_TASKS):
            _BLANKS[i] = [(name, values.dtype) for name, values in task(tiny).items()]
    return _BLANKS


def _blank(n: int, dtype: np.dtype[Any]) -> np.ndarray:
    return np.full(n, np.nan) if dtype.kind == "f" else np.zeros(n, dtype=dtype)


def _run_tasks(h: History, first: Callable[[History], Any], *, skip: list[int] | None = None,
               blanks: Callable[[], Blanks] | None = None
               ) -> tuple[dict[str, np.ndarray], Any]:
    """Run ``first`` and every feature task on two threads, the longest first; the features
    come back in column order, with ``first``'s result. A task in ``skip`` is not run: its
    columns are blanks of their dtype (``blanks()``: each task's names and dtypes).

    The tasks share nothing but `History`'s values, and numpy releases the GIL in the
    sorts, searches and gathers that dominate them, so two threads use both cores;
    many small tasks keep both busy to the end.
    """
    skipped = set(skip or ())
    run = [i for i in range(len(_TASKS)) if i not in skipped]
    longest_first = sorted(run, key=lambda i: _TASKS[i] is not baselines)
    template = blanks() if skipped and blanks is not None else {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {i: pool.submit(_TASKS[i], h) for i in longest_first[:1]}
        first_result = pool.submit(first, h)
        futures.update({i: pool.submit(_TASKS[i], h) for i in longest_first[1:]})
        parts = [futures[i].result() if i in futures
                 else {name: _blank(h.out.n_out, dtype) for name, dtype in template[i]} for i in range(len(_TASKS))]
        result = first_result.result()
    raw: dict[str, np.ndarray] = {}
    for part in parts:
        raw.update(part)
    return raw, result
