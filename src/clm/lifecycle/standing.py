"""Where every customer stands at the end of the data, for any progression, without
storing a history: the history engine's own candidate-period grid, read at its end.

`lifecycle.history` decides a customer's stage at *candidate periods* only (periods
with an event, where a window lets an event go, where a `days_since…` feature
crosses a constant of the rules); between two candidates nothing a rule reads can
change. So the stage as of the last period is decided by the customer's last
candidate row, and under `progression: forward_only` (the furthest stage reached so
far) by the furthest stage matched at any of their rows. This module builds that
grid with the engine's functions (`history._feature_values`, the same code `clm run`
replays with) as one query, and reads it:

- `grid_query`: one row per customer key and candidate period with the features the
  rules read (only those: the others cost time and change nothing);
- `counts_query`/`stages_query`: the rules over a grid, as of its last period.

Split in two so that a caller asking many drafts over the same data keeps a grid
per *feature set* (`grid_key`) and pays only the rules for a draft that changes
stages. The model preview of `clm serve` builds the same grid in NumPy instead
(`lifecycle.grid_arrays`, tested equal to `grid_query`): on its 20,000-customer
sample of the 10M-event benchmark this query takes ~0.4 s, mostly Ibis compilation
and window functions, the arrays ~30 ms.

`p_alive()` features read the workspace's latest BG/NBD fit
(`value_features.load_params`), which the caller passes as `value_params`; it is
part of the grid key, so a new fit builds a new grid.

Customers are those the history engine gives a row: at least one attributed,
non-bot event before the observation end. The events are
`lifecycle.snapshot.customer_events` (`_ck`, `t` in epoch seconds, the columns
the model reads).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from clm.lifecycle import value_features
from clm.lifecycle.calendar import BUCKET_SECONDS, Calendar, build_calendar
from clm.lifecycle.history import (
    _compile_rule,
    _feature_values,
    plan,
)
from clm.lifecycle.rules import analysis
from clm.lifecycle.rules.ast import Name
from clm.lifecycle.rules.compile import as_condition
from clm.lifecycle.rules.parser import to_text
from clm.lifecycle.spec import FeatureSpec, StageModel
from clm.warehouse.engine import Warehouse


def needs_fit(model: StageModel) -> bool:
    """Whether the rules read a value feature (`p_alive()`): the grid then needs the
    workspace's fitted parameters."""
    return bool(plan(_used(model)).value_thresholds)


def _used(model: StageModel) -> StageModel:
    """`model` with only the features its rules read."""
    names = set().union(*(analysis.names(s.when) for s in model.stages))
    kept = {n: f for n, f in model.features.items() if n in names}
    return dataclasses.replace(model, features=kept)


def feature_key(f: FeatureSpec) -> tuple[Any, ...]:
    """What decides a feature's values: name, kind, column, filter, window."""
    where = None if f.filter is None else to_text(f.filter)
    return (f.name, f.kind, f.column, where, f.within_days, f.within_periods)


def grid_key(
    model: StageModel, value_params: dict[str, float] | None = None
) -> tuple[Any, ...]:
    """What decides a model's grid: grain, the features its rules read, the
    `days_since` and `p_alive` constants of the rules (they add candidate periods),
    whether a rule needs every period, and the fitted parameters `p_alive` reads.
    Drafts with the same key share a grid."""
    pl = plan(_used(model))
    features = tuple(sorted(feature_key(f) for f in pl.model.features.values()))
    thresholds = tuple(sorted((k, tuple(sorted(v))) for k, v in pl.thresholds.items()))
    values = tuple(
        sorted((k, tuple(sorted(v))) for k, v in pl.value_thresholds.items())
    )
    params = tuple(sorted((value_params or {}).items())) if values else ()
    return (model.grain, features, thresholds, values, params, pl.dense)


def calendar(grain: str, tz: ZoneInfo, first_s: int, end: datetime) -> Calendar:
    """The periods from the one holding the first event (epoch seconds) to the end.
    Any earlier start gives the same stages: periods only shift their indices."""
    first = datetime(1970, 1, 1) + timedelta(seconds=first_s)
    return build_calendar(grain, tz, first, end)


class _Inline:
    """Stands in for a `Warehouse` where the engine materialises an intermediate
    result: here it stays a subquery (a CTE where read twice), so the grid is one
    statement that any cursor can run."""

    def materialize(self, expr: ir.Table, name: str) -> ir.Table:
        return expr


