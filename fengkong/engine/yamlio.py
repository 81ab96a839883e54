"""YAML reading that keeps line numbers, so every problem can name its line.

Mappings come back as `Located` dicts with ``line`` (where the mapping starts) and
``lines`` (where each key is); a key written twice in one mapping is reported
instead of silently keeping the last one (PyYAML's default).

Hostile files are refused before they can cost much (`limits.py`): a file over
`MAX_FILE_BYTES` is not read; aliases (``*name``) are refused, so no alias bomb can
expand; a document nested past `MAX_YAML_DEPTH` is refused while it is composed
(PyYAML's composer recurses once per level, so the count stops it first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from fengkong.engine.limits import MAX_FILE_BYTES, MAX_YAML_DEPTH


class Located(dict):  # type: ignore[type-arg]
    line: int = 0
    lines: dict[str, int]
    duplicate_keys: list[tuple[str, int]]


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and counts nesting while composing."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ComposerError(None, None, "aliases (*name) are not allowed in rule files", mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    out = Located()
    out.line = node.start_mark.line + 1
    out.lines = {}
    out.duplicate_keys = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (dict, list)):  # `? [a]: b` or `? {a: b}`: unhashable, and never a field name
            raise ConstructorError(None, None, "a key must be plain text or a number", key_node.start_mark)
        if key in out:
            out.duplicate_keys.append((str(key), key_node.start_mark.line + 1))
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[str(key)] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class YamlSyntax(Exception):
    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def load_yaml(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Parse one YAML file; raise YamlSyntax with the line of the error, or when the
    file is over ``max_bytes`` (then it is not read)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise YamlSyntax(None, f"cannot read the file: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise YamlSyntax(None, f"the file is {size:,} bytes; a rule set's file may hold at most {max_bytes:,}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise YamlSyntax(mark.line + 1 if mark else None, f"YAML syntax: {reason}") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise YamlSyntax(None, f"YAML: {exc}") from None
    except OSError as exc:
        raise YamlSyntax(None, f"cannot read the file: {exc.strerror or exc}") from None


def line_of(node: Any, key: str | None = None) -> int | None:
    if isinstance(node, Located):
        if key is not None and key in node.lines:
            return node.lines[key]
        return node.line
    return None


def plain(value: Any) -> Any:
    """Drop the location wrappers (for values handed on, e.g. feature mappings)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
