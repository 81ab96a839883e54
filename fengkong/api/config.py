"""The decision service's settings: one class, read from ``FENGKONG_*`` environment
variables (or passed in whole by tests), created on first use, never at import.

Why environment variables: `fengkong serve` starts uvicorn workers as separate
processes (durable_rules never releases the GIL, so we scale with processes); the
parent resolves everything once (embedded Redis URL, development key) and hands it
to the workers through the environment, where each worker's `Settings()` reads it.

API keys come from ``FENGKONG_API_KEYS`` (a JSON list) and/or ``FENGKONG_API_KEYS_FILE``
(a JSON or YAML file with the same list, optionally under ``keys:``). A key entry is
``{"name": "gateway", "key": "<secret>", "scopes": ["decide", "report"]}``; a file may
give ``key_sha256`` (hex) instead of ``key`` so that the secret is not stored in
clear. Keys shorter than 16 characters are refused: a short key is a placeholder.
"""

from __future__ import annotations

import functools
import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fengkong.features.pipelined import FLUSH_BYTES


class Scope(StrEnum):
    DECIDE = "decide"  # ask for decisions, read them back, read merchants
    REPORT = "report"  # report outcome events
    ANALYST = "analyst"  # the review queue: list, read, claim, resolve and reopen cases
    ADMIN = "admin"  # lists, rules, merchant profiles (and everything else)


MIN_KEY_LENGTH = 16


