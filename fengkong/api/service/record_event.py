"""How a decision record stores its event (part of the record's format, `records`): the
event's field names as their index in `EVENT_NAMES`, its ``occurred_at`` as `when_code`
gives it, and a feature that repeats one of the event's texts (``event.ip``,
``card.fingerprint``, ...) as a reference to it (`with_refs`, read back by `resolved`).

The decision path does both for every record: `stored_event` does them in one pass, by a
writer made once per shape of event (`_writer`); `indexed` and `with_refs` are what it
stands for, and take the events it does not.

A module of its own so that the record's layout (`records`) and the event's codec can each
be read whole."""

from __future__ import annotations

from typing import Any

import msgpack
import msgspec

from fengkong.api.service.record_values import occurred_text, when_code

#: the event's field names (`fengkong.events.Event`, `Card`), written as their index here
#: (part of the format: append new names, never reorder)
EVENT_NAMES = ("event_id", "type", "occurred_at", "merchant_id", "user_id", "amount", "currency", "channel", "card",
               "ip", "device_id", "merchant_mcc", "refers_to", "fingerprint", "bin", "issuer_country")
_EVENT_INDEX = {n: i for i, n in enumerate(EVENT_NAMES)}

_REF = 1  # MessagePack extension type: "the event's text value number <byte>"
#: the references, made once, as the record's encoder (`records.pack`, msgspec) writes them; read
#: back (msgpack) they are `msgpack.ExtType`
_REFS = tuple(msgspec.msgpack.Ext(_REF, bytes((i,))) for i in range(256))


def texts(event: dict[str, Any]) -> list[str]:
    """The event's text values, top level then the card's, in order: what a feature's
    value may refer to instead of repeating (`_REF`)."""
    out = [v for v in event.values() if type(v) is str]
    card = event.get("card")
    if isinstance(card, dict):
        out += [v for v in card.values() if type(v) is str]
    return out


def with_refs(values: list[Any], positions: tuple[int, ...], event: dict[str, Any]) -> list[Any]:
    """`values` with each one at `positions` that repeats a text of the event replaced by
    a reference to it (the ids, ip, channel and types are the event's own): its number
    among `texts`, the first where a text repeats."""
    refs: dict[str, int] = {}
    n = 0
    for value in event.values():
        if type(value) is str:
            if value not in refs:
                refs[value] = n
            n += 1
    card = event.get("card")
    if isinstance(card, dict):
        for value in card.values():
            if type(value) is str:
                if value not in refs:
                    refs[value] = n
                n += 1
    if not refs:
        return values
    for i in positions:
        value = values[i]
        if type(value) is str:
            ref = refs.get(value)
            if ref is not None and ref < 256:
                values[i] = _REFS[ref]
    return values


def resolved(values: list[Any], event: Any) -> list[Any]:
    """`values` with each reference `with_refs` made replaced by the event's text it names."""
    if not isinstance(event, dict) or not any(type(v) in _EXTS for v in values):
        return values
    known = texts(event)
    return [known[v.data[0]] if type(v) in _EXTS and v.code == _REF else v for v in values]


#: an extension type as msgpack reads it, and as the encoder takes it
_EXTS = (msgpack.ExtType, msgspec.msgpack.Ext)


_OCCURRED_AT, _CARD = _EVENT_INDEX["occurred_at"], _EVENT_INDEX["card"]


#: an event's (or its card's) names, in order -> their `EVENT_NAMES` indexes (a name not there
#: stays): events of one sender name the same fields in the same order
_KEY_INDEXES: dict[tuple[str, ...], tuple[Any, ...]] = {}


def indexed(value: dict[str, Any], top: bool = True) -> dict[Any, Any]:
    """An event with its field names as `EVENT_NAMES` indexes (a name not there stays), its
    card's likewise, and its ``occurred_at`` as `when_code` gives it."""
    names = tuple(value)
    indexes = _KEY_INDEXES.get(names)
    if indexes is None:
        if len(_KEY_INDEXES) >= 1024:
            _KEY_INDEXES.clear()
        indexes = _KEY_INDEXES[names] = tuple(_EVENT_INDEX.get(k, k) for k in names)
    out = dict(zip(indexes, value.values()))
    card = value.get("card") if top else None
    if isinstance(card, dict):  # other dicts (none in a valid event) stay as they are: they read back alike
        out[_CARD] = indexed(card, False)
    if top and _OCCURRED_AT in out:
        at = out[_OCCURRED_AT]
        out[_OCCURRED_AT] = when_code(at) if type(at) is str else [at]  # (an integer there is a `when_code`)
    return out


