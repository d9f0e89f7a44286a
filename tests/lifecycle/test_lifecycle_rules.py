"""The rule language: parsing, errors with columns, printing, analysis, and compiled
expressions executed on DuckDB and checked against values worked out by hand."""

from __future__ import annotations

import ibis
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm.errors import ModelError, RuleSyntaxError
from clm.lifecycle.rules import analysis, parse, to_text
from clm.lifecycle.rules.ast import (
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
from clm.lifecycle.rules.compile import as_condition, to_ibis


def B(op: str, left: Node, right: Node) -> Binary:
    return Binary(op, left, right)


a, b, c, x = Name("a"), Name("b"), Name("c"), Name("x")
ONE, TWO, THREE = Literal(1), Literal(2), Literal(3)

# Parser: precedence and shapes ------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a or b and c", B("or", a, B("and", b, c))),
        ("a and b or c", B("or", B("and", a, b), c)),
        ("not a and b", B("and", Unary("not", a), b)),
        ("not not a", Unary("not", Unary("not", a))),
        ("not a = 1", Unary("not", B("=", a, ONE))),
        ("a + 1 > b * 2", B(">", B("+", a, ONE), B("*", b, TWO))),
        ("1 + 2 * 3", B("+", ONE, B("*", TWO, THREE))),
        ("(1 + 2) * 3", B("*", B("+", ONE, TWO), THREE)),
        ("1 - 2 - 3", B("-", B("-", ONE, TWO), THREE)),
        ("-a * 2", B("*", Unary("-", a), TWO)),
        ("- -a", Unary("-", Unary("-", a))),
        ("a - -1", B("-", a, Unary("-", ONE))),
        ("a % 2 = 0", B("=", B("%", a, TWO), Literal(0))),
        ("a == 1", B("=", a, ONE)),
        ("a <> 1", B("!=", a, ONE)),
        ("a between 1 and 2 and b", B("and", Between(a, ONE, TWO), b)),
        ("a not between 1 + 1 and 3", Between(a, B("+", ONE, ONE), THREE, True)),
        ("a in (1, 'x', null)", In(a, (ONE, Literal("x"), Literal(None)))),
        ("a NOT IN (2)", In(a, (TWO,), True)),
        ("a is null", IsNull(a)),
        ("a IS NOT NULL or b", B("or", IsNull(a, True), b)),
        ("TRUE And False", B("and", Literal(True), Literal(False))),
        ("1.5 >= .5", B(">=", Literal(1.5), Literal(0.5))),
        ("x = 'it''s'", B("=", x, Literal("it's"))),
        ('x = "say ""hi"""', B("=", x, Literal('say "hi"'))),
        ("properties.plan = 'pro'", B("=", Name("properties.plan"), Literal("pro"))),
        ("context.in = 1", B("=", Name("context.in"), ONE)),
    ],
)
def test_parse_shapes(text: str, tree: Node) -> None:
    assert parse(text) == tree


def test_keywords_are_case_insensitive_but_names_are_not() -> None:
    assert parse("A AnD b") == B("and", Name("A"), b)
    assert parse("A and b") != parse("a and b")


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("365d", Duration(days=365)),
        ("12w", Duration(days=84)),
        ("6h", Duration(days=0.25)),
        ("1.5d", Duration(days=1.5)),
        ("1 period", Duration(periods=1)),
        ("2 periods", Duration(periods=2)),
        ("3periods", Duration(periods=3)),
        ("2 PERIODS", Duration(periods=2)),
    ],
)
def test_durations(text: str, duration: Duration) -> None:
    assert parse(text) == duration


def test_options_and_filters_in_calls() -> None:
    tree = parse("count(event = 'order_completed', within = 30d)")
    assert tree == Call(
        "count",
        (B("=", Name("event"), Literal("order_completed")),),
        (("within", Duration(days=30)),),
    )
    assert isinstance(tree, Call)
    assert tree.option("within") == Duration(days=30)
    assert tree.option("other") is None

    # Only names in OPTION_NAMES are options; `revenue = 5` is a filter argument.
    assert parse("sum(revenue, revenue = 5, WITHIN == 2 periods)") == Call(
        "sum",
        (Name("revenue"), B("=", Name("revenue"), Literal(5))),
        (("within", Duration(periods=2)),),
    )
    assert parse("count()") == Call("count")
    assert parse("count() >= 1") == B(">=", Call("count"), ONE)


def test_positions_are_columns() -> None:
    tree = parse("orders >= 2 and  days <= 90")
    assert isinstance(tree, Binary)
    assert tree.pos == 12
    assert isinstance(tree.right, Binary)
    assert tree.right.left.pos == 17


