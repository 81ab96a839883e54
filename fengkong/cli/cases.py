"""`fengkong cases consume`: file queued review decisions as cases from a process of its own.

`fengkong serve` runs this command as one process beside its workers
(`fengkong.cli.case_process`), which then only queue. A deployment that runs its
consumers elsewhere sets ``FENGKONG_CASES_CONSUMER=false`` for the service and runs this
command (one or more; they share the consumer group, so each queued decision is filed
once) with the same ``FENGKONG_*`` settings."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Sequence

import typer

app = typer.Typer(help="The review queue's background work.", no_args_is_help=True)


def _freeze_start_up() -> None:
    """Move what start-up made (modules, SQLAlchemy's compiled statements, the migration's
    leftovers once collected) out of the garbage collector's reach: this process only files
    cases, those objects live as long as it does, and every collection would otherwise walk
    them again (a large part of filing a batch: docs/benchmarks.md)."""
    import gc

    gc.collect()
    gc.freeze()


def _idle() -> bool:
    """Whether this process runs at ``SCHED_IDLE`` (`fengkong serve`'s steady consumer): it
    may be starved in the middle of a batch, holding the batch's database locks, so its
    batches stay small."""
    import os

    idle = getattr(os, "SCHED_IDLE", None)
    try:
        return idle is not None and os.sched_getscheduler(0) == idle
    except OSError:
        return False


@app.command("consume")
def consume(
    redis_url: Optional[str] = typer.Option(None, "--redis-url", help="The service's Redis (FENGKONG_REDIS_URL)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="The cases database "
                                               "(FENGKONG_DATABASE_URL; default SQLite in the data dir)."),
    catch_up: bool = typer.Option(False, "--catch-up", help="File only while filing is behind its bound "
                                  "(FENGKONG_CASES_MAX_LAG_S, FENGKONG_CASES_MAX_BACKLOG), until back under half "
                                  "of it: the normal-priority companion of a consumer run at idle priority."),
) -> None:
    """Read the intake stream and file cases until SIGINT or SIGTERM."""
    from fengkong.api.config import Settings
    from fengkong.cases.runtime import cases_client, open_cases
    from fengkong.cases.held import held_dir
    from fengkong.cases.intake import stream_key
    from fengkong.cases.lag import LagGate
    from fengkong.db.url import database_url as resolve, redacted

    # handlers first: a stop that arrives while the consumer starts still ends it cleanly
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = Settings()
    url = redis_url or settings.redis_url
    if not url:
        raise typer.BadParameter("the service's Redis URL is needed", param_hint="--redis-url")
    db = resolve(database_url or settings.database_url, Path(settings.data_dir))
    from fengkong.webhooks import publish_many

    client = cases_client(url)  # one client for the consumer and webhooks; the runtime closes it

    def _webhooks(events: Sequence[tuple[str, dict[str, Any]]]) -> None:  # case.opened reaches the subscriptions
        publish_many(client, events, prefix=settings.key_prefix)

    gate = LagGate(client, stream_key(settings.key_prefix), max_lag_s=settings.cases_max_lag_s,
                   max_backlog=settings.cases_max_backlog) if catch_up else None
    # no feature store: this process resolves no case, so it sends no label (and starts faster)
    cases = open_cases(database_url=db, rules_dir=Path(settings.rules_dir), client=client, store=None,
                       prefix=settings.key_prefix, maxlen=settings.audit_stream_maxlen, publish=_webhooks,
                       hold_dir=held_dir(settings.data_dir), gate=gate,  # drains what workers that died held
                       grow=not _idle())
    _freeze_start_up()
    when = (f" while behind the bound ({settings.cases_max_lag_s:g} s or {settings.cases_max_backlog} items)"
            if catch_up else "")
    typer.echo(f"filing cases from {url.split('@')[-1]} into {redacted(db)}{when}; stop with Ctrl-C")
    try:
        stop.wait()
    finally:
        cases.close()
        typer.echo(f"stopped: {cases.consumer.filed} filed, {cases.consumer.dropped} dropped")


@app.command("backlog")
def backlog(
    redis_url: Optional[str] = typer.Option(None, "--redis-url", help="The service's Redis (FENGKONG_REDIS_URL)."),
) -> None:
    """Print the unfiled reviews as JSON: how many, the oldest one's age, and the bound
    past which the catch-up consumer files at normal priority (docs/cases.md)."""
    import json

    from fengkong.api.config import Settings
    from fengkong.cases.intake import stream_key
    from fengkong.cases.lag import LagGate, read_backlog
    from fengkong.cases.runtime import cases_client

    settings = Settings()
    url = redis_url or settings.redis_url
    if not url:
        raise typer.BadParameter("the service's Redis URL is needed", param_hint="--redis-url")
    client = cases_client(url)
    try:
        stream = stream_key(settings.key_prefix)
        now = read_backlog(client, stream)
        gate = LagGate(client, stream, max_lag_s=settings.cases_max_lag_s, max_backlog=settings.cases_max_backlog)
    finally:
        client.close()
    typer.echo(json.dumps({"stream": stream, "unfiled": now.length, "oldest_age_s": now.oldest_age_s,
                           "max_lag_s": gate.max_lag_s, "max_backlog": gate.max_backlog,
                           "over_bound": gate.over(now)}))
