"""Parse an analyst's `when` text into the typed tree, accepting only the rule grammar.

The text goes through Python's own tokenizer and parser (`ast.parse`, which never
executes anything) and then a strict whitelist: any node not listed below is
refused with a reason, so `__import__("os")`, attribute games, calls, subscripts,
lambdas and comprehensions cannot get in. Nothing here evaluates user text.

Grammar (docs/rules.md has the analyst's version)::

    expr     := expr "and" expr | expr "or" expr | "not" expr | "(" expr ")" | test
    test     := value cmp value [cmp value ...]          # chained: 1 < x <= 5
              | value ["not"] "in" "[" const, ... "]"
              | feature ["not"] "in" lists.<name>
              | feature "is" ["not"] "missing"
              | feature                                  # a bool feature
    value    := feature | const | value (+ - * /) value | "-" value | "(" value ")"
    feature  := namespace "." name                       # event card user device ip merchant model lists
    const    := number | "string" | true | false
    cmp      := == != < <= > >=

Limits (`limits.py`) are checked before anything can recurse deeply: the text's
length, then its tokens (count, bracket nesting, runs of prefix operators) before
`ast.parse` builds a tree, then the tree's depth and size, walked with a loop, before
the recursive translation below. Every constant, literal or folded (``2 * 3``), must
be a finite number (integers within ±2^53); ``1e400`` and ``1e308 * 10`` are refused.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from typing import Any

from fengkong.engine.errors import RuleSyntaxError
from fengkong.engine.limits import MAX_EXACT_INT, MAX_EXPR_CHARS, MAX_EXPR_DEPTH, MAX_EXPR_NODES, MAX_EXPR_TOKENS
from fengkong.engine.tree import (
    FLIP_OP,
    And,
    Arith,
    Compare,
    Const,
    Expr,
    Feature,
    InList,
    InLiteral,
    IsMissing,
    Not,
    Or,
    Scalar,
    Value,
)

_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_BOOL_NAMES = {"true": True, "false": False, "True": True, "False": False}
_PREFIX_OPS = frozenset({"not", "-", "+", "~"})
_OPENERS, _CLOSERS = frozenset("([{"), frozenset(")]}")
#: tree nodes that are parts of their parent rather than nodes of their own
_PARTS = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)


def parse(text: str) -> Expr:
    """Parse `when` text into a tree; raise RuleSyntaxError for anything outside the grammar."""
    if not isinstance(text, str) or not text.strip():
        raise RuleSyntaxError("`when` must be a non-empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise RuleSyntaxError(f"`when` is longer than {MAX_EXPR_CHARS} characters")
    source = " ".join(text.strip().splitlines())  # YAML folded text: one logical line
    check_tokens(source)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise RuleSyntaxError(f"not a valid expression: {exc.msg}", 1, max((exc.offset or 1) - 1, 0)) from None
    except ValueError as exc:  # e.g. a NUL character
        raise RuleSyntaxError(f"not a valid expression: {exc}") from None
    except (RecursionError, MemoryError):  # the token limits make this unreachable; kept as a refusal
        raise RuleSyntaxError(f"the expression nests too deeply (at most {MAX_EXPR_DEPTH} levels)") from None
    check_tree(tree.body)
    return _Parser().expr(tree.body)


def check_tokens(source: str) -> None:
    """Refuse text whose tokens could build a tree too big or deep for Python's parser:
    more than `MAX_EXPR_TOKENS` tokens, brackets nested past `MAX_EXPR_DEPTH`, or a run
    of prefix operators (``not not ...``, ``- - ...``) longer than it. One pass, no
    recursion; text the tokenizer cannot read is left to `ast.parse` to describe."""
    count = depth = run = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT):
                continue
            count += 1
            column = tok.start[1]
            if count > MAX_EXPR_TOKENS:
                raise RuleSyntaxError(f"the expression has more than {MAX_EXPR_TOKENS} tokens", 1, column)
            if tok.string in _OPENERS:
                depth += 1
                if depth > MAX_EXPR_DEPTH:
                    raise RuleSyntaxError(f"brackets nest more than {MAX_EXPR_DEPTH} deep", 1, column)
            elif tok.string in _CLOSERS:
                depth -= 1
            run = run + 1 if tok.string in _PREFIX_OPS else 0
            if run > MAX_EXPR_DEPTH:
                raise RuleSyntaxError(f"more than {MAX_EXPR_DEPTH} `not`, `-` or `+` in a row", 1, column)
    except (tokenize.TokenError, SyntaxError):
        return


def check_tree(root: ast.AST) -> None:
    """Refuse a tree deeper than `MAX_EXPR_DEPTH` or larger than `MAX_EXPR_NODES`
    (walked with a loop, so the check itself cannot overflow the stack)."""
    nodes = 0
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_EXPR_DEPTH:
            raise RuleSyntaxError(f"the expression nests more than {MAX_EXPR_DEPTH} levels deep", **_where(node))
        if nodes > MAX_EXPR_NODES:
            raise RuleSyntaxError(f"the expression has more than {MAX_EXPR_NODES} parts", **_where(node))
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node) if not isinstance(child, _PARTS))


def _where(node: ast.AST) -> dict[str, int]:
    return {"line": getattr(node, "lineno", 1), "column": getattr(node, "col_offset", 0)}


def _describe(node: ast.AST) -> str:
    names = {
        ast.Call: "a function call",
        ast.Subscript: "indexing",
        ast.Lambda: "a lambda",
        ast.IfExp: "an if-expression",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.ListComp: "a comprehension",
        ast.GeneratorExp: "a comprehension",
        ast.NamedExpr: "an assignment",
        ast.JoinedStr: "an f-string",
        ast.Starred: "a starred expression",
        ast.Await: "await",
    }
    return names.get(type(node), f"`{type(node).__name__}`")


class _Parser:
    def fail(self, reason: str, node: ast.AST) -> RuleSyntaxError:
        return RuleSyntaxError(reason, **_where(node))

    # --- boolean layer -------------------------------------------------------
    def expr(self, node: ast.AST) -> Expr:
        if isinstance(node, ast.BoolOp):
            items = tuple(self.expr(v) for v in node.values)
            return And(items) if isinstance(node.op, ast.And) else Or(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.expr(node.operand))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, (ast.Attribute, ast.Name)) and self._is_feature(node):
            # A bare feature is a boolean test: `event.is_night`, `lists.proxy_ips`.
            return Compare("==", self.feature(node), Const(True))
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            raise self.fail("a rule cannot be a constant true/false; test a feature", node)
        raise self.fail(f"{_describe(node)} is not allowed here; expected a comparison, `and`, `or` or `not`", node)

    def compare(self, node: ast.Compare) -> Expr:
        parts: list[Expr] = []
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators):
            parts.append(self.one_compare(left_node, op, right_node, node))
            left_node = right_node
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def one_compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST, node: ast.AST) -> Expr:
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right, ast.Name) and right.id == "missing"):
                raise self.fail("`is` is only allowed as `is missing` / `is not missing`", node)
            return IsMissing(self.feature(left), negated=isinstance(op, ast.IsNot))
        if isinstance(op, (ast.In, ast.NotIn)):
            negated = isinstance(op, ast.NotIn)
            if isinstance(right, (ast.List, ast.Tuple)):
                values = tuple(self.constant(e) for e in right.elts)
                if not values:
                    raise self.fail("`in []` with an empty list is never true", right)
                return InLiteral(self.value(left), values, negated)
            if isinstance(right, ast.Attribute) and self._dotted(right).startswith("lists."):
                name = self._dotted(right).removeprefix("lists.")
                return InList(self.feature(left), name, negated)
            raise self.fail("`in` needs a literal list like [\"C\", \"D\"] or a list like lists.blocked_cards", right)
        if type(op) not in _CMP:
            raise self.fail(f"operator {type(op).__name__} is not allowed", node)
        sym = _CMP[type(op)]
        lv, rv = self.value(left), self.value(right)
        if isinstance(lv, Const) and isinstance(rv, Const):
            raise self.fail("a comparison must read at least one feature", node)
        if isinstance(lv, Const):  # keep the feature side on the left: `3 <= x` is `x >= 3`
            lv, rv, sym = rv, lv, FLIP_OP[sym]
        if sym == "!=" and isinstance(rv, Const) and isinstance(rv.value, bool):
            return Compare("==", lv, Const(not rv.value))
        return Compare(sym, lv, rv)

    # --- value layer ---------------------------------------------------------
    def value(self, node: ast.AST) -> Value:
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _ARITH:
                raise self.fail(f"arithmetic operator {type(node.op).__name__} is not allowed (use + - * /)", node)
            left, right = self.value(node.left), self.value(node.right)
            op = _ARITH[type(node.op)]
            if isinstance(left, Const) and isinstance(right, Const):
                return Const(self._fold(op, left.value, right.value, node))
            return Arith(op, left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.value(node.operand)
            if isinstance(node.op, ast.UAdd):
                return inner
            if isinstance(inner, Const):
                if isinstance(inner.value, (bool, str)):
                    raise self.fail("unary minus needs a number", node)
                return Const(-inner.value)
            return Arith("*", Const(-1), inner)
        if isinstance(node, (ast.Attribute, ast.Name)) and self._is_feature(node):
            return self.feature(node)
        if isinstance(node, (ast.Constant, ast.Name)):
            return Const(self.constant(node))
        raise self.fail(f"{_describe(node)} is not allowed in a value", node)

    def constant(self, node: ast.AST) -> Scalar:
        if isinstance(node, ast.Name) and node.id in _BOOL_NAMES:
            return _BOOL_NAMES[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            v = node.operand.value
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return self.in_range(-v, node)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                return self.in_range(node.value, node)
            return node.value
        if isinstance(node, ast.Name):
            if node.id == "missing":
                raise self.fail("`missing` only goes after `is` / `is not`", node)
            raise self.fail(f"`{node.id}` is not a feature (features are namespace.name, e.g. card.type)", node)
        raise self.fail(f"{_describe(node)} is not a constant", node)

    def in_range(self, value: int | float, node: ast.AST, what: str = "the number") -> int | float:
        """``value`` if it is a finite number durable can hold (integers within ±2^53)."""
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"{what} is outside the range of numbers (finite, at most about 1.8e308)", node)
        if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
            raise self.fail(f"{what} is an integer beyond ±2^53; write it as a decimal (e.g. 1.0e20)", node)
        return value

    def feature(self, node: ast.AST) -> Feature:
        if not self._is_feature(node):
            raise self.fail("expected a feature name like card.type", node)
        return Feature(self._dotted(node))

    def _is_feature(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and bool(self._dotted(node))

    @staticmethod
    def _dotted(node: ast.AST) -> str:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return ""
        parts.append(node.id)
        return ".".join(reversed(parts))

    def _fold(self, op: str, a: Scalar, b: Scalar, node: ast.AST) -> Scalar:
        if any(isinstance(x, (bool, str)) for x in (a, b)):
            raise self.fail("arithmetic needs numbers", node)
        if op == "/" and b == 0:
            raise self.fail("division by zero", node)
        out: Any
        try:
            if op == "+":
                out = a + b  # type: ignore[operator]
            elif op == "-":
                out = a - b  # type: ignore[operator]
            elif op == "*":
                out = a * b  # type: ignore[operator]
            else:
                out = a / b  # type: ignore[operator]
        except OverflowError:
            out = math.inf
        return self.in_range(out, node, f"{a!r} {op} {b!r}")
