"""The NumPy grid (`clm.lifecycle.grid_arrays`) against the SQL grid
(`clm.lifecycle.standing.grid_query`), which the snapshot tests hold equal to the
replay: on the same random workspaces, every row and every feature value must be the
same. The models use every kind the NumPy grid covers, day and period windows,
filters on JSON properties, `days_since` thresholds and, in one model, a rule that
forces the dense evaluation."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa
import pytest
from test_lifecycle_snapshot import CASES, MODEL, random_events

from clm.identity.resolve import build_customer_keys, drop_customer_keys
from clm.lifecycle import grid_arrays, standing
from clm.lifecycle.history import _end_of_date, plan
from clm.lifecycle.model import load_model_text
from clm.lifecycle.snapshot import customer_events
from clm.warehouse.engine import Warehouse

# Every kind with and without windows, thresholds on both time kinds, a sum with
# float amounts, a filter on a JSON property.
EXTRA = """
name: arrays
version: 1
grain: {grain}
progression: forward_only
features:
  orders: count(event = 'order_completed')
  revenue_3p: sum(revenue, within = 3 periods)
  revenue_9d: sum(revenue, event = 'order_completed', within = 9d)
  kinds_2p: count_distinct(event, within = 2 periods)
  kinds_20h: count_distinct(type, within = 20h)
  last_type: last(type)
  last_type_2d: last(type, within = 2d)
  biggest: max(revenue, event = 'order_completed')
  first_type: first(type, event = 'signed_up')
  since_signup: days_since(event = 'signed_up')
  since_first_order: days_since_first(event = 'order_completed')
  bots: count(context.clm.bot = 'true')
stages:
  - {{name: a, when: "revenue_9d > 20.5 and kinds_20h >= 2"}}
  - {{name: b, when: "since_signup between 3 and 9 or since_first_order > 30"}}
  - {{name: c, when: "kinds_2p >= 2 and last_type_2d = 'page'"}}
  - {{name: d, when: "revenue_3p >= 15 or biggest > 30"}}
  - {{name: e, when: "first_type is not null and last_type = 'track'"}}
  - {{name: f, when: "orders >= 1 or bots >= 1"}}
"""

# `days_since` in arithmetic: no thresholds to solve, every period is evaluated.
DENSE = """
name: dense
version: 1
grain: {grain}
progression: forward_only
features:
  since_order: days_since(event = 'order_completed')
  orders_5d: count(event = 'order_completed', within = 5d)
stages:
  - {{name: x, when: "since_order * 2 > 15"}}
  - {{name: y, when: "orders_5d >= 1"}}
"""


# p_alive() (a BG/NBD fit) with two crossing constants and a windowed count.
VALUE = """
name: value
version: 1
grain: {grain}
progression: forward_only
features:
  alive: p_alive()
  orders_9d: count(event = 'order_completed', within = 9d)
stages:
  - {{name: keen, when: "alive >= 0.8 and orders_9d >= 1"}}
  - {{name: fading, when: "alive < 0.55"}}
  - {{name: mid, when: "alive between 0.55 and 0.8"}}
  - {{name: other, when: "true"}}
