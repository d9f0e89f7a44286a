"""Stages of a `dynamic` model as of one day, without replaying its history.

Under `progression: dynamic` a customer's stage in a period depends only on the
features as of that period's evaluation instant, never on earlier stages. So the
stage as of the last period (the one containing `as_of`, evaluated at the
observation end: the end of `as_of`) is found with one aggregate per customer over
the events before the observation end, followed by the model's compiled rules, first
match wins. That is what `lifecycle.history` decides for the same period; this module
restates its window rules for a single instant E (the observation end, epoch seconds,
events' times floored to seconds like there):

- `within = Nd`: an event at t counts while t + N days >= E (the history subtracts it
  in the period containing t + N days; past E it never leaves);
- `within = N` periods: an event counts when its period is one of the last N, i.e.
  t >= the start of period (last - N + 1);
- `last(…, within …)` is alive on the same terms, for the latest matching event;
- `days_since…` are floor((E - t) / day).

Not covered, callers fall back to the replay: `forward_only` models (the furthest
stage reached so far needs the history) and `p_alive()` features (their values come
from a fitted model evaluated per period; see `lifecycle.value_features`).

Customers are those the history engine would give a row: at least one attributed,
non-bot event before E. Everything is Ibis, like the history engine.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from clm.identity.resolve import CustomerKeys, customer_keys
from clm.lifecycle import value_features
from clm.lifecycle.calendar import (
    end_of_local_day,
    local_date,
    local_midnight_utc,
    period_start,
)
from clm.lifecycle.history import (
    DAY,
    _column,
    _compile_rule,
    _condition,
    _end_of_date,
    _epoch,
    plan,
)
from clm.lifecycle.rules import analysis
from clm.lifecycle.rules.ast import Name
from clm.lifecycle.rules.compile import as_condition
from clm.lifecycle.spec import FeatureSpec, StageModel
from clm.warehouse.engine import Warehouse
from clm.warehouse.schema import EVENTS

T = TypeVar("T")
WINDOWED = ("count", "sum", "count_distinct", "last")


def supported(model: StageModel) -> str | None:
    """None when `stages_at` answers exactly for `model`, else why it cannot."""
    if model.progression != "dynamic":
        return f"progression {model.progression!r} depends on the stage history"
    for f in model.features.values():
        if f.kind in value_features.VALUE_KINDS:
            return f"feature `{f.name}` ({f.kind}) is evaluated per period"
    return None


def observation_end(wh: Warehouse, tz: ZoneInfo, as_of: date | None) -> datetime | None:
    """The end of `as_of`, else of the last event's local day (None: no events)."""
    if as_of is not None:
        return _end_of_date(as_of, tz)
    raw = wh.table("events")
    last = raw.aggregate(last=raw.timestamp.max()).to_pyarrow()["last"][0].as_py()
    return None if last is None else end_of_local_day(last, tz)


def _periods_start(grain: str, tz: ZoneInfo, end: datetime, n: int) -> int:
    """Epoch seconds of the start of the n-th last period before `end` (n >= 1)."""
    start = period_start(local_date(end - timedelta(microseconds=1), tz), grain)
    for _ in range(n - 1):
        start = period_start(start - timedelta(days=1), grain)
    return _epoch_of(local_midnight_utc(start, tz))


def _epoch_of(instant: datetime) -> int:
    return int((instant - datetime(1970, 1, 1)).total_seconds())


def _features(
    model: StageModel, base: ir.Table, end_s: int, tz: ZoneInfo
) -> dict[str, ir.Value]:
    """One aggregate per feature over a customer's events: its value at `end_s`."""
    out: dict[str, ir.Value] = {}
    # Only what the rules read: the other features (kept for metrics) cost time.
    used = set().union(*(analysis.names(s.when) for s in model.stages))
    for f in model.features.values():
        if f.name not in used:
            continue
        cond = _condition(base, f)
        # Only these kinds read `within` in the history engine (min/max with a
        # window are refused by `plan`; days_since and first ignore it).
        if f.kind in WINDOWED and f.within_days is not None:
            cond = cond & (base.t + round(f.within_days * DAY) >= end_s)
        elif f.kind in WINDOWED and f.within_periods is not None:
            lo = _periods_start(model.grain, tz, _at(end_s), f.within_periods)
            cond = cond & (base.t >= lo)
        out[f"f_{f.name}"] = _aggregate(f, base, cond, end_s)
    return out


