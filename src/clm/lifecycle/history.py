"""Stage history: each customer's stage as SCD-2 intervals, and the transitions between
them.

Semantics. A model of grain G splits time into periods of the reporting time zone. A
customer's stage in period k is decided by the model's rules over its features evaluated
at the end of period k (for the last, unfinished period: at the observation end), so all
events of the period count. `valid_from` is the start of the first period with that
stage, `valid_to` the start of the first period with another one (NULL while it holds).

Cost. Work grows with events, not with customers × periods: a customer's stage can only
change in a period where one of its events happens, where a `within` window lets an
event go, or where a `days_since` feature crosses a threshold that a rule compares it
with. Those *candidate* periods are collected per customer; features are running
aggregates over per-period deltas (+x when an event enters a window, -x when it leaves),
evaluated at the candidates only; runs of the same stage are then collapsed into
intervals. A rule that uses a days_since feature in arithmetic cannot be solved for its
thresholds: that model is evaluated densely, at every period of every customer, and the
receipt says so.

Everything here is Ibis, so the same code runs on DuckDB and on Spark."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir

from clm.errors import ModelError
from clm.identity.resolve import customer_keys
from clm.lifecycle import value_features
from clm.lifecycle.calendar import (
    BUCKET_SECONDS,
    Calendar,
    build_calendar,
    end_of_local_day,
    local_midnight_utc,
)
from clm.lifecycle.rules import analysis
from clm.lifecycle.rules.ast import Name, Node
from clm.lifecycle.rules.compile import as_condition, to_ibis
from clm.lifecycle.spec import FeatureSpec, StageModel
from clm.progress import SILENT, Progress
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse, now_utc
from clm.warehouse.schema import EVENTS

log = logging.getLogger("clm.lifecycle")

DAY = 86_400
ADDITIVE = ("count", "sum", "count_distinct")
TIME_KINDS = ("days_since", "days_since_first")
CUSTOMER_LEVEL = ("first", "days_since_first")


@dataclass
class Plan:
    """What the engine must compute for a model, decided before touching data."""

    model: StageModel
    columns: set[str] = field(default_factory=set)  # event columns read
    thresholds: dict[str, set[int]] = field(
        default_factory=dict
    )  # time feature -> days
    dense: bool = False
    # value features (p_alive): constants rules compare them with, fitted params
    value_thresholds: dict[str, set[float]] = field(default_factory=dict)
    value_params: dict[str, float] = field(default_factory=dict)


def plan(model: StageModel) -> Plan:
    p = Plan(model)
    time_features = {f.name for f in model.features.values() if f.kind in TIME_KINDS}
    for f in model.features.values():
        if f.kind in ("min", "max") and (f.within_days or f.within_periods):
            # Known gap: a sliding min/max needs a range join per customer; it lands
            # when a template or user model needs it. Until then it is refused clearly.
            raise ModelError(
                f"feature `{f.name}`: {f.kind}(…, within = …) is not supported yet; "
                f"use {f.kind} without `within`, or last(…, within = …)",
                file=model.source,
                line=f.line,
            )
        if f.column:
            p.columns.add(f.column.split(".")[0])
        if f.filter is not None:
            p.columns |= {n.split(".")[0] for n in analysis.names(f.filter)}
    for stage in model.stages:
        found = analysis.time_thresholds(stage.when, time_features)
        if found is None:
            p.dense = True
            continue
        for name in analysis.names(stage.when) & time_features:
            days = p.thresholds.setdefault(name, set())
            for c in found:
                if not math.isfinite(c):
                    continue
                # floor(days) >= v flips exactly once per integer v; every rule
                # comparison with c is decided by v in {floor c, ceil c} and the next.
                for v in {math.floor(c), math.ceil(c)}:
                    days |= {v, v + 1}
    for name in time_features:
        p.thresholds.setdefault(name, set())
    value_names = {
        f.name for f in model.features.values() if f.kind in value_features.VALUE_KINDS
    }
    if value_names:
        p.columns.add("event")
    for stage in model.stages:
        used = analysis.names(stage.when) & value_names
        found = analysis.time_thresholds(stage.when, value_names) if used else set()
        if found is None:
            p.dense = True  # p_alive inside arithmetic: no crossing points to solve
            continue
        for name in used:
            p.value_thresholds.setdefault(name, set()).update(
                value_features.finite_thresholds(found)
            )
    for name in value_names:
        p.value_thresholds.setdefault(name, set())
    return p


@dataclass
class HistoryResult:
    receipt: Receipt
    calendar: Calendar | None


def run_model(
    wh: Warehouse,
    model: StageModel,
    *,
    timezone: str | ZoneInfo = "UTC",
    as_of: date | None = None,
    run_id: str | None = None,
    progress: Progress = SILENT,
) -> HistoryResult:
    """Replay the whole history of `model` and store it under its version."""
    tz = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
    receipt = Receipt("run", source=f"{model.name} v{model.version}")
    run_id = run_id or receipt.receipt_id
    progress.start(f"stage history: {model.name}", total=5)

    with receipt.timed("plan"):
        pl = plan(model)
        if pl.value_thresholds:
            pl.value_params = value_features.load_params(wh, model.source)
        # The span of all events: far cheaper than that of the customer events (no
        # identity join) and the same but for events without a customer, which can
        # only widen the calendar by empty periods.
        raw = wh.table("events")
        span = raw.aggregate(
            first=raw.timestamp.min(), last=raw.timestamp.max()
        ).to_pyarrow()
        first, last = span["first"][0].as_py(), span["last"][0].as_py()
    if first is None:
        receipt.warnings.append("no events with a customer: nothing to compute")
        _store(wh, model, None, None, run_id)
        progress.done()
        return HistoryResult(receipt, None)
    # The observation end is a local midnight: the end of `as_of`, else of the last
    # event's day. Events after it are in the future of the evaluation and ignored.
    end = _end_of_date(as_of, tz) if as_of else end_of_local_day(last, tz)
    if end <= first:
        raise ModelError(
            f"--as-of {as_of} is before the first event ({first:%Y-%m-%d})"
        )
    cal = build_calendar(model.grain, tz, first, end)
    progress.advance()

    with receipt.timed("features"), customer_keys(wh) as ck:
        periods = wh.materialize(
            ibis.memtable(cal.periods_frame()), f"_clm_periods_{run_id}"
        )
        buckets = wh.materialize(
            ibis.memtable(cal.buckets_frame()), f"_clm_buckets_{run_id}"
        )
        try:
            # Customers have integer keys (`ck`): every group-by and window below is
            # on (customer, period), and integers hash and sort far faster than the
            # customer id strings.
            raw = wh.table("events")
            ev = ck.events(wh, raw.filter(raw.timestamp < ibis.literal(end)))
            base = _base_events(ev, pl, buckets)
            base = wh.materialize(base, f"_clm_base_{run_id}")
            progress.advance()
            values = _feature_values(wh, pl, base, periods, buckets, cal, run_id)
            staged = _assign_stages(model, values)
            intervals = _collapse(staged, periods)
            intervals = ck.named(intervals, "customer_id")
            intervals = wh.materialize(intervals, f"_clm_intervals_{run_id}")
            progress.advance()
        except Exception:
            _cleanup(wh, run_id)
            raise

    with receipt.timed("store"):
        _store(wh, model, intervals, periods, run_id)
        counts = intervals.aggregate(
            rows=intervals.count(), customers=intervals.customer_id.nunique()
        ).to_pyarrow()
        receipt.counts.update(
            customers=counts["customers"][0].as_py(),
            intervals=counts["rows"][0].as_py(),
            periods=cal.n,
        )
        _cleanup(wh, run_id)
        progress.advance()

    receipt.details.update(
        model=model.name,
        version=model.version,
        grain=model.grain,
        timezone=str(tz.key),
        first_event=str(first),
        observation_end=str(end),
        dense=pl.dense,
        run_id=run_id,
    )
    wh.set_meta(f"run:{model.name}:{model.version}", json.dumps(receipt.details))
    if pl.dense:
        receipt.warnings.append(
            "a rule uses days_since inside arithmetic: evaluated at every period "
            "(slower); compare days_since features with constants to avoid this"
        )
    progress.done()
    return HistoryResult(receipt, cal)


def _cleanup(wh: Warehouse, run_id: str) -> None:
    """Drop the temporary tables of one run (all are named `_clm_…_<run id>`)."""
    for name in wh.con.list_tables():
        if name.startswith("_clm_") and name.endswith(f"_{run_id}"):
            wh.drop(name)


def _end_of_date(d: date, tz: ZoneInfo) -> datetime:
    from datetime import timedelta

    return local_midnight_utc(d + timedelta(days=1), tz)


# -- step 1: events with their period -------------------------------------------------


def _epoch(col: ir.TimestampValue) -> ir.IntegerValue:
    return col.epoch_seconds().cast("float64").floor().cast("int64")


def _period_of(
    table: ir.Table, seconds: ir.IntegerValue, buckets: ir.Table, name: str
) -> ir.Table:
    """Add column `name`: the period containing instant `seconds`, NULL past the end."""
    keyed = table.mutate(_bk=(seconds // BUCKET_SECONDS).cast("int64"))
    b = buckets.select(_bk2=buckets.bucket, **{name: buckets.p})
    joined = keyed.left_join(b, keyed._bk == b._bk2)
    return joined.drop("_bk", "_bk2")


def _base_events(ev: ir.Table, pl: Plan, buckets: ir.Table) -> ir.Table:
    """The events the features read: integer customer key, the needed columns, the
    time in epoch seconds, its 15-minute bucket and its period."""
    cols = sorted(
        c for c in pl.columns if c in EVENTS.names and c not in ("timestamp",)
    )
    sel = ev.select(*cols, customer_id=ev.ck, t=_epoch(ev.timestamp))
    sel = sel.mutate(bk=(sel.t // BUCKET_SECONDS).cast("int64"))
    b = buckets.select(_bk2=buckets.bucket, p=buckets.p)
    return sel.join(b, sel.bk == b._bk2).drop("_bk2")


# -- step 2: features at candidate periods ---------------------------------------------


def _event_resolver(table: ir.Table) -> Callable[[Name], ir.Value]:
    def resolve(node: Name) -> ir.Value:
        head, _, rest = node.name.partition(".")
        col = table[head]
        if rest:
            # properties.plan: a key inside the JSON text column.
            value: ir.Value = col.cast("json")
            for key in rest.split("."):
                value = value[key]
            return value.str  # type: ignore[attr-defined]
        return col

    return resolve


def _matching(base: ir.Table, f: FeatureSpec) -> ir.Table:
    out = base
    if f.filter is not None:
        out = out.filter(as_condition(to_ibis(f.filter, _event_resolver(base))))
    if f.column:
        value = _event_resolver(base)(Name(f.column))
        out = out.mutate(_v=value).filter(lambda t: t._v.notnull())
    return out


def _window_end(
    t: ir.Table,
    f: FeatureSpec,
    seconds: ir.IntegerValue,
    buckets: ir.Table,
    cal: Calendar,
) -> ir.Table:
    """Add `_e`: the first period in which an event at `seconds` (in period p) has left
    the feature's window; NULL when it never leaves before the observation end."""
    if f.within_periods is not None:
        e = t.p + f.within_periods
        return t.mutate(_e=ibis.ifelse(e < cal.n, e, ibis.null("int64")))
    assert f.within_days is not None
    return _period_of(t, seconds + round(f.within_days * DAY), buckets, "_e")