"""
FIT = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "days_per_unit": 7.0}


def _built(
    text: str, frame: pd.DataFrame, day: date, zone: str, sql: str = "", fit=None
) -> tuple[pd.DataFrame, grid_arrays.Held, Any]:
    """`text`'s SQL grid (as a frame) and NumPy grid over the events `frame` as of
    the end of `day` in `zone`, on one in-memory warehouse; `sql` runs first (e.g.
    to store a NaN), `fit` is what p_alive() reads."""
    wh = Warehouse.duckdb(None)
    try:
        wh.append("events", frame)
        if sql:
            wh.con.con.execute(sql)
        model = load_model_text(text)
        tz = standing.ZoneInfo(zone)
        keys = build_customer_keys(wh, tag="t")
        slim = customer_events(wh, keys, plan(model).columns | {"event", "type"})
        held = grid_arrays.hold(wh.con, "held", slim)
        drop_customer_keys(wh, keys)
        first = int(held.t.min())
        cal = standing.calendar(model.grain, tz, first, _end_of_date(day, tz))
        periods = wh.materialize(ibis.memtable(cal.periods_frame()), "gp")
        buckets = wh.materialize(ibis.memtable(cal.buckets_frame()), "gb")
        want = standing.grid_query(model, held.table, periods, buckets, cal, fit)
        got, _ = grid_arrays.build(model, held, cal, fit)
        sql_grid = wh.con.to_pyarrow(want) if fit else want.to_pyarrow()
        return sql_grid.to_pandas(), got, model
    finally:
        wh.close()


def _grids(text: str, seed: int, day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    events = random_events(seed, day)
    events.loc[events.index % 7 == 3, "revenue"] = 12.34  # float amounts
    fit = FIT if standing.needs_fit(load_model_text(text)) else None
    want, got, _ = _built(text, events, day, "Europe/Berlin", fit=fit)
    return _sorted(want), _sorted(got.table.to_pandas())


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[sorted(frame.columns)]
    return frame.sort_values(["customer_id", "p"]).reset_index(drop=True)


def _same(want: pd.DataFrame, got: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    for col in want.columns:
        for i, (a, b) in enumerate(zip(want[col], got[col], strict=True)):
            if pd.isna(a) or pd.isna(b):
                assert pd.isna(a) and pd.isna(b), (col, i, a, b)
            elif isinstance(a, float):
                assert math.isclose(a, b, abs_tol=1e-9), (col, i, a, b)
            else:
                assert a == b, (col, i, a, b)


@pytest.mark.parametrize(("seed", "grain", "day"), CASES)
@pytest.mark.parametrize(
    "text", [MODEL, EXTRA, DENSE, VALUE], ids=["snap", "extra", "dense", "value"]
)
def test_arrays_grid_equals_the_sql_grid(seed, grain, day, text) -> None:
    want, got = _grids(text.format(grain=grain), seed, day)
    assert len(want.customer_id.unique()) >= 10  # the case is not empty
    _same(want, got)


def test_a_dense_grid_has_every_period_from_the_first() -> None:
    want, got = _grids(DENSE.format(grain="week"), 1, date(2024, 3, 6))
    _same(want, got)
    spans = got.groupby("customer_id").p.agg(["min", "max", "count"])
    assert (spans["count"] == spans["max"] - spans["min"] + 1).all()


# -- the rules over a held grid (`rules.arrays`) --------------------------------------


@pytest.mark.parametrize(("seed", "grain", "day"), CASES[:3])
@pytest.mark.parametrize("text", [MODEL, EXTRA, DENSE], ids=["snap", "extra", "dense"])
@pytest.mark.parametrize("progression", ["forward_only", "dynamic"])
def test_stage_counts_over_a_held_grid_equal_the_sql_rules(
    seed, grain, day, text, progression
) -> None:
    """The same grid, its rules once in SQL (`standing.counts_query`) and once in
    NumPy (`Held.stage_counts`)."""
    text = text.format(grain=grain).replace("forward_only", progression)
    text = text.replace("progression: dynamic", f"progression: {progression}")
    _, built, model = _built(text, random_events(seed, day), day, "Europe/Berlin")
    grid = ibis.memtable(built.table)
    want = dict(standing.counts_query(model, grid).to_pandas().values.tolist())
    got = built.stage_counts(model)
    assert {k: v for k, v in got.items() if v} == want
    assert sum(want.values()) >= 10


# Columns with NULLs, negative numbers, zeros, strings; each rule below is evaluated
# by DuckDB (through the rule compiler) and by NumPy, row by row.
TABLE = pd.DataFrame(
    {
        "i": pd.array([1, None, -7, 0, 5, 12, None, 3], dtype="Int64"),
        "j": pd.array([0, 2, 3, None, -2, 5, 1, 0], dtype="Int64"),
        "x": [1.5, None, -2.25, 0.0, 7.0, None, 3.5, 10.0],
        "s": ["a", None, "b", "ä", "ab", "B", None, ""],
    }
)
RULES = [
    "i > 2",
    "i = j or s = 'a'",
    "not (i > 2)",
    "i > 2 and s is null",
    "not (i > 2 and x < 5)",
    "i between j and 10",
    "i not between -1 and 4",
    "i between null and 4",
    "i not between null and 4",
    "s in ('a', 'b', null)",
    "s not in ('a', 'b', null)",
    "i not in (1, 2)",
    "null in (1, 2)",
    "i / j > 0.4",
    "i % j = 1",
    "i % j = -1",
    "x % 2 = 1.5",
    "-i >= j * 2 - x",
    "s < 'b' and s >= ''",
    "s != 'ab'",
    "i + null > 1 or true",
    "null and false",
    "not (null or false)",
    "x is not null and i is null",
    "null",
    "false or i * x > 10",
    "-(null + 1) > 0",
    "-(i + null) < 1",
    "(null + 1) - (null + 1) > 0",
]


def _held(columns: dict[str, Any]) -> grid_arrays.Held:
    """A one-period grid of one customer per row with these feature columns."""
    size = len(next(iter(columns.values())))
    return grid_arrays.Held.from_arrow(
        pa.table(
            {
                "customer_id": pa.array(range(size), pa.int64()),
                "p": pa.array([0] * size, pa.int64()),
                **{f"f_{name}": col for name, col in columns.items()},
            }
        )
    )


@pytest.mark.parametrize("rule", RULES)
def test_rules_in_numpy_mean_what_they_mean_in_sql(rule) -> None:
    from clm.lifecycle.rules import arrays
    from clm.lifecycle.rules.compile import as_condition, to_ibis
    from clm.lifecycle.rules.parser import parse

    node = parse(rule)
    con = ibis.duckdb.connect()
    t = con.create_table("t", TABLE)
    want = (
        t.select(ok=as_condition(to_ibis(node, lambda n: t[n.name])))
        .to_pandas()
        .ok.tolist()
    )
    held = _held({c: pa.Array.from_pandas(TABLE[c]) for c in TABLE.columns})
    got = arrays.condition(node, lambda n: held.column(f"f_{n.name}"), len(TABLE))
    assert got.tolist() == want


@pytest.mark.parametrize("rule", ["s < null", "-null > 1", "null + 1 = 2", "s = null"])
def test_null_literals_are_unknown_in_numpy_too(rule) -> None:
    test_rules_in_numpy_mean_what_they_mean_in_sql(rule)


# -- edges the review found: rounding, NaN, degenerate fits ---------------------------

SUMS = """
name: sums
version: 1
grain: week
progression: forward_only
features:
  rev: sum(revenue)
  top: max(revenue)
  low: min(revenue)
  kinds: count_distinct(revenue)