def grid_query(
    model: StageModel,
    events: ir.Table,
    periods: ir.Table,
    buckets: ir.Table,
    cal: Calendar,
    value_params: dict[str, float] | None = None,
) -> ir.Table:
    """customer_id (the customer key), p, f_<feature>: the candidate rows of every
    customer with an event before `cal`'s observation end. `periods` and `buckets`
    are `cal.periods_frame()` and `cal.buckets_frame()` as tables of the events'
    database; `value_params`: the fit `p_alive()` reads (`needs_fit`). With
    `p_alive()` the query holds in-memory tables (`ibis.memtable`): run it through
    the Ibis backend, which registers them."""
    plan(model)  # refuses what the history engine refuses, the same way
    pl = plan(_used(model))
    if pl.value_thresholds:
        if not value_params:
            raise ValueError(f"model `{model.name}`: p_alive() needs value_params")
        pl.value_params = value_params
    end_s = int((cal.observation_end - datetime(1970, 1, 1)).total_seconds())
    ev = events.filter(events.t < end_s)
    cols = [c for c in ev.columns if c not in ("_ck", "t")]
    base = ev.select(*cols, customer_id=ev._ck, t=ev.t)
    base = base.mutate(bk=(base.t // BUCKET_SECONDS).cast("int64"))
    b = buckets.select(_bk2=buckets.bucket, p=buckets.p)
    base = base.join(b, base.bk == b._bk2).drop("_bk2")
    inline: Any = _Inline()  # all of a Warehouse that `_feature_values` uses
    return _feature_values(inline, pl, base, periods, buckets, cal, "grid")


def _rank(model: StageModel, grid: ir.Table) -> ir.IntegerValue:
    """The stage a row matches as its distance from the end of the list (first
    listed = furthest = highest; 0: no rule matched)."""

    def resolve(node: Name) -> ir.Value:
        return grid[f"f_{node.name}"]

    n = len(model.stages)
    return ibis.cases(
        *[
            (as_condition(_compile_rule(model, s.name, s.when, resolve)), n - i)
            for i, s in enumerate(model.stages)
        ],
        else_=0,
    )


def last_rows(grid: ir.Table) -> ir.Table:
    """Each customer's last candidate row: all that a `dynamic` model's stage as of
    the end reads (one row per customer instead of several; a caller keeping a
    grid for many drafts keeps these too)."""
    w = ibis.window(group_by="customer_id", order_by=ibis.desc("p"))
    return grid.filter(ibis.row_number().over(w) == 0)


def stages_query(
    model: StageModel, grid: ir.Table, last: ir.Table | None = None
) -> ir.Table:
    """customer_id (key), stage as of the grid's last period; NULL: no rule
    matched. Forward-only: the furthest stage matched at any candidate row;
    dynamic: the stage of the customer's last candidate row (`last`: the grid's
    `last_rows`, when kept)."""
    if model.progression == "forward_only":
        ranked = grid.mutate(_r=_rank(model, grid))
        best = ranked.group_by("customer_id").aggregate(_b=ranked._r.max())
    else:
        rows = last_rows(grid) if last is None else last
        best = rows.select("customer_id", _b=_rank(model, rows))
    n = len(model.stages)
    stage = ibis.cases(
        *[(best._b == n - i, s.name) for i, s in enumerate(model.stages)],
        else_=ibis.null("string"),
    )
    return best.select("customer_id", stage=stage)


def counts_query(
    model: StageModel, grid: ir.Table, last: ir.Table | None = None
) -> ir.Table:
    """stage, n: customers per stage as `stages_query` decides them (customers
    without a stage left out)."""
    staged = stages_query(model, grid, last)
    staged = staged.filter(staged.stage.notnull())
    return staged.group_by("stage").aggregate(n=staged.count())


def stages_at(
    wh: Warehouse,
    model: StageModel,
    *,
    timezone: str | ZoneInfo = "UTC",
    as_of: date | None = None,
) -> pa.Table:
    """customer_id, stage (NULL: no rule matched) of every customer with an event
    before the observation end (the end of `as_of`, else of the last event's day),
    as `clm run` would store them for that day; on the warehouse's own data."""
    from clm.identity.resolve import customer_keys
    from clm.lifecycle.snapshot import customer_events, observation_end

    tz = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
    pl = plan(model)
    params = value_features.load_params(wh, model.source) if needs_fit(model) else None
    end = observation_end(wh, tz, as_of)
    empty = pa.table({"customer_id": pa.array([], pa.string()), "stage": []})
    if end is None:
        return empty
    with customer_keys(wh) as ck:
        events = customer_events(wh, ck, pl.columns, end)
        first = events.aggregate(m=events.t.min()).to_pyarrow()["m"][0].as_py()
        if first is None:
            return empty
        cal = calendar(model.grain, tz, first, end)
        tag = uuid.uuid4().hex[:8]
        periods = wh.materialize(ibis.memtable(cal.periods_frame()), f"_clm_gp_{tag}")
        buckets = wh.materialize(ibis.memtable(cal.buckets_frame()), f"_clm_gb_{tag}")
        try:
            grid = grid_query(model, events, periods, buckets, cal, params)
            staged = stages_query(model, grid)
            out = ck.named(staged, "customer_id")
            return out.select("customer_id", "stage").to_pyarrow()
        finally:
            wh.drop(f"_clm_gp_{tag}")
            wh.drop(f"_clm_gb_{tag}")
