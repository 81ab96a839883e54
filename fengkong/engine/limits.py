"""The limits a rule set must stay within, so that a hostile or broken set is refused
with a problem instead of crashing the loader, the service or `fengkong rules check`.

Each limit is checked before the work it protects: file sizes before a file is read,
YAML nesting and aliases while the document is composed (PyYAML's composer recurses
once per level), an expression's size and nesting on its tokens before Python's
parser builds a tree and on that tree (walked with a loop) before anything recursive
of ours runs. docs/rules.md ("Limits") is the analyst's version.

The defaults leave ample room for real rule sets (the default pack's largest rule
file is a few KiB, its deepest expression nests 5 levels). `Limits` carries them;
`load_ruleset` and `LiveRules` take an instance where a deployment needs others.
"""

from __future__ import annotations

from dataclasses import dataclass

#: bytes in one rule, policy, list or case file
MAX_FILE_BYTES = 1 << 20
#: bytes in all the files of one rule set together (rules, policy, lists, cases)
MAX_SET_BYTES = 16 << 20
#: rules in one set, all files together
MAX_RULES = 5000
#: characters in one `when` expression
MAX_EXPR_CHARS = 4000
#: tokens in one `when` expression (a bound on its tree's size before it is parsed)
MAX_EXPR_TOKENS = 1000
#: nesting of one expression's tree: each `not`, unary minus, parenthesised group and
#: each operator of a chain of + - * / adds a level (a flat `a and b and c` is one)
MAX_EXPR_DEPTH = 32
#: nodes of one expression's tree (features, constants, operators, list items)
MAX_EXPR_NODES = 600
#: nesting of mappings and lists in one YAML document
MAX_YAML_DEPTH = 32
#: an integer constant's magnitude: 2^53, the range a double (durable's number) holds exactly
MAX_EXACT_INT = 2**53


@dataclass(frozen=True)
class Limits:
    """The limits one load applies (the module's constants by default)."""

    file_bytes: int = MAX_FILE_BYTES
    set_bytes: int = MAX_SET_BYTES
    rules: int = MAX_RULES


DEFAULT_LIMITS = Limits()
