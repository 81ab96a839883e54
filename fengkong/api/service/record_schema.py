"""What the values of the decision records written under one rule set stand for: the
feature names, the rule-set version, the models' status, the rules' table and the
compression dictionary, stored once per schema (`records`, the module docstring).

A module of its own so that the record's layout (`records`) and its schema can each be
read whole."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import msgpack

from fengkong.api.service.record_event import copies


@dataclass(frozen=True)
class Schema:
    """What the values of the records written under one rule set stand for."""

    ruleset_version: str | None
    models: str | None
    names: tuple[str, ...]   # the features' names, in the records' order
    vocab: tuple[str, ...]   # names first, then the other names a missing feature may have
    rules: Mapping[str, list[Any]]  # rule id -> its description, action, score, mode, tags
    blob: bytes
    id: str
    index: Mapping[str, int]  # position of each name in vocab
    copies: tuple[int, ...]   # positions of the features that may repeat an event's text (event.ip, card.type, ...)
    zdict: bytes              # the dictionary of its compressed records (b"": none, records not compressed)
    raw_id: bytes             # the id's 8 bytes (what a record holds)
    #: missing_features lists (as tuples) -> their indexes into vocab: a rule set's decisions
    #: of one kind of event miss the same features, and looking a name up costs more than a list
    missing: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict, compare=False, repr=False)
    #: rule id -> its description, action, score, mode and tags (a tuple): what a fired rule is
    #: compared with (`record_reasons.reason_values`) in one tuple comparison
    heads: dict[str, tuple[Any, ...]] = field(default_factory=dict, compare=False, repr=False)
    #: a fired rule's value names (as a tuple) -> their indexes into vocab, by rule id: a rule
    #: reads the same names in the same order each time it fires (`record_reasons.reason_values`)
    flats: dict[str, tuple[tuple[str, ...], list[Any]]] = field(default_factory=dict, compare=False, repr=False)
    #: rule id -> the description, action, score, mode and tags objects of the engine's `FiredRule`
    #: found equal to `heads` (the engine gives a rule's firings the same objects), its value names
    #: and what makes its flat list: a firing with those very objects needs no comparison
    #: (`record_reasons.reason_values`)
    fired: dict[str, tuple[Any, ...]] = field(default_factory=dict, compare=False, repr=False)
    #: `zdict` loaded, made when first needed (`record_codec`): "compress", "decompress" -> what does it
    codec: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def make(cls, ruleset_version: str | None, models: str | None, names: tuple[str, ...],
             extra: Collection[str], rules: Mapping[str, list[Any]]) -> "Schema":
        seen = set(names)
        vocab = names + tuple(sorted(n for n in extra if n not in seen))
        blob = msgpack.packb([ruleset_version, models, list(names), list(vocab[len(names):]), dict(rules)],
                             use_bin_type=True)
        return cls.from_blob(blob)

    def with_dictionary(self, zdict: bytes) -> "Schema":
        """This schema with a compression dictionary (its own id, since its blob differs)."""
        ruleset_version, models, names, extra, rules = msgpack.unpackb(self.blob, raw=False)[:5]
        return Schema.from_blob(msgpack.packb([ruleset_version, models, names, extra, rules, zdict],
                                              use_bin_type=True))

    @classmethod
    def from_blob(cls, blob: bytes) -> "Schema":
        parts = msgpack.unpackb(blob, raw=False)
        ruleset_version, models, names, extra, rules = parts[:5]  # a sixth item: the dictionary of deflated records
        names = tuple(names)
        vocab = names + tuple(extra)
        raw_id = hashlib.blake2b(blob, digest_size=8).digest()
        return cls(ruleset_version, models, names, vocab, rules, blob, raw_id.hex(),
                   {n: i for i, n in enumerate(vocab)}, copies(names),
                   parts[5] if len(parts) > 5 else b"", raw_id,
                   heads={rule_id: (*known[:4], tuple(known[4])) for rule_id, known in rules.items()
                          if type(known) is list and len(known) == 5 and type(known[4]) is list})


def rule_table(ruleset: Any) -> dict[str, list[Any]]:
    """What a fired rule's record repeats of the rule (`REASON_KEYS` but id and values),
    by id: a record then names the rule and its values only."""
    return {r.id: [r.description, r.then, r.score, r.mode, list(r.tags)] for r in ruleset.rules}
