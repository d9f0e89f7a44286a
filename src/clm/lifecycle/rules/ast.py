"""Syntax tree of the rule language that stage rules and feature filters are written in.

The tree is the contract between the parser (`rules.parser`), the checks in
`lifecycle.model`, the compiler to Ibis (`rules.compile`) and the evaluator over NumPy
arrays (`rules.arrays`, the model preview's). Rules are never run as Python code: the
parser builds these nodes, the compiler turns them into engine expressions, the
evaluator into array operations. Every node keeps `pos`, the 0-based column in the
source text, for errors.

Grammar (lowest precedence first):

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum (("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") sum)?
              | sum "not"? "between" sum "and" sum
              | sum "not"? "in" "(" expr ("," expr)* ")"
              | sum "is" "not"? "null"
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/" | "%") unary)*
    unary    := "-" unary | atom
    atom     := number | duration | string | "true" | "false" | "null"
              | name | call | "(" expr ")"
    call     := name "(" [arg ("," arg)*] ")"
    arg      := option "=" expr | expr        (option: a name in OPTION_NAMES)
    duration := number ("d" | "w" | "h") | integer ("period" | "periods")
    name     := identifier ("." identifier)*   (dots reach into JSON: properties.plan)
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Keyword arguments of feature calls; any other `a = b` inside a call is a filter.
OPTION_NAMES = frozenset({"within"})

COMPARISONS = frozenset({"=", "!=", "<", "<=", ">", ">="})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
LOGICAL = frozenset({"and", "or"})


@dataclass(frozen=True)
class Node:
    pos: int = field(default=0, compare=False, kw_only=True)


@dataclass(frozen=True)
class Literal(Node):
    value: float | int | str | bool | None


@dataclass(frozen=True)
class Duration(Node):
    """`365d`, `12w` (= 84 days), `6h` (= 0.25 days), or `2 periods` (model grain)."""

    days: float | None = None
    periods: int | None = None


@dataclass(frozen=True)
class Name(Node):
    name: str  # a feature in a stage rule, an event column in a filter


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "not" or "-"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # one of COMPARISONS, ARITHMETIC or LOGICAL; "==" and "<>" are normalised
    left: Node
    right: Node


@dataclass(frozen=True)
class Between(Node):
    operand: Node
    low: Node
    high: Node
    negated: bool = False


@dataclass(frozen=True)
class In(Node):
    operand: Node
    items: tuple[Node, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    operand: Node
    negated: bool = False


@dataclass(frozen=True)
class Call(Node):
    """A feature call such as `count(event = 'order_completed', within = 365d)`.

    `args` are positional expressions (a column for sum/min/max…, filter predicates);
    `options` are the OPTION_NAMES given as `name = value`.
    """

    func: str
    args: tuple[Node, ...] = ()
    options: tuple[tuple[str, Node], ...] = ()

    def option(self, name: str) -> Node | None:
        return dict(self.options).get(name)
