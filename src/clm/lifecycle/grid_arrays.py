"""The candidate-period grid of `lifecycle.standing`, computed in NumPy over events held
in memory: the model preview's engine for every draft on its sample of customers.

`standing.grid_query` builds the grid as one SQL statement; on the preview's sample
(20,000 customers, ~214,000 events of the 10M-event benchmark) that costs ~0.1 s of
Ibis compilation and ~0.2 s of DuckDB windows, too slow for a draft sent while
someone types. Here the same grid, row for row and value for value, comes from
sorted arrays: the events are sorted once by (customer key, time), each feature's
per-period changes are placed on the union of candidate keys (customer × period) and
running values are segmented cumulative sums, maxima and forward fills. Only what
the rule language decides about an event goes through the database: a feature's
filter and its column are compiled by the engine's own rule compiler and evaluated
by DuckDB over the held events once per feature text (`Events.matching`), so
filters, JSON properties and NULLs mean exactly what they mean in `clm run`.

What each kind contributes mirrors `history._streams` and `history._feature_values`
(`p_alive()`: `value_features.streams` and `value`); the tests compare both grids on
random workspaces, every row and every value. Every feature kind is covered; a kind
added to the engine later is refused by `supported` until it is written here too
(the preview then builds the SQL grid).

Kept for the next draft (a user editing a model sends one draft after another): the
matched events per filter text, and each feature's part of a grid per calendar
(`_part`), so a draft pays for the features it changed, the union of candidate keys
and the running values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa

from clm.lifecycle import value_features
from clm.lifecycle.calendar import BUCKET_SECONDS, Calendar
from clm.lifecycle.calendar import _epoch as epoch_of
from clm.lifecycle.history import (
    DAY,
    Plan,
    _compile_rule,
    _condition,
    _event_resolver,
    plan,
)
from clm.lifecycle.rules import arrays as rule_arrays
from clm.lifecycle.rules.ast import Name
from clm.lifecycle.rules.compile import as_condition
from clm.lifecycle.rules.parser import parse, to_text
from clm.lifecycle.spec import FeatureSpec, StageModel
from clm.lifecycle.standing import _used, feature_key

# How a feature reads its column: the casts `history._streams` applies.
_CASTS = {
    "sum": "float64",
    "min": "float64",
    "max": "float64",
    "last": "string",
    "first": "string",
}


def supported(model: StageModel) -> str | None:
    """None when `build` computes `model`'s grid, else why not."""
    known = {"count", "sum", "count_distinct", "min", "max", "last", "first"}
    known |= {"days_since", "days_since_first", *value_features.VALUE_KINDS}
    for f in model.features.values():
        if f.kind not in known:
            return f"feature `{f.name}` ({f.kind}) is computed by the SQL grid only"
    return None


@dataclass
class Matched:
    """The events a feature reads: their positions in `Events`, and the value of its
    column there (None for features without one)."""

    at: np.ndarray
    values: np.ndarray | None