# Parser: errors ------


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 0, "expected an expression, found end of rule"),
        ("a and (b or c", 13, "expected `)` to close `(` opened at column 7"),
        ("f(a, b", 6, "expected `,` or `)` to close `(` opened at column 2"),
        ("a < b < c", 6, "comparisons do not chain"),
        ("a b", 2, "expected an operator or end of rule, found name `b`"),
        ("a)", 1, "this `)` closes nothing"),
        ("a $ 1", 2, "found `$`"),
        ("a ! b", 2, "expected `!=`, found `!`"),
        ("5x", 1, "expected a unit d, w, h or periods after `5`, found `x`"),
        ("1.5 periods", 0, "expected a whole number of periods, found `1.5`"),
        ("x = 'abc", 8, "expected ' to close the string opened at column 5"),
        ("a is 1", 5, "expected `null` after `is`, found number `1`"),
        ("a is not 1", 9, "expected `null`, found number `1`"),
        ("a between 1 or 2", 12, "expected `and` between the bounds"),
        ("a in 1", 5, "expected `(` to open the list after `in`"),
        ("a in (1, 2", 10, "expected `)` to close `(` opened at column 6"),
        ("a +", 3, "expected a number, string, name or `(`, found end of rule"),
        ("a = ,", 4, "found `,`"),
        ("p. = 1", 3, "expected a name after `.`, found `=`"),
        ("count(within = 1d, within = 2d)", 19, "found `within` a second time"),
        ("a not b", 2, "found `not`"),
    ],
)
def test_syntax_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse(text)
    assert info.value.column == column
    assert info.value.text == text
    assert fragment in str(info.value)
    # The message points at the column, 1-based, with a caret under it.
    assert f"at column {column + 1}" in str(info.value)
    assert str(info.value).endswith(" " * column + "^")


def test_syntax_error_is_a_model_error_and_value_error() -> None:
    with pytest.raises(ModelError):
        parse("(")
    with pytest.raises(ValueError):
        parse("(")


# Printer and round trip ------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("A  AND  b", "A and b"),
        ("(a or b) and c", "(a or b) and c"),
        ("a or (b and c)", "a or b and c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("not (a and b)", "not (a and b)"),
        ("(not a) = b", "(not a) = b"),
        ("-(a + 1)", "-(a + 1)"),
        ('x == "q"', "x = 'q'"),
        ("x <> 1", "x != 1"),
        ("count(event='o',within=12w)", "count(event = 'o', within = 84d)"),
        ("count(within = 1 period)", "count(within = 1 period)"),
        ("(a = 1) = (b = 2)", "(a = 1) = (b = 2)"),
        ("(a between 1 and 2) = true", "(a between 1 and 2) = true"),
    ],
)
def test_to_text(text: str, canonical: str) -> None:
    assert to_text(parse(text)) == canonical
    assert parse(canonical) == parse(text)


_names = st.sampled_from(["a", "b", "orders_total", "properties.plan", "x.in"])
_atoms: st.SearchStrategy[Node] = st.one_of(
    _names.map(Name),
    st.integers(0, 10**6).map(Literal),
    st.floats(0, 1e9, allow_nan=False).map(Literal),
    st.text(alphabet="ab'\" %", max_size=5).map(Literal),
    st.sampled_from([True, False, None]).map(Literal),
)


