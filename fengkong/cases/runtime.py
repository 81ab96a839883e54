"""What a service worker holds for cases: the database, the case desk, the intake the
decision path calls, and the consumer; built at start, closed at shutdown.

`open_cases` migrates the database to the newest schema (idempotent; `fengkong serve`
also does it once before starting workers, so workers never race to create tables),
then starts the consumer. The analysts' ``cases.yaml`` is re-read by the consumer
thread when its modification time changes (`CasesRuntime.refresh_config`); a file
that does not parse is logged and the previous configuration stays. The same thread
queues the case items the worker held while Redis was away (`Intake.release`); with
the consumer off, a small thread of its own does both (`CasesRuntime.tick`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import redis
from sqlalchemy.engine import Engine

from fengkong.cases import config as cases_config
from fengkong.cases.consumer import Consumer
from fengkong.cases.hooks import Publish
from fengkong.cases.intake import Intake, stream_key
from fengkong.cases.service import Desk
from fengkong.db import migrate
from fengkong.db.engine import make_engine, session_factory
from fengkong.features.cluster import client_for_url

if TYPE_CHECKING:  # imported where needed: a consumer process, which resolves nothing, does without them
    from fengkong.cases.labels import LabelSink
    from fengkong.features.online import OnlineStore

log = logging.getLogger(__name__)

#: How long an analyst's call or the consumer may wait for Redis (a payment never does).
REDIS_TIMEOUT_S = 5.0


@dataclass
class CasesRuntime:
    """The cases side of one worker."""

    engine: Engine
    desk: Desk
    intake: Intake
    consumer: Consumer
    client: redis.Redis
    config_path: Path
    _mtime: float | None = None
    _checked: float = field(default=0.0)
    _stop: threading.Event = field(default_factory=threading.Event)

    def tick(self) -> None:
        """The worker's periodic case chores: a changed cases.yaml, and the case items held
        while Redis was away (they stay held while it still is)."""
        self.refresh_config()
        try:
            self.intake.release(self.client)
        except (redis.RedisError, OSError) as exc:
            log.debug("held case items wait for Redis: %s", type(exc).__name__)

    def run_ticks(self, every_s: float = 1.0) -> None:
        """`tick` until closed, in a daemon thread (only when the consumer, which ticks
        otherwise, does not run in this worker)."""
        def loop() -> None:
            while not self._stop.wait(every_s):
                self.tick()

        threading.Thread(target=loop, name="fengkong-cases-tick", daemon=True).start()

    def refresh_config(self, every_s: float = 2.0) -> None:
        """Re-read cases.yaml if it changed (at most every ``every_s``)."""
        now = time.monotonic()
        if now - self._checked < every_s:
            return
        self._checked = now
        try:
            mtime = self.config_path.stat().st_mtime if self.config_path.exists() else None
        except OSError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            config = cases_config.load(self.config_path.parent.parent)
        except cases_config.CasesConfigError as exc:
            log.error("cases.yaml refused, the previous configuration stays: %s", exc)
            return
        self.desk.config = self.intake.config = config

    def close(self) -> None:
        """Stop the consumer (after its current step), then close Redis and the database."""
        self._stop.set()
        self.consumer.stop()
        self.intake.close()
        self.client.close()
        self.engine.dispose()


def _labels(store: OnlineStore | None, client: redis.Redis, *, prefix: str, maxlen: int) -> LabelSink | None:
    """Where resolutions send their labels: the feature store, or nowhere (None) for a
    process that resolves no case (`fengkong cases consume` spares itself the feature
    store's start-up)."""
    if store is None:
        return None
    from fengkong.cases.labels import StoreLabels

    return StoreLabels(store, client, prefix=prefix, maxlen=maxlen)


def open_cases(*, database_url: str, rules_dir: Path, client: redis.Redis, store: OnlineStore | None, prefix: str,
               maxlen: int, publish: Publish | None = None, consume: bool = True,
               hold_dir: Path | None = None, gate: Callable[[], bool] | None = None,
               grow: bool = True) -> CasesRuntime:
    """Migrate and open the database, and start the consumer (unless ``consume`` is off).

    ``client`` is the cases' own Redis client (`cases_client`: analysts' calls and the
    consumer may wait, a payment never does); the runtime owns it from now on and closes
    it, also when opening fails. ``store`` is the feature store on that client that
    resolutions write their labels to (None: they write none; for a process that only
    files, `fengkong cases consume`); ``publish`` hears of cases opened and resolved
    (`fengkong.cases.hooks`; None: nobody). ``hold_dir`` keeps the case items Redis could
    not take so that they outlive the process (`fengkong.cases.held`; None: memory only).
    ``gate``: the consumer files only while it answers True (the catch-up consumer's
    `fengkong.cases.lag.LagGate`); such a consumer leaves the held items to the others.
    ``grow`` off keeps every batch at the first size (`Consumer.batch`): a process at idle
    priority keeps its transactions, and the locks they hold, short."""
    engine: Engine | None = None
    try:
        engine = make_engine(database_url)
        migrate.upgrade(engine)
        path = Path(rules_dir) / cases_config.CONFIG_PATH
        config = cases_config.load(Path(rules_dir))
    except BaseException:
        if engine is not None:
            engine.dispose()
        client.close()
        raise
    desk = Desk(sessions=session_factory(engine), config=config,
                labels=_labels(store, client, prefix=prefix, maxlen=maxlen), publish=publish)
    intake = Intake(config, prefix=prefix, hold_dir=hold_dir)
    consumer = Consumer(client, desk, stream=stream_key(prefix), gate=gate)
    if not grow:
        consumer.max_batch = consumer.batch
    rt = CasesRuntime(engine=engine, desk=desk, intake=intake, consumer=consumer, client=client, config_path=path,
                      _mtime=path.stat().st_mtime if path.exists() else None)
    consumer.tick = rt.tick if gate is None else rt.refresh_config
    if consume:
        consumer.start()
    else:
        rt.run_ticks()
    return rt


def cases_client(redis_url: str) -> redis.Redis:
    """The cases' own client of the service's Redis (either kind), with the longer timeout
    an analyst's call or the consumer may wait."""
    return client_for_url(redis_url, timeout_s=REDIS_TIMEOUT_S)