@dataclass
class Events:
    """Attributed events in memory: `ck` (customer key) ascending, `t` (epoch
    seconds) ascending within a customer; `table` is the same events in a database,
    with `_i` their position here, and `run` executes SQL there."""

    ck: np.ndarray
    t: np.ndarray
    table: ir.Table
    run: Callable[[str], pa.Table]
    _matched: dict[tuple[Any, ...], Matched] = field(default_factory=dict)
    _periods: dict[int, tuple[Calendar, _Periods]] = field(default_factory=dict)
    _bases: dict[int, tuple[Calendar, _Base]] = field(default_factory=dict)
    _parts: dict[tuple[Any, ...], tuple[Calendar, Part]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def base(self, cal: Calendar) -> _Base:
        """The events before `cal`'s end with their periods (kept per calendar)."""
        with self._lock:
            got = self._bases.get(id(cal))
        if got is None or got[0] is not cal:
            got = (cal, _Base(self, self.periods(cal)))
            with self._lock:
                self._bases[id(cal)] = got
                while len(self._bases) > 4:
                    self._bases.pop(next(iter(self._bases)))
        return got[1]

    def part(self, cal: Calendar, key: tuple[Any, ...]) -> Part | None:
        """A feature's part of a grid over `cal` (see `_part`), when kept."""
        with self._lock:
            got = self._parts.pop((id(cal), *key), None)
            if got is None or got[0] is not cal:
                return None
            self._parts[(id(cal), *key)] = got  # the most recently used last
            return got[1]

    def keep_part(self, cal: Calendar, key: tuple[Any, ...], part: Part) -> Part:
        # A few MB each at the preview's sample; the features of recent drafts.
        with self._lock:
            self._parts[(id(cal), *key)] = (cal, part)
            while len(self._parts) > 64:
                self._parts.pop(next(iter(self._parts)))
        return part

    def periods(self, cal: Calendar) -> _Periods:
        """`cal`'s period lookups, kept while the calendar is asked for."""
        with self._lock:
            got = self._periods.get(id(cal))
            if got is None or got[0] is not cal:
                got = (cal, _Periods(cal))
                self._periods[id(cal)] = got
                while len(self._periods) > 8:
                    self._periods.pop(next(iter(self._periods)))
            return got[1]

    def matching(self, f: FeatureSpec) -> Matched:
        """The events `f` counts (its filter holds and its column is not NULL),
        kept per filter text and column for the next draft."""
        cast = _CASTS.get(f.kind)
        where = None if f.filter is None else to_text(f.filter)
        key = (where, f.column, cast)
        with self._lock:
            got = self._matched.get(key)
        if got is not None:
            return got
        ev = self.table
        picked = ev.filter(_condition(ev, f))
        cols: dict[str, ir.Value] = {"_i": picked._i}
        if f.column:
            value = _event_resolver(picked)(Name(f.column))
            cols["_v"] = value.cast(cast) if cast else value
        rows = self.run(str(ibis.to_sql(picked.select(**cols), dialect="duckdb")))
        at = rows.column("_i").to_numpy().astype(np.int64)
        order = np.argsort(at, kind="stable")
        values = None
        if f.column:
            raw = rows.column("_v").to_numpy(zero_copy_only=False)
            values = np.asarray(raw)[order]
            if f.kind == "count_distinct":
                # Distinct values as integer codes (NULLs are filtered out above).
                # NaN is a value of its own in SQL's DISTINCT, not a NULL.
                values = pd.factorize(values, use_na_sentinel=False)[0]
                values = values.astype(np.int64)
        got = Matched(at[order], values)
        with self._lock:
            self._matched[key] = got
            while len(self._matched) > 64:  # the filters of recent drafts
                self._matched.pop(next(iter(self._matched)))
        return got


class _Periods:
    """Period lookups of a calendar for instants in epoch seconds, the way the SQL
    engine maps them: through the instant's 15-minute bucket, nothing past the end."""

    def __init__(self, cal: Calendar) -> None:
        self.cal, self.n = cal, cal.n
        self._days: tuple[np.ndarray, int, np.ndarray, np.ndarray] | None = None
        edges = np.array([epoch_of(b) for b in cal.bounds], dtype=np.int64)
        self.first_bucket = int(edges[0]) // BUCKET_SECONDS
        self.end_bucket = epoch_of(cal.observation_end) // BUCKET_SECONDS
        buckets = np.arange(self.first_bucket, self.end_bucket, dtype=np.int64)
        # The period of every bucket (`Calendar.buckets_frame`) as an array.
        self.bucket_p = (
            np.searchsorted(edges, buckets * BUCKET_SECONDS, side="right") - 1
        ).astype(np.int64)
        self.eval_s = np.array(
            [epoch_of(cal.eval_at(k)) for k in range(cal.n)], dtype=np.int64
        )

    def days(self) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """For `p_alive()` (`value_features.day_frames`): the local day number of
        every bucket, the first day the calendar covers, the period of each day
        from it on, and each period's last observed day."""
        if self._days is None:
            bucket_day, day_period, eval_days = value_features.day_frames(self.cal)
            self._days = (
                bucket_day["_d"].to_numpy(np.int64),
                int(day_period["_dd"].iloc[0]),
                day_period["_dp"].to_numpy(np.int64),
                eval_days["_ed"].to_numpy(np.int64),
            )
        return self._days

    def of(self, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(period, valid): the period holding each instant; invalid before the
        calendar or at/after the observation end (the period is then 0)."""
        at = seconds // BUCKET_SECONDS - self.first_bucket
        ok = (at >= 0) & (at < len(self.bucket_p))
        return self.bucket_p[np.where(ok, at, 0)], ok


class _Base:
    """The held events before a calendar's end: period, dense customer index and
    key (customer index × n + period) of each, and the distinct keys."""

    def __init__(self, events: Events, per: _Periods) -> None:
        self.per, self.n = per, per.n
        ev_p, ok = per.of(events.t)
        keep = np.flatnonzero(ok)
        self.t, self.p = events.t[keep], ev_p[keep]
        ck = events.ck[keep]
        # Where each held event went (-1: past the end), to map a feature's matches.
        self.where = np.full(len(events.t), -1, dtype=np.int64)
        self.where[keep] = np.arange(len(keep))
        new = _starts(ck)
        self.cust = np.cumsum(new) - 1
        self.names = ck[new]
        self.key = self.cust * self.n + self.p  # sorted: events are in time order
        first = _starts(self.key)
        self.ukey = self.key[first]
        self.ukey_of = np.cumsum(first) - 1  # each event's distinct key


class _Ev:
    """A place on the grid given as held events (indices into the events before
    the end): each at the row of its own customer and period."""

    def __init__(self, i: np.ndarray) -> None:
        self.i = i


Where = _Ev | np.ndarray  # events, or grid keys (customer index × n + period)


class _Grid:
    """The candidate keys (customer index × n + period) and how to place values on
    them."""

    def __init__(self, keys: np.ndarray, n: int, base: _Base) -> None:
        self.keys = keys  # sorted, unique
        self.n = n
        self.cust = keys // n
        self.p = keys % n
        first = _starts(self.cust)
        self.start = np.flatnonzero(first)  # first row of each customer
        self.seg = np.cumsum(first) - 1  # customer segment of each row
        self.seg_start = self.start[self.seg]
        self.everywhere = np.ones(len(keys), dtype=bool)
        # The events' distinct keys are sorted, which keeps this search cheap.
        self.ukey_pos = np.searchsorted(keys, base.ukey)
        self.ukey_of = base.ukey_of

    def pos(self, where: Where) -> np.ndarray:
        if isinstance(where, _Ev):
            return self.ukey_pos[self.ukey_of[where.i]]
        return np.searchsorted(self.keys, where)

    def running_sum(
        self, changes: list[tuple[np.ndarray, np.ndarray]], integer: bool
    ) -> Any:
        """Per row: the sum of the changes (keys, amounts) at or before it, within
        its customer."""
        size = len(self.keys)
        pos = np.concatenate([self.pos(k) for k, _ in changes])
        amounts = np.concatenate([a for _, a in changes]).astype(np.float64)
        acc = np.bincount(pos, weights=amounts, minlength=size)
        if integer:
            # Counts: exact in float64 (and bincount is much faster than add.at).
            counts = acc.round().astype(np.int64)
            total = np.cumsum(counts)
            return total - (total[self.seg_start] - counts[self.seg_start])
        # skipna=False: a NaN amount makes every later sum NaN, as in SQL.
        return pd.Series(acc).groupby(self.seg).cumsum(skipna=False).to_numpy()

    def last_index(self, rows: np.ndarray) -> np.ndarray:
        """Per row: the latest of `rows` (row positions, ascending) at or before it
        within its customer; -1 where there is none."""
        mark = np.full(len(self.keys), -1, dtype=np.int64)
        mark[rows] = rows
        latest = np.maximum.accumulate(mark)
        return np.where(latest >= self.seg_start, latest, -1)


def _unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values. The keys come as runs already sorted (each feature's
    in customer and time order), which the stable sort (timsort) merges in near
    linear time; np.unique hashes first and is several times slower here."""
    ordered = np.sort(keys, kind="stable")
    return ordered[_starts(ordered)] if len(ordered) else ordered


def _starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts (a mask)."""
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return first


def hold(
    con: Any,
    name: str,
    events: ir.Table,
    run: Callable[[str], pa.Table] | None = None,
) -> Events:
    """Store `events` (`lifecycle.snapshot.customer_events`: `_ck`, `t`, columns)
    as table `name` of the Ibis DuckDB backend `con`, with `_i` their position in
    (customer key, time) order, and hold keys and times as arrays. `run`: how to
    run SQL on that database later (default: a new cursor of `con` per query)."""
    ordered = events.mutate(_i=ibis.row_number().over(order_by=[events._ck, events.t]))
    con.create_table(name, ordered, overwrite=True)
    table = con.table(name)
    got = con.con.execute(f'SELECT _ck, t FROM "{name}" ORDER BY _i').to_arrow_table()
    ck = got.column("_ck").to_numpy().astype(np.int64)
    t = got.column("t").to_numpy().astype(np.int64)

    def cursor_run(sql: str) -> pa.Table:
        cursor = con.con.cursor()
        try:
            return cursor.execute(sql).to_arrow_table()
        finally:
            cursor.close()

    return Events(ck, t, table, run or cursor_run)


def build(
    model: StageModel,
    events: Events,
    cal: Calendar,
    value_params: dict[str, float] | None = None,
) -> tuple[Held, Plan]:
    """customer_id (key), p, f_<feature> of the features `model`'s rules read: what
    `standing.grid_query` gives for the same events, calendar and fit
    (`value_params`, what `p_alive()` reads) as `Held.table`."""
    plan(model)  # refuses what the history engine refuses, the same way
    pl = plan(_used(model))
    why = supported(pl.model)
    if why is not None:
        raise ValueError(why)
    if pl.value_thresholds and not value_params:
        raise ValueError(f"model `{model.name}`: p_alive() needs value_params")
    base = events.base(cal)
    n = base.n

    # Per feature: candidate keys, and what makes its column once the grid is
    # known; kept per feature (and the rules' thresholds on it) for the next draft.
    extra: list[np.ndarray] = [base.ukey]
    later: list[Callable[[_Grid], tuple[str, Column]]] = []
    for f in pl.model.features.values():
        make: Callable[[], Part]
        if f.kind in value_features.VALUE_KINDS:
            assert value_params is not None
            crossings = tuple(sorted(pl.value_thresholds[f.name]))
            fit = tuple(sorted(value_params.items()))
            key: tuple[Any, ...] = (feature_key(f), crossings, fit)
            make = partial(_p_alive, f, crossings, value_params, events, base)
        else:
            days = tuple(sorted(d for d in pl.thresholds.get(f.name, ()) if d > 0))
            key = (feature_key(f), days)
            make = partial(_part, f, days, events, base)
        part = events.part(cal, key) or events.keep_part(cal, key, make())
        extra += part[0]
        later.append(part[1])

    keys = _unique(np.concatenate(extra))
    if pl.dense:
        # Every period from each customer's first candidate to the last one.
        starts = np.flatnonzero(_starts(keys // n))
        c0, p0 = keys[starts] // n, keys[starts] % n
        counts = n - p0
        rep = np.repeat(c0 * n + p0, counts)
        offsets = np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts)
        keys = rep + offsets
    grid = _Grid(keys, n, base)
    columns = dict(make(grid) for make in later)
    return Held(base.names[grid.cust], grid.p, columns), pl


Part = tuple[list[np.ndarray], Callable[["_Grid"], tuple[str, "Column"]]]


def _part(
    f: FeatureSpec, thresholds: tuple[int, ...], events: Events, base: _Base
) -> Part:
    """A feature's candidate keys and the maker of its column (what
    `history._streams` and `_feature_values` do for it)."""
    n, per = base.n, base.per
    cust, t, p, key = base.cust, base.t, base.p, base.key
    got = events.matching(f)
    pos = base.where[got.at]
    ok = pos >= 0
    at, values = pos[ok], (None if got.values is None else got.values[ok])
    extra: list[np.ndarray] = []

    def window_end_s(seconds: np.ndarray) -> tuple[np.ndarray, Any]:
        assert f.within_days is not None
        return per.of(seconds + round(f.within_days * DAY))

    if f.kind in ("count", "sum"):
        amount = (
            np.ones(len(at), dtype=np.int64)
            if f.kind == "count"
            else np.asarray(values, dtype=np.float64)
        )
        changes = [_summed(key[at], amount)]
        if f.within_days is not None or f.within_periods is not None:
            # -x in the period where each event has left the window.
            if f.within_periods is not None:
                e = p[at] + f.within_periods
                gone = e < n
            else:
                e, gone = window_end_s(t[at])
            changes.append(_summed(cust[at][gone] * n + e[gone], -amount[gone]))
            extra.append(changes[-1][0])
        return extra, _additive(f, changes)
    if f.kind == "count_distinct":
        assert values is not None
        changes = [
            _summed(k, a) for k, a in _distinct(f, cust[at], t[at], p[at], values, per)
        ]
        return [k for k, _ in changes], _additive(f, changes)
    if f.kind in ("min", "max"):
        return extra, _extreme(f, at, key[at], np.asarray(values, np.float64))
    if f.kind in ("last", "days_since"):
        ends = _ends(key[at])
        last = at[ends]  # the latest matching event of each key
        lt = t[last]
        if f.kind == "days_since":
            for v in thresholds:
                c, ok_c = per.of(lt + (v * DAY - 1))
                extra.append(cust[last][ok_c] * n + c[ok_c])
            return extra, _since(f, last, lt, per)
        if f.within_periods is not None:
            e = p[last] + f.within_periods
            ok_e = e < n
            extra.append(cust[last][ok_e] * n + e[ok_e])
        elif f.within_days is not None:
            e, ok_e = window_end_s(lt)
            extra.append(cust[last][ok_e] * n + e[ok_e])
        lv = np.asarray(values, dtype=object)[ends]
        return extra, _last(f, last, lt, lv, per)
    if f.kind in ("first", "days_since_first"):
        firsts = np.flatnonzero(_starts(cust[at]))  # earliest match per customer
        fc = cust[at][firsts]
        fp, ft = p[at][firsts], t[at][firsts]
        fv = None if values is None else np.asarray(values, dtype=object)[firsts]
        if f.kind == "days_since_first":
            for v in thresholds:
                c, ok_c = per.of(ft + (v * DAY - 1))
                extra.append(fc[ok_c] * n + c[ok_c])
        return extra, _first(f, fc, fp, ft, fv, per, len(base.names))
    # `supported` and the model loader stop any other kind before here.
    raise ValueError(f"feature `{f.name}`: kind {f.kind!r}")


# What `value_features.streams` reads: order events, the same filter text.
_ORDERS = FeatureSpec(
    name="_orders",
    kind="count",
    filter=parse(f"event = '{value_features.ORDER_EVENT}'"),
)


def _p_alive(
    f: FeatureSpec,
    crossings: tuple[float, ...],
    params: dict[str, float],
    events: Events,
    base: _Base,
) -> Part:
    """`p_alive()` (`value_features`): purchase days per customer, the periods
    where P(alive) crosses a constant of the rules, and the value at each row."""
    n, per = base.n, base.per
    bucket_day, first_day, day_period, eval_day = per.days()
    pos = base.where[events.matching(_ORDERS).at]
    at = pos[pos >= 0]
    day = bucket_day[base.t[at] // BUCKET_SECONDS - per.first_bucket]
    cust, p = base.cust[at], base.p[at]
    # Purchase days: per (customer, local day) the first period (events are in
    # time order, so the first occurrence).
    first = np.flatnonzero(_starts(cust * (1 << 32) + day)) if len(at) else at
    dc, dd, dp = cust[first], day[first], p[first]
    key = dc * n + dp
    bought = _summed(key, np.ones(len(key), dtype=np.int64))
    # Each customer's first purchase day, and each purchase day's rank in it.
    starts = _starts(dc)
    owner = np.cumsum(starts) - 1
    d0 = dd[starts][owner] if len(dd) else dd
    rank = np.arange(len(dd)) - np.flatnonzero(starts)[owner] if len(dd) else dd
    extra: list[np.ndarray] = [bought[0]]
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    unit = params["days_per_unit"]
    state = rank > 0
    sx, sd, s0, sc = rank[state], dd[state], d0[state], dc[state]
    with np.errstate(all="ignore"):
        for c in crossings:
            if not 0 < c < 1:
                continue  # P(alive) is in (0, 1]: no crossing between purchases
            k = (1.0 / c - 1.0) * (b + sx - 1.0) / a
            t_x = (sd - s0).astype(np.float64) / unit
            t_star = (alpha + t_x) * np.exp(np.log(k) / (r + sx)) - alpha
            d_star = s0 + t_star * unit
            # T is whole days: the first day with T >= T* and the first with T > T*.
            for when in (np.ceil(d_star), np.floor(d_star) + 1):
                # A degenerate fit gives no crossing: k <= 0 (no logarithm) or a
                # day beyond any calendar; `value_features.streams` drops the same.
                ok = (k > 0) & np.isfinite(when) & (np.abs(when) < 1e15)
                cday = np.maximum(np.where(ok, when, 0).astype(np.int64), sd)
                i = cday - first_day
                ok &= (i >= 0) & (i < len(day_period))
                extra.append(sc[ok] * n + day_period[np.where(ok, i, 0)][ok])
    customers = len(base.names)
    first_of = np.zeros(customers, dtype=np.int64)
    first_of[dc[starts]] = dd[starts]
    last_day = dd[_ends(key)] if len(key) else dd

    def make(g: _Grid) -> tuple[str, Column]:
        n_days = g.running_sum([bought], integer=True)
        _, idx = _latest(g, bought[0])
        latest = last_day[idx] if len(last_day) else np.zeros(len(idx), np.int64)
        start = first_of[g.cust].astype(np.float64)
        x = (n_days - 1).astype(np.float64)
        t_x = (latest - start) / unit
        t = (eval_day[g.p].astype(np.float64) - start) / unit
        with np.errstate(all="ignore"):
            odds = (
                a
                / (b + x - 1.0)
                * np.exp((r + x) * np.log((alpha + t) / (alpha + t_x)))
            )
            value = np.where(x > 0, 1.0 / (1.0 + odds), 1.0)
        known = n_days > 0
        return f"f_{f.name}", Column(np.where(known, value, 0.0), known, "float64")

    return extra, make


def _summed(keys: np.ndarray, amounts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Amounts added up per key: (sorted distinct keys, sums)."""
    if len(keys) and np.any(keys[1:] < keys[:-1]):
        order = np.argsort(keys, kind="stable")
        keys, amounts = keys[order], amounts[order]
    if len(keys) == 0:
        return keys, amounts
    starts = np.flatnonzero(_starts(keys))
    return keys[starts], np.add.reduceat(amounts, starts)


def _ends(keys: np.ndarray) -> np.ndarray:
    """Positions of the last element of each run of equal (sorted) keys."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    return np.flatnonzero(last)


def _round6(x: np.ndarray) -> np.ndarray:
    """DuckDB's round(x, 6), which the SQL grid applies: to the nearest, halves away
    from zero (np.round takes halves to the even neighbour)."""
    scaled = x * 1e6
    whole = np.trunc(scaled)
    half = np.abs(scaled - whole) == 0.5
    with np.errstate(invalid="ignore"):
        return np.where(half, whole + np.sign(scaled), np.round(scaled)) / 1e6


def _additive(
    f: FeatureSpec, changes: list[tuple[np.ndarray, np.ndarray]]
) -> Callable[[_Grid], tuple[str, Column]]:
    def make(g: _Grid) -> tuple[str, Column]:
        if f.kind == "sum":
            total = g.running_sum(changes, integer=False)
            # Windows add and later subtract the same amounts: round away the dust,
            # as the SQL grid does.
            return f"f_{f.name}", Column(_round6(total), g.everywhere, "float64")
        return f"f_{f.name}", Column(
            g.running_sum(changes, True), g.everywhere, "int64"
        )

    return make


def _distinct(
    f: FeatureSpec,
    cust: np.ndarray,
    t: np.ndarray,
    p: np.ndarray,
    codes: np.ndarray,
    per: _Periods,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """count_distinct as +1/-1 changes: without a window, +1 in the period of a
    value's first occurrence; with one, per island of overlapping presences (as
    `history._distinct_windows`)."""
    n = per.n
    width = int(codes.max()) + 1 if len(codes) else 1
    pair = cust * width + codes
    # Events of one (customer, value) together, in time order (stable sort).
    order = np.argsort(pair, kind="stable")
    pair, t, p, cust = pair[order], t[order], p[order], cust[order]
    if f.within_days is None and f.within_periods is None:
        first = np.flatnonzero(_starts(pair))
        return [(cust[first] * n + p[first], np.ones(len(first), dtype=np.int64))]
    # Occurrences: per (customer, value, period) the latest time.
    occ = _ends(pair * n + p)
    pair, t, p, cust = pair[occ], t[occ], p[occ], cust[occ]
    if f.within_periods is not None:
        e = p + f.within_periods
        e = np.where(e < n, e, n)
    else:
        assert f.within_days is not None
        e, ok = per.of(t + round(f.within_days * DAY))
        e = np.where(ok, e, n)
    group = np.flatnonzero(_starts(pair))
    gid = np.repeat(np.arange(len(group)), np.diff(np.append(group, len(pair))))
    # How far the value's presence reaches so far; an occurrence at or after the
    # reach of the earlier ones starts a new island.
    reach = pd.Series(e).groupby(gid).cummax().to_numpy()
    prev = np.empty_like(reach)
    prev[0:1] = -1
    prev[1:] = reach[:-1]
    start = np.zeros(len(pair), dtype=bool)
    start[group] = True
    start |= p >= prev
    islands = np.flatnonzero(start)
    s = p[islands]
    ends = np.maximum.reduceat(e, islands) if len(islands) else e[:0]
    ic = cust[islands]
    plus = (ic * n + s, np.ones(len(islands), dtype=np.int64))
    gone = ends < n
    minus = (ic[gone] * n + ends[gone], -np.ones(int(gone.sum()), dtype=np.int64))
    return [plus, minus]


def _extreme(
    f: FeatureSpec, at: np.ndarray, keys: np.ndarray, values: np.ndarray
) -> Callable[[_Grid], tuple[str, Column]]:
    """min/max so far (NULL before the first matching event). NaN orders above
    every number, as in DuckDB: a max is NaN once a NaN was seen, a min only while
    nothing but NaN was."""
    biggest = f.kind == "max"

    def make(g: _Grid) -> tuple[str, Column]:
        size = len(g.keys)
        found = np.full(size, np.nan)  # per row: the extreme of its numbers
        nan_here = np.zeros(size, dtype=bool)
        if len(keys):
            starts = np.flatnonzero(_starts(keys))
            isnan = np.isnan(values)
            red = np.maximum if biggest else np.minimum
            fill = -np.inf if biggest else np.inf
            rows = g.pos(_Ev(at[starts]))
            numbers = np.logical_or.reduceat(~isnan, starts)
            found[rows] = np.where(
                numbers, red.reduceat(np.where(isnan, fill, values), starts), np.nan
            )
            nan_here[rows] = np.logical_or.reduceat(isnan, starts)
        s = pd.Series(found).groupby(g.seg)
        run = (s.cummax() if biggest else s.cummin()).groupby(g.seg).ffill()
        so_far = run.to_numpy()
        numbers_seen = ~np.isnan(so_far)
        nan_seen = pd.Series(nan_here).groupby(g.seg).cummax().to_numpy(bool)
        if biggest:
            out = np.where(nan_seen, np.nan, so_far)
        else:
            out = np.where(numbers_seen, so_far, np.nan)
        known = numbers_seen | nan_seen
        return f"f_{f.name}", Column(np.where(known, out, 0.0), known, "float64")

    return make


def _latest(g: _Grid, where: Where) -> tuple[np.ndarray, np.ndarray]:
    """Per grid row: whether one of the places `where` (distinct rows, in key
    order: events, the latest matching one of each row, or keys) is at or before
    it within its customer, and which (an index into `where`)."""
    rows = g.pos(where)
    latest = g.last_index(rows)
    has = latest >= 0
    src = np.zeros(len(g.keys), dtype=np.int64)
    src[rows] = np.arange(len(rows))
    return has, src[np.where(has, latest, 0)]


def _last(
    f: FeatureSpec,
    last: np.ndarray,
    lt: np.ndarray,
    lv: np.ndarray,
    per: _Periods,
) -> Callable[[_Grid], tuple[str, Column]]:
    """The latest matching value so far; with a window, NULL once it has left."""

    def make(g: _Grid) -> tuple[str, Column]:
        has, idx = _latest(g, _Ev(last))
        alive = has.copy()
        if len(lt) == 0:
            return f"f_{f.name}", Column.null(len(g.keys), "string")
        if f.within_days is not None:
            alive &= per.eval_s[g.p] - lt[idx] <= round(f.within_days * DAY)
        elif f.within_periods is not None:
            lp = g.p[g.pos(_Ev(last))][idx]
            alive &= g.p < lp + f.within_periods
        return f"f_{f.name}", Column(np.where(alive, lv[idx], ""), alive, "string")

    return make


def _since(
    f: FeatureSpec, last: np.ndarray, lt: np.ndarray, per: _Periods
) -> Callable[[_Grid], tuple[str, Column]]:
    """Whole days from the latest matching event to each row's evaluation."""

    def make(g: _Grid) -> tuple[str, Column]:
        if len(lt) == 0:
            return f"f_{f.name}", Column.null(len(g.keys), "int64")
        has, idx = _latest(g, _Ev(last))
        days = (per.eval_s[g.p] - lt[idx]) // DAY
        return f"f_{f.name}", Column(np.where(has, days, 0), has, "int64")

    return make


