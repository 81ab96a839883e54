"""`fengkong train ...` and `fengkong rescore`: the models and the nightly job."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

if TYPE_CHECKING:  # pandas is imported when a command runs, so `fengkong --help` stays quick
    import pandas as pd

train_app = typer.Typer(help="Train the models (artifacts go to --artifacts, default $FENGKONG_ARTIFACTS_DIR or "
                             "./artifacts: where `fengkong serve` loads them).",
                        no_args_is_help=True)


def mapped_history(path: Path, mapping: Path) -> tuple[pd.DataFrame, float | None]:
    """The events `fengkong replay HISTORY --mapping M` runs through, for training on the same
    features: the mapped source events plus the fraud reports its ``label`` stands for
    (``delay`` after each labelled payment, unless the source holds one; none after the last
    event), in event-time order (`fengkong.replay.runner.event_stream`), so outcome-fed
    features (``merchant.chargeback_ratio_30d``, ...) are filled in training as in replay.
    Also returns the label's delay in seconds (None without a label that emits reports): how
    long a payment's label takes to be known, the default label maturity."""
    from fengkong.replay.mapping import Mapping, MappingError
    from fengkong.replay.reader import load_history
    from fengkong.replay.runner import event_stream

    if not path.exists():
        raise typer.BadParameter(f"{path}: no such file", param_hint="--history")
    try:
        history = load_history(path, Mapping.load(mapping))
    except MappingError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mapping") from None
    label = history.mapping.label
    stream = event_stream(history).drop(columns=["ts", "row", "_gen"], errors="ignore")
    return stream, (label.delay_s if label is not None and label.emit_reports else None)


def _read_events(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        raise typer.BadParameter(f"{path}: no such file", param_hint="--history")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if path.is_dir() or suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".jsonl.gz", ".json"):
        return pd.read_json(path, lines=True, dtype=False)
    if suffix in (".csv", ".csv.gz"):
        return pd.read_csv(path, dtype=str).assign(amount=lambda f: pd.to_numeric(f["amount"]).astype("Int64"))
    raise typer.BadParameter(f"{path}: expected .parquet, .jsonl or .csv", param_hint="--history")


def _read_profiles(path: Optional[Path]) -> pd.DataFrame | None:
    import pandas as pd

    if path is None:
        return None
    if not path.exists():
        raise typer.BadParameter(f"{path}: no such file", param_hint="--merchants")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"merchant_id": str})


def _day(text: Optional[str], hint: str) -> Optional[date]:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint=hint) from None


HISTORY = typer.Option(..., "--history", help="Flat-event history (.parquet, .jsonl or .csv), e.g. from `fengkong simulate`.")
MERCHANTS = typer.Option(None, "--merchants", help="Merchant profiles (merchant_id, onboarded_at, single_limit).")
ARTIFACTS = typer.Option(None, "--artifacts", help="Artifacts root (default $FENGKONG_ARTIFACTS_DIR or ./artifacts; "
                         "the deprecated $FENGKONG_ARTIFACTS is still read).")


def _root(artifacts_dir: Optional[Path]) -> Path:
    """The artifacts folder every command resolves the same way (`default_root`)."""
    from fengkong.models.artifacts import ArtifactError, default_root

    try:
        return default_root(artifacts_dir)
    except ArtifactError as exc:
        raise typer.BadParameter(str(exc), param_hint="--artifacts") from None


