"""Analyst lists (black and white lists): which exist, and their entries in Redis.

`rules/lists/lists.yaml` declares the lists and what each holds; entries change at
run time and live in Redis, so a change is effective on the next decision without
a reload. Rules never see the entries: the feature store answers "is this event's
card / user / device / ip / merchant on list X" as the boolean feature
``lists.X``, inside the same round trip as every other feature.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import pandas as pd
import redis
import yaml

from fengkong.features import keys
from fengkong.features.errors import FeatureDefinitionError, FeatureStoreUnavailable
from fengkong.features.ipintel import V4_OTHER, V4_VALID, ipv4_ints

ListKind = Literal["card", "user", "device", "ip", "merchant"]
#: The event-row column each kind of list is looked up by, and the rule-side name of it.
KIND_COLUMN: dict[str, str] = {
    "card": "card_fp",
    "user": "user_id",
    "device": "device_id",
    "ip": "ip",
    "merchant": "merchant_id",
}
KIND_FEATURE: dict[str, str] = {
    "card": "card.fingerprint",
    "user": "event.user_id",
    "device": "event.device_id",
    "ip": "event.ip",
    "merchant": "event.merchant_id",
}


@dataclass(frozen=True)
class ListSpec:
    """One list of lists.yaml: what kind of value it holds and the file that seeds it."""

    name: str
    kind: ListKind
    description: str = ""
    seed: str | None = None

    @property
    def feature(self) -> str:
        """The boolean feature rules read (``lists.<name>``)."""
        return f"lists.{self.name}"


def load_list_specs(lists_dir: Path) -> dict[str, ListSpec]:
    """Read lists.yaml; a bad entry raises naming the file and the list."""
    path = Path(lists_dir) / "lists.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise FeatureDefinitionError(f"{path}: {exc}") from None
    specs: dict[str, ListSpec] = {}
    for name, body in (data.get("lists") or {}).items():
        if not isinstance(body, dict) or body.get("kind") not in KIND_COLUMN:
            raise FeatureDefinitionError(
                f"{path}: list {name!r} needs kind: one of {', '.join(KIND_COLUMN)}"
            )
        specs[name] = ListSpec(name, body["kind"], str(body.get("description", "")), body.get("seed"))
    return specs


def ipv4_range(entry: str) -> tuple[int, int] | None:
    """(first, last) integer addresses of an IPv4 CIDR entry; None for a single address or IPv6."""
    if "/" not in entry:
        return None
    net = ipaddress.ip_network(entry, strict=False)
    if net.version != 4:
        return None
    return int(net.network_address), int(net.broadcast_address)


def normalise_entry(kind: str, entry: str) -> str:
    """The stored form of a list entry: IP addresses and networks in canonical text, so lookups match.

    ValueError if empty or, for an ``ip`` list, not an address or network.
    """
    entry = entry.strip()
    if not entry:
        raise ValueError("empty entry")
    if kind == "ip":
        if "/" in entry:
            return str(ipaddress.ip_network(entry, strict=False))
        return str(ipaddress.ip_address(entry))
    return entry


class ListStore:
    """Entries of the analyst lists in Redis (a set per list; IPv4 CIDRs also in a range index)."""

    def __init__(self, client: redis.Redis, specs: dict[str, ListSpec], prefix: str = "fk") -> None:
        self.client = client
        self.specs = specs
        self.prefix = prefix

    def members_key(self, name: str) -> str:
        """Redis key of the set of list ``name``'s entries."""
        return keys.list_members_key(self.prefix, name)

    def ranges_key(self, name: str) -> str:
        """Redis key of list ``name``'s IPv4 range index (sorted set scored by first address)."""
        return keys.list_ranges_key(self.prefix, name)

    def _spec(self, name: str) -> ListSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise KeyError(f"unknown list {name!r}; known: {', '.join(sorted(self.specs))}") from None

    def add(self, name: str, entries: Iterable[str]) -> int:
        """Add entries (an IPv4 CIDR also goes to the range index); returns how many were new."""
        return self._change(name, entries, add=True)

    def remove(self, name: str, entries: Iterable[str]) -> int:
        """Remove entries; returns how many were there."""
        return self._change(name, entries, add=False)

    def _change(self, name: str, entries: Iterable[str], *, add: bool) -> int:
        spec = self._spec(name)
        clean = [normalise_entry(spec.kind, e) for e in entries]
        if not clean:
            return 0
        try:
            pipe = self.client.pipeline(transaction=True)
            (pipe.sadd if add else pipe.srem)(self.members_key(name), *clean)
            for entry in clean:
                rng = ipv4_range(entry) if spec.kind == "ip" else None
                if rng and add:
                    pipe.zadd(self.ranges_key(name), {f"{rng[0]}:{rng[1]}": rng[0]})
                elif rng:
                    pipe.zrem(self.ranges_key(name), f"{rng[0]}:{rng[1]}")
            return int(pipe.execute()[0])
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"list {name}: {exc}") from exc

    def members(self, name: str) -> list[str]:
        """The entries of list ``name``, sorted (KeyError naming the known lists if unknown)."""
        self._spec(name)
        try:
            raw = self.client.smembers(self.members_key(name))
            # bytes from a client made without decode_responses, str from one made with it
            return sorted(m.decode() if isinstance(m, bytes) else m for m in raw)
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"list {name}: {exc}") from exc

    def seed_from_files(self, lists_dir: Path) -> dict[str, int]:
        """Load each list's seed file into an empty list (never over analysts' changes)."""
        loaded: dict[str, int] = {}
        for spec in self.specs.values():
            if not spec.seed:
                continue
            if self.client.exists(self.members_key(spec.name)):
                continue
            entries = read_entries(Path(lists_dir) / spec.seed)
            loaded[spec.name] = self.add(spec.name, entries) if entries else 0
        return loaded


