"""Tokenizer, recursive-descent parser and canonical printer of the rule language.

The grammar and the node classes live in `rules.ast`; this module turns rule text into
those nodes (`parse`) and nodes back into text (`to_text`). Each grammar rule is one
method of `_Parser`, named after it, so the code reads against the grammar line by line.
Every failure is a `RuleSyntaxError` carrying the rule text and the 0-based column, with
a message of the form "expected …, found …".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clm.errors import RuleSyntaxError
from clm.lifecycle.rules.ast import (
    COMPARISONS,
    OPTION_NAMES,
    Between,
    Binary,
    Call,
    Duration,
    In,
    IsNull,
    Literal,
    Name,
    Node,
    Unary,
)

KEYWORDS = frozenset(
    {"and", "or", "not", "between", "in", "is", "null", "true", "false"}
)
# Units written straight after a number, in days: a week is 7, an hour 1/24.
_DAY_UNITS = {"d": 1.0, "w": 7.0, "h": 1.0 / 24.0}
_PERIOD_UNITS = frozenset({"period", "periods"})

# Token kinds.
NUM, STR, IDENT, KW, OP, END = "number", "string", "name", "keyword", "operator", "end"

_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("==", "!=", "<>", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%")
_PUNCTUATION = "(),."


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # as written (keywords lower-cased)
    pos: int
    value: float | int | str | None = None  # numbers and strings
    unit: str | None = None  # a duration unit written straight after a number


def describe(token: Token) -> str:
    """How a token is named in a message: `)`, name `foo`, end of rule."""
    if token.kind == END:
        return "end of rule"
    if token.kind == IDENT:
        return f"name `{token.text}`"
    if token.kind == STR:
        return f"string {token.text}"
    if token.kind == NUM:
        return f"number `{token.text}`"
    return f"`{token.text}`"


def tokenize(text: str) -> list[Token]:
    """Split rule text into tokens, ending with one END token."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue

        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            tokens.append(_number(text, i))
            i = tokens[-1].pos + len(tokens[-1].text)
            continue

        if ch in "'\"":
            token = _string(text, i)
            tokens.append(token)
            i += len(token.text)
            continue

        match = _IDENT.match(text, i)
        if match:
            word = match.group()
            if word.lower() in KEYWORDS:
                tokens.append(Token(KW, word.lower(), i))
            else:
                tokens.append(Token(IDENT, word, i))
            i = match.end()
            continue

        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token(OP, op, i))
            i += len(op)
            continue
        if ch in _PUNCTUATION:
            tokens.append(Token(OP, ch, i))
            i += 1
            continue

        if ch == "!":
            raise RuleSyntaxError("expected `!=`, found `!`", text=text, column=i)
        raise RuleSyntaxError(
            f"expected a name, number, string, operator or parenthesis, found `{ch}`",
            text=text,
            column=i,
        )
    tokens.append(Token(END, "", n))
    return tokens


def _number(text: str, start: int) -> Token:
    """A number, with a duration unit if one is glued to it (`365d`, `2periods`)."""
    match = _NUMBER.match(text, start)
    assert match is not None  # the caller saw a digit
    digits = match.group()
    is_int = digits.isdigit()
    value: int | float = int(digits) if is_int else float(digits)

    # Letters straight after the digits must be a unit: `5x` is neither a number
    # followed by a name nor anything else the grammar allows.
    unit_match = _IDENT.match(text, match.end())
    if unit_match is None:
        return Token(NUM, digits, start, value)
    unit = unit_match.group()
    if unit.lower() in _DAY_UNITS or unit.lower() in _PERIOD_UNITS:
        return Token(NUM, digits + unit, start, value, unit.lower())
    raise RuleSyntaxError(
        f"expected a unit d, w, h or periods after `{digits}`, found `{unit}`",
        text=text,
        column=unit_match.start(),
    )