@train_app.command("merchants")
def train_merchants_cmd(
    history: Path = HISTORY,
    merchants: Optional[Path] = MERCHANTS,
    artifacts_dir: Optional[Path] = ARTIFACTS,
    until: Optional[str] = typer.Option(None, "--until", help="Last training day (later days validate); default 70% of the span."),
    trees: int = typer.Option(100, "--trees", help="IsolationForest trees."),
    min_payments: int = typer.Option(5, "--min-payments", help="Days with fewer payments are not scored."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fit the merchant anomaly model on merchant daily features."""
    import json

    from fengkong.training.train import train_merchants

    root = _root(artifacts_dir)
    art = train_merchants(_read_events(history), profiles=_read_profiles(merchants),
                          root=root, until=_day(until, "--until"), n_estimators=trees,
                          min_payments=min_payments, random_state=seed)
    typer.echo(f"saved {art.path}")
    typer.echo(json.dumps(art.meta["metrics"], indent=2))


@train_app.command("transactions")
def train_transactions_cmd(
    history: Path = HISTORY,
    mapping: Optional[Path] = typer.Option(None, "--mapping", help="A `fengkong replay` mapping file for other exports."),
    merchants: Optional[Path] = MERCHANTS,
    artifacts_dir: Optional[Path] = ARTIFACTS,
    rules_dir: Path = typer.Option(Path("rules"), "--rules", help="Rule pack the fused score is fit on and stored "
                                   "with (its rules alone: without the rules reading model.*)."),
    lists_dir: Optional[Path] = typer.Option(None, "--lists", help="IP intelligence and list declarations "
                                             "(default: the lists/ folder of --rules)."),
    lists_file: Optional[Path] = typer.Option(None, "--lists-file", help="JSON {list: entries...} the live lists "
                                              "hold (e.g. blacklist.json from fengkong simulate)."),
    labels: str = typer.Option("reported", "--labels", help="Training labels: reported (payments with a chargeback "
                               "or fraud report before the end of the last training day: what a real platform "
                               "knows) or oracle (the simulator's is_fraud)."),
    until: Optional[str] = typer.Option(None, "--until", help="Last training day (later days validate); default 70% of the span."),
    max_iter: int = typer.Option(200, "--max-iter", help="Boosting iterations."),
    top_k: int = typer.Option(100, "--top-k", help="k of the daily top-k card precision each txn_risk candidate "
                              "is reported with (as `fengkong replay --top-k`)."),
    label_maturity_days: Optional[float] = typer.Option(
        None, "--label-maturity-days", min=0, help="With --labels reported: payments younger than this at the end "
        "of the last training day are left out of training (their report may not have arrived yet); default the "
        "mapping's label delay, else 0."),
    history_start: Optional[str] = typer.Option(
        None, "--history-start", help="When the history's past begins, as `fengkong replay --history-start`: "
        "first (ages, first seen and new-device flags missing until the history is as old as their window), "
        "none, or an ISO 8601 time. Default: first with --mapping, else none."),
    seed: int = typer.Option(0, "--seed"),
    labels_stream: Optional[str] = typer.Option(None, "--labels-stream", help="Redis URL of the service's labels "
                                                "stream: analysts' case resolutions (fraud = positive, legit = "
                                                "confirmed negative) and reported outcomes are added to --history."),
    key_prefix: str = typer.Option("fk", "--key-prefix", help="The service's Redis key prefix (FENGKONG_KEY_PREFIX)."),
) -> None:
    """Fit model.txn_risk (supervised), model.habit_anomaly and the fused risk on the offline twin's features.

    With --mapping, the history is read as `fengkong replay` reads it, the label's delayed
    fraud reports included, so training sees the features replay and serving see.

    The artifact carries the fused score (rules alone of --rules + txn_risk) that the
    service returns as `risk`; both are fit on the --labels labels of the training days."""
    import json

    from fengkong.engine import RuleSetError, load_ruleset
    from fengkong.features.lists import load_list_specs
    from fengkong.replay.inputs import list_entries
    from fengkong.replay.mapping import MappingError
    from fengkong.training.train import LABELS, train_transactions, transaction_frame

    if labels not in LABELS:
        raise typer.BadParameter(f"use one of {', '.join(LABELS)}", param_hint="--labels")
    root = _root(artifacts_dir)
    lists_dir = lists_dir or rules_dir / "lists"
    try:  # refuse a broken pack before the (long) feature computation
        load_ruleset(rules_dir).close()
    except RuleSetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rules") from None
    entries = None
    if (lists_dir / "lists.yaml").exists():  # seed entries plus --lists-file, as `fengkong quality` reads them
        try:
            entries = list_entries(lists_dir, load_list_specs(lists_dir), lists_file)
        except MappingError as exc:
            raise typer.BadParameter(str(exc), param_hint="--lists-file") from None
    elif lists_file is not None:
        raise typer.BadParameter(f"{lists_dir}: no lists.yaml declares the lists", param_hint="--lists")
    delay_s: float | None = None
    if mapping is not None:
        events, delay_s = mapped_history(history, mapping)
    else:
        events = _read_events(history)
    maturity_days = label_maturity_days if label_maturity_days is not None else (delay_s or 0.0) / 86400.0
    if labels_stream:
        events = _with_stream_labels(events, labels_stream, key_prefix)
    from fengkong.features.young import history_start_for

    try:
        start_us = history_start_for(history_start, events["occurred_at"], mapped=mapping is not None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--history-start: "), param_hint="--history-start") from None
    feats = transaction_frame(events, profiles=_read_profiles(merchants), lists_dir=lists_dir, list_entries=entries,
                              history_start_us=start_us)
    try:
        art = train_transactions(feats, root=root, until=_day(until, "--until"),
                                 max_iter=max_iter, random_state=seed, rules_dir=rules_dir, labels=labels,
                                 events=events, card_precision=replay_card_precision(events, top_k),
                                 label_maturity=timedelta(days=maturity_days), history_start_us=start_us)
    except ValueError as exc:
        hint = "--labels" if str(exc).startswith("labels") else "--history"
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    typer.echo(f"saved {art.path}")
    metrics = dict(art.meta["metrics"])
    table = metrics.pop("table", None)
    typer.echo(json.dumps(metrics, indent=2))
    if table:
        typer.echo(f"\ntxn_risk candidates on the validation days (top-k: k = {top_k}):\n{table}")


def replay_card_precision(events: pd.DataFrame, k: int) -> Callable[[pd.DataFrame], float | None]:
    """The daily top-k card precision of the replay report (`fengkong.replay.evaluation.daily_top_k`)
    for `fengkong.training.candidates` (training may not import replay): the mean, over validation
    days with fraud among the candidates, of the share of the day's top-k cards with a fraud
    payment that day; a card reported (fraud report or chargeback, any day of ``events``) before
    the day, or found by an earlier validation day's top-k, is no candidate."""
    from fengkong.replay.evaluation import Window, daily_top_k, known_compromised
    from fengkong.training.fusion import REPORT_TYPES

    cols = [c for c in ("occurred_at", "card_fingerprint", "refers_to") if c in events.columns]
    reports = events.loc[events["type"].isin(REPORT_TYPES), cols] if len(cols) == 3 else None

    def precision(rows: pd.DataFrame) -> float | None:
        known = known_compromised(reports, rows)
        table = daily_top_k(rows, rows["day"].to_numpy(dtype=object), k, window=Window(), known=known)
        if table is None or not table["had_fraud"].any():
            return None
        return float(table.loc[table["had_fraud"], "precision"].mean())

    return precision


def _with_stream_labels(events: pd.DataFrame, url: str, prefix: str) -> pd.DataFrame:
    """The history plus the labels stream's entries (`fengkong.training.analyst_labels`)."""
    import redis

    from fengkong.training.analyst_labels import from_stream, with_labels

    try:
        client = redis.Redis.from_url(url, socket_timeout=30)
        labels = from_stream(client, prefix)
    except (redis.RedisError, OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read the labels stream: {type(exc).__name__}: {exc}",
                                 param_hint="--labels-stream") from None
    typer.echo(f"labels stream: {len(labels):,} labels")
    return with_labels(events, labels)


def register(app: typer.Typer) -> None:
    """Attach the commands to the top-level app."""
    app.add_typer(train_app, name="train")

    @app.command("quality")
    def quality_cmd(
        history: Path = HISTORY,
        merchants: Optional[Path] = MERCHANTS,
        rules_dir: Path = typer.Option(Path("rules"), "--rules-dir", help="Rule pack (rules alone = without the rules reading model.*)."),
        lists_file: Optional[Path] = typer.Option(None, "--lists-file", help="JSON {list: [entries]} (e.g. blacklist.json from fengkong simulate)."),
        until: Optional[str] = typer.Option(None, "--until", help="Last training day (later days evaluate); default 70% of the span."),
        labels: str = typer.Option("reported", "--labels", help="Training labels: reported (chargebacks/fraud reports by the cutoff) or oracle (is_fraud)."),
        max_iter: int = typer.Option(200, "--max-iter", help="Boosting iterations."),
    ) -> None:
        """Per scenario: recall at a 1% review rate and average precision of rules, model, pack and fused score."""
        import json

        import pandas as pd

        from fengkong.features.lists import load_list_specs
        from fengkong.replay.inputs import list_entries
        from fengkong.replay.mapping import MappingError
        from fengkong.training.quality import LABELS, run, summary
        from fengkong.training.train import transaction_frame

        if labels not in LABELS:
            raise typer.BadParameter(f"use one of {', '.join(LABELS)}", param_hint="--labels")
        lists_dir = rules_dir / "lists"
        try:
            entries = list_entries(lists_dir, load_list_specs(lists_dir), lists_file)
        except MappingError as exc:
            raise typer.BadParameter(str(exc), param_hint="--lists-file") from None
        events = _read_events(history)
        feats = transaction_frame(events, profiles=_read_profiles(merchants), lists_dir=lists_dir, list_entries=entries)
        try:
            res = run(feats, rules_dir=rules_dir, events=events, until=_day(until, "--until"), labels=labels,
                      max_iter=max_iter)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--history") from None
        s = summary(res)
        with pd.option_context("display.width", 200):
            typer.echo(res.wide().to_string())
        f = res.fusion
        typer.echo(f"training labels: {labels} ({s['train_labelled_fraud']:,} labelled of {s['train_true_fraud']:,} "
                   f"true frauds, to {s['last_train_day']}); recall cap at 1%: {s['recall_cap_at_1pct']:.3f}")
        typer.echo(f"fused = expit({f.intercept_:+.3f} {f.coef_[0]:+.3f}*logit(txn_risk) {f.coef_[1]:+.3f}*rules_score/100); "
                   f"target (fused AP above rules and model): {'met' if s['target_met'] else 'NOT met'}")
        typer.echo(json.dumps(s))

    @app.command("rescore")
    def rescore_cmd(
        history: Path = HISTORY,
        merchants: Optional[Path] = MERCHANTS,
        artifacts_dir: Optional[Path] = ARTIFACTS,
        policy_path: Path = typer.Option(Path("rules/grades/grades.yaml"), "--policy", help="Grade policy file."),
        out: Path = typer.Option(Path("rescore-report"), "--out", help="Report folder (CSV, Parquet, HTML)."),
        engine: str = typer.Option("pandas", "--engine", help="pandas (this process) or dask."),
        scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a local cluster)."),
        workers: int = typer.Option(2, "--workers", help="Local Dask cluster workers."),
        partitions: int = typer.Option(8, "--partitions", help="Merchant partitions."),
        redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Write grades to this Redis (the feature store's)."),
        prefix: str = typer.Option("fk", "--prefix", help="Feature store key prefix."),
        recent_days: int = typer.Option(7, "--recent-days", help="The report lists the merchants that moved in these days."),
        on_workers: bool = typer.Option(False, "--history-on-workers", help="With --engine dask and a Parquet "
                                        "history: the workers read it (only the columns the job reads), so this "
                                        "process never holds it; they must reach the path."),
    ) -> None:
        """Nightly job: merchant daily features, anomaly scores and grades -> Redis and a report."""
        import time

        from rich.console import Console
        from rich.progress import Progress

        from fengkong.models.artifacts import ArtifactError, latest
        from fengkong.training.grade_policy import GradePolicy, GradePolicyError
        from fengkong.training.rescore import read_history, rescore, write_report, write_to_store

        console = Console(highlight=False)
        if engine not in ("pandas", "dask"):
            raise typer.BadParameter("use pandas or dask", param_hint="--engine")
        try:
            policy = GradePolicy.load(policy_path)
        except GradePolicyError as exc:
            raise typer.BadParameter(str(exc), param_hint="--policy") from None
        root = _root(artifacts_dir)
        try:
            art = latest(root, "merchants")
        except ArtifactError as exc:
            raise typer.BadParameter(str(exc), param_hint="--artifacts") from None
        model = art.load_estimator() if art is not None else None
        if model is None:
            console.print(f"[yellow]no merchants artifact in {root}: grading on chargebacks only (run `fengkong train merchants`)[/yellow]")
        parquet = history.is_dir() or history.suffix == ".parquet"
        if on_workers and not (engine == "dask" and parquet):
            raise typer.BadParameter("needs --engine dask and a Parquet history", param_hint="--history-on-workers")
        t0 = time.perf_counter()
        if parquet and history.exists():  # only the columns the job reads
            events = read_history(history, on_workers=on_workers)
        else:
            events = _read_events(history)
        profiles = _read_profiles(merchants)
        client = cluster = None
        if engine == "dask":
            from dask.distributed import Client, LocalCluster

            if scheduler:
                client = Client(scheduler)
            else:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
                client = Client(cluster)
        try:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("rescoring merchants", total=None)
                result = rescore(events, policy=policy, model=model, profiles=profiles, engine=engine, parts=partitions,
                                 dask_client=client,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
        if redis_url:
            from fengkong.features.cluster import client_for_url
            from fengkong.features.ipintel import IpIntel
            from fengkong.features.online import OnlineStore

            # a redis+cluster:// URL gets redis-py's RedisCluster (grades are per-merchant hashes)
            store = OnlineStore(client_for_url(redis_url), ipintel=IpIntel.load(Path("rules/lists")), prefix=prefix)
            n = write_to_store(store, result.current, policy)
            console.print(f"wrote {n:,} merchant grades to {redis_url}")
        seconds = time.perf_counter() - t0
        paths = write_report(result, out, recent_days=recent_days, seconds=seconds)
        dist = result.current["grade"].value_counts()
        console.print(f"[bold]fengkong rescore[/bold]: {result.payments:,} payments, {len(result.current):,} merchants "
                      f"in {seconds:.1f} s ({engine}); grades: " + ", ".join(f"{g} {n:,}" for g, n in dist.items()))
        console.print(f"model: {art.version if art else 'none'}; changes in the history: {int(result.daily['changed'].sum()):,}")
        for name, path in paths.items():
            console.print(f"  {name}: {path}")