def _slots(f: FeatureSpec) -> dict[str, str]:
    """Columns a feature adds to the union of per-period rows, with their types."""
    n = f.name
    if f.kind == "count" or f.kind == "count_distinct":
        return {f"a_{n}": "int64"}
    if f.kind == "sum":
        return {f"a_{n}": "float64"}
    if f.kind in ("min", "max"):
        return {f"x_{n}": "float64"}
    if f.kind == "last":
        return {f"lv_{n}": "string", f"lt_{n}": "int64", f"lp_{n}": "int64"}
    if f.kind == "days_since":
        return {f"lt_{n}": "int64"}
    if f.kind in value_features.VALUE_KINDS:
        return value_features.slots(n)
    return {}


def _streams(
    wh: Warehouse, pl: Plan, base: ir.Table, buckets: ir.Table, cal: Calendar, tag: str
) -> tuple[list[ir.Table], dict[str, ir.Table]]:
    """Per-period delta rows of every feature, and customer-level rows (first…).

    Features that only need one aggregate per customer and period (count, sum, min,
    max, days_since) share one pass over the events with conditional aggregates; that
    pass also marks every period with an event as a candidate. Windows, distinct
    counts and thresholds add their own, smaller streams.
    """
    by = ["customer_id", "p"]
    shared: dict[str, ir.Value] = {}
    for f in pl.model.features.values():
        cond = _condition(base, f)
        n = f.name
        if f.kind == "count":
            # Counted with a filter clause: without a filter `cond` is the literal
            # true, and summing a literal is no aggregate over the rows.
            shared[f"a_{n}"] = base.count(where=cond)
        elif f.kind == "sum":
            value = _column(base, f).cast("float64")
            shared[f"a_{n}"] = ibis.ifelse(cond, value, 0.0).sum()
        elif f.kind in ("min", "max"):
            value = _column(base, f).cast("float64")
            v = ibis.ifelse(cond, value, ibis.null("float64"))
            shared[f"x_{n}"] = v.min() if f.kind == "min" else v.max()
        elif f.kind == "days_since":
            shared[f"lt_{n}"] = ibis.ifelse(cond, base.t, ibis.null("int64")).max()
    main = (
        base.group_by(by).aggregate(**shared) if shared else base.select(by).distinct()
    )
    main = wh.materialize(main, f"_clm_main_{tag}")
    streams: list[ir.Table] = [main]
    customer_level: dict[str, ir.Table] = {}

    for f in pl.model.features.values():
        n = f.name
        windowed = f.within_days is not None or f.within_periods is not None
        if f.kind in ("count", "sum") and windowed:
            m = base.filter(_condition(base, f))
            one = (
                ibis.literal(1, "int64")
                if f.kind == "count"
                else (_column(m, f).cast("float64"))
            )
            streams.append(_expiries(m.mutate(_x=one), f, buckets, cal, f"a_{n}"))
        elif f.kind == "count_distinct":
            m = _matching(base, f)
            if not windowed:
                firsts = m.group_by(["customer_id", "_v"]).aggregate(p=m.p.min())
                streams.append(
                    firsts.group_by(by).aggregate(**{f"a_{n}": firsts.count()})
                )
            else:
                streams += _distinct_windows(wh, m, f, buckets, cal, tag)
        elif f.kind == "last":
            m = _matching(base, f)
            per = m.group_by(by).aggregate(
                **{
                    f"lv_{n}": m._v.cast("string").argmax(m.t),
                    f"lt_{n}": m.t.max(),
                    f"lp_{n}": m.p.max(),
                }
            )
            streams.append(per)
            if windowed:
                per = _window_end(per, f, per[f"lt_{n}"], buckets, cal)
                per = per.filter(per._e.notnull())
                streams.append(per.select(customer_id=per.customer_id, p=per._e))
        elif f.kind == "days_since":
            per = main.filter(main[f"lt_{n}"].notnull())
            streams += _threshold_rows(per, per[f"lt_{n}"], pl.thresholds[n], buckets)
        elif f.kind in value_features.VALUE_KINDS:
            rows, customer_level[n] = value_features.streams(
                base, n, pl.value_params, pl.value_thresholds[n], cal
            )
            streams += rows
        elif f.kind in CUSTOMER_LEVEL:
            m = _matching(base, f)
            agg = {"_fp": m.p.min(), "_ft": m.t.min()}
            if f.kind == "first":
                agg["_fv"] = m._v.cast("string").argmin(m.t)
            first_rows = m.group_by("customer_id").aggregate(**agg)
            customer_level[n] = first_rows
            if f.kind == "days_since_first":
                streams += _threshold_rows(
                    first_rows, first_rows._ft, pl.thresholds[n], buckets
                )
    return streams, customer_level


