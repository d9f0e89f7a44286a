"""Walks over a rule's syntax tree that the model loader and the stage engine need.

`names` and `calls` tell the loader what a rule refers to; `replace_calls` hoists
inline feature calls into named features; `time_thresholds` tells the stage engine at
which values of an elapsed-time feature (such as `days_since`) a rule can change its
answer, so that it can compute stage changes between events instead of evaluating every
customer at every period boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from clm.lifecycle.rules.ast import (
    ARITHMETIC,
    COMPARISONS,
    Between,
    Binary,
    Call,
    In,
    IsNull,
    Literal,
    Name,
    Node,
    Unary,
)


def children(node: Node) -> Iterator[Node]:
    """The direct sub-nodes of `node`, in source order (call arguments included)."""
    if isinstance(node, Unary):
        yield node.operand
    elif isinstance(node, Binary):
        yield node.left
        yield node.right
    elif isinstance(node, Between):
        yield from (node.operand, node.low, node.high)
    elif isinstance(node, In):
        yield node.operand
        yield from node.items
    elif isinstance(node, IsNull):
        yield node.operand
    elif isinstance(node, Call):
        yield from node.args
        yield from (value for _, value in node.options)


def names(node: Node) -> set[str]:
    """Every name the rule reads, leaving out those inside calls.

    In a stage rule these are features; names inside a call are event columns, which
    belong to the feature the call defines, not to the rule.
    """
    if isinstance(node, Name):
        return {node.name}
    if isinstance(node, Call):
        return set()
    found: set[str] = set()
    for child in children(node):
        found |= names(child)
    return found


def name_nodes(node: Node) -> list[Name]:
    """Like `names`, but the nodes themselves in source order, for their positions."""
    if isinstance(node, Name):
        return [node]
    if isinstance(node, Call):
        return []
    return [found for child in children(node) for found in name_nodes(child)]


def calls(node: Node) -> list[Call]:
    """Every outermost call in the rule, in source order, repeats included."""
    if isinstance(node, Call):
        return [node]
    return [found for child in children(node) for found in calls(child)]


def replace_calls(node: Node, mapping: Mapping[Call, Node]) -> Node:
    """A copy of `node` with each call found in `mapping` replaced by its value.

    Calls compare without their position, so one entry replaces every place the same
    call is written. Calls not in `mapping` are kept as they are.
    """
    if isinstance(node, Call):
        return mapping.get(node, node)
    changes: dict[str, object] = {}
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if isinstance(value, Node):
            changes[field.name] = replace_calls(value, mapping)
        elif isinstance(value, tuple) and value and isinstance(value[0], Node):
            changes[field.name] = tuple(replace_calls(v, mapping) for v in value)
    return dataclasses.replace(node, **changes) if changes else node  # type: ignore[arg-type]


class _Dense(Exception):
    """A time feature is used in a way whose change points cannot be listed."""


def constant(node: Node) -> float | int | None:
    """The number a constant expression (`90`, `-1`, `7 * 52`) stands for, else None.

    Booleans are not numbers here, although Python says `True == 1`.
    """
    if isinstance(node, Literal):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        return None
    if isinstance(node, Unary) and node.op == "-":
        inner = constant(node.operand)
        return None if inner is None else -inner
    if isinstance(node, Binary) and node.op in ARITHMETIC:
        left, right = constant(node.left), constant(node.right)
        if left is None or right is None:
            return None
        if node.op in ("/", "%") and right == 0:
            return None
        return {
            "+": lambda: left + right,
            "-": lambda: left - right,
            "*": lambda: left * right,
            "/": lambda: left / right,
            "%": lambda: left % right,
        }[node.op]()
    return None


def time_thresholds(node: Node, time_features: set[str]) -> set[float] | None:
    """The constants that the given elapsed-time features are compared with.

    For `days_since_order > 90 and days_since_order <= 180` and time feature
    `days_since_order` this is {90, 180}: between events the rule's answer can only
    change when the feature crosses one of them. Comparisons in either order, `between`
    and `in` count. `x is [not] null` adds nothing: an elapsed-time feature becomes
    non-null at an event, never in between.

    Returns None when a time feature is used any other way (in arithmetic, compared
    with another feature or a non-number, on its own): the engine must then evaluate
    the rule at every period boundary.
    """
    found: set[float] = set()
    try:
        _thresholds(node, time_features, found)
    except _Dense:
        return None
    return found


def _is_time(node: Node, time_features: set[str]) -> bool:
    return isinstance(node, Name) and node.name in time_features


def _add(bounds: tuple[Node, ...], found: set[float]) -> None:
    for bound in bounds:
        if isinstance(bound, Literal) and bound.value is None:
            continue  # compared with NULL: never true, no change point
        value = constant(bound)
        if value is None:
            raise _Dense
        found.add(float(value))


def _thresholds(node: Node, time_features: set[str], found: set[float]) -> None:
    if isinstance(node, Call):
        return  # the arguments of a call are event columns, not features
    if isinstance(node, Name):
        if node.name in time_features:
            raise _Dense  # reached outside a comparison pattern below
        return

    if isinstance(node, Binary) and node.op in COMPARISONS:
        for feature, other in ((node.left, node.right), (node.right, node.left)):
            if _is_time(feature, time_features):
                _add((other,), found)
                return
    elif isinstance(node, Between) and _is_time(node.operand, time_features):
        _add((node.low, node.high), found)
        return
    elif isinstance(node, In) and _is_time(node.operand, time_features):
        _add(node.items, found)
        return
    elif isinstance(node, IsNull) and _is_time(node.operand, time_features):
        return

    for child in children(node):
        _thresholds(child, time_features, found)
