"""Compile a rule's syntax tree to an Ibis expression, with SQL's NULL semantics.

The stage engine evaluates rules over a table of feature values; the caller hands in
`resolve`, which maps each `Name` to a column of that table (and raises for names it
does not know). Rules are never run as Python: this module only builds Ibis
expressions, which the engine turns into the warehouse's SQL.

Semantics follow SQL (ISO/IEC 9075 three-valued logic): NULL propagates through
arithmetic and comparisons, `NULL and false` is false, `NULL or true` is true. A stage
rule whose value is NULL does not match; `as_condition` makes that explicit. Division
and remainder by zero give NULL, as a rule about "revenue per order" should not fail a
whole run because one customer has no orders.
"""

from __future__ import annotations

from collections.abc import Callable

import ibis
import ibis.expr.types as ir
from ibis.common.exceptions import IbisError

from clm.errors import ModelError
from clm.lifecycle.rules.ast import (
    COMPARISONS,
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
from clm.lifecycle.rules.parser import to_text

Resolver = Callable[[Name], ir.Value]


def to_ibis(node: Node, resolve: Resolver) -> ir.Value:
    """Build the Ibis expression of `node`; names are looked up through `resolve`.

    Raises `ModelError` for calls and durations (the model loader hoists calls into
    features, so one reaching here is a bug in the caller) and for operations on
    values of the wrong type, quoting the part of the rule at fault.
    """
    return _Compiler(resolve).visit(node)


def as_condition(expr: ir.Value) -> ir.BooleanValue:
    """A boolean expression where NULL counts as false, as a stage rule reads it."""
    dtype = expr.type()
    if dtype.is_null():
        return ibis.literal(False)
    if not dtype.is_boolean():
        raise ModelError(
            f"a rule must be a condition (true or false), found a value of type "
            f"{dtype}; compare it, e.g. `orders_total >= 1`"
        )
    assert isinstance(expr, ir.BooleanValue)
    return expr.fill_null(False)


def _is_null_literal(node: Node) -> bool:
    return isinstance(node, Literal) and node.value is None


class _Compiler:
    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve

    def visit(self, node: Node) -> ir.Value:
        try:
            return self._visit(node)
        except (IbisError, TypeError) as exc:
            raise ModelError(f"cannot compile `{to_text(node)}`: {exc}") from exc

    def _visit(self, node: Node) -> ir.Value:
        if isinstance(node, Literal):
            return ibis.null() if node.value is None else ibis.literal(node.value)
        if isinstance(node, Name):
            return self.resolve(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Between):
            operand, low, high = (
                self.visit(n) for n in (node.operand, node.low, node.high)
            )
            if any(_is_null_literal(n) for n in (node.operand, node.low, node.high)):
                return ibis.null("boolean")
            result = operand.between(low, high)
            return ~result if node.negated else result
        if isinstance(node, In):
            operand = self.visit(node.operand)
            items = [self.visit(item) for item in node.items]
            if _is_null_literal(node.operand):
                return ibis.null("boolean")
            for item, expr in zip(node.items, items, strict=True):
                # Ibis accepts `x in ('a', 1)`; the warehouse fails on it only
                # when it runs. Refuse it here like any other comparison.
                if not _is_null_literal(item) and not _comparable(operand, expr):
                    raise ModelError(
                        f"`{to_text(node)}` compares a value of type "
                        f"{operand.type()} with `{to_text(item)}` of type "
                        f"{expr.type()}; list values of one type"
                    )
            result = operand.isin(items)
            return ~result if node.negated else result
        if isinstance(node, IsNull):
            operand = self.visit(node.operand)
            return operand.notnull() if node.negated else operand.isnull()
        if isinstance(node, Call):
            raise ModelError(
                f"the call `{to_text(node)}` cannot be compiled here; feature calls "
                "are turned into features by the model loader before rules compile"
            )
        if isinstance(node, Duration):
            raise ModelError(
                f"the duration `{to_text(node)}` can only be a `within` option of a "
                "feature call, e.g. `count(event = 'order_completed', within = 30d)`"
            )
        raise TypeError(f"not a rule node: {node!r}")

    def unary(self, node: Unary) -> ir.Value:
        operand = self.visit(node.operand)
        if _is_null_literal(node.operand):
            return ibis.null("boolean" if node.op == "not" else "float64")
        if node.op == "not":
            _expect(operand, "boolean", node, "a condition after `not`")
            return ~operand  # type: ignore[operator]
        _expect(operand, "numeric", node, "a number after `-`")
        return -operand  # type: ignore[operator]

    def binary(self, node: Binary) -> ir.Value:
        left, right = self.visit(node.left), self.visit(node.right)
        left_null, right_null = (
            _is_null_literal(node.left),
            _is_null_literal(node.right),
        )

        if node.op in ("and", "or"):
            # A bare `null` is an unknown truth value: give it the boolean type so
            # that three-valued logic applies (`null or true` is true).
            left = ibis.null("boolean") if left_null else left
            right = ibis.null("boolean") if right_null else right
            _expect(left, "boolean", node, f"conditions on both sides of `{node.op}`")
            _expect(right, "boolean", node, f"conditions on both sides of `{node.op}`")
            if node.op == "and":
                return left & right  # type: ignore[operator]
            return left | right  # type: ignore[operator]

        if node.op in COMPARISONS:
            # Ibis rewrites `x == NULL` into `x IS NULL`; SQL says the comparison
            # is unknown, so build that directly.
            if left_null or right_null:
                return ibis.null("boolean")
            return _compare(node.op, left, right)

        # Arithmetic: numbers only (Ibis would concatenate strings on `+`).
        if left_null or right_null:
            other = right if left_null else left
            dtype = other.type() if other.type().is_numeric() else "float64"
            return ibis.null(dtype)
        _expect(left, "numeric", node, f"numbers on both sides of `{node.op}`")
        _expect(right, "numeric", node, f"numbers on both sides of `{node.op}`")
        lhs: ir.NumericValue = left  # type: ignore[assignment]
        rhs: ir.NumericValue = right  # type: ignore[assignment]
        if node.op == "+":
            return lhs + rhs
        if node.op == "-":
            return lhs - rhs
        if node.op == "*":
            return lhs * rhs
        # NULLIF(divisor, 0): division or remainder by zero is NULL, not an error.
        if node.op == "/":
            return lhs / rhs.nullif(0)
        return lhs % rhs.nullif(0)


def _compare(op: str, left: ir.Value, right: ir.Value) -> ir.Value:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right  # type: ignore[operator]
    if op == "<=":
        return left <= right  # type: ignore[operator]
    if op == ">":
        return left > right  # type: ignore[operator]
    return left >= right  # type: ignore[operator]


def _comparable(a: ir.Value, b: ir.Value) -> bool:
    """Whether two values can be compared: numbers with numbers, strings with
    strings, truth values with truth values."""
    x, y = a.type(), b.type()
    return (
        (x.is_numeric() and y.is_numeric())
        or (x.is_string() and y.is_string())
        or (x.is_boolean() and y.is_boolean())
        or x.is_null()
        or y.is_null()
    )


def _expect(expr: ir.Value, kind: str, node: Node, wanted: str) -> None:
    dtype = expr.type()
    ok = dtype.is_boolean() if kind == "boolean" else dtype.is_numeric()
    if not ok:
        raise ModelError(
            f"`{to_text(node)}` needs {wanted}, found a value of type {dtype}"
        )