def _condition(base: ir.Table, f: FeatureSpec) -> ir.BooleanValue:
    """The feature's filter, and for column features: the column is not NULL."""
    cond: ir.BooleanValue = ibis.literal(True)
    if f.filter is not None:
        cond = as_condition(to_ibis(f.filter, _event_resolver(base)))
    if f.column:
        cond = cond & _column(base, f).notnull()
    return cond


def _column(t: ir.Table, f: FeatureSpec) -> ir.Value:
    assert f.column is not None
    return _event_resolver(t)(Name(f.column))


def _expiries(
    m: ir.Table, f: FeatureSpec, buckets: ir.Table, cal: Calendar, col: str
) -> ir.Table:
    """-x in the period where each matching event leaves the feature's window."""
    if f.within_periods is not None:
        per = m.group_by(["customer_id", "p"]).aggregate(_x=m._x.sum())
        e = per.p + f.within_periods
        return per.filter(e < cal.n).select(
            customer_id=per.customer_id, p=e, **{col: -per._x}
        )
    assert f.within_days is not None
    seconds = round(f.within_days * DAY)
    if seconds % BUCKET_SECONDS == 0:
        # The window is a whole number of buckets: shift the bucket key instead of
        # mapping every event's expiry instant on its own.
        per = m.group_by(["customer_id", "bk"]).aggregate(_x=m._x.sum())
        keyed = per.mutate(_k=per.bk + seconds // BUCKET_SECONDS)
        b = buckets.select(_k2=buckets.bucket, _e=buckets.p)
        j = keyed.join(b, keyed._k == b._k2)
    else:
        j = _period_of(m, m.t + seconds, buckets, "_e").filter(lambda t: t._e.notnull())
    return j.group_by(customer_id=j.customer_id, p=j._e).aggregate(**{col: -j._x.sum()})


def _distinct_windows(
    wh: Warehouse,
    m: ir.Table,
    f: FeatureSpec,
    buckets: ir.Table,
    cal: Calendar,
    tag: str,
) -> list[ir.Table]:
    """count_distinct within a window: +1 when a value's presence starts, -1 when the
    last of its occurrences has left the window (overlapping presences merged)."""
    n = f.name
    occ = m.group_by(["customer_id", "_v", "p"]).aggregate(t=m.t.max())
    occ = _window_end(occ, f, occ.t, buckets, cal)
    occ = occ.mutate(_e=occ._e.fill_null(cal.n))
    key = ["customer_id", "_v"]
    cum = ibis.cumulative_window(group_by=key, order_by="p")
    occ = occ.mutate(_reach=occ._e.max().over(cum))
    ordered = ibis.window(group_by=key, order_by="p")
    occ = occ.mutate(_prev=occ._reach.lag().over(ordered))
    occ = occ.mutate(_start=(occ._prev.isnull() | (occ.p >= occ._prev)).cast("int64"))
    occ = occ.mutate(_island=occ._start.sum().over(cum))
    isl = occ.group_by([*key, "_island"]).aggregate(s=occ.p.min(), e=occ._e.max())
    # Both streams below read the islands: compute them once.
    isl = wh.materialize(isl, f"_clm_isl_{n}_{tag}")
    plus = isl.group_by(customer_id=isl.customer_id, p=isl.s).aggregate(
        **{f"a_{n}": isl.count()}
    )
    ends = isl.filter(isl.e < cal.n)
    minus = ends.group_by(customer_id=ends.customer_id, p=ends.e).aggregate(
        **{f"a_{n}": -ends.count()}
    )
    return [plus, minus]


def _threshold_rows(
    per: ir.Table, seconds: ir.IntegerValue, days: set[int], buckets: ir.Table
) -> list[ir.Table]:
    """Candidate periods where floor((E - t) / day) first reaches each threshold v:
    the first period end E >= t + v days: the period containing t + v days - 1 s."""
    rows = []
    for v in sorted(d for d in days if d > 0):
        at = _period_of(per, seconds + (v * DAY - 1), buckets, "_c")
        at = at.filter(at._c.notnull())
        rows.append(at.select(customer_id=at.customer_id, p=at._c))
    return rows


def _feature_values(
    wh: Warehouse,
    pl: Plan,
    base: ir.Table,
    periods: ir.Table,
    buckets: ir.Table,
    cal: Calendar,
    tag: str,
) -> ir.Table:
    streams, customer_level = _streams(wh, pl, base, buckets, cal, tag)
    slots: dict[str, str] = {}
    for f in pl.model.features.values():
        slots.update(_slots(f))

    # One shape for every stream, then one row per customer and candidate period.
    def shaped(t: ir.Table) -> ir.Table:
        cols: dict[str, ir.Value] = {
            "customer_id": t.customer_id.cast("int64"),
            "p": t.p.cast("int64"),
        }
        for col, dtype in slots.items():
            cols[col] = t[col].cast(dtype) if col in t.columns else ibis.null(dtype)
        return t.select(**cols)

    union = ibis.union(*[shaped(s) for s in streams], distinct=False)
    aggs: dict[str, ir.Value] = {}
    for col in slots:
        if col.startswith("a_"):
            aggs[col] = union[col].sum()
        elif col.startswith("x_"):
            f = pl.model.features[col[2:]]
            aggs[col] = union[col].min() if f.kind == "min" else union[col].max()
        else:
            aggs[col] = union[col].max()
    grid = (
        union.group_by(["customer_id", "p"]).aggregate(**aggs)
        if aggs
        else (union.select("customer_id", "p").distinct())
    )
    if pl.dense:
        grid = _densify(grid, periods)

    # Running values per customer, in period order.
    cum = ibis.cumulative_window(group_by="customer_id", order_by="p")
    run: dict[str, ir.Value] = {}
    for col in slots:
        if col.startswith("a_"):
            run[col] = grid[col].fill_null(0).sum().over(cum)
        elif col.startswith("x_"):
            f = pl.model.features[col[2:]]
            run[col] = (grid[col].min() if f.kind == "min" else grid[col].max()).over(
                cum
            )
        elif col.startswith(("lt_", "lp_")):
            run[col] = grid[col].max().over(cum)
        elif col.startswith("lv_"):
            # Forward fill: group rows by how many values were seen so far.
            run[f"g_{col[3:]}"] = grid[col].count().over(cum)
    grid = grid.mutate(**run)
    fills = {
        col: grid[col].max().over(ibis.window(group_by=["customer_id", f"g_{col[3:]}"]))
        for col in slots
        if col.startswith("lv_")
    }
    if fills:
        grid = grid.mutate(**fills)

    grid = grid.join(periods.select("p", "eval_s"), "p")
    if pl.value_params:
        eval_days = value_features.day_tables(cal)[2]
        grid = grid.join(eval_days, grid.p == eval_days._pp).drop("_pp")
    for name, rows in customer_level.items():
        rows = rows.rename(
            {f"_fp_{name}": "_fp", f"_ft_{name}": "_ft"}
            | ({f"_fv_{name}": "_fv"} if "_fv" in rows.columns else {})
        )
        grid = grid.left_join(rows, "customer_id").drop("customer_id_right")

    values: dict[str, ir.Value] = {}
    for f in pl.model.features.values():
        if f.kind in value_features.VALUE_KINDS:
            values[f"f_{f.name}"] = value_features.value(f.name, grid, pl.value_params)
            continue
        values[f"f_{f.name}"] = _value(f, grid)
    return grid.select("customer_id", "p", **values)


def _densify(grid: ir.Table, periods: ir.Table) -> ir.Table:
    """Add an empty row for every period from each customer's first one to the end."""
    starts = grid.group_by("customer_id").aggregate(_p0=grid.p.min())
    every = starts.cross_join(periods.select(_pp=periods.p))
    every = every.filter(every._pp >= every._p0).select(
        customer_id=every.customer_id, p=every._pp
    )
    missing = every.anti_join(grid, ["customer_id", "p"])
    cols = {
        c: ibis.null(grid[c].type())
        for c in grid.columns
        if c not in ("customer_id", "p")
    }
    return ibis.union(grid, missing.mutate(**cols).select(grid.columns), distinct=False)


def _value(f: FeatureSpec, g: ir.Table) -> ir.Value:
    n = f.name
    if f.kind == "count" or f.kind == "count_distinct":
        return g[f"a_{n}"].cast("int64")
    if f.kind == "sum":
        # Windows add and later subtract the same amounts: round away float dust.
        return g[f"a_{n}"].round(6)
    if f.kind in ("min", "max"):
        return g[f"x_{n}"]
    if f.kind == "last":
        value = g[f"lv_{n}"]
        if f.within_days is not None:
            alive = (g.eval_s - g[f"lt_{n}"]) <= round(f.within_days * DAY)
            return ibis.ifelse(alive, value, ibis.null("string"))
        if f.within_periods is not None:
            alive = g.p < g[f"lp_{n}"] + f.within_periods
            return ibis.ifelse(alive, value, ibis.null("string"))
        return value
    if f.kind == "days_since":
        return ((g.eval_s - g[f"lt_{n}"]) // DAY).cast("int64")
    if f.kind == "days_since_first":
        since = ((g.eval_s - g[f"_ft_{n}"]) // DAY).cast("int64")
        return ibis.ifelse(g.p >= g[f"_fp_{n}"], since, ibis.null("int64"))
    if f.kind == "first":
        return ibis.ifelse(g.p >= g[f"_fp_{n}"], g[f"_fv_{n}"], ibis.null("string"))
    raise ModelError(f"feature `{n}`: unknown kind `{f.kind}`")


# -- step 3: stages, intervals, transitions -------------------------------------------


def _assign_stages(model: StageModel, values: ir.Table) -> ir.Table:
    def resolve(node: Name) -> ir.Value:
        return values[f"f_{node.name}"]

    branches = [
        (as_condition(_compile_rule(model, s.name, s.when, resolve)), s.name)
        for s in model.stages
    ]
    stage = ibis.cases(*branches, else_=ibis.null("string"))
    out = values.mutate(stage=stage)
    if model.progression == "forward_only":
        # A stage is never left backwards: keep the furthest stage reached so far.
        # Stages are listed furthest first, so rank = distance from the list's end.
        n = len(model.stages)
        rank = ibis.cases(
            *[(out.stage == s.name, n - i) for i, s in enumerate(model.stages)],
            else_=0,
        )
        out = out.mutate(_rank=rank)
        cum = ibis.cumulative_window(group_by="customer_id", order_by="p")
        out = out.mutate(_best=out._rank.max().over(cum))
        out = out.mutate(
            stage=ibis.cases(
                *[(out._best == n - i, s.name) for i, s in enumerate(model.stages)],
                else_=ibis.null("string"),
            )
        ).drop("_rank", "_best")
    return out.select("customer_id", "p", "stage")


def _compile_rule(
    model: StageModel, stage: str, rule: Node, resolve: Callable[[Name], ir.Value]
) -> ir.BooleanValue:
    try:
        return to_ibis(rule, resolve)
    except ModelError as exc:
        raise ModelError(exc.detail, file=model.source, stage=stage) from None


def _collapse(staged: ir.Table, periods: ir.Table) -> ir.Table:
    """Runs of one stage → intervals; a NULL stage (no rule matched) ends one."""
    w = ibis.window(group_by="customer_id", order_by="p")
    marked = staged.mutate(
        _prev=staged.stage.lag().over(w),
        _first=ibis.row_number().over(w) == 0,
    )
    changed = marked.filter(
        marked._first
        | (marked._prev.isnull() != marked.stage.isnull())
        | (marked._prev != marked.stage).fill_null(False)
    )
    changed = changed.join(periods.select("p", "period_start"), "p")
    w2 = ibis.window(group_by="customer_id", order_by="p")
    out = changed.mutate(
        valid_to=changed.period_start.lead().over(w2),
        from_stage=changed.stage.lag().over(w2),
    )
    return out.select(
        "customer_id",
        "stage",
        "from_stage",
        valid_from=out.period_start,
        valid_to=out.valid_to,
    )


def _store(
    wh: Warehouse,
    model: StageModel,
    intervals: ir.Table | None,
    periods: ir.Table | None,
    run_id: str,
) -> None:
    hist = wh.table("stage_history")
    trans = wh.table("stage_transitions")
    same = (hist.model == model.name) & (hist.model_version == model.version)
    same_t = (trans.model == model.name) & (trans.model_version == model.version)
    if intervals is None:
        wh.replace_rows("stage_history", same)
        wh.replace_rows("stage_transitions", same_t)
    else:
        rows = intervals.filter(intervals.stage.notnull())
        tag = {
            "model": ibis.literal(model.name),
            "model_version": ibis.literal(model.version, "int64"),
            "run_id": ibis.literal(run_id),
        }
        wh.replace_rows("stage_history", same, rows.mutate(**tag))
        wh.replace_rows(
            "stage_transitions",
            same_t,
            rows.mutate(**tag).select(
                "customer_id",
                "model",
                "model_version",
                "from_stage",
                "run_id",
                to_stage=rows.stage,
                at=rows.valid_from,
            ),
        )
    models = wh.table("models")
    wh.replace_rows(
        "models",
        (models.name == model.name) & (models.version == model.version),
        ibis.memtable(
            {
                "name": [model.name],
                "version": [model.version],
                "definition": [model.text],
                "saved_at": [now_utc()],
            }
        ),
    )
