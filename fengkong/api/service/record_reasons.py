"""How a decision record stores its fired rules (part of the record's format, `records`): a
rule as the schema's rule table has it is its id and a flat list of its value names' indexes
and values; another is the list of its fields (`REASON_KEYS` order).

A module of its own so that the record's layout (`records`) and its fired rules' codec can
each be read whole."""

from __future__ import annotations

import operator
from typing import Any

from fengkong.api.service.record_schema import Schema
from fengkong.engine.decision import FiredRule

#: a fired rule's fields (`fengkong.engine.decision.Reason.to_dict`)
REASON_KEYS = ("id", "description", "action", "score", "mode", "tags", "values")


def reason_values(reason: Any, schema: Schema) -> Any:
    """A fired rule (a `FiredRule`, or its ``to_dict``) as ``[id, values]`` when the schema's
    rule table has the rest as it is (``values`` a flat list of name index and value), else
    the list of its values (`REASON_KEYS` order)."""
    if type(reason) is FiredRule:
        rule_id, values = reason.id, reason.values
        seen = schema.fired.get(rule_id)
        if (seen is not None and seen[0] is reason.description and seen[1] is reason.action
                and seen[2] is reason.score and seen[3] is reason.mode and seen[4] is reason.tags
                and type(values) is dict and tuple(values) == seen[5]):
            return [rule_id, seen[6](values)]  # this rule's own objects, as compared before: the same answer
        fields: Any = None
        score, tags = reason.score, reason.tags
        same = (reason.description, reason.action, score, reason.mode, tags if type(tags) is tuple else tuple(tags))
    else:
        if tuple(reason) != REASON_KEYS:
            return reason
        rule_id, description, action, score, mode, tags, values = fields = _reason_fields(reason)
        same = (description, action, score, mode, tuple(tags))
    known = schema.heads.get(rule_id)
    if known is not None and isinstance(values, dict) and type(known[2]) is type(score) and known == same:
        names = tuple(values)
        flat = schema.flats.get(rule_id)
        if flat is None or flat[0] != names:  # the rule's names, indexed once
            if len(schema.flats) >= 1024:
                schema.flats.clear()
            get = schema.index.get
            flat = schema.flats[rule_id] = (names, [get(name, name) for name in names])
        if fields is None and type(values) is dict and type(tags) is tuple:
            if len(schema.fired) >= 1024:
                schema.fired.clear()
            schema.fired[rule_id] = (reason.description, reason.action, score, reason.mode, tags, names,
                                     _flattener(flat[1], names))
        out: list[Any] = [None] * (2 * len(names))
        out[::2] = flat[1]
        out[1::2] = values.values()
        return [rule_id, out]
    if fields is None:  # what ``FiredRule.to_dict`` gives, as its list of values
        return [rule_id, reason.description, reason.action, score, reason.mode, list(tags), dict(values)]
    return list(fields)


def _flattener(indexes: list[Any], names: tuple[str, ...]) -> Any:
    """What makes a fired rule's flat list (name index, value, ...) of its values, a dict of
    `names` in that order (`_reason` checks the order): for up to three names (most rules)
    one list display, else two slice assignments."""
    if len(names) == 1:
        (i0,), (n0,) = indexes, names
        return lambda v: [i0, v[n0]]
    if len(names) == 2:
        (i0, i1), (n0, n1) = indexes, names
        return lambda v: [i0, v[n0], i1, v[n1]]
    if len(names) == 3:
        (i0, i1, i2), (n0, n1, n2) = indexes, names
        return lambda v: [i0, v[n0], i1, v[n1], i2, v[n2]]
    size = 2 * len(names)

    def flat(values: dict[str, Any]) -> list[Any]:
        out: list[Any] = [None] * size
        out[::2] = indexes
        out[1::2] = values.values()
        return out
    return flat


#: a fired rule's fields in `REASON_KEYS` order, by one call
_reason_fields = operator.itemgetter(*REASON_KEYS)


def reason_dict(reason: Any, schema: Schema | None) -> Any:
    """A fired rule as `reason_values` stored it, read back with its schema (or without: then
    its id and values only, the rest being the schema's)."""
    if not isinstance(reason, list):
        return reason
    if len(reason) != 2:
        return dict(zip(REASON_KEYS, reason))
    rule_id, flat = reason
    known = schema.rules.get(rule_id) if schema is not None else None
    vocab = schema.vocab if schema is not None else ()
    values = {vocab[k] if isinstance(k, int) and k < len(vocab) else str(k): v for k, v in zip(flat[::2], flat[1::2])}
    if known is None:  # the schema is gone: the rule's id and values only
        return {"id": rule_id, "values": values}
    return {"id": rule_id, "description": known[0], "action": known[1], "score": known[2], "mode": known[3],
            "tags": list(known[4]), "values": values}
