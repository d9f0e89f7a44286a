"""Evaluate a rule's syntax tree over columns held in memory (NumPy), with the SQL
semantics `rules.compile` gives it: the model preview's way to run a draft's rules
over a grid it built in NumPy (`lifecycle.grid_arrays`) without compiling SQL.

A value is a pair (data, known): `known` is False where SQL would have NULL. Three-
valued logic as in ISO/IEC 9075 (`NULL and false` is false, `NULL or true` is true),
NULL through arithmetic and comparisons, division and remainder by zero give NULL,
`%` keeps the dividend's sign (SQL's, C's `fmod`), `/` divides as real numbers.
Types are not checked here: the caller compiles the same rules with
`rules.compile.to_ibis` first (it raises the model's type errors); what reaches this
module is well typed. Known gap: integer overflow wraps here where DuckDB raises an
error; it needs feature values beyond 2**63 and stays until such a rule exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from clm.lifecycle.rules.ast import (
    COMPARISONS,
    Between,
    Binary,
    In,
    IsNull,
    Literal,
    Name,
    Node,
    Unary,
)

Value = tuple[np.ndarray, np.ndarray]  # data, known (False: NULL)
Columns = Callable[[Name], Value]


def evaluate(node: Node, column: Columns, size: int) -> Value:
    """`node` over `size` rows; `column` gives a name's values."""
    return _Evaluator(column, size).visit(node)


def condition(node: Node, column: Columns, size: int) -> np.ndarray:
    """Where the rule holds (NULL counts as false, as a stage rule reads it)."""
    data, known = evaluate(node, column, size)
    if data.dtype != bool:  # only a bare `null` gets here (compile allows it)
        return np.zeros(size, dtype=bool)
    return data & known


def _floats(x: np.ndarray) -> bool:
    return x.dtype.kind == "f"


def _float_compare(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a op b` (op: =, !=, <, <=) with DuckDB's NaN: equal to itself and above
    every other number."""
    a_nan, b_nan = np.isnan(a), np.isnan(b)
    equal = (a == b) | (a_nan & b_nan)
    if op == "=":
        return equal
    if op == "!=":
        return ~equal
    less = (a < b) | (~a_nan & b_nan)
    return less if op == "<" else less | equal


def _null(node: Node) -> bool:
    return isinstance(node, Literal) and node.value is None


class _Evaluator:
    def __init__(self, column: Columns, size: int) -> None:
        self.column = column
        self.size = size

    def const(self, value: Any) -> Value:
        if value is None:
            # A filler that takes arithmetic and compares with numbers, strings and
            # booleans alike; `known` says it is NULL.
            return np.zeros(self.size, dtype=np.int64), np.zeros(self.size, dtype=bool)
        dtype = object if isinstance(value, str) else None
        data = np.full(self.size, value, dtype=dtype)
        return data, np.ones(self.size, dtype=bool)

    def null(self) -> Value:
        return self.const(None)

    def visit(self, node: Node) -> Value:
        if isinstance(node, Literal):
            return self.const(node.value)
        if isinstance(node, Name):
            return self.column(node)
        if isinstance(node, Unary):
            if _null(node.operand):
                return self.null()
            data, known = self.visit(node.operand)
            if node.op == "not":
                return ~data.astype(bool), known
            return -data, known
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Between):
            if any(_null(n) for n in (node.operand, node.low, node.high)):
                return self.null()  # as `rules.compile` has it, negated or not
            x = self.visit(node.operand)
            low = self.compare(">=", x, self.visit(node.low))
            high = self.compare("<=", x, self.visit(node.high))
            both = self.both("and", low, high)
            return (~both[0], both[1]) if node.negated else both
        if isinstance(node, In):
            if _null(node.operand):
                return self.null()
            x = self.visit(node.operand)
            found = self.const(False)
            for item in node.items:
                found = self.both("or", found, self.compare("=", x, self.visit(item)))
            return (~found[0], found[1]) if node.negated else found
        if isinstance(node, IsNull):
            _, known = self.visit(node.operand)
            return (known if node.negated else ~known), np.ones(self.size, dtype=bool)
        raise TypeError(f"not a rule node here: {node!r}")

    def binary(self, node: Binary) -> Value:
        left, right = self.visit(node.left), self.visit(node.right)
        if node.op in ("and", "or"):
            return self.both(node.op, left, right)
        if _null(node.left) or _null(node.right):
            return self.null()  # a comparison or arithmetic with NULL
        if node.op in COMPARISONS:
            return self.compare(node.op, left, right)
        return self.arithmetic(node.op, left, right)

    def both(self, op: str, left: Value, right: Value) -> Value:
        (a, ka), (b, kb) = left, right
        a, b = a.astype(bool), b.astype(bool)
        if op == "and":
            false = (ka & ~a) | (kb & ~b)
            return ~false & ka & kb, false | (ka & kb)
        true = (ka & a) | (kb & b)
        return true, true | (ka & kb)

    def compare(self, op: str, left: Value, right: Value) -> Value:
        (a, ka), (b, kb) = left, right
        known = ka & kb
        # NULLs hold a filler (0 or ''), so comparing whole arrays is safe and
        # cheaper than picking the known rows first; `known` masks the filler out.
        if op in (">", ">="):  # b < a, b <= a
            op, a, b = ("<" if op == ">" else "<="), b, a
        with np.errstate(all="ignore"):
            if _floats(a) or _floats(b):
                got = _float_compare(op, a, b)
            elif op in ("=", "!="):
                got = np.asarray(a == b, dtype=bool)
                got = ~got if op == "!=" else got
            elif op == "<":
                got = np.asarray(a < b, dtype=bool)
            else:
                got = np.asarray(a <= b, dtype=bool)
        return got & known, known

    def arithmetic(self, op: str, left: Value, right: Value) -> Value:
        (a, ka), (b, kb) = left, right
        known = ka & kb
        if op in ("/", "%"):
            known = known & (b != 0)
        with np.errstate(all="ignore"):
            safe = np.where(known, b, 1)
            if op == "+":
                data = a + b
            elif op == "-":
                data = a - b
            elif op == "*":
                data = a * b
            elif op == "/":
                data = np.true_divide(a, safe)
            else:
                data = np.fmod(a, safe)
        return data, known
