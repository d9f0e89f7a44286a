"""Value features for stage rules: `p_alive()` evaluated at every period end of history.

Semantics (docs/stage-models.md, "Value features"): a value feature is evaluated as of
each period end with the *latest* fitted BG/NBD parameters in `value_fits` (written by
`clm clv fit` or `clm clv predict`). At the evaluation instant E (the period end, or
the observation end for the last period) a customer's history is summarised as in
`clm.analyses.clv.summary`: x = repeat purchase days (local days of the reporting zone
with an `order_completed` event, the first not counted), t_x = weeks from the first to
the last purchase day, T = weeks from the first purchase day to the last day before E.
Then (Fader, Hardie & Lee 2005; P(alive) as in their 2008 note, eq. 6)

    P(alive) = 1                                                     if x = 0
    P(alive) = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x))

Before the first order the feature is NULL. Between purchases P(alive) falls
continuously, so for a rule `p_alive < c` the engine adds, per purchase-day state
(x, t_x), the period where T first passes the crossing point, solved from the formula:
P(alive) < c  <=>  T > (alpha + t_x) * K^(1 / (r + x)) - alpha with
K = (1/c - 1)(b + x - 1) / a. That keeps the run proportional to events, like the
`days_since` thresholds of `history`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from clm.errors import ModelError
from clm.lifecycle.calendar import BUCKET_SECONDS, Calendar, local_date
from clm.warehouse.engine import Warehouse

VALUE_KINDS = ("p_alive",)
ORDER_EVENT = "order_completed"
DAYS_PER_UNIT = {"W": 7.0, "D": 1.0}


def load_params(wh: Warehouse, model_source: str = "") -> dict[str, float]:
    """The latest converged full-period BG/NBD fit; a ModelError when there is none."""
    t = wh.table("value_fits")
    rows = (
        t.filter((t.model == "bgnbd") & t.calibration_period_end.isnull() & t.converged)
        .order_by(ibis.desc("computed_at"))
        .limit(1)
        .select("params", "time_unit")
        .to_pandas()
    )
    if rows.empty:
        raise ModelError(
            "the model uses p_alive(), which needs a converged BG/NBD fit, and the "
            "warehouse has none: run `clm clv fit` first",
            file=model_source or None,
        )
    params: dict[str, float] = json.loads(rows.params.iloc[0])
    params["days_per_unit"] = DAYS_PER_UNIT[str(rows.time_unit.iloc[0])]
    return params


def day_tables(cal: Calendar) -> tuple[ir.Table, ir.Table, ir.Table]:
    """Memtables: bucket -> local day number; local day -> period; period -> the last
    local day observed at its evaluation (`_ed`). Day numbers count from 1970-01-01."""
    return tuple(ibis.memtable(f) for f in day_frames(cal))  # type: ignore[return-value]


def day_frames(cal: Calendar) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """`day_tables` as data frames (`_bkd`, `_d`; `_dd`, `_dp`; `_pp`, `_ed`)."""
    buckets = cal.buckets_frame()
    local = pd.to_datetime(buckets.bucket * BUCKET_SECONDS, unit="s", utc=True)
    local = local.dt.tz_convert(cal.tz).dt.tz_localize(None).dt.normalize()
    days = (local - pd.Timestamp(0)) // pd.Timedelta(days=1)
    bucket_day = pd.DataFrame({"_bkd": buckets.bucket, "_d": days.astype("int64")})

    epoch = pd.Timestamp(0).date()
    first = (cal.starts[0] - epoch).days
    last_days = [
        (local_date(cal.eval_at(k), cal.tz) - epoch).days - 1 for k in range(cal.n)
    ]
    all_days = np.arange(first, last_days[-1] + 1, dtype="int64")
    ends = np.array(last_days, dtype="int64")
    day_period = pd.DataFrame(
        {"_dd": all_days, "_dp": np.searchsorted(ends, all_days, side="left")}
    )
    eval_days = pd.DataFrame(
        {"_pp": np.arange(cal.n, dtype="int64"), "_ed": ends.astype("int64")}
    )
    return bucket_day, day_period, eval_days


def slots(name: str) -> dict[str, str]:
    """Running columns: a_ new purchase days (summed), x_ last purchase day (max)."""
    return {f"a_{name}": "int64", f"x_{name}": "float64"}


def streams(
    base: ir.Table,
    name: str,
    params: dict[str, float],
    thresholds: set[float],
    cal: Calendar,
) -> tuple[list[ir.Table], ir.Table]:
    """Per-period rows (new purchase days, candidate periods) and customer-level rows
    (`_fp` first purchase period, `_ft` first purchase day)."""
    bucket_day, day_period, _ = day_tables(cal)
    orders = base.filter(base.event == ORDER_EVENT)
    orders = orders.join(bucket_day, orders.bk == bucket_day._bkd)
    days = orders.group_by(["customer_id", "_d"]).aggregate(p=orders.p.min())
    per = days.group_by(["customer_id", "p"]).aggregate(
        **{f"a_{name}": days.count(), f"x_{name}": days._d.max().cast("float64")}
    )
    out: list[ir.Table] = [per]
    first = days.group_by("customer_id").aggregate(_fp=days.p.min(), _ft=days._d.min())

    # Crossing points: per purchase day (the state x, t_x holds until the next one).
    w = ibis.window(group_by="customer_id", order_by="_d")
    state = days.mutate(
        _x=ibis.row_number().over(w).cast("float64"),
        _d0=days._d.min().over(ibis.window(group_by="customer_id")),
    )
    state = state.filter(state._x > 0)
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    unit = params["days_per_unit"]
    for c in sorted(thresholds):
        if not 0 < c < 1:
            continue  # P(alive) is in (0, 1]: no crossing between purchases
        k = (1.0 / c - 1.0) * (b + state._x - 1.0) / a
        t_x = (state._d - state._d0).cast("float64") / unit
        # A degenerate fit gives no crossing: k <= 0 (no logarithm: NULL here) or
        # a day beyond any calendar (dropped before the integer cast).
        log_k = ibis.ifelse(k > 0, k, ibis.null("float64")).ln()
        t_star = (alpha + t_x) * (log_k / (r + state._x)).exp() - alpha
        solved = state.mutate(_ds=state._d0.cast("float64") + t_star * unit)
        solved = solved.filter(
            solved._ds.notnull()
            & ~solved._ds.isnan()
            & ~solved._ds.isinf()
            & (solved._ds.abs() < 1e15)
        )
        # T is whole days: the first day with T >= T* and the first with T > T*.
        for day in (solved._ds.ceil(), solved._ds.floor() + 1):
            at = solved.mutate(_c=ibis.greatest(day.cast("int64"), solved._d))
            at = at.join(day_period, at._c == day_period._dd)
            out.append(at.select(customer_id=at.customer_id, p=at._dp))
    return out, first


def value(name: str, g: ir.Table, params: dict[str, float]) -> ir.Value:
    """P(alive) at each row's evaluation day `_ed` (see the module docstring)."""
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    unit = params["days_per_unit"]
    bought = g[f"a_{name}"]
    x = (bought - 1).cast("float64")
    first = g[f"_ft_{name}"].cast("float64")
    t_x = (g[f"x_{name}"] - first) / unit
    t = (g._ed.cast("float64") - first) / unit
    odds = a / (b + x - 1.0) * ((r + x) * ((alpha + t) / (alpha + t_x)).ln()).exp()
    p_alive = ibis.ifelse(x > 0, 1.0 / (1.0 + odds), 1.0)
    return ibis.ifelse(bought > 0, p_alive, ibis.null("float64"))


def finite_thresholds(found: set[float]) -> set[float]:
    return {c for c in found if math.isfinite(c)}


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={params[k]:.4g}" for k in ("r", "alpha", "a", "b"))