class ApiKeySpec(BaseModel):
    """One configured key. Only ``sha256`` is kept after validation; ``key`` is dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    scopes: frozenset[Scope]
    key: str | None = Field(default=None, repr=False, exclude=True)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", repr=False)

    @model_validator(mode="after")
    def _one_secret(self) -> "ApiKeySpec":
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"key {self.name!r}: give exactly one of 'key' or 'key_sha256'")
        if self.key is not None:
            if len(self.key) < MIN_KEY_LENGTH:
                raise ValueError(f"key {self.name!r}: shorter than {MIN_KEY_LENGTH} characters")
            digest = hashlib.sha256(self.key.encode()).hexdigest()
            object.__setattr__(self, "key_sha256", digest)
            object.__setattr__(self, "key", None)
        return self

    @property
    def digest(self) -> bytes:
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)


def _artifacts_root() -> Path:
    """The one artifacts location (`fengkong.models.artifacts.default_root`): read by the
    field when ``FENGKONG_ARTIFACTS_DIR`` is unset, so the deprecated name still counts."""
    from fengkong.models.artifacts import default_root

    return default_root()


class Settings(BaseSettings):
    """Everything the service can be told. Field docs are the configuration table in docs/api.md."""

    model_config = SettingsConfigDict(env_prefix="FENGKONG_", extra="ignore", frozen=True)

    redis_url: str | None = Field(default=None, description="Redis URL; unset = start an embedded Redis")
    data_dir: Path = Field(default=Path(".fengkong"), description="Embedded Redis data and other local state")
    database_url: str | None = Field(default=None, description="Cases and accounts database "
                                     "(postgresql://...); unset = SQLite in data_dir")
    cases_consumer: bool = Field(default=True, description="File queued review decisions as cases: `fengkong "
                                 "serve` runs one consumer process beside its workers (they get false); an app "
                                 "built directly, one in each worker; false = leave it to `fengkong cases consume`")
    cases_max_lag_s: float = Field(default=30.0, gt=0, description="The case filing lag bound: once the oldest "
                                   "unfiled review is older, a catch-up consumer files at normal priority (nice "
                                   "10) until it is back under half (docs/cases.md)")
    cases_max_backlog: int = Field(default=100_000, gt=0, description="The same bound as a count of unfiled "
                                   "reviews (the intake stream's length)")
    rules_dir: Path = Field(default=Path("rules"), description="Rule files, policy.yaml and lists/")
    artifacts_dir: Path | None = Field(default_factory=_artifacts_root, description="Model artifacts, "
                                       "the folder `fengkong train` writes (absent = rules-only)")
    api_keys: list[ApiKeySpec] = Field(default_factory=list, description="JSON list of {name, key, scopes}")
    api_keys_file: Path | None = Field(default=None, description="JSON/YAML file with the same list")
    deadline_ms: float = Field(default=50.0, gt=0, le=10_000, description="Time budget of one decision")
    failure_policy: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open", description="Degraded answer: fail_open = allow, fail_closed = review"
    )
    max_body_bytes: int = Field(default=16_384, ge=256, description="Larger request bodies get 413")
    audit_file: Path | None = Field(default=None, description="Also append decisions/changes as JSON lines here")
    audit_stream_maxlen: int = Field(default=100_000, ge=100, description="Approximate cap of each audit stream")
    decision_ttl_s: int = Field(default=3 * 86400, ge=60, description="How long decision records are kept "
                                "(the store's event_id dedup lasts 3 days: idempotency cannot outlive it)")
    key_prefix: str = Field(default="fk", pattern=r"^[A-Za-z0-9_\-]{1,32}$", description="Redis key prefix")
    rules_watch_s: float = Field(default=2.0, ge=0, description="Poll rules_dir and reload on change; 0 = off")
    breaker_s: float = Field(default=0.5, gt=0, description="After a Redis fault, degrade without trying for this long")
    redis_dead_after_ms: float = Field(default=1000.0, gt=0, description="The breaker opens when Redis has sent "
                                       "no byte for this long while commands wait on it (a late reply alone does not)")
    late_wait_ms: float = Field(default=100.0, ge=0, description="A reply that is late while Redis is not silent "
                                "is still waited for this long past the store's budget before the decision degrades")
    redis_flush_bytes: int = Field(default=FLUSH_BYTES, ge=0, description="While Redis has commands of the "
                                   "worker in flight, its next ones are written once this many bytes are queued, "
                                   "else at the end of the event-loop tick; 0 writes each call's commands at once")
    snapshot_refresh_s: float = Field(default=1.0, ge=0, description="How often each worker checks the lists and "
                                      "profiles version key (its degraded-mode snapshot); 0 = never")
    snapshot_full_reload_s: float = Field(default=30.0, gt=0, description="Reload the snapshot this often anyway "
                                          "(changes made outside the API)")
    snapshot_max_entries: int = Field(default=100_000, ge=1, description="Entries kept per list in the snapshot")
    snapshot_max_profiles: int = Field(default=100_000, ge=1, description="Merchant profiles kept in the snapshot")
    merchant_snapshot_s: float = Field(default=1.0, ge=0, le=60, description="Each worker writes the merchant "
                                       "snapshots (GET /v1/merchants: features of the latest decision) of this "
                                       "long together; 0 = with every decision")
    body_timeout_s: float = Field(default=10.0, gt=0, description="A request whose body has not all arrived "
                                  "this long after its headers gets 408 and its connection is closed")
    keep_alive_s: float = Field(default=5.0, gt=0, description="Idle keep-alive connections are closed after this")
    webhook_deliver: bool = Field(default=True, description="Run the webhook delivery loop in each worker "
                                  "(docs/webhooks.md); off, events are still queued for a service that runs it")
    webhook_max_attempts: int = Field(default=8, ge=1, le=100, description="Attempts of one webhook delivery "
                                      "before it is dead-lettered")
    webhook_retry_base_s: float = Field(default=5.0, gt=0, description="First retry delay of a failed webhook "
                                        "delivery; doubles per attempt, with jitter")
    webhook_retry_max_s: float = Field(default=3600.0, gt=0, description="Longest delay between two attempts")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Time a receiver has to answer")
    webhook_lease_s: float = Field(default=60.0, gt=0, description="A delivery a worker took and did not settle "
                                   "(it died) is sent by another worker after this long; keep it above the timeout")
    webhook_poll_s: float = Field(default=0.5, gt=0, le=10, description="How long the delivery loop waits for "
                                  "new events in one round")
    webhook_concurrency: int = Field(default=16, ge=1, le=256, description="Deliveries in flight per worker")
    webhook_outbox_maxlen: int = Field(default=100_000, ge=100, description="Cap of the webhook outbox stream "
                                       "(events not yet fanned out)")
    webhook_dead_maxlen: int = Field(default=10_000, ge=10, description="Cap of each subscription's dead letters")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = Field(default="warning")
    otel: bool = Field(default=False, description="FastAPI's native OpenTelemetry spans and metrics (needs an "
                       "OpenTelemetry SDK configured in the process; /metrics is Prometheus either way)")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    def all_keys(self) -> list[ApiKeySpec]:
        """Keys from the environment plus the keys file; names must be unique."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            keys += load_keys_file(self.api_keys_file)
        names = [k.name for k in keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"API key names must be unique; repeated: {', '.join(dupes)}")
        return keys

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000.0

    @property
    def degraded_decision(self) -> str:
        return "allow" if self.failure_policy == "fail_open" else "review"


def load_keys_file(path: Path) -> list[ApiKeySpec]:
    """Read a keys file (JSON or YAML: a list, or a mapping with ``keys:``)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or []
    if isinstance(data, dict):
        data = data.get("keys", [])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of keys or a mapping with 'keys:'")
    return [ApiKeySpec.model_validate(item) for item in data]


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
