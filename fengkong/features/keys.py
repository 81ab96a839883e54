"""Every Redis key shape fengkong writes, in one place.

Keys are ``{prefix}:v1:{<tag>}:<suffix>``. The braces are a Redis Cluster hash tag:
all keys of one entity (a card, a merchant, an event id) hash to one slot, so the
work of one entity can run as one script on a cluster. ``v1`` is the key format's
version; a change of layout bumps it instead of reading old values wrongly.

The feature store, the lists, the decision service and the audit build their keys
with these functions only, so a key's shape is decided here and nowhere else.
"""

from __future__ import annotations

#: the key format's version (part of every key)
VERSION = "v1"


def tag_prefix(prefix: str) -> str:
    """The text every entity key starts with, up to the hash tag's entity name."""
    return f"{prefix}:{VERSION}:{{"


def entity_key(prefix: str, entity: str, entity_id: str, suffix: str) -> str:
    """One feature or profile key of an entity (``card``, ``user``, ``merchant``, ...)."""
    return f"{prefix}:{VERSION}:{{{entity}:{entity_id}}}:{suffix}"


def event_tag_prefix(prefix: str) -> str:
    """Start of the keys of one event id (``{evt:<id>}``): dedup claim and stored request."""
    return f"{tag_prefix(prefix)}evt:"


def event_key(prefix: str, event_id: str, suffix: str) -> str:
    """A key of one event id; the store's dedup key and the service's request share its tag."""
    return entity_key(prefix, "evt", event_id, suffix)


def request_key(prefix: str, event_id: str) -> str:
    """The claim of one event id, then its stored decision: the feature store's script
    writes the reply the event got here when it counts it, and the service replaces
    that with the decision record (with the request's digest). One key, not two: a
    decision leaves one key of its event id (docs/operations.md, "Memory sizing")."""
    return event_key(prefix, event_id, "request")


def legacy_claim_key(prefix: str, event_id: str) -> str:
    """Where the claim of an event id was kept before it shared `request_key`: still
    read when `request_key` is empty, so an event counted before an upgrade counts
    nothing after it (keys of that format expire within the dedup TTL, 3 days)."""
    return event_key(prefix, event_id, "dedup")


def decision_key(prefix: str, decision_id: str) -> str:
    """Pointer from a decision id to the event id that holds its record, as decisions
    made before `decision_bucket` stored it (one key each): still read for them."""
    return entity_key(prefix, "decision", decision_id, "event")


#: hex digits of a decision id (after ``d_``) that name its pointer bucket: the hour it was
#: made (6) and a shard of that hour (3, so 4,096 buckets an hour)
BUCKET_DIGITS = 9


def decision_bucket(prefix: str, decision_id: str) -> tuple[str, str]:
    """(key, field) of a decision id's pointer to its event id: a hash per hour and shard
    (`fengkong.api.service.pointers`), where a key per decision cost Redis ~126 bytes."""
    return entity_key(prefix, "dp", decision_id[2:2 + BUCKET_DIGITS], "ptr"), decision_id[2 + BUCKET_DIGITS:]


def record_schema_key(prefix: str, schema_id: str) -> str:
    """The names a compact decision record's values stand for (feature names, rule-set
    version, models), shared by every record written under one rule set."""
    return entity_key(prefix, "schema", schema_id, "names")


def merchant_snapshot_key(prefix: str, merchant_id: str) -> str:
    """The features of a merchant's last decision (the merchant page reads it)."""
    return entity_key(prefix, "merchant", merchant_id, "last_decision")


def merchant_profile_key(prefix: str, merchant_id: str) -> str:
    """A merchant's profile: grade, limits, opening date (written by rescoring and the API)."""
    return entity_key(prefix, "merchant", merchant_id, "profile")


def list_members_key(prefix: str, name: str) -> str:
    """The members of one analyst list (a set)."""
    return entity_key(prefix, "list", name, "members")


def list_ranges_key(prefix: str, name: str) -> str:
    """The IPv4 ranges of one analyst list (a sorted set by range start)."""
    return entity_key(prefix, "list", name, "ranges")


def labels_stream(prefix: str) -> str:
    """The capped stream of labels (fraud reports, chargebacks) the training job reads."""
    return f"{prefix}:{VERSION}:labels"


def audit_stream(prefix: str, kind: str) -> str:
    """The capped audit stream of ``decisions`` or ``changes``."""
    return f"{prefix}:{VERSION}:audit:{kind}"


def webhook_key(prefix: str, suffix: str) -> str:
    """A key of the webhooks (subscriptions, outbox, retry schedule, deliveries, stats,
    dead letters). They share one hash tag, ``{webhooks}``, so each of their scripts
    touches one Redis Cluster slot; ``fengkong.webhooks.store`` names the suffixes."""
    return f"{prefix}:{VERSION}:{{webhooks}}:{suffix}"