stages:
  - {name: a, when: "rev > 0 and top > 1"}
  - {name: b, when: "low < 3 or kinds >= 2"}
"""


def _both(text: str, frame: pd.DataFrame, day: date, sql: str = "", fit=None):
    """Both grids of `text` over `frame` in UTC (after `sql`)."""
    want, got, _ = _built(text, frame, day, "UTC", sql, fit)
    return _sorted(want), _sorted(got.table.to_pandas())


def _orders(rows: list[tuple[str, str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "type": "track",
            "event": "order_completed",
            "user_id": [c for c, _, _ in rows],
            "timestamp": pd.to_datetime([t for _, t, _ in rows]),
            "revenue": [v for _, _, v in rows],
        }
    )


def test_sums_round_halves_away_from_zero_like_the_sql_grid() -> None:
    # 5e-7 and 2.5e-6 are halves at the sixth decimal: SQL's round gives 1e-6 and
    # 3e-6 (NumPy's np.round would give 0 and 2e-6, and `rev > 0` would differ).
    frame = _orders(
        [
            ("u1", "2024-01-02 10:00", 0.0000005),
            ("u2", "2024-01-03 10:00", 0.0000025),
            ("u3", "2024-01-04 10:00", -0.0000005),
        ]
    )
    want, got = _both(SUMS, frame, date(2024, 1, 20))
    _same(want, got)
    assert sorted(got.f_rev.unique()) == [-1e-6, 1e-6, 3e-6]


def test_a_nan_amount_is_a_value_as_in_sql() -> None:
    # NaN is not NULL: a distinct value of its own, the greatest in a max (and
    # never the least while there are numbers), and a sum that stays NaN.
    frame = _orders(
        [
            ("u1", "2024-01-02 10:00", 5.0),
            ("u1", "2024-01-10 10:00", 7.0),
            ("u1", "2024-01-17 10:00", 2.0),
            ("u2", "2024-01-03 10:00", 4.0),
            ("u2", "2024-01-11 10:00", 1.0),
            ("u3", "2024-01-04 10:00", 6.0),
        ]
    )
    nan = "UPDATE events SET revenue = 'nan'::DOUBLE WHERE event_id IN ('e1', 'e5')"
    want, got = _both(SUMS, frame, date(2024, 1, 25), nan)
    _same(want, got)
    u1 = got[got.customer_id == got.customer_id.min()]
    assert u1.f_top.isna().sum() >= 2 and u1.f_low.iloc[-1] == 2.0


@pytest.mark.parametrize(
    "fit",
    [
        {"r": 0.24, "alpha": 4.4, "a": 1e-320, "b": 2.4},
        {"r": 1e-9, "alpha": 1e300, "a": 1e-300, "b": 2.4},
        {"r": 0.24, "alpha": 4.4, "a": 1e300, "b": 1e-300},
    ],
)
def test_degenerate_fits_give_no_crossing_in_either_grid(fit) -> None:
    want, got = _grids_with_fit(fit | {"days_per_unit": 7.0})
    _same(want, got)


def _grids_with_fit(fit: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    day = date(2024, 3, 6)
    return _both(VALUE.format(grain="week"), random_events(1, day), day, fit=fit)


@pytest.mark.parametrize(
    "rule", ["x > 1", "x = x", "x >= 0", "x != x", "x < 3", "x <= x", "x in (1, 5)"]
)
def test_nan_compares_as_in_duckdb(rule) -> None:
    from clm.lifecycle.rules import arrays
    from clm.lifecycle.rules.compile import as_condition, to_ibis
    from clm.lifecycle.rules.parser import parse

    con = ibis.duckdb.connect()
    con.raw_sql(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1.0), ('nan'::DOUBLE), (NULL), "
        "(5.0), ('-inf'::DOUBLE)) v(x)"
    )
    t = con.table("t")
    node = parse(rule)
    want = t.select(ok=as_condition(to_ibis(node, lambda n: t[n.name])))
    rows = t.to_pyarrow()
    held = _held({"x": rows.column("x")})
    got = arrays.condition(node, lambda n: held.column(f"f_{n.name}"), 5)
    assert got.tolist() == want.to_pandas().ok.tolist()


def test_a_list_of_mixed_types_is_refused_when_compiled() -> None:
    from clm.errors import ModelError
    from clm.lifecycle.rules.compile import to_ibis
    from clm.lifecycle.rules.parser import parse

    t = ibis.table({"i": "int64", "s": "string"}, name="t")
    for rule in ("i in (1, 'a')", "s in ('a', 1)"):
        with pytest.raises(ModelError, match="list values of one type"):
            to_ibis(parse(rule), lambda n: t[n.name])
    to_ibis(parse("i in (1, null, 2.5)"), lambda n: t[n.name])  # fine