def _string(text: str, start: int) -> Token:
    """A quoted string; the quote is escaped by doubling it (`'it''s'`)."""
    quote = text[start]
    i = start + 1
    chars: list[str] = []
    while i < len(text):
        if text[i] == quote:
            if text.startswith(quote * 2, i):
                chars.append(quote)
                i += 2
                continue
            return Token(STR, text[start : i + 1], start, "".join(chars))
        chars.append(text[i])
        i += 1
    raise RuleSyntaxError(
        f"expected {quote} to close the string opened at column {start + 1}, "
        "found end of rule",
        text=text,
        column=len(text),
    )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # Token helpers ------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def at(self, kind: str, *texts: str) -> bool:
        return self.tok.kind == kind and (not texts or self.tok.text in texts)

    def advance(self) -> Token:
        token = self.tok
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def fail(self, expected: str, token: Token | None = None) -> RuleSyntaxError:
        token = token or self.tok
        return RuleSyntaxError(
            f"expected {expected}, found {describe(token)}",
            text=self.text,
            column=token.pos,
        )

    def close(self, opened: Token) -> Token:
        if self.at(OP, ")"):
            return self.advance()
        raise self.fail(f"`)` to close `(` opened at column {opened.pos + 1}")

    # Grammar ------------------------------------------------------------------------

    def rule(self) -> Node:
        if self.at(END):
            raise self.fail("an expression")
        node = self.expr()
        if not self.at(END):
            if self.at(OP, *_COMPARE_OPS) and _is_comparison(node):
                raise self.fail(
                    "end of rule (comparisons do not chain; join them with `and`)"
                )
            if self.at(OP, ")"):
                raise self.fail("end of rule (this `)` closes nothing)")
            raise self.fail("an operator or end of rule")
        return node

    def expr(self) -> Node:
        return self.or_()

    def or_(self) -> Node:
        node = self.and_()
        while self.at(KW, "or"):
            op = self.advance()
            node = Binary("or", node, self.and_(), pos=op.pos)
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at(KW, "and"):
            op = self.advance()
            node = Binary("and", node, self.not_(), pos=op.pos)
        return node

    def not_(self) -> Node:
        if self.at(KW, "not"):
            op = self.advance()
            return Unary("not", self.not_(), pos=op.pos)
        return self.compare()

    def compare(self) -> Node:
        left = self.sum()
        if self.at(OP, *_COMPARE_OPS):
            op = self.advance()
            return Binary(
                _NORMALISE.get(op.text, op.text), left, self.sum(), pos=op.pos
            )

        start = self.tok
        negated = False
        after = self.peek()
        if self.at(KW, "not") and after.kind == KW and after.text in ("between", "in"):
            negated = True
            self.advance()
        if self.at(KW, "between"):
            self.advance()
            low = self.sum()
            if not self.at(KW, "and"):
                raise self.fail("`and` between the bounds of `between`")
            self.advance()
            return Between(left, low, self.sum(), negated, pos=start.pos)
        if self.at(KW, "in"):
            self.advance()
            if not self.at(OP, "("):
                raise self.fail("`(` to open the list after `in`")
            opened = self.advance()
            items = [self.expr()]
            while self.at(OP, ","):
                self.advance()
                items.append(self.expr())
            self.close(opened)
            return In(left, tuple(items), negated, pos=start.pos)
        if self.at(KW, "is"):
            self.advance()
            if self.at(KW, "not"):
                negated = True
                self.advance()
            if not self.at(KW, "null"):
                raise self.fail("`null` after `is`" if not negated else "`null`")
            self.advance()
            return IsNull(left, negated, pos=start.pos)
        return left

    def sum(self) -> Node:
        node = self.product()
        while self.at(OP, "+", "-"):
            op = self.advance()
            node = Binary(op.text, node, self.product(), pos=op.pos)
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.at(OP, "*", "/", "%"):
            op = self.advance()
            node = Binary(op.text, node, self.unary(), pos=op.pos)
        return node

    def unary(self) -> Node:
        if self.at(OP, "-"):
            op = self.advance()
            return Unary("-", self.unary(), pos=op.pos)
        return self.atom()

    def atom(self) -> Node:
        token = self.tok
        if token.kind == NUM:
            return self.number()
        if token.kind == STR:
            self.advance()
            return Literal(token.value, pos=token.pos)
        if token.kind == KW and token.text in ("true", "false", "null"):
            self.advance()
            value = {"true": True, "false": False, "null": None}[token.text]
            return Literal(value, pos=token.pos)
        if token.kind == IDENT:
            return self.name_or_call()
        if self.at(OP, "("):
            opened = self.advance()
            node = self.expr()
            self.close(opened)
            return node
        raise self.fail("a number, string, name or `(`")

    def number(self) -> Node:
        token = self.advance()
        assert token.value is not None and not isinstance(token.value, str)
        value = token.value
        unit = token.unit
        # `2 periods` may be written with a space: a number followed by that word is
        # never valid otherwise, so it cannot shadow a feature called `period`.
        if unit is None and self.at(IDENT) and self.tok.text.lower() in _PERIOD_UNITS:
            unit = self.advance().text.lower()
        if unit is None:
            return Literal(value, pos=token.pos)
        if unit in _PERIOD_UNITS:
            if not isinstance(value, int):
                raise RuleSyntaxError(
                    f"expected a whole number of periods, found `{value}`",
                    text=self.text,
                    column=token.pos,
                )
            return Duration(periods=value, pos=token.pos)
        return Duration(days=float(value) * _DAY_UNITS[unit], pos=token.pos)

    def name_or_call(self) -> Node:
        first = self.advance()
        parts = [first.text]
        while self.at(OP, "."):
            self.advance()
            # After a dot any word is a key into JSON, keywords included.
            if self.tok.kind not in (IDENT, KW):
                raise self.fail("a name after `.`")
            parts.append(self.advance().text)
        name = ".".join(parts)
        if not self.at(OP, "("):
            return Name(name, pos=first.pos)

        opened = self.advance()
        args: list[Node] = []
        options: list[tuple[str, Node]] = []
        if not self.at(OP, ")"):
            self.argument(args, options)
            while self.at(OP, ","):
                self.advance()
                self.argument(args, options)
        if not self.at(OP, ")") and not self.at(OP, ","):
            raise self.fail(
                f"`,` or `)` to close `(` opened at column {opened.pos + 1}"
            )
        self.close(opened)
        return Call(name, tuple(args), tuple(options), pos=first.pos)

    def argument(self, args: list[Node], options: list[tuple[str, Node]]) -> None:
        token = self.tok
        is_option = (
            token.kind == IDENT
            and token.text.lower() in OPTION_NAMES
            and self.peek().kind == OP
            and self.peek().text in ("=", "==")
        )
        if not is_option:
            args.append(self.expr())
            return
        name = token.text.lower()
        if any(existing == name for existing, _ in options):
            raise RuleSyntaxError(
                f"expected each option once, found `{name}` a second time",
                text=self.text,
                column=token.pos,
            )
        self.advance()
        self.advance()
        options.append((name, self.expr()))


