"""Pydantic's validation errors as problems an analyst can act on: line, field, reason.

The YAML files (rules, policy, replay mappings) are validated by pydantic models,
which report every error of a document in one pass. This module turns each error
into the line of the YAML file it concerns (from the `yamlio.Located` mappings the
loader returns), the dotted path of the field, and a reason in the analyst's words
("unknown field 'scroe' (did you mean 'score'?)", "missing required field 'when'"),
so that `fengkong rules check` still lists every problem with its file and line.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from fengkong.engine.yamlio import Located, line_of

#: pydantic's type errors, in words (the type named by the error's type code)
_KINDS = {
    "string_type": "text", "float_type": "a number", "int_type": "a whole number", "bool_type": "true or false",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "tuple_type": "a list", "finite_number": "a finite number", "float_parsing": "a number",
    "int_parsing": "a whole number",
}


@dataclass(frozen=True)
class FieldError:
    """One validation error, located: the YAML line (None when unknown), the dotted
    field path ("" for the document itself) and the reason."""

    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


def field_errors(exc: ValidationError, model: type[BaseModel], node: Any,
                 nouns: Mapping[str, str] | None = None) -> list[FieldError]:
    """Every error of ``exc`` (raised validating ``node`` as ``model``), located.

    ``nouns`` names what a field's choices are ("then": "action"), for the message of
    a value outside them; a dict key outside its choices uses the noun of ``"[key]"``."""
    nouns = nouns or {}
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        is_key = bool(loc) and loc[-1] == "[key]"
        if is_key:
            loc = loc[:-1]
        kind = err["type"]
        value = err.get("input")
        if kind == "missing":
            parent, name = loc[:-1], loc[-1]
            out.append(FieldError(_line(node, parent), _path(parent), f"missing required field {name!r}"))
        elif kind == "extra_forbidden":
            parent, name = loc[:-1], str(loc[-1])
            known = _fields_at(model, parent)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(FieldError(_line(node, loc), _path(parent),
                                  f"unknown field {name!r}{hint}; fields: {', '.join(known)}"))
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            last = next((str(p) for p in reversed(loc) if not isinstance(p, int)), "")
            noun = nouns.get("[key]" if is_key else last, "value")
            out.append(FieldError(_line(node, loc), _path(loc),
                                  f"unknown {noun} {value!r}; expected one of {', '.join(choices)}"))
        elif kind in ("value_error", "assertion_error"):
            reason = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            out.append(FieldError(_line(node, loc), _path(loc), reason))
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            bound = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[kind]
            limit = next(iter(err.get("ctx", {}).values()), "")
            out.append(FieldError(_line(node, loc), _path(loc), f"must be {bound} {limit}, not {value!r}"))
        elif kind in _KINDS:
            out.append(FieldError(_line(node, loc), _path(loc), f"must be {_KINDS[kind]}, not {value!r}"))
        else:
            out.append(FieldError(_line(node, loc), _path(loc), f"{err['msg']} (got {value!r})"))
    return out


def duplicate_keys(node: Any, path: tuple[Any, ...] = ()) -> list[FieldError]:
    """Every key written twice in one mapping, anywhere in a YAML document (the loader
    keeps the last; a silent choice the analyst did not make)."""
    out: list[FieldError] = []
    if isinstance(node, Located):
        for key, line in node.duplicate_keys:
            out.append(FieldError(line, _path(path), f"field {key!r} is written twice"))
    if isinstance(node, dict):
        for key, value in node.items():
            out += duplicate_keys(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += duplicate_keys(value, (*path, i))
    return out


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line(node: Any, loc: Sequence[Any]) -> int | None:
    """The line of the deepest key of ``loc`` present in ``node`` (else its mapping's)."""
    line = line_of(node)
    current = node
    for part in loc:
        if isinstance(current, dict) and part in current:
            line = line_of(current, str(part)) or line
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            line = line_of(current) or line
        else:
            break
    return line


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The field names of the model found at ``loc`` (through nested models, dicts,
    lists and optionals), for an unknown field's message."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (dict, list, tuple):
            args = typing.get_args(current)
            current = args[-1] if args else Any
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` as ``X``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