def _first(
    f: FeatureSpec,
    fc: np.ndarray,
    fp: np.ndarray,
    ft: np.ndarray,
    fv: np.ndarray | None,
    per: _Periods,
    customers: int,
) -> Callable[[_Grid], tuple[str, Column]]:
    """first(…) and days_since_first(…): from the customer's earliest matching event
    on (NULL before it)."""

    def make(g: _Grid) -> tuple[str, Column]:
        first_p = np.full(customers, np.iinfo(np.int64).max, dtype=np.int64)
        first_p[fc] = fp
        seen = g.p >= first_p[g.cust]
        slot = np.zeros(customers, dtype=np.int64)
        slot[fc] = np.arange(len(fc))
        i = slot[g.cust]
        if f.kind == "days_since_first":
            t0 = ft[i] if len(ft) else np.zeros(len(i), dtype=np.int64)
            days = (per.eval_s[g.p] - t0) // DAY
            return f"f_{f.name}", Column(np.where(seen, days, 0), seen, "int64")
        assert fv is not None
        out = np.where(seen, fv[i] if len(fv) else "", "")
        return f"f_{f.name}", Column(out, seen, "string")

    return make


@dataclass
class Column:
    """A grid column: `data` with a filler (0, 0.0 or '') where `known` is False
    (SQL's NULL), and its type as Ibis names it."""

    data: np.ndarray
    known: np.ndarray
    dtype: str

    @classmethod
    def null(cls, size: int, dtype: str) -> Column:
        filler: Any = "" if dtype == "string" else 0
        data = np.full(size, filler, dtype=object if dtype == "string" else dtype)
        return cls(data, np.zeros(size, dtype=bool), dtype)

    def arrow(self) -> pa.Array:
        kind = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
        return pa.array(self.data, kind[self.dtype], mask=~self.known)