_COMPARE_OPS = ("=", "==", "!=", "<>", "<", "<=", ">", ">=")
_NORMALISE = {"==": "=", "<>": "!="}


def _is_comparison(node: Node) -> bool:
    return isinstance(node, Between | In | IsNull) or (
        isinstance(node, Binary) and node.op in COMPARISONS
    )


def parse(text: str) -> Node:
    """Parse one rule or feature expression into its syntax tree.

    >>> parse("orders_total >= 2 and days_since_order <= 90")  # doctest: +SKIP
    Binary(op='and', left=Binary(op='>=', …), right=Binary(op='<=', …))
    """
    return _Parser(text).rule()


# Printing -----------------------------------------------------------------------------

# Binding strength per grammar level; a child printed inside a parent of higher strength
# than its own needs parentheses.
_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 9)
_BINARY_LEVEL = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("=", "!=", "<", "<=", ">", ">="), _COMPARE),
    "+": _SUM,
    "-": _SUM,
    "*": _PRODUCT,
    "/": _PRODUCT,
    "%": _PRODUCT,
}


def _level(node: Node) -> int:
    if isinstance(node, Binary):
        return _BINARY_LEVEL[node.op]
    if isinstance(node, Unary):
        return _NOT if node.op == "not" else _UNARY
    if isinstance(node, Between | In | IsNull):
        return _COMPARE
    return _ATOM


def _wrap(node: Node, minimum: int) -> str:
    text = to_text(node)
    return f"({text})" if _level(node) < minimum else text


def _literal(value: float | int | str | bool | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def to_text(node: Node) -> str:
    """Print a syntax tree as canonical rule text: lower-case keywords, single quotes,
    `=` and `!=`, the fewest parentheses that keep the meaning.

    `parse(to_text(tree)) == tree` for every tree `parse` returns.
    """
    if isinstance(node, Literal):
        return _literal(node.value)
    if isinstance(node, Duration):
        if node.periods is not None:
            return f"{node.periods} period" + ("" if node.periods == 1 else "s")
        days = node.days or 0.0
        return f"{int(days)}d" if float(days).is_integer() else f"{days!r}d"
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Unary):
        if node.op == "not":
            return f"not {_wrap(node.operand, _NOT)}"
        # A space keeps `- -1` from reading as anything else and `-a` stays compact.
        inner = _wrap(node.operand, _UNARY)
        return f"-{inner}" if not inner.startswith("-") else f"- {inner}"
    if isinstance(node, Binary):
        level = _BINARY_LEVEL[node.op]
        # Left-associative levels accept their own level on the left only; comparisons
        # do not chain, so both sides must bind tighter.
        left_min = level + 1 if level in (_COMPARE,) else level
        return f"{_wrap(node.left, left_min)} {node.op} {_wrap(node.right, level + 1)}"
    if isinstance(node, Between):
        word = "not between" if node.negated else "between"
        return (
            f"{_wrap(node.operand, _SUM)} {word} {_wrap(node.low, _SUM)} "
            f"and {_wrap(node.high, _SUM)}"
        )
    if isinstance(node, In):
        word = "not in" if node.negated else "in"
        items = ", ".join(to_text(item) for item in node.items)
        return f"{_wrap(node.operand, _SUM)} {word} ({items})"
    if isinstance(node, IsNull):
        word = "is not null" if node.negated else "is null"
        return f"{_wrap(node.operand, _SUM)} {word}"
    if isinstance(node, Call):
        parts = [to_text(arg) for arg in node.args]
        parts += [f"{name} = {to_text(value)}" for name, value in node.options]
        return f"{node.func}({', '.join(parts)})"
    raise TypeError(f"not a rule node: {node!r}")