def _at(seconds: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def _aggregate(
    f: FeatureSpec,
    base: ir.Table,
    cond: ir.BooleanValue,
    end_s: int,
) -> ir.Value:
    # Aggregates with `where` (a FILTER clause: rows whose condition is false or
    # NULL are left out, as `as_condition` does) run several times faster on DuckDB
    # than sums of CASE expressions.
    cond = as_condition(cond)
    if f.kind == "count":
        return base.count(where=cond).fill_null(0).cast("int64")
    if f.kind == "sum":
        value = _column(base, f).cast("float64")
        return value.sum(where=cond).fill_null(0.0).round(6)
    if f.kind in ("min", "max"):
        v = _column(base, f).cast("float64")
        return v.min(where=cond) if f.kind == "min" else v.max(where=cond)
    if f.kind == "count_distinct":
        return _column(base, f).nunique(where=cond).fill_null(0).cast("int64")
    if f.kind in ("last", "first"):
        v = _column(base, f).cast("string")
        if f.kind == "last":
            return v.argmax(base.t, where=cond)
        return v.argmin(base.t, where=cond)
    if f.kind == "days_since":
        return ((end_s - base.t.max(where=cond)) // DAY).cast("int64")
    if f.kind == "days_since_first":
        return ((end_s - base.t.min(where=cond)) // DAY).cast("int64")
    raise ValueError(f"feature `{f.name}`: kind {f.kind!r} has no single-day form")


def customer_events(
    wh: Warehouse, keys: CustomerKeys, columns: set[str], end: datetime | None = None
) -> ir.Table:
    """The events a snapshot reads: attributed (`_ck`), bots left out, the time in
    epoch seconds (`t`), only `columns`; before `end` when given. A caller asking
    many snapshots of the same data materialises this once and passes it on."""
    raw = wh.table("events")
    if end is not None:
        raw = raw.filter(raw.timestamp < ibis.literal(end))
    ev = keys.events(wh, raw)
    cols = sorted(c for c in columns if c in EVENTS.names and c != "timestamp")
    return ev.select(*cols, _ck=ev.ck, t=_epoch(ev.timestamp))


def stages_at(
    wh: Warehouse,
    model: StageModel,
    *,
    timezone: str | ZoneInfo = "UTC",
    as_of: date | None = None,
    keys: CustomerKeys | None = None,
    events: ir.Table | None = None,
) -> pa.Table:
    """customer_id, stage (NULL: no rule matched) of every customer with an event
    before the observation end, as the history engine would decide them for the
    period containing `as_of` (default: the last event's day). `keys`: customer
    keys made earlier on `wh` (see `identity.resolve.CustomerKeys`), else made here;
    `events`: `customer_events` of those keys, with every column the model reads.
    """

    def named(staged: ir.Table, ck: CustomerKeys) -> pa.Table:
        return ck.named(staged, "_ck").select("customer_id", "stage").to_pyarrow()

    empty = pa.table({"customer_id": pa.array([], pa.string()), "stage": []})
    return _run(wh, model, timezone, as_of, keys, events, named, empty)


def stage_counts(
    wh: Warehouse,
    model: StageModel,
    *,
    timezone: str | ZoneInfo = "UTC",
    as_of: date | None = None,
    keys: CustomerKeys | None = None,
    events: ir.Table | None = None,
) -> dict[str, int]:
    """Customers per stage as `stages_at` decides them (stages nobody is in, and
    customers without a stage, left out): one small result instead of a row per
    customer."""

    def counted(staged: ir.Table, ck: CustomerKeys) -> dict[str, int]:
        got = _counts(staged).to_pyarrow()
        return dict(
            zip(
                got.column("stage").to_pylist(),
                got.column("n").to_pylist(),
                strict=True,
            )
        )

    return _run(wh, model, timezone, as_of, keys, events, counted, {})


def stage_counts_query(
    model: StageModel, events: ir.Table, *, timezone: str | ZoneInfo, as_of: date
) -> ir.Table:
    """The query of `stage_counts` (columns stage, n) over `events`, which are
    `customer_events` with every column the model reads, for the caller to compile
    and run on a connection of its choice (the preview runs it on a cursor of its
    own per request)."""
    why = supported(model)
    if why is not None:
        raise ValueError(f"model `{model.name}`: no single-day evaluation: {why}")
    tz = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
    plan(model)  # refuses what the history engine refuses, the same way
    return _counts(_staged(model, events, tz, _end_of_date(as_of, tz)))


def _counts(staged: ir.Table) -> ir.Table:
    staged = staged.filter(staged.stage.notnull())
    return staged.group_by("stage").aggregate(n=staged.count())


def _run(
    wh: Warehouse,
    model: StageModel,
    timezone: str | ZoneInfo,
    as_of: date | None,
    keys: CustomerKeys | None,
    events: ir.Table | None,
    finish: Callable[[ir.Table, CustomerKeys], T],
    empty: T,
) -> T:
    why = supported(model)
    if why is not None:
        raise ValueError(f"model `{model.name}`: no single-day evaluation: {why}")
    tz = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
    pl = plan(model)  # refuses what the history engine refuses, the same way
    end = observation_end(wh, tz, as_of)
    if end is None:
        return empty
    if keys is not None:
        base = events
        if base is None:
            base = customer_events(wh, keys, pl.columns, end)
        return finish(_staged(model, base, tz, end), keys)
    with customer_keys(wh) as ck:
        base = customer_events(wh, ck, pl.columns, end)
        return finish(_staged(model, base, tz, end), ck)


def _staged(model: StageModel, base: ir.Table, tz: ZoneInfo, end: datetime) -> ir.Table:
    """_ck, stage: the features at `end` per customer key, then the rules."""
    end_s = _epoch_of(end)
    base = base.filter(base.t < end_s)  # no-op when already cut at `end`
    values = base.group_by("_ck").aggregate(**_features(model, base, end_s, tz))

    def resolve(node: Name) -> ir.Value:
        return values[f"f_{node.name}"]

    branches = [
        (as_condition(_compile_rule(model, s.name, s.when, resolve)), s.name)
        for s in model.stages
    ]
    return values.select("_ck", stage=ibis.cases(*branches, else_=ibis.null("string")))