class Held:
    """A grid built here, kept for the drafts that read it: customer keys and
    periods, the feature columns, and where each customer's rows start and end."""

    def __init__(
        self, customer_id: np.ndarray, p: np.ndarray, columns: dict[str, Column]
    ) -> None:
        self.customer_id, self.p, self.columns = customer_id, p, columns
        self.first = np.flatnonzero(_starts(customer_id))
        self.last_rows = _ends(customer_id)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Held:
        """A grid from an Arrow table sorted by customer_id and p."""
        columns = {}
        for name in table.column_names:
            if not name.startswith("f_"):
                continue
            col = table.column(name).combine_chunks()
            known = col.is_valid().to_numpy(zero_copy_only=False)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                data = np.asarray(col.fill_null("").to_numpy(zero_copy_only=False))
                dtype = "string"
            else:
                data = col.fill_null(0).to_numpy(zero_copy_only=False)
                dtype = str(data.dtype)
            columns[name] = Column(data, known, dtype)
        return cls(
            table.column("customer_id").to_numpy(),
            table.column("p").to_numpy(),
            columns,
        )

    @property
    def table(self) -> pa.Table:
        """As an Arrow table: customer_id, p, f_<feature>."""
        out = {
            "customer_id": pa.array(self.customer_id, pa.int64()),
            "p": pa.array(self.p, pa.int64()),
        }
        return pa.table(out | {k: c.arrow() for k, c in self.columns.items()})

    def schema(self) -> ibis.Schema:
        types = {k: c.dtype for k, c in self.columns.items()}
        return ibis.schema({"customer_id": "int64", "p": "int64"} | types)

    def column(self, name: str) -> rule_arrays.Value:
        c = self.columns[name]
        return c.data, c.known

    def check(self, model: StageModel) -> None:
        """Compile `model`'s rules (not run) against the grid's feature types: the
        rule compiler raises a rule's type errors, with the messages `clm run`
        gives (features named as in the model)."""
        types = {k.removeprefix("f_"): c.dtype for k, c in self.columns.items()}
        features = ibis.table(types, name="features")
        for stage in model.stages:
            as_condition(
                _compile_rule(model, stage.name, stage.when, lambda n: features[n.name])
            )

    def stage_counts(self, model: StageModel) -> dict[str, int]:
        """Customers per stage as of the grid's last period (the rules over each
        row, as `standing.stages_query` has them): forward-only the furthest stage
        matched at any row, dynamic the stage of the last row. `model`'s rules must
        have compiled (`rules.compile` checks their types)."""
        forward = model.progression == "forward_only"
        rows = None if forward else self.last_rows
        size = len(self.p) if forward else len(self.last_rows)

        def column(node: Name) -> rule_arrays.Value:
            data, known = self.column(f"f_{node.name}")
            return (data, known) if rows is None else (data[rows], known[rows])

        n = len(model.stages)
        rank = np.zeros(size, dtype=np.int64)
        open_ = np.ones(size, dtype=bool)  # no stage matched yet: first match wins
        for i, stage in enumerate(model.stages):
            hit = rule_arrays.condition(stage.when, column, size) & open_
            rank[hit] = n - i
            open_ &= ~hit
        if forward and size:
            rank = np.maximum.reduceat(rank, self.first)
        counts = np.bincount(rank, minlength=n + 1)
        return {s.name: int(counts[n - i]) for i, s in enumerate(model.stages)}
