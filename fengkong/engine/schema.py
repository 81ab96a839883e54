"""What a rule may read: the feature catalog plus one boolean per analyst list.

Types come from `fengkong.features.definitions.CATALOG`; lists (and their `kind`)
from `rules/lists/lists.yaml`. The feature store turns list membership into a
boolean feature ``lists.<name>``: whether the event's attribute of the list's kind
is in the list. `KIND_ATTRIBUTE` is that mapping, shared with the type checker so
``event.ip in lists.blocked_cards`` is refused at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fengkong.engine.yamlio import YamlSyntax, load_yaml, plain
from fengkong.features.definitions import CATALOG, NAMESPACES, DType

#: The event attribute a list of each kind is looked up by.
KIND_ATTRIBUTE: dict[str, str] = {
    "card": "card.fingerprint",
    "user": "event.user_id",
    "device": "event.device_id",
    "ip": "event.ip",
    "merchant": "event.merchant_id",
}

LISTS_FILE = Path("lists") / "lists.yaml"


@dataclass(frozen=True)
class Schema:
    dtypes: dict[str, DType]
    lists: dict[str, str] = field(default_factory=dict)  # list name -> kind

    @classmethod
    def from_catalog(cls, lists: dict[str, str] | None = None) -> "Schema":
        dtypes: dict[str, DType] = {name: spec.dtype for name, spec in CATALOG.items()}
        lists = dict(lists or {})
        for name in lists:
            dtypes[f"lists.{name}"] = "bool"
        return cls(dtypes, lists)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return NAMESPACES


def read_lists(rules_dir: Path) -> tuple[dict[str, str], list[tuple[int | None, str]]]:
    """The lists declared in ``rules_dir/lists/lists.yaml``: ({name: kind}, [(line, problem)])."""
    path = rules_dir / LISTS_FILE
    if not path.exists():
        return {}, []
    try:
        data: Any = plain(load_yaml(path)) or {}
    except YamlSyntax as exc:
        return {}, [(exc.line, exc.reason)]
    out: dict[str, str] = {}
    problems: list[tuple[int | None, str]] = []
    declared = data.get("lists") if isinstance(data, dict) else data
    if declared is None:
        return {}, []
    if not isinstance(declared, dict):
        return {}, [(None, "the lists file must have a top-level `lists:` mapping")]
    for name, spec in declared.items():
        kind = (spec or {}).get("kind") if isinstance(spec, dict) else None
        if kind not in KIND_ATTRIBUTE:
            problems.append((None, f"list {name!r} has kind {kind!r}; expected one of {sorted(KIND_ATTRIBUTE)}"))
            continue
        out[str(name)] = kind
    return out, problems
