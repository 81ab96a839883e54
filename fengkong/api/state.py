"""What one service process holds: the Redis client, feature and list stores, the
live rules, the models, metrics, audit and the circuit breaker.

Built by the app's lifespan (never at import) and closed on shutdown.

Two ways to Redis. The decision and outcome paths (the store's script, the
records, a duplicate's wait for the first delivery's record) and the reads of those
records go through one `PipelinedRedis` connection per worker (on a Redis Cluster,
``redis+cluster://``, a `ClusterPipelined`: one such connection per master, each
command sent to its key's slot; docs/scale.md): every in-flight
request's commands share it, and the event loop serves other requests while Redis
works (compared with the synchronous client in docs/benchmarks.md). The store call
may take 80% of the decision deadline from when it is sent, the record write what
is left of it; a late reply from a Redis that is answering degrades that decision
only (after ``late_wait_ms`` of grace), and the connection is dropped, opening the
breaker, only after ``redis_dead_after_ms`` of silence while commands wait (busy is
not dead; docs/api.md). The snapshot of lists and merchant profiles
(`SnapshotKeeper`) keeps degraded decisions enforcing them. Everything else (admin
routes, lists, profiles, /readyz) uses synchronous redis-py on the event loop: rare, small calls whose
``socket_timeout`` is the same 80%, with retries off. After a fault the breaker
keeps every decision off Redis for ``breaker_s`` seconds (they degrade at once),
then one request probes; both connections reconnect by themselves when Redis is
back, so the service recovers without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fengkong.api.audit import Audit
from fengkong.features import keys
from fengkong.api.config import Settings
from fengkong.api.hooks import Hooks
from fengkong.api.metrics import Metrics
from fengkong.api.security import KeyRing
from fengkong.api.service.merchant_snapshots import MerchantSnapshots
from fengkong.api.service.renewals import Renewals
from fengkong.api.service.records import Records
from fengkong.api.snapshot import SnapshotKeeper
from fengkong.cases import config as cases_config
from fengkong.cases.held import held_dir
from fengkong.cases.hooks import Publish
from fengkong.cases.intake import Intake
from fengkong.cases.runtime import CasesRuntime, cases_client, open_cases
from fengkong.db.url import database_url, redacted
from fengkong.engine import LiveRules
from fengkong.engine.ruleset import content_hash
from fengkong.features.embedded_redis import EmbeddedRedis
from fengkong.features.ipintel import IpIntel
from fengkong.features.lists import ListSpec, ListStore, load_list_specs
from fengkong.features.online import OnlineStore
from fengkong.features.cluster import ClusterPipelined, cluster_client, is_cluster_url
from fengkong.features.cluster_store import store_class_for
from fengkong.features.errors import FeatureStoreError
from fengkong.features.pipelined import Pipelined, PipelinedRedis, ReplyLate
from fengkong.models.runtime import ModelRuntime
from fengkong.pipeline import threshold_problems

log = logging.getLogger(__name__)


class Breaker:
    """A circuit breaker for the feature store, per process (one event loop: no lock)."""

    def __init__(self, open_s: float) -> None:
        self.open_s = open_s
        self.open_until = 0.0
        self.last_error: str | None = None
        self.faults = 0  # how many faults opened it (the decision records re-send their schema after one)

    def allow(self) -> bool:
        return time.monotonic() >= self.open_until

    def failed(self, error: BaseException) -> None:
        """Open after a fault of the store. A reply that was only late while Redis kept
        answering the worker's other requests (`ReplyLate`) is not one: that decision
        degrades, the others go on."""
        cause = error.__cause__ if isinstance(error, FeatureStoreError) and error.__cause__ else error
        if isinstance(cause, ReplyLate):
            return
        self.open_until = time.monotonic() + self.open_s
        self.last_error = type(cause).__name__
        self.faults += 1

    def succeeded(self) -> None:
        if self.open_until:
            self.open_until = 0.0


@dataclass
class Keys:
    """Redis keys the service owns (the feature store owns its own)."""

    prefix: str

    def request(self, event_id: str) -> str:
        return keys.request_key(self.prefix, event_id)

    def decision(self, decision_id: str) -> str:
        return keys.decision_key(self.prefix, decision_id)

    def merchant_snapshot(self, merchant_id: str) -> str:
        return keys.merchant_snapshot_key(self.prefix, merchant_id)

    @property
    def labels(self) -> str:
        return keys.labels_stream(self.prefix)

    @property
    def probe(self) -> str:
        """The key /readyz writes to learn whether Redis takes writes."""
        return f"{self.prefix}:v1:readyz:probe"


STORE_SHARE = 0.8


def make_client(url: str, deadline_s: float) -> redis.Redis:
    """A client whose every wait is bounded by the decision budget, and which never retries.
    For a ``redis+cluster://`` URL, redis-py's `RedisCluster` (the same commands; typed
    as the single-server client the stores are written against)."""
    timeout = max(0.002, deadline_s * STORE_SHARE)
    if is_cluster_url(url):
        return cast(redis.Redis, cluster_client(url, timeout_s=timeout))
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False, health_check_interval=0,
    )


@dataclass
class Runtime:
    settings: Settings
    client: redis.Redis
    conn: Pipelined
    store: OnlineStore
    lists: ListStore
    list_specs: dict[str, ListSpec]
    rules: LiveRules
    models: ModelRuntime
    metrics: Metrics
    audit: Audit
    keyring: KeyRing
    breaker: Breaker
    keys: Keys
    snapshot: SnapshotKeeper
    intake: Intake
    records: Records
    hooks: Hooks
    #: the merchants' snapshots this worker has still to write (`merchant_snapshots`)
    merchant_snapshots: MerchantSnapshots
    cases: CasesRuntime | None = None
    embedded: EmbeddedRedis | None = None
    #: the decision pointers' buckets this worker renewed lately (`pointers.Renewals`)
    renewals: Renewals = field(default_factory=Renewals)
    _stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    @property
    def deadline_s(self) -> float:
        return self.settings.deadline_s

    @property
    def store_budget_s(self) -> float:
        """How long the store's call may take: 80% of the deadline, the rest for the rules."""
        return self.settings.deadline_s * STORE_SHARE

    def redis_problem(self) -> str | None:
        """Why the store cannot take a decision's writes now (None: it can), for /readyz.

        A write probe (a key that expires in seconds), not PING: a Redis that answers PING
        may still refuse every write (OOM at ``maxmemory`` under ``noeviction``, READONLY as
        a replica; MISCONF after a failed snapshot refuses PING too)."""
        try:
            self.client.set(self.keys.probe, b"1", px=10_000)
        except redis.ResponseError as exc:  # redis-py drops the error's code for these two
            code = {redis.exceptions.OutOfMemoryError: "OOM ", redis.exceptions.ReadOnlyError: "READONLY "}
            return f"refuses writes: {code.get(type(exc), '')}{str(exc)[:160]}"
        except (redis.RedisError, OSError) as exc:
            return f"unavailable: {type(exc).__name__}"
        return None

    def start_watch(self, interval_s: float) -> None:
        """Reload the rules when the files' content hash changes (audited as actor 'file-watch').

        Each worker process watches for itself: this is how a reload reaches every
        worker, whichever one received the admin's reload request."""
        if interval_s <= 0:
            return
        rules_dir = self.rules.rules_dir

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    current = self.rules.current.content_hash
                    if content_hash(rules_dir) == current or self.rules.refused_earlier():
                        continue  # unchanged, or the same files were refused (and audited) already
                    result = self.rules.reload()
                    self.audit.change(self.client, actor="file-watch", action="rules.reload",
                                      version=result.version, detail={"result": result.to_dict()})
                    if result.changed:
                        self.hooks.publish("rules.reloaded", rules_reloaded(result.to_dict(), actor="file-watch"))
                except Exception:  # keep watching whatever happens
                    log.exception("rules watch failed")

        self._watcher = threading.Thread(target=loop, name="fengkong-api-rules-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.snapshot.stop()
        self.merchant_snapshots.close()
        if self.cases is not None:
            self.cases.close()
        self.audit.close()
        self.conn.close()
        self.client.close()
        if self.embedded is not None:
            self.embedded.stop()


def build_runtime(settings: Settings) -> Runtime:
    """Load everything a worker needs. Redis may be down: the service starts anyway
    (degraded, /readyz says not ready) and recovers when it answers."""
    keyring = KeyRing(settings.all_keys())
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(data_dir=Path(settings.data_dir) / "redis", persist=True).start()
        url = embedded.url
        log.warning("no FENGKONG_REDIS_URL: started an embedded Redis at %s", url)
    client = make_client(url, settings.deadline_s)
    lists_dir = Path(settings.rules_dir) / "lists"
    specs = load_list_specs(lists_dir)
    cluster = is_cluster_url(url)
    store = store_class_for(url)(client, ipintel=IpIntel.load(lists_dir), lists=specs, prefix=settings.key_prefix)
    list_store = ListStore(client, specs, prefix=settings.key_prefix)
    try:
        list_store.seed_from_files(lists_dir)
    except Exception as exc:  # Redis down at start: the lists are seeded on a later start
        log.warning("list seeding skipped: %s", type(exc).__name__)
    models = ModelRuntime.load(Path(settings.artifacts_dir) if settings.artifacts_dir else None)
    # a rule naming a model precision the loaded artifact cannot reach is refused, at start and reload
    rules = LiveRules(settings.rules_dir, check=partial(threshold_problems, calibration=models.calibration,
                                                        version=models.loaded.get("transactions")))
    audit = Audit(prefix=settings.key_prefix, maxlen=settings.audit_stream_maxlen, path=settings.audit_file)
    conn: Pipelined = (ClusterPipelined if cluster else PipelinedRedis)(url, connect_timeout_s=max(0.002, settings.deadline_s * STORE_SHARE),
                          dead_after_s=settings.redis_dead_after_ms / 1000.0,
                          late_wait_s=settings.late_wait_ms / 1000.0, flush_bytes=settings.redis_flush_bytes)
    snapshot = SnapshotKeeper(client, specs, store, settings.key_prefix, max_entries=settings.snapshot_max_entries,
                              max_profiles=settings.snapshot_max_profiles)
    try:
        snapshot.load()
    except (redis.RedisError, OSError) as exc:  # Redis down at start: the refresh thread loads it later
        log.warning("reference snapshot not loaded: %s", type(exc).__name__)
    snapshot.start(settings.snapshot_refresh_s, settings.snapshot_full_reload_s)
    metrics = Metrics()
    hooks = Hooks(settings, client, url, metrics)
    cases = _open_cases(settings, url, store, hooks.publish_many)  # case.opened / case.resolved reach the webhooks
    intake = cases.intake if cases is not None else Intake(cases_config.load(Path(settings.rules_dir)),
                                                           prefix=settings.key_prefix, hold_max=0)
    intake.on_lost = metrics.case_items_lost.inc  # a review that will never become a case is counted
    rt = Runtime(settings=settings, client=client, conn=conn, store=store, lists=list_store, list_specs=specs,
                 rules=rules, models=models, metrics=metrics, audit=audit, keyring=keyring,
                 breaker=Breaker(settings.breaker_s), keys=Keys(settings.key_prefix), snapshot=snapshot,
                 intake=intake, records=Records(settings.key_prefix, max(settings.decision_ttl_s, store.dedup_ttl_s)),
                 hooks=hooks, cases=cases, embedded=embedded,
                 merchant_snapshots=MerchantSnapshots(conn, settings.key_prefix, settings.decision_ttl_s,
                                                      settings.merchant_snapshot_s))
    rt.start_watch(settings.rules_watch_s)
    return rt


def _open_cases(settings: Settings, redis_url: str, store: OnlineStore, publish: Publish) -> CasesRuntime | None:
    """The cases database and its consumer, on a Redis client of their own (with a store of
    the service's kind on it, for labels). A database that cannot be opened does not stop
    the decisions: the case routes answer 503, and review decisions stay queued in Redis
    until a worker that has the database files them."""
    url = database_url(settings.database_url, Path(settings.data_dir))
    try:
        client = cases_client(redis_url)
        # the service's kind of store (on a cluster, outcomes go one script per slot, as
        # decisions do), on the cases' own client
        labels_store = type(store)(client, ipintel=store.ipintel, lists=store.lists, prefix=settings.key_prefix)
        return open_cases(database_url=url, rules_dir=Path(settings.rules_dir), client=client, store=labels_store,
                          prefix=settings.key_prefix, maxlen=settings.audit_stream_maxlen, publish=publish,
                          consume=settings.cases_consumer, hold_dir=held_dir(settings.data_dir))
    except cases_config.CasesConfigError:
        raise  # the analysts' file is wrong: say so at start, as a rule file would
    except Exception as exc:
        log.error("cases database %s not opened (%s: %s); case routes answer 503", redacted(url),
                  type(exc).__name__, exc)
        return None


def describe(rt: Runtime) -> dict[str, Any]:
    """A short status for logs and /readyz."""
    return {"ruleset_version": rt.rules.version, "models": rt.models.status, "keys": len(rt.keyring)}


def rules_reloaded(result: dict[str, Any], *, actor: str) -> dict[str, Any]:
    """The ``rules.reloaded`` webhook payload of a reload that swapped the live set."""
    return {"version": result.get("version"), "previous_version": result.get("previous_version"),
            "files_hash": result.get("files_hash"), "at": result.get("at"), "actor": actor}