def _extend(inner: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    ops = sorted(["and", "or", "=", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/"])
    return st.one_of(
        st.builds(Binary, st.sampled_from(ops), inner, inner),
        st.builds(Unary, st.sampled_from(["not", "-"]), inner),
        st.builds(Between, inner, inner, inner, st.booleans()),
        st.builds(In, inner, st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(IsNull, inner, st.booleans()),
        st.builds(
            Call,
            st.sampled_from(["count", "sum"]),
            st.lists(inner, max_size=2).map(tuple),
            st.just((("within", Duration(days=30)),)),
        ),
    )


@settings(max_examples=300, deadline=None)
@given(st.recursive(_atoms, _extend, max_leaves=12))
def test_round_trip_property(tree: Node) -> None:
    # Any tree, printed, parses back to itself; so parse(to_text(parse(t))) == parse(t).
    text = to_text(tree)
    assert parse(text) == tree
    assert to_text(parse(text)) == text


# Analysis ------


def test_names_and_calls() -> None:
    tree = parse(
        "orders >= 1 and count(event = 'x') > days or count(event = 'x') = 2 "
        "or sum(revenue) between lo and 9"
    )
    assert analysis.names(tree) == {"orders", "days", "lo"}
    found = analysis.calls(tree)
    assert [to_text(call) for call in found] == [
        "count(event = 'x')",
        "count(event = 'x')",
        "sum(revenue)",
    ]
    assert found[0].pos == 16 and found[1].pos == 45


def test_replace_calls() -> None:
    tree = parse("count(event = 'x') >= 1 or not count(event = 'x') in (2, sum(r))")
    mapping: dict[Call, Node] = {Call("count", (parse("event = 'x'"),)): Name("_c")}
    replaced = analysis.replace_calls(tree, mapping)
    assert to_text(replaced) == "_c >= 1 or not _c in (2, sum(r))"
    assert analysis.replace_calls(parse("a = 1"), mapping) == parse("a = 1")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("days > 90 and days <= 180", {90.0, 180.0}),
        ("180 < days or orders >= 3", {180.0}),
        ("days between 7 and 14 or days in (1, 2)", {7.0, 14.0, 1.0, 2.0}),
        ("days >= -1 and days != 7 * 52", {-1.0, 364.0}),
        ("days is null or orders = 1", set()),
        ("days = null", set()),
        ("orders >= 2", set()),
        ("not (days > 30.5)", {30.5}),
        ("count(days > 3) >= 1", set()),  # inside a call `days` is an event column
        ("days + 1 > 90", None),
        ("days > orders", None),
        ("days > first_days", None),
        ("days = 'x'", None),
        ("days = true", None),
        ("days", None),
        ("orders between days and 9", None),
        ("days in (1, orders)", None),
        ("days / 0 > 1", None),
    ],
)
def test_time_thresholds(rule: str, expected: set[float] | None) -> None:
    assert analysis.time_thresholds(parse(rule), {"days", "first_days"}) == expected


# Compiler on DuckDB ------


@pytest.fixture(scope="module")
def table() -> ibis.Table:
    con = ibis.duckdb.connect()
    frame = pd.DataFrame(
        {
            "i": [0, 1, 2, 3],
            "n": [3, 0, None, -2],
            "d": [2.0, 0.0, 1.0, None],
            "s": ["pro", "free", None, "it's"],
        }
    )
    return con.create_table("t", frame)


def _values(table: ibis.Table, rule: str, condition: bool = False) -> list[object]:
    expr = to_ibis(parse(rule), lambda name: table[name.name])
    if condition:
        expr = as_condition(expr)
    # NULL comes back as None (objects) or NaN (floats); report both as None.
    result = table.select("i", v=expr).order_by("i").execute()["v"]
    return [None if pd.isna(v) else v for v in result.astype(object)]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # rows: n = 3, 0, NULL, -2;  d = 2.0, 0.0, 1.0, NULL;  s = pro, free, NULL, it's
        ("n + 1", [4, 1, None, -1]),
        ("-n * 2", [-6, 0, None, 4]),
        ("n / d", [1.5, None, None, None]),  # 0/0 and 3/NULL: NULL, not error or inf
        ("n % d", [1, None, None, None]),
        ("n / 0", [None, None, None, None]),
        ("n > 0", [True, False, None, False]),
        ("n = null", [None, None, None, None]),  # SQL: unknown, not `n is null`
        ("n != null", [None, None, None, None]),
        ("n is null", [False, False, True, False]),
        ("n is not null", [True, True, False, True]),
        ("n between 0 and 3", [True, True, None, False]),
        ("n not between 0 and 3", [False, False, None, True]),
        ("n in (0, -2)", [False, True, None, True]),
        ("n not in (0, -2)", [True, False, None, False]),
        ("n in (0, null)", [None, True, None, None]),  # no match + a NULL item: unknown
        ("s = 'pro'", [True, False, None, False]),
        ("s = 'it''s'", [False, False, None, True]),
        ("s > 'g'", [True, False, None, True]),
        ("s in ('free', 'pro')", [True, True, None, False]),
        ("n > 0 or d > 0", [True, False, True, None]),  # NULL or true = true
        ("n > 0 and d > 0", [True, False, None, False]),  # NULL and false = false
        ("not n > 0", [False, True, None, True]),
        ("null or n > 0", [True, None, None, None]),
        ("true and n = 0", [False, True, None, False]),
    ],
)
def test_compiled_values(table: ibis.Table, rule: str, expected: list[object]) -> None:
    assert _values(table, rule) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("n > 0", [True, False, False, False]),
        ("n > 0 or d > 0", [True, False, True, False]),
        ("not (n > 0)", [False, True, False, True]),
        ("n = null", [False, False, False, False]),
        ("n in (0, null)", [False, True, False, False]),
    ],
)
def test_as_condition_treats_null_as_false(
    table: ibis.Table, rule: str, expected: list[object]
) -> None:
    assert _values(table, rule, condition=True) == expected


def _no_names(name: Name) -> ibis.Value:
    raise AssertionError(f"unexpected name {name}")


def test_constant_rules() -> None:
    con = ibis.duckdb.connect()
    assert con.execute(as_condition(to_ibis(parse("true"), _no_names))) is True
    assert con.execute(as_condition(to_ibis(parse("null"), _no_names))) is False
    assert con.execute(to_ibis(parse("7 / 2"), _no_names)) == 3.5
    assert con.execute(to_ibis(parse("null is null"), _no_names)) is True


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("s + 1", "`s + 1` needs numbers on both sides of `+`"),
        ("-s", "needs a number after `-`"),
        ("n and true", "needs conditions on both sides of `and`"),
        ("not s", "needs a condition after `not`"),
        ("s > 1", "cannot compile `s > 1`"),
        ("count(event = 'x') > 1", "cannot be compiled here"),
        ("n < 3d", "the duration `3d` can only be a `within` option"),
    ],
)
def test_compile_errors(table: ibis.Table, rule: str, fragment: str) -> None:
    with pytest.raises(ModelError) as info:
        to_ibis(parse(rule), lambda name: table[name.name])
    assert fragment in str(info.value)


def test_as_condition_rejects_non_boolean(table: ibis.Table) -> None:
    with pytest.raises(ModelError, match="must be a condition"):
        as_condition(to_ibis(parse("n + 1"), lambda name: table[name.name]))
