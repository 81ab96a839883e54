"""The worker's copy of the reference data that needs no counting: the analyst lists
and the merchant profiles, so that degraded mode is not blind.

Why: with Redis down or late, a blacklisted card must still be denied and a rule
that reads only the event, the lists and the merchant's grade or limit must still
decide (docs/api.md, "Degraded mode"). Counters cannot be copied, this can.

What it holds (`Snapshot`, immutable; the keeper swaps in a new one):

* each list's entries (exact values and IPv4 ranges), at most ``max_entries`` per
  list; a list with more is *partial*: a value found on it is still a hit, a value
  not found is unknown (the ``lists.*`` feature is missing, not false);
* each merchant's profile fields (grade, single limit, daily cap, opening day,
  anomaly), at most ``max_profiles``; past the cap the profiles are partial and an
  unknown merchant's ``merchant.*`` features are missing.

How it stays current (`SnapshotKeeper`): a change made through this worker's admin
routes is applied to its snapshot at once and bumps a version key in Redis
(``{prefix}:v1:reference_version``); every worker's background thread reads that key
every ``refresh_s`` and reloads everything when it changed, and reloads anyway every
``full_reload_s`` (changes made outside the API: the CLI, rescoring). While Redis is
away the last snapshot stays.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import redis

from fengkong.events import Event
from fengkong.features import keys
from fengkong.features.assemble import blank_features, derive
from fengkong.features.ip_addresses import merge_ranges
from fengkong.features.lists import KIND_COLUMN, ListSpec, ipv4_range, normalise_entry
from fengkong.features.online import OnlineStore
from fengkong.features.rows import event_row

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("grade", "single_limit", "daily_cap", "onboarded_day", "anomaly")
#: features `derive` fills from defaults that only the store can really know: unknown in degraded mode
_STORE_ONLY = ("merchant.has_baseline",)


def version_key(prefix: str) -> str:
    """The counter every reference change through the API increments."""
    return f"{prefix}:{keys.VERSION}:reference_version"


@dataclass(frozen=True)
class ListCopy:
    """One list's entries as the worker holds them."""

    exact: frozenset[str] = frozenset()
    starts: tuple[int, ...] = ()  # merged IPv4 ranges, sorted by start
    ends: tuple[int, ...] = ()
    partial: bool = False

    @classmethod
    def build(cls, kind: str, entries: Iterable[str], partial: bool) -> "ListCopy":
        exact = frozenset(entries)
        merged = merge_ranges(r for r in (ipv4_range(e) for e in exact if kind == "ip" and "/" in e) if r)
        return cls(exact, tuple(m[0] for m in merged), tuple(m[1] for m in merged), partial)

    def contains(self, value: str | None) -> bool | None:
        """True on the list, False not on it, None for no value or not found on a partial list."""
        if value is None:
            return None
        if value in self.exact:
            return True
        if self.starts:
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                addr = None
            if addr is not None and addr.version == 4:
                n = int(addr)
                i = bisect.bisect_right(self.starts, n) - 1
                if i >= 0 and n <= self.ends[i]:
                    return True
        return None if self.partial else False