def read_entries(path: Path) -> list[str]:
    """One entry per line; '#' starts a comment."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            out.append(text)
    return out


class StaticLists:
    """The same membership answers from in-memory entries (the offline twin's view)."""

    def __init__(self, specs: dict[str, ListSpec], entries: dict[str, Iterable[str]] | None = None) -> None:
        self.specs = specs
        self.exact: dict[str, set[str]] = {}
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        for name, values in (entries or {}).items():
            spec = specs[name]
            clean = [normalise_entry(spec.kind, v) for v in values]
            self.exact[name] = set(clean)
            self.ranges[name] = [r for r in (ipv4_range(v) for v in clean if spec.kind == "ip") if r]
        self._range_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {
            name: _merged_ranges(rngs) for name, rngs in self.ranges.items() if rngs
        }

    def contains(self, name: str, value: str | None) -> bool:
        """Whether ``value`` is on list ``name``: an exact entry, or an IPv4 address in a listed range."""
        if value is None:
            return False
        if value in self.exact.get(name, ()):
            return True
        rngs = self.ranges.get(name)
        if rngs:
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                return False
            if addr.version == 4:
                n = int(addr)
                return any(lo <= n <= hi for lo, hi in rngs)
        return False

    def contains_many(self, name: str, values: pd.Series) -> np.ndarray:
        """`contains` of every value of a column, as a bool array (once per distinct value).

        Exact entries by ``isin``; IPv4 ranges by ``np.searchsorted`` over the
        merged ranges on the addresses `ipv4_ints` parses. Values that are not
        plain dotted-quad text (IPv6, non-strings, padded text) are asked of
        `contains` itself, so the answers are `contains`'s, value for value.
        """
        exact = self.exact.get(name)
        arrays = self._range_arrays.get(name)
        if arrays is None:  # exact entries only (or none): no parsing
            if not exact:
                return np.zeros(len(values), dtype=bool)
            column = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
            return np.asarray(column.isin(list(exact)), dtype=bool)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        uniq = np.asarray(uniques, dtype=object)
        hit = np.zeros(len(uniq) + 1, dtype=bool)  # the last slot: missing values (code -1)
        if exact:
            hit[:-1] = pd.Index(uniq, dtype=object).isin(list(exact))
        if len(uniq):
            starts, ends = arrays
            ints, state = ipv4_ints(uniq)
            valid = np.flatnonzero((state == V4_VALID) & ~hit[:-1])
            v = ints[valid]
            i = np.searchsorted(starts, v, side="right") - 1
            hit[valid] = (i >= 0) & (v <= ends[np.maximum(i, 0)])
            for k in np.flatnonzero((state == V4_OTHER) & ~hit[:-1]).tolist():
                hit[k] = self.contains(name, uniq[k])
        return hit[codes]


def _merged_ranges(ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, merged (starts, ends) int64 arrays of inclusive integer ranges."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return (
        np.array([lo for lo, _ in merged], dtype=np.int64),
        np.array([hi for _, hi in merged], dtype=np.int64),
    )
