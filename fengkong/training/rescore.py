"""The nightly job (`fengkong rescore`): merchant features -> anomaly scores -> grades.

One function does the work for a set of merchants (`score_partition`: daily
features, the model's anomaly score, the grade policy over every day); it needs
all events of its merchants and nothing else, so the job splits the history by
merchant and runs it on each part: in this process with a progress bar
(``engine="pandas"``), or on a Dask cluster (``engine="dask"``, the history
shuffled by merchant_id), with the same answer either way.

Then the current grades go to Redis (`OnlineStore.set_grades`: grade and
reason, read by the next decision as ``merchant.grade``; plus ``daily_cap`` from
the grade policy and the nightly ``anomaly`` score with its ``anomaly_day`` in the
same profile hash) and to a report (`write_report`). A merchant whose stored grade
changes is published as a ``merchant.grade_changed`` webhook event (queued only
when a subscription wants the kind; docs/webhooks.md).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
import pandas as pd

from fengkong.features.change_audit import change_record, changes_key
from fengkong.features.definitions import DEFAULT_GRADE
from fengkong.models.merchant_model import MerchantAnomalyModel
from fengkong.training.grade_policy import GradePolicy
from fengkong.training.grading import current_grades, grade_history
from fengkong.training.merchant_features import FEATURES, READS, daily_features, day_range
from fengkong.webhooks import publish_many

_HISTORY_COLUMNS = ["merchant_id", "day", "grade", "changed", "reason", "anomaly"]


def score_partition(events: pd.DataFrame, *, profiles: pd.DataFrame | None, days: tuple[int, int],
                    model: MerchantAnomalyModel | None, policy: GradePolicy,
                    initial: dict[str, str] | None = None) -> pd.DataFrame:
    """Daily features, anomaly and grade of every day of the merchants in ``events``."""
    daily = daily_features(events, profiles=profiles, days=days)
    if len(daily) == 0:
        return _empty()
    daily["anomaly"] = model.anomaly_score(daily) if model is not None else np.nan
    hist = grade_history(daily, policy, initial=initial)
    # grade_history sorts by (merchant_id, day) as daily_features does: align by position
    daily = daily.sort_values(["merchant_id", "day"], kind="stable").reset_index(drop=True)
    for col in ("grade", "changed", "reason"):
        daily[col] = hist[col].to_numpy()
    return daily


def _empty() -> pd.DataFrame:
    cols: dict[str, Any] = {"merchant_id": pd.Series([], dtype="str"), "day": pd.Series([], dtype=object)}
    cols.update({f: pd.Series([], dtype="float64") for f in (*FEATURES, "anomaly")})
    cols.update({"grade": pd.Series([], dtype=object), "changed": pd.Series([], dtype=bool),
                 "reason": pd.Series([], dtype=object)})
    return pd.DataFrame(cols)


@dataclass
class RescoreResult:
    daily: pd.DataFrame  # every merchant-day: features, anomaly, grade, changed, reason
    current: pd.DataFrame  # one row per merchant: grade, reason, since, anomaly, limits
    policy: GradePolicy
    payments: int
    engine: str

    @property
    def changes(self) -> pd.DataFrame:
        cols = ["merchant_id", "day", "grade", "reason", "anomaly", "volume", "count", "chargeback_ratio_30d"]
        return self.daily.loc[self.daily["changed"], cols].reset_index(drop=True)


def _with_limits(current: pd.DataFrame, policy: GradePolicy) -> pd.DataFrame:
    out = current.copy()
    out["single_limit"] = out["grade"].map(policy.single_limit_minor) / 100
    out["daily_cap"] = out["grade"].map(policy.daily_cap_minor) / 100
    return out


def _split(events: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    """Split a history into ``parts`` frames, each holding all events of its merchants."""
    codes, _ = pd.factorize(events["merchant_id"], sort=True)
    part = np.where(codes >= 0, codes % parts, 0)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(parts + 1))
    return [events.iloc[order[bounds[i]:bounds[i + 1]]] for i in range(parts) if bounds[i + 1] > bounds[i]]


def rescore(
    events: pd.DataFrame | Any,
    *,
    policy: GradePolicy,
    model: MerchantAnomalyModel | None,
    profiles: pd.DataFrame | None = None,
    engine: str = "pandas",
    parts: int = 8,
    dask_client: Any = None,
    initial: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RescoreResult:
    """Rescore every merchant of a flat-event history (a pandas or, for dask, a dask DataFrame)."""
    if engine == "pandas":
        if not isinstance(events, pd.DataFrame):
            events = events.compute()
        days = day_range(events)
        chunks = _split(events, max(1, parts))
        results = []
        for i, chunk in enumerate(chunks):
            results.append(score_partition(chunk, profiles=profiles, days=days, model=model, policy=policy,
                                           initial=initial))
            if progress:
                progress(i + 1, len(chunks))
        daily = pd.concat(results, ignore_index=True) if results else pd.DataFrame(columns=_HISTORY_COLUMNS)
        payments = int((events["type"] == "payment").sum())
    elif engine == "dask":
        daily, payments = _rescore_dask(events, policy=policy, model=model, profiles=profiles, parts=parts,
                                        client=dask_client, initial=initial, progress=progress)
    else:
        raise ValueError(f"engine: {engine!r} is not pandas or dask")
    daily = daily.sort_values(["merchant_id", "day"], kind="stable").reset_index(drop=True)
    daily["changed"] = daily["changed"].astype(bool)
    hist = daily[_HISTORY_COLUMNS]
    current = _with_limits(current_grades(hist), policy)
    return RescoreResult(daily, current, policy, payments, engine)


def read_history(path: Path, *, on_workers: bool = False) -> Any:
    """The columns the job reads (`merchant_features.READS`) of a Parquet history (a file or a
    folder of files): a pandas frame, or with ``on_workers`` a Dask frame that the cluster's
    workers read themselves, so that this process never holds the history (the workers must
    reach ``path``: the local cluster's disk, or a shared mount)."""
    import pyarrow.dataset as ds

    names = set(ds.dataset(path, format="parquet").schema.names)
    columns = [c for c in READS if c in names]
    if on_workers:
        import dask.dataframe as dd

        return dd.read_parquet(str(path), columns=columns)
    return pd.read_parquet(path, columns=columns)


def _rescore_dask(events: Any, *, policy: GradePolicy, model: MerchantAnomalyModel | None,
                  profiles: pd.DataFrame | None, parts: int, client: Any, initial: dict[str, str] | None,
                  progress: Callable[[int, int], None] | None) -> tuple[pd.DataFrame, int]:
    import dask.dataframe as dd

    ddf = events if isinstance(events, dd.DataFrame) else dd.from_pandas(events, npartitions=max(1, parts))
    ddf = ddf.dropna(subset=["merchant_id"])
    # the global day range, so every partition builds the same calendar
    lo_hi = ddf.map_partitions(lambda p: pd.DataFrame([day_range(p)] if len(p) else [], columns=["lo", "hi"]),
                               meta={"lo": "int64", "hi": "int64"})
    bounds, payments = (dask_compute(client, lo_hi, (ddf["type"] == "payment").sum()))
    days = (int(bounds["lo"].min()), int(bounds["hi"].max()))
    shuffled = ddf.shuffle(on="merchant_id", npartitions=max(1, parts))
    meta = _empty()
    out = shuffled.map_partitions(score_partition, profiles=profiles, days=days, model=model, policy=policy,
                                  initial=initial, meta=meta)
    daily = dask_compute(client, out)[0]
    if progress:
        progress(1, 1)
    return daily, int(payments)


def dask_compute(client: Any, *collections: Any) -> tuple[Any, ...]:
    import dask

    if client is not None:
        futures = client.compute(list(collections))
        return tuple(client.gather(futures))
    return dask.compute(*collections)


# -- Redis ----------------------------------------------------------------------------------------
def write_to_store(store: Any, current: pd.DataFrame, policy: GradePolicy, *, write_caps: bool = True,
                   batch: int = 5_000, actor: str = "rescore", audit_maxlen: int = 100_000) -> int:
    """Grades (+ reason) through `OnlineStore.set_grades`; anomaly, anomaly_day and the
    grade's daily cap into the same profile hash. Returns the merchants written.

    Each grade this changes is also a ``merchant.grade`` record in the change audit (by
    `actor`), so a merchant's grade history shows the nightly job's changes beside the
    analysts' edits."""
    rows = current.to_dict("records")
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        before = _grades_now(store, [r["merchant_id"] for r in chunk])
        store.set_grades({r["merchant_id"]: (r["grade"], r["reason"] or "") for r in chunk})
        # webhooks: merchant.grade_changed for the merchants whose stored grade this changed
        changed = [("merchant.grade_changed", {"merchant_id": r["merchant_id"], "grade": r["grade"],
                                               "previous_grade": old, "reason": r["reason"] or None,
                                               "source": "rescore"})
                   for r, old in zip(chunk, before) if old != r["grade"]]
        publish_many(store.client, changed, prefix=store.prefix)
        pipe = store.client.pipeline(transaction=False)
        for _, payload in changed:
            record = change_record(actor=actor, action="merchant.grade", version=None, detail={
                "merchant_id": payload["merchant_id"],
                "fields": {"grade": payload["grade"], "previous_grade": payload["previous_grade"],
                           "reason": payload["reason"] or ""}})
            pipe.xadd(changes_key(store.prefix), {"record": orjson.dumps(record)}, maxlen=audit_maxlen,
                      approximate=True)
        for r in chunk:
            fields: dict[str, Any] = {}
            if r.get("anomaly") is not None and not pd.isna(r["anomaly"]):
                fields["anomaly"] = f"{float(r['anomaly']):.6f}"
                fields["anomaly_day"] = str(r["anomaly_day"])
            if write_caps:
                fields["daily_cap"] = int(policy.daily_cap_minor[r["grade"]])
            if fields:
                pipe.hset(store.profile_key(r["merchant_id"]), mapping=fields)
        pipe.execute()
    return len(rows)


def _grades_now(store: Any, merchant_ids: list[str]) -> list[str]:
    """The grades stored now (the default grade where a merchant has none)."""
    pipe = store.client.pipeline(transaction=False)
    for m in merchant_ids:
        pipe.hget(store.profile_key(m), "grade")
    return [g.decode() if isinstance(g, bytes) else (g or DEFAULT_GRADE) for g in pipe.execute()]


# -- report ---------------------------------------------------------------------------------------
def write_report(result: RescoreResult, out: Path, *, recent_days: int = 7, seconds: float | None = None) -> dict[str, Path]:
    """grades.csv (every merchant), changes.csv (every change, with reasons), daily.parquet
    (every merchant-day) and report.html (grade movements plot + recent movers)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"grades": out / "grades.csv", "changes": out / "changes.csv", "daily": out / "daily.parquet",
             "html": out / "report.html"}
    result.current.to_csv(paths["grades"], index=False)
    changes = result.changes
    changes.to_csv(paths["changes"], index=False)
    result.daily.to_parquet(paths["daily"], index=False)
    paths["html"].write_text(_html(result, changes, recent_days, seconds), encoding="utf-8")
    return paths


def _plot_png(daily: pd.DataFrame, policy: GradePolicy) -> str:
    import matplotlib  # only the report draws: the job itself never loads matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = daily.groupby(["day", "grade"]).size().unstack(fill_value=0)
    order = [g for g in (*reversed(policy.ladder), *[g for g in policy.names if g not in policy.ladder])
             if g in counts.columns]
    counts = counts[order]
    moves = daily[daily["changed"]]
    ups = moves[moves["reason"].str.startswith("upgrade")].groupby("day").size()
    downs = moves[moves["reason"].str.startswith("downgrade")].groupby("day").size()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    x = pd.to_datetime(counts.index)
    ax1.stackplot(x, counts.T.to_numpy(), labels=list(counts.columns))
    ax1.set_ylabel("merchants")
    ax1.set_title("Merchants by grade, per day")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.bar(pd.to_datetime(ups.index), ups.to_numpy(), color="tab:green", label="upgrades")
    ax2.bar(pd.to_datetime(downs.index), -downs.to_numpy(), color="tab:red", label="downgrades")
    ax2.set_ylabel("grade changes")
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _html(result: RescoreResult, changes: pd.DataFrame, recent_days: int, seconds: float | None) -> str:
    daily = result.daily
    last_day = pd.to_datetime(daily["day"]).max() if len(daily) else None
    recent = changes
    if last_day is not None:
        recent = changes[pd.to_datetime(changes["day"]) > last_day - pd.Timedelta(days=recent_days)]
    png = _plot_png(daily, result.policy) if len(daily) else ""
    dist = result.current["grade"].value_counts()
    rows = "".join(
        f"<tr><td>{html.escape(str(r.merchant_id))}</td><td>{r.day}</td><td>{html.escape(str(r.grade))}</td>"
        f"<td>{'' if pd.isna(r.anomaly) else f'{r.anomaly:.3f}'}</td><td>{html.escape(str(r.reason))}</td></tr>"
        for r in recent.sort_values(["day", "merchant_id"], ascending=[False, True]).itertuples())
    took = f", {seconds:.1f} s" if seconds is not None else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>fengkong rescore</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}</style>
</head><body><h1>Merchant grades (商户评级)</h1>
<p>{result.payments:,} payments, {len(result.current):,} merchants, engine {result.engine}{took};
policy {html.escape(result.policy.source)}; last day {last_day.date() if last_day is not None else '-'}.</p>
<p>Grades now: {', '.join(f'{g} {n:,}' for g, n in dist.items())}. Changes in the history: {len(changes):,}.</p>
{f'<img alt="grade movements" src="data:image/png;base64,{png}">' if png else ''}
<h2>Merchants that moved in the last {recent_days} day(s) ({len(recent):,})</h2>
<table><tr><th>merchant</th><th>day</th><th>new grade</th><th>anomaly</th><th>reason</th></tr>{rows}</table>
</body></html>"""