@dataclass(frozen=True)
class Snapshot:
    """Lists and merchant profiles as of ``loaded_at`` (monotonic seconds; 0 = never loaded)."""

    lists: dict[str, ListCopy] = field(default_factory=dict)
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)
    profiles_partial: bool = True  # nothing loaded yet: an unknown merchant is unknown
    loaded_at: float = 0.0
    version: bytes | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SnapshotKeeper:
    """Loads, updates and serves one worker's `Snapshot` (see the module docstring)."""

    def __init__(self, client: redis.Redis, specs: Mapping[str, ListSpec], store: OnlineStore, prefix: str, *,
                 max_entries: int = 100_000, max_profiles: int = 100_000) -> None:
        self.client = client
        self.specs = dict(specs)
        self.store = store
        self.prefix = prefix
        self.max_entries = max_entries
        self.max_profiles = max_profiles
        self.current = Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one writer at a time: the refresh thread or an admin route

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> Snapshot:
        """Read every list and profile from Redis (bounded by the caps) and swap it in."""
        client = self.client
        raw_version = client.get(version_key(self.prefix))
        version = raw_version.encode() if isinstance(raw_version, str) else raw_version
        lists: dict[str, ListCopy] = {}
        for name, spec in self.specs.items():
            members_key = keys.list_members_key(self.prefix, name)
            entries: list[str] = []
            partial = False
            for member in client.sscan_iter(members_key, count=1000):
                if len(entries) >= self.max_entries:
                    partial = True
                    break
                entries.append(_text(member))
            lists[name] = ListCopy.build(spec.kind, entries, partial)
        profiles: dict[str, dict[str, str]] = {}
        head = keys.merchant_profile_key(self.prefix, "")
        start, end = head.index("{merchant:") + len("{merchant:"), len(head) - head.index("}")
        names: list[str] = []
        partial = False
        for key in client.scan_iter(match=keys.merchant_profile_key(self.prefix, "*"), count=1000):
            if len(names) >= self.max_profiles:
                partial = True
                break
            names.append(_text(key))
        pipe = client.pipeline(transaction=False)
        for key in names:
            pipe.hmget(key, PROFILE_FIELDS)
        for key, values in zip(names, pipe.execute() if names else []):
            profiles[key[start:-end]] = {f: _text(v) for f, v in zip(PROFILE_FIELDS, values) if v is not None}
        snap = Snapshot(lists, profiles, partial, time.monotonic(), version)
        with self._lock:
            self.current = snap
        return snap

    def refresh(self, full_reload_s: float) -> bool:
        """Reload when the version key changed or the snapshot is older than ``full_reload_s``."""
        snap = self.current
        if snap.loaded_at and time.monotonic() - snap.loaded_at < full_reload_s:
            now = self.client.get(version_key(self.prefix))
            if (now.encode() if isinstance(now, str) else now) == snap.version:
                return False
        self.load()
        return True

    def start(self, refresh_s: float, full_reload_s: float) -> None:
        """Refresh in a daemon thread every ``refresh_s`` (0 = never); Redis faults keep the last copy."""
        if refresh_s <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(refresh_s):
                try:
                    self.refresh(full_reload_s)
                except (redis.RedisError, OSError):
                    pass  # Redis away: the last snapshot serves degraded decisions meanwhile
                except Exception:
                    log.exception("reference snapshot refresh failed")

        self._thread = threading.Thread(target=loop, name="fengkong-api-snapshot", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- changes through this worker ----------------------------------------------------------
    def list_changed(self, name: str, entries: list[str], *, add: bool) -> None:
        """Apply an admin change to this worker's copy at once and tell the other workers."""
        spec = self.specs[name]
        with self._lock:
            snap = self.current
            old = snap.lists.get(name, ListCopy())
            exact = set(old.exact)
            clean = [normalise_entry(spec.kind, e) for e in entries]
            if add:
                room = max(0, self.max_entries - len(exact))
                exact.update(clean[:room])
                partial = old.partial or room < len(clean)
            else:
                exact.difference_update(clean)
                partial = old.partial
            lists = dict(snap.lists)
            lists[name] = ListCopy.build(spec.kind, exact, partial)
            self.current = Snapshot(lists, snap.profiles, snap.profiles_partial, snap.loaded_at, snap.version)
        self._bump()

    def profile_changed(self, merchant_id: str, profile: Mapping[str, str]) -> None:
        """Apply a profile write (the whole profile as Redis now holds it) at once and tell the others."""
        with self._lock:
            snap = self.current
            profiles = dict(snap.profiles)
            partial = snap.profiles_partial
            if merchant_id in profiles or len(profiles) < self.max_profiles:
                profiles[merchant_id] = {f: str(profile[f]) for f in PROFILE_FIELDS if f in profile}
            else:
                partial = True
            self.current = Snapshot(snap.lists, profiles, partial, snap.loaded_at, snap.version)
        self._bump()

    def _bump(self) -> None:
        try:
            self.client.incr(version_key(self.prefix))
        except (redis.RedisError, OSError):
            log.warning("reference version not bumped: other workers pick the change up on their full reload")

    # -- degraded features --------------------------------------------------------------------
    def features(self, event: Event) -> dict[str, Any]:
        """The event's features that need no stored state: its own, the IP's intelligence,
        the ``lists.*`` booleans and the merchant's profile from the snapshot; every counted
        feature missing (None), so rules that need one do not fire and name it missing."""
        store = self.store
        snap = self.current
        row = event_row(event, store.ipintel, store.biz_offset_min)
        f = blank_features(spec.feature for spec in self.specs.values())
        for name, spec in self.specs.items():
            copy = snap.lists.get(name)
            value = row[KIND_COLUMN[spec.kind]]
            f[spec.feature] = copy.contains(value) if copy is not None else None
        inputs: dict[str, Any] = {}
        merchant = row["merchant_id"]
        profile = snap.profiles.get(merchant) if merchant is not None else None
        known = profile is not None or (merchant is not None and not snap.profiles_partial)
        if known:
            p = profile or {}
            grade = p.get("grade")
            f["merchant.grade"] = grade
            limit = p.get("single_limit")
            inputs["merchant.single_limit_minor"] = (
                int(limit) if limit is not None else store.grade_limits.get(grade or "", store.default_limit))
            if p.get("daily_cap") is not None:
                inputs["merchant.daily_cap_minor"] = int(p["daily_cap"])
            if p.get("onboarded_day") is not None:
                inputs["merchant.onboarded_day"] = int(p["onboarded_day"])
            if p.get("anomaly") is not None:
                f["merchant.anomaly"] = float(p["anomaly"])
        f = derive(f, row, inputs, store.default_limit)
        for name in _STORE_ONLY:
            f[name] = None
        if merchant is not None and not known:
            for name in ("merchant.grade", "merchant.single_limit", "merchant.daily_cap", "event.near_limit",
                         "event.over_limit"):
                f[name] = None
        return f