def named(value: dict[Any, Any], top: bool = True) -> dict[str, Any]:
    """An event as `indexed` stored it, with its field names and its time's text back."""
    out = {EVENT_NAMES[k] if isinstance(k, int) else k: named(v, False) if isinstance(v, dict) else v
           for k, v in value.items()}
    if top and "occurred_at" in out:
        at = out["occurred_at"]
        if type(at) is int:
            out["occurred_at"] = occurred_text(at)
        elif type(at) is list and len(at) == 1:
            out["occurred_at"] = at[0]
    return out


def stored_event(event: dict[str, Any], values: list[Any], positions: tuple[int, ...]) -> dict[Any, Any]:
    """`indexed` of the event, and `values` as `with_refs` changes them (in place): by the
    writer of the event's shape, made the first time it is seen (`_writer`), else (an event of
    another form: a card of other fields, or a name not in `EVENT_NAMES`) by those two."""
    names = tuple(event)
    found = _WRITERS.get(names)
    if found is None or found[0] is not positions:
        found = _WRITERS[names] = (positions, _writer(names, event.get("card"), positions))
        if len(_WRITERS) > 1024:
            _WRITERS.clear()
    if found[1] is not None:
        out = found[1](event, values)
        if out is not None:
            return out  # type: ignore[no-any-return]
    with_refs(values, positions, event)
    return indexed(event)


#: an event's names, in order -> (the `positions` its writer was made for, the writer or None)
_WRITERS: dict[tuple[Any, ...], tuple[tuple[int, ...], Any]] = {}


def _writer(names: tuple[Any, ...], card: Any, positions: tuple[int, ...]) -> Any:
    """What `stored_event` calls for events of these names in this order (and, when one is a
    ``card`` object, its names in its order): ``writer(event, values)`` gives `indexed` of the
    event and makes `values` what `with_refs` makes them, as straight-line code (each name
    looked up once; no loop over the event, no zip, no shape looked up per card), or None when
    the event's card is not of those names (`stored_event` then takes the plain way). None for
    names outside `EVENT_NAMES`: only those are written into its source."""
    cards = tuple(card) if type(card) is dict else None
    if not all(type(n) is str and n in _EVENT_INDEX for n in names + (cards or ())):
        return None
    top = {n: f"a{i}" for i, n in enumerate(names)}
    inner = {n: f"b{i}" for i, n in enumerate(cards or ())}
    lines = ["def writer(event, values):"]
    lines += [f"    {local} = event[{name!r}]" for name, local in top.items()]
    if cards is not None:
        lines += [f"    card = {top['card']}", "    if card.__class__ is not dict or tuple(card) != CARD:",
                  "        return None"]
        lines += [f"    {local} = card[{name!r}]" for name, local in inner.items()]
    else:
        lines += [f"    if isinstance({top['card']}, dict):", "        return None"] if "card" in top else []
    # the texts numbered in order (top level, then the card's): each the first number of its text
    lines += ["    refs = {}", "    n = 0"]
    for local in [local for name, local in top.items() if name != "card" or cards is None] + list(inner.values()):
        lines += [f"    if {local}.__class__ is str:", f"        if {local} not in refs:",
                  f"            refs[{local}] = n", "        n += 1"]
    for i in positions:
        lines += [f"    value = values[{i}]", "    if value.__class__ is str:", "        ref = refs.get(value)",
                  "        if ref is not None:", f"            values[{i}] = REFS[ref]"]  # (32 texts at most)
    items = []
    for name, local in top.items():
        if name == "occurred_at":
            local = f"(when_code({local}) if {local}.__class__ is str else [{local}])"
        elif name == "card" and cards is not None:
            local = "{" + ", ".join(f"{_EVENT_INDEX[n]}: {b}" for n, b in inner.items()) + "}"
        items.append(f"{_EVENT_INDEX[name]}: {local}")
    lines.append("    return {" + ", ".join(items) + "}")
    scope = {"CARD": cards, "REFS": _REFS, "when_code": when_code}
    exec("\n".join(lines), scope)
    return scope["writer"]


def copies(names: tuple[str, ...]) -> tuple[int, ...]:
    """The positions of the features that may repeat a text of the event: those named
    after one of its fields (``event.ip``, ``card.type``, ...)."""
    return tuple(i for i, n in enumerate(names)
                 if n.startswith(("event.", "card.")) and n.partition(".")[2] in _EVENT_INDEX)
