"""Per-period aggregates of one model's stage history, computed once for all metrics.

Conventions (they decide what every built-in metric means):
- A metric period P of grain week/month/quarter/day in the reporting time zone.
- population(S, P): customers whose stage at the end of P is S.
- entered(S, P) / exited(S, P): intervals of S that start / end within P.
- moved(S→T, P): transitions from S to T within P.
- orders and revenue are attributed to the stage the customer was in when ordering;
  refunds (negative revenue on `order_refunded`) to the stage at the refund.
- stays(S, P): completed intervals of S that ended in P, with their length in days.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from clm.identity.resolve import (
    CustomerKeys,
    current_customer_keys,
    customer_events,
)
from clm.lifecycle.calendar import BUCKET_SECONDS, Calendar, build_calendar
from clm.lifecycle.queries import run_info
from clm.lifecycle.spec import StageModel
from clm.warehouse.engine import Warehouse


@dataclass
class MetricContext:
    model: StageModel
    grain: str
    calendar: Calendar
    periods: pd.Index  # period_start (local dates)
    population: pd.DataFrame  # index periods, columns stages
    entered: pd.DataFrame
    exited: pd.DataFrame
    moves: pd.DataFrame  # columns from_stage, to_stage, period, customers
    orders: pd.DataFrame  # index (stage, period): orders, revenue, refunds, buyers…
    stays: pd.DataFrame  # columns stage, period, days
    caveats: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # predicted CLV of each stage's population at the end of each period, from the
    # latest `customer_value` rows (empty when `clm clv predict` has not run):
    # index periods, columns stages; sums and numbers of customers with a value.
    clv_sum: pd.DataFrame = field(default_factory=pd.DataFrame)
    clv_count: pd.DataFrame = field(default_factory=pd.DataFrame)

    def col(self, frame: pd.DataFrame, stage: str) -> pd.Series:
        if stage in frame.columns:
            return frame[stage].reindex(self.periods, fill_value=0).astype(float)
        return pd.Series(0.0, index=self.periods)

    def order_col(self, stage: str | None, column: str) -> pd.Series:
        o = self.orders
        if stage is None:
            s = (
                o.groupby(level="period")[column].sum()
                if len(o)
                else pd.Series(dtype=float)
            )
        else:
            s = (
                o.xs(stage, level="stage")[column]
                if stage in o.index.get_level_values("stage")
                else pd.Series(dtype=float)
            )
        return s.reindex(self.periods, fill_value=0).astype(float)

    def moved(self, source: str | None, targets: list[str]) -> pd.Series:
        m = self.moves
        sel = m[m.to_stage.isin(targets)]
        if source is not None:
            sel = sel[sel.from_stage == source]
        return (
            sel.groupby("period")
            .customers.sum()
            .reindex(self.periods, fill_value=0)
            .astype(float)
        )


def build_context(
    wh: Warehouse, model: StageModel, grain: str, tz: ZoneInfo
) -> MetricContext:
    info = run_info(wh, model)
    end = datetime.fromisoformat(info["observation_end"])
    first = datetime.fromisoformat(info["first_event"])
    hist = wh.table("stage_history")
    hist = hist.filter(
        (hist.model == model.name) & (hist.model_version == model.version)
    )
    # History starts at the first model period, which may begin before the first
    # event (a week starting in December for an event on 1 January).
    earliest = hist.valid_from.min().to_pyarrow().as_py()
    if earliest is not None:
        first = min(first, earliest)
    cal = build_calendar(grain, tz, first, end)
    buckets = ibis.memtable(cal.buckets_frame())
    starts = pd.Index(cal.starts, name="period")

    def period(t: ir.Table, col: str, name: str) -> ir.Table:
        keyed = t.mutate(
            _bk=(t[col].epoch_seconds().cast("float64").floor() // BUCKET_SECONDS).cast(
                "int64"
            )
        )
        b = buckets.select(_bk2=buckets.bucket, **{name: buckets.p})
        return keyed.left_join(b, keyed._bk == b._bk2).drop("_bk", "_bk2")

    def frame(expr: ir.Table) -> pd.DataFrame:
        return expr.to_pandas()

    # Population: +1 where an interval starts, -1 in the period containing its end.
    h = period(period(hist, "valid_from", "p_from"), "valid_to", "p_to")
    starts_ = frame(h.group_by(["stage", "p_from"]).aggregate(n=h.count()))
    ended = h.filter(h.p_to.notnull())
    ends_ = frame(ended.group_by(["stage", "p_to"]).aggregate(n=ended.count()))
    delta = _pivot(starts_, "p_from", cal.n) - _pivot(ends_, "p_to", cal.n).reindex(
        columns=_pivot(starts_, "p_from", cal.n).columns, fill_value=0
    )
    population = delta.cumsum()
    entered = _pivot(starts_, "p_from", cal.n)
    exited = _pivot(ends_, "p_to", cal.n)

    trans = wh.table("stage_transitions")
    trans = trans.filter(
        (trans.model == model.name) & (trans.model_version == model.version)
    )
    t2 = period(trans, "at", "p")
    moves = frame(
        t2.group_by(["from_stage", "to_stage", "p"]).aggregate(customers=t2.count())
    )

    # Orders and refunds, attributed to the stage held at the order's time.
    j = _staged_orders(wh, model, hist, end)
    j = period(j, "timestamp", "p")
    is_order = j.event == "order_completed"
    rev = j.revenue.fill_null(0.0)
    orders = frame(
        j.group_by(["stage", "p"]).aggregate(
            orders=is_order.cast("int64").sum(),
            revenue=ibis.ifelse(is_order, rev, 0.0).sum(),
            refunds=ibis.ifelse(is_order, 0.0, rev).sum(),
            buyers=ibis.ifelse(is_order, j.customer_id, ibis.null("string")).nunique(),
            repeat_buyers=ibis.ifelse(
                is_order & (j._n > 1), j.customer_id, ibis.null("string")
            ).nunique(),
        )
    )
    orders = orders.dropna(subset=["p"])
    # Period numbers to start dates by one array look-up (a million stays at 10M
    # events made a per-row Python loop cost a second per metric build).
    start_of = np.array(cal.starts, dtype=object)
    orders["period"] = start_of[orders.p.to_numpy(dtype=np.int64)]
    orders = orders.drop(columns="p").set_index(["stage", "period"]).sort_index()

    stays_t = h.filter(h.valid_to.notnull())
    stays_t = stays_t.mutate(
        days=(stays_t.valid_to.epoch_seconds() - stays_t.valid_from.epoch_seconds())
        / 86400.0
    )
    stays = frame(stays_t.select("stage", "days", p=stays_t.p_to))
    stays = stays.dropna(subset=["p"])
    stays["period"] = start_of[stays.p.to_numpy(dtype=np.int64)]
    moves = moves.dropna(subset=["p"])
    moves["period"] = start_of[moves.p.to_numpy(dtype=np.int64)]

    def dated(df: pd.DataFrame) -> pd.DataFrame:
        df.index = pd.Index([cal.starts[int(i)] for i in df.index], name="period")
        return df.reindex(starts, fill_value=0)

    ctx = MetricContext(
        model=model,
        grain=grain,
        calendar=cal,
        periods=starts,
        population=dated(population),
        entered=dated(entered),
        exited=dated(exited),
        moves=moves,
        orders=orders,
        stays=stays,
    )
    ctx.clv_sum, ctx.clv_count = _clv_frames(wh, h, cal.n)
    ctx.clv_sum, ctx.clv_count = dated(ctx.clv_sum), dated(ctx.clv_count)
    if cal.bounds[-1] > end:
        ctx.caveats.append(
            ("last_period_incomplete", {"period_end": str(end.date()), "grain": grain})
        )
    return ctx


# Inside a run, the staged orders of each (model, version, observation end), made
# once for all grains: {key: (the run's customer keys, temporary table name)}.
_STAGED: dict[tuple[int, str, int, str], tuple[CustomerKeys, str]] = {}


def _staged_orders(
    wh: Warehouse, model: StageModel, hist: ir.Table, end: datetime
) -> ir.Table:
    """Order and refund events before `end` with the stage held at their time and
    `_n`, the customer's number of orders so far.

    Inside `clm run` (the dashboard's precompute asks for two grains) the join is made
    once into a temporary table, kept while the run's customer keys are the same
    (they are made again by every run, and the history and events cannot change
    within a run) and dropped by `release_staged_orders` at the precompute's end."""
    ev = _orders(wh)
    ev = ev.filter(ev.timestamp < ibis.literal(end))
    ev = ev.mutate(
        _n=ibis.ifelse(ev.event == "order_completed", 1, 0)
        .sum()
        .over(
            ibis.cumulative_window(
                group_by="customer_id", order_by=["timestamp", "event_id"]
            )
        )
    )
    hh = hist.select(
        _c=hist.customer_id, stage=hist.stage, _vf=hist.valid_from, _vt=hist.valid_to
    )
    j = ev.join(
        hh,
        (ev.customer_id == hh._c)
        & (hh._vf <= ev.timestamp)
        & (hh._vt.isnull() | (ev.timestamp < hh._vt)),
    ).select("customer_id", "timestamp", "event", "revenue", "_n", "stage")
    made = current_customer_keys(wh)
    if made is None or wh.capabilities.name != "duckdb":
        return j
    for key, (owner, name) in list(_STAGED.items()):
        if owner is not made:  # left over from an earlier run
            wh.drop(name)
            del _STAGED[key]
    key = (id(wh), model.name, model.version, end.isoformat())
    if key not in _STAGED:
        name = f"_clm_staged_orders_{uuid.uuid4().hex[:8]}"
        wh.materialize(j, name)
        _STAGED[key] = (made, name)
    return wh.con.table(_STAGED[key][1])


def release_staged_orders(wh: Warehouse) -> None:
    """Drop the staged orders `build_context` kept for the run on `wh`."""
    for key, (_, name) in list(_STAGED.items()):
        if key[0] == id(wh):
            wh.drop(name)
            del _STAGED[key]


def _orders(wh: Warehouse) -> ir.Table:
    """Order and refund events of resolved customers: with the run's customer keys
    when metrics are computed inside `clm run` (the dashboard's precompute), else
    through the identity join of their id pairs."""
    raw = wh.table("events")
    orders = raw.filter(raw.event.isin(["order_completed", "order_refunded"]))
    made = current_customer_keys(wh)
    if made is None:
        return customer_events(wh, orders)
    ev = made.events(wh, orders)
    return ev.join(made.keys, "ck").drop("ck")


def _clv_frames(
    wh: Warehouse, h: ir.Table, n: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sum and count of predicted CLV over each stage's population per period.

    Like `population`: a customer's value enters in the period its interval starts
    and leaves in the period it ends. Values are the latest `customer_value` rows (of
    the purchase model computed last): a snapshot, applied to every period.
    """
    if not wh.has_table("customer_value") or _none_yet(wh, "customer_value"):
        # No value yet: the joins below would give these same empty frames.
        return pd.DataFrame(index=pd.RangeIndex(n)), pd.DataFrame(
            index=pd.RangeIndex(n)
        )
    cv = wh.table("customer_value")
    newest = cv.filter(cv.computed_at == cv.computed_at.max())
    newest = newest.select(_cid=newest.customer_id, _clv=newest.predicted_clv)
    j = h.join(newest, h.customer_id == newest._cid)
    frames = []
    for col in ("p_from", "p_to"):
        part = j.filter(j[col].notnull())
        frames.append(
            part.group_by(["stage", col])
            .aggregate(s=part._clv.sum(), c=part._clv.count())
            .to_pandas()
        )
    out = []
    for value in ("s", "c"):
        start = _pivot(frames[0].rename(columns={value: "n"}), "p_from", n, float)
        stop = _pivot(frames[1].rename(columns={value: "n"}), "p_to", n, float)
        out.append((start - stop.reindex(columns=start.columns, fill_value=0)).cumsum())
    return out[0], out[1]


def _none_yet(wh: Warehouse, table: str) -> bool:
    """Whether `table` has no rows (known for DuckDB only; elsewhere False)."""
    if wh.capabilities.name != "duckdb":
        return False
    return wh.con.con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None


def _pivot(df: pd.DataFrame, col: str, n: int, dtype: type = np.int64) -> pd.DataFrame:
    df = df.dropna(subset=[col])
    if df.empty:
        return pd.DataFrame(index=pd.RangeIndex(n))
    wide = df.pivot_table(
        index=col, columns="stage", values="n", aggfunc="sum", fill_value=0
    )
    wide.index = wide.index.astype(int)
    return wide.reindex(range(n), fill_value=0).astype(dtype)


def as_date(d: date | datetime) -> date:
    return d.date() if isinstance(d, datetime) else d
