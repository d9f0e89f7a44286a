"""The model preview: stage populations under a draft before it is saved.

Replaying a model is the stage step of `clm run`; on 10M events that takes minutes,
so by default a draft is evaluated on a deterministic sample of customers and the
counts are scaled up, labelled an estimate with the sample's size and a 95% margin
per stage. Three ways, chosen in this order:

- **stored**: the draft is the text of a saved model that `clm run` has run: the
  stored populations are the exact answer, read like the Stages page (ms).
- **sample** (default): every customer whose `hash(customer_id)` falls into the
  first 1/k of the hash space, k the smallest that keeps at most
  PREVIEW_CUSTOMERS; their events are found through the server's look-up tables
  (`lookups.event_keys`, by rowid) when built, else by a scan, with only the
  columns the draft reads, and kept in memory for the next draft that reads the
  same columns. Counts are scaled by (customers in the workspace / customers in the
  sample). DuckDB's `hash` is stable for a given DuckDB version, so the same draft
  on the same data gives the same answer.
- **exact** (`?exact=1`): every customer, held in memory meanwhile.

How the sample (or everyone) is evaluated, the answer's `engine`. The sample's rows
are loaded once into an in-memory DuckDB with their customer keys and attributed
events, which are also held as arrays sorted by customer and time (`Loaded`: about
3 s at 10M events, done in the background when the server's look-up tables are
ready, for the columns the saved models read, and again after an import); then:

- `grid`, every draft on the sample: the history engine's candidate-period grid of
  the features the rules read, built in NumPy (`lifecycle.grid_arrays`, equal to
  the SQL grid of `lifecycle.standing` row for row: tested), kept per feature set
  (`standing.grid_key`: grain, features, the rules' `days_since`/`p_alive`
  constants, the fit) with each feature's part kept per feature, then the rules
  over it in NumPy (`lifecycle.rules.arrays`; their types checked by the rule
  compiler first): forward-only the furthest stage matched on any row, dynamic the
  stage of the last row. ~15 ms for a draft that changes only rules, ~50-70 ms in
  all for one with a new feature, on the 10M-event benchmark. The same answer as
  the replay of the sample (tested).
- `snapshot`, exact previews (`?exact=1`) of `progression: dynamic` drafts without
  `p_alive()`: the stage as of the last day depends only on the features at that
  day, so one aggregate per customer and the rules give the replay's answer
  exactly (`lifecycle.snapshot`). Other exact drafts get the SQL grid over everyone.

Populations are those as of the last day of the data (the end of the data), the
same day the Overview shows. Answers are kept per draft text and data stamp in the
reader's cache, so asking again is immediate.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from clm.errors import ModelError
from clm.lifecycle import grid_arrays
from clm.lifecycle.model import load_model_text
from clm.lifecycle.spec import StageModel
from clm.warehouse.engine import Warehouse

# The sample holds at most this many customers (20,000: a new grid builds in
# ~30 ms on the 10M-event benchmark; the 95% margin of a stage holding 10% of
# customers is then ±0.4 points).
PREVIEW_CUSTOMERS = 20_000
# Read by every draft whatever it says: identity, bot flag and time.
BASE_COLUMNS = ("event_id", "type", "event", "user_id", "anonymous_id", "timestamp")
Z95 = 1.96


def _same_text(a: str, b: str) -> bool:
    """Equal but for trailing blanks (an editor's round trip adds or drops them)."""
    return [x.rstrip() for x in a.strip().splitlines()] == [
        x.rstrip() for x in b.strip().splitlines()
    ]


def _stored(r: Any, draft: StageModel) -> dict[str, Any] | None:
    """The stored populations when `draft` is a saved model that has been run."""
    from clm.server import views

    for m in r.models():
        if m.name == draft.name and m.version == draft.version:
            if not _same_text(m.text, draft.text):
                return None
            if views.show_model(r, m.name)["last_run"] is None:
                return None
            pops = views.populations(r, m.name, None)
            return {
                "method": "stored",
                "estimate": False,
                "as_of": pops["as_of"],
                "customers": pops["total"],
                "sample_customers": pops["total"],
                "sample_every": 1,
                "scale": 1.0,
                "populations": [{**row, "margin": 0} for row in pops["stages"]],
            }
    return None


def _columns(r: Any, draft: StageModel) -> list[str]:
    """The event columns an evaluation of `draft` reads (the others stay NULL)."""
    from clm.lifecycle.history import plan

    have = r.cached(
        ("preview_event_columns",),
        lambda: [str(c) for c in r.sql("SELECT * FROM events LIMIT 0").columns],
    )
    wanted = set(BASE_COLUMNS) | {"context"} | plan(draft).columns
    return [c for c in have if c in wanted]


def _sample(r: Any, k: int, cols: list[str]) -> tuple[pa.Table, pa.Table]:
    """The customers rows and the events (only `cols`) of the sample 1/k."""
    con = r.wh.con.con
    cond = f"hash(customer_id) % {k} = 0"
    customers = con.execute(f"SELECT * FROM customers WHERE {cond}").to_arrow_table()
    select = ", ".join(cols)
    look = r.look()
    if k == 1:
        sql, args = f"SELECT {select} FROM events", []
    elif look is not None:
        # The sample's rowids through the look-up; events appended since it was
        # built are the tail, scanned. Both are checked by the attribution rule
        # (in `_load`: only events whose key is a sampled identifier count).
        got = con.execute(
            f"SELECT unnest(rids) FROM {look['event_keys']} WHERE h IN "
            f"(SELECT hash(identifier) FROM customers WHERE {cond})"
        ).fetchall()
        rids = sorted(int(x[0]) for x in got)
        sql = (
            f"SELECT {select} FROM events WHERE rowid IN "
            f"(SELECT unnest(?::BIGINT[])) UNION ALL "
            f"SELECT {select} FROM events WHERE rowid >= ?"
        )
        args = [rids, int(look["last_rowid"])]
    else:
        sql = f"""SELECT {select} FROM events e WHERE
            ('user:' || trim(e.user_id)) IN (SELECT identifier FROM customers
                                             WHERE {cond})
            OR ('anon:' || trim(e.anonymous_id)) IN (SELECT identifier FROM customers
                                                     WHERE {cond})"""
        args = []
    events = con.execute(sql, args).to_arrow_table()
    return customers, events


def _last_day(r: Any) -> date | None:
    """The local day of the workspace's last event: a sample's evaluation ends where a
    run over all events would (its own last event may be days earlier)."""
    from clm.lifecycle.calendar import local_date

    row = r.wh.con.con.execute("SELECT max(timestamp) FROM events").fetchone()
    if not row or row[0] is None:
        return None
    last: datetime = row[0]  # stored as UTC without a zone
    return local_date(last, r.tz)


def _load(customers: pa.Table, events: pa.Table) -> Warehouse:
    """An in-memory warehouse holding the given rows (the caller closes it)."""
    from clm.identity.identifiers import event_key_sql

    mem = Warehouse.duckdb(None)
    con = mem.con.con
    con.register("customers_src", customers)
    con.execute("INSERT INTO customers SELECT * FROM customers_src")
    con.unregister("customers_src")
    con.register("events_src", events)
    names = ", ".join(events.column_names)
    # Only events whose key is a sampled identifier: anything else (the
    # collector's tail, a hash collision) would count as a customer of its own.
    con.execute(
        f"INSERT INTO events ({names}) SELECT {names} FROM events_src "
        f"WHERE {event_key_sql()} IN (SELECT identifier FROM customers)"
    )
    con.unregister("events_src")
    return mem


@dataclass
class Built:
    """A grid of `Loaded`: in NumPy (`held`), or for kinds the NumPy grid lacks
    as the in-memory tables `table` and `last` name (`held` None)."""

    table: ir.Table
    last: ir.Table
    held: grid_arrays.Held | None = None


class Loaded:
    """A sample's attributed events (`lifecycle.snapshot.customer_events`) in an
    in-memory DuckDB, kept in the reader's cache for the next draft that reads the
    same columns: a snapshot then costs one aggregate. They are a table of the
    in-memory database (not a temporary one), so concurrent drafts each read it
    through a cursor of their own instead of queueing for one connection."""

    def __init__(
        self, customers: pa.Table, events: pa.Table, arrays: bool = True
    ) -> None:
        """`arrays`: also hold the events as sorted arrays for the NumPy grid;
        without, grids are the SQL grid (cheaper for one draft over every
        customer: sorting 10M events for one grid does not pay)."""
        from clm.identity.resolve import build_customer_keys, drop_customer_keys
        from clm.lifecycle.snapshot import customer_events

        self.customers, self.raw_events = customers, events
        self.sample_customers = pc.count_distinct(
            customers.column("customer_id")
        ).as_py()
        self.wh = _load(customers, events)
        keys = build_customer_keys(self.wh, tag="preview")
        slim = customer_events(self.wh, keys, set(events.column_names))
        self.lock = threading.Lock()  # cursors and `compiled` change under it
        # Also held as sorted arrays: the NumPy grid's input (`grid_arrays`).
        self.arrays: grid_arrays.Events | None = None
        if arrays:
            self.arrays = grid_arrays.hold(
                self.wh.con, "preview_events", slim, run=self.arrow
            )
            self.events = self.arrays.table
        else:
            self.events = self.wh.con.create_table("preview_events", slim)
        drop_customer_keys(self.wh, keys)
        # The compiled query per draft semantics (see `_semantics`): drafts that
        # differ only in comments, version, labels or descriptions run the same
        # aggregate, which is still run for each of them.
        self.compiled: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        if self.arrays is not None:
            t = self.arrays.t
            self.first_s: int | None = int(t.min()) if len(t) else None
        else:
            got = self.wh.con.con.execute("SELECT min(t) FROM preview_events")
            self.first_s = got.fetchone()[0]  # type: ignore[index]
        # Candidate-period grids (`lifecycle.standing`) per (grid key, zone, day).
        # Each: the grid and its last row per customer (what dynamic drafts read).
        self.grids: OrderedDict[tuple[Any, ...], Built] = OrderedDict()
        self.calendars: dict[tuple[Any, ...], Any] = {}
        # The SQL grid's periods and buckets tables per calendar (made when needed).
        self.calendar_tables: dict[tuple[Any, ...], tuple[ir.Table, ir.Table]] = {}
        # Rule sets whose types the compiler has checked, per grid schema.
        self.checked: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self.build = threading.Lock()  # `grids` and `pending` change under it
        self.pending: dict[tuple[Any, ...], Future[Built]] = {}
        self.db = threading.Lock()  # the Ibis backend's own connection
        self.made = 0

    def has_grid(
        self,
        draft: StageModel,
        tz: Any,
        day: date,
        params: dict[str, float] | None = None,
    ) -> bool:
        """Whether `draft`'s grid as of `day` is built already."""
        from clm.lifecycle import standing

        key = (standing.grid_key(draft, params), str(tz), day)
        with self.build:
            return key in self.grids

    def grid(
        self,
        draft: StageModel,
        tz: Any,
        day: date,
        params: dict[str, float] | None = None,
    ) -> Built:
        """`draft`'s candidate grid as of `day` (built when first asked): held in
        NumPy (`Built.held`), or for kinds the NumPy grid lacks a table of this
        in-memory database with its `standing.last_rows`. `params`: the fit
        `p_alive()` reads (`standing.needs_fit`)."""
        from clm.lifecycle import standing

        key = (standing.grid_key(draft, params), str(tz), day)
        with self.build:
            got = self.grids.get(key)
            if got is not None:
                self.grids.move_to_end(key)
                return got
            # Concurrent drafts wanting the same grid wait for one build; drafts
            # wanting different ones build side by side (NumPy mostly runs
            # without the GIL, so two builds use both cores).
            pending = self.pending.get(key)
            mine = pending is None
            if mine:
                pending = self.pending[key] = Future()
        assert pending is not None
        if not mine:
            return pending.result()
        try:
            got = self._build(draft, tz, day, params)
        except BaseException as exc:
            with self.build:
                self.pending.pop(key, None)
            pending.set_exception(exc)
            raise
        with self.build:
            self.pending.pop(key, None)
            self.grids[key] = got
            # A handful of feature sets is what editing a model visits; each grid
            # is a few MB at the sample's size. A draft still reading an evicted
            # grid keeps its `Built` (and so its arrays) until it is done.
            evicted = []
            while len(self.grids) > 16:
                evicted.append(self.grids.popitem(last=False)[1])
        pending.set_result(got)  # before anything else can fail
        for old in evicted:
            if old.held is None:
                with self.db:
                    for table in (old.table, old.last):
                        self.wh.con.drop_table(table.get_name(), force=True)
        return got

    def _build(
        self,
        draft: StageModel,
        tz: Any,
        day: date,
        params: dict[str, float] | None,
    ) -> Built:
        from clm.lifecycle import standing
        from clm.lifecycle.history import _end_of_date

        assert self.first_s is not None  # callers stop at an empty sample
        cal_key = (draft.grain, str(tz), day)
        with self.db:
            self.made += 1
            name = f"preview_grid_{self.made}"
            if cal_key not in self.calendars:
                self.calendars[cal_key] = standing.calendar(
                    draft.grain, tz, self.first_s, _end_of_date(day, tz)
                )
            cal = self.calendars[cal_key]
        if self.arrays is not None and grid_arrays.supported(draft) is None:
            held, _ = grid_arrays.build(draft, self.arrays, cal, params)
            schema = held.schema()
            return Built(
                ibis.table(schema, name=name),
                ibis.table(schema, name=f"{name}_last"),
                held,
            )
        # The SQL grid, through the Ibis backend (on this database's own
        # connection, used only under `db`): it registers the in-memory tables
        # that `p_alive()` adds to the query.
        with self.db:
            if cal_key not in self.calendar_tables:
                self.calendar_tables[cal_key] = (
                    self.wh.con.create_table(
                        f"{name}_periods", ibis.memtable(cal.periods_frame())
                    ),
                    self.wh.con.create_table(
                        f"{name}_buckets", ibis.memtable(cal.buckets_frame())
                    ),
                )
            periods, buckets = self.calendar_tables[cal_key]
            query = standing.grid_query(
                draft, self.events, periods, buckets, cal, params
            )
            built = self.wh.con.create_table(name, query)
            self.wh.con.create_table(f"{name}_last", standing.last_rows(built))
        schema = built.schema()
        return Built(
            ibis.table(schema, name=name), ibis.table(schema, name=f"{name}_last")
        )

    def close(self) -> None:
        """Free the in-memory database (drafts still running on it fail)."""
        with self.db:
            self.wh.close()

    def arrow(self, sql: str) -> pa.Table:
        """The result of `sql` as Arrow, on a cursor of its own."""
        with self.lock:
            cursor = self.wh.con.con.cursor()
        try:
            return cursor.execute(sql).to_arrow_table()
        finally:
            cursor.close()

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of `sql` on a cursor of its own."""
        with self.lock:
            cursor = self.wh.con.con.cursor()
        try:
            rows: list[tuple[Any, ...]] = cursor.execute(sql).fetchall()
            return rows
        finally:
            cursor.close()


def _semantics(draft: StageModel) -> tuple[Any, ...]:
    """What decides a draft's stages: grain, progression, features, rules in order."""
    from clm.lifecycle.rules.parser import to_text
    from clm.lifecycle.standing import feature_key

    features = tuple(feature_key(f) for f in draft.features.values())
    stages = tuple((s.name, to_text(s.when)) for s in draft.stages)
    return (draft.grain, draft.progression, features, stages)


def _counted(
    r: Any,
    draft: StageModel,
    loaded: Loaded,
    day: date,
    engine: str,
    params: dict[str, float] | None = None,
) -> tuple[date, pd.DataFrame]:
    """(day, populations) of `draft` as of `day` by the `snapshot` (dynamic, see
    lifecycle.snapshot) or the `grid` (any progression, see lifecycle.standing):
    the same answer as the replay's at that day, without the replay."""
    from clm.lifecycle import standing
    from clm.lifecycle.snapshot import stage_counts_query

    if engine == "grid" and loaded.first_s is None:
        # No attributed event in the sample: nobody to place.
        empty = pd.DataFrame({"stage": draft.stage_names, "customers": 0})
        return day, empty.assign(share=0.0)
    grid = loaded.grid(draft, r.tz, day, params) if engine == "grid" else None
    name = None if grid is None else grid.table.get_name()
    if grid is not None and grid.held is not None:
        return day, _shares(draft, _held_counts(draft, loaded, grid.held))
    key = (engine, _semantics(draft), str(r.tz), day, name)
    with loaded.lock:
        sql = loaded.compiled.get(key)
    if sql is None:
        if grid is None:
            query = stage_counts_query(draft, loaded.events, timezone=r.tz, as_of=day)
        else:
            query = standing.counts_query(draft, grid.table, grid.last)
        sql = str(ibis.to_sql(query, dialect="duckdb"))
        with loaded.lock:
            loaded.compiled[key] = sql
            while len(loaded.compiled) > 64:
                loaded.compiled.popitem(last=False)
    counts = {str(s): int(n) for s, n in loaded.run(sql)}
    return day, _shares(draft, counts)


def _held_counts(
    draft: StageModel, loaded: Loaded, held: grid_arrays.Held
) -> dict[str, int]:
    """Customers per stage of `draft` over a grid held in NumPy, its rules' types
    checked by the rule compiler first (once per rule set and feature types)."""
    from clm.lifecycle.rules.parser import to_text

    rules = tuple(to_text(s.when) for s in draft.stages)
    key = (rules, tuple((k, c.dtype) for k, c in held.columns.items()))
    with loaded.lock:
        seen = key in loaded.checked
    if not seen:
        held.check(draft)  # raises the rules' ModelError
        with loaded.lock:
            loaded.checked[key] = None
            while len(loaded.checked) > 256:
                loaded.checked.popitem(last=False)
    return held.stage_counts(draft)


def _shares(draft: StageModel, counts: dict[str, int]) -> pd.DataFrame:
    df = pd.DataFrame(
        [(s, counts.get(s, 0)) for s in draft.stage_names],
        columns=["stage", "customers"],
    )
    total = df.customers.sum()
    df["share"] = df.customers / total if total else 0.0
    return df


def preview(r: Any, text: str, exact: bool = False) -> dict[str, Any]:
    """Stage populations under the draft `text` (see the module docstring)."""
    from clm.server import views

    # Parsed once (what `views.validate_model` does, without parsing it again).
    try:
        draft = load_model_text(text, "draft.yaml")
    except ModelError:
        return {**views.validate_model(text), "populations": []}
    checked = {"valid": True, "errors": [], "model": views.model_summary(draft)}
    if not exact:
        stored = _stored(r, draft)
        if stored is not None:
            return {**checked, **stored}
    digest = hashlib.sha256(text.encode()).hexdigest()
    body = r.cached(
        ("preview", digest, exact), lambda: _estimate(r, draft, exact=exact)
    )
    return {**checked, **body}


def _engine(draft: StageModel) -> str:
    """How `draft` is evaluated (see the module docstring)."""
    from clm.lifecycle import snapshot

    return "snapshot" if snapshot.supported(draft) is None else "grid"


def _params(r: Any, draft: StageModel) -> dict[str, float] | None:
    """The fit `p_alive()` reads, when the draft's rules read it (a ModelError
    naming `clm clv fit` when there is none). Read each time: `clm clv fit` may
    add one without changing the data stamp, and the query takes a millisecond."""
    from clm.lifecycle import standing, value_features

    if not standing.needs_fit(draft):
        return None
    return value_features.load_params(r.wh, draft.source)


def _facts(r: Any) -> tuple[int, date | None]:
    """Customers in the workspace and the last day of its data: the same for every
    draft until the data changes, so per data stamp."""
    total = r.cached(
        ("preview_total",),
        lambda: int(
            r.sql("SELECT count(DISTINCT customer_id) AS n FROM customers").n.iloc[0]
        ),
    )
    return total, r.cached(("preview_last_day",), lambda: _last_day(r))


def _loaded(r: Any, k: int, cols: list[str]) -> Loaded:
    """The sample 1/k with `cols`, loaded (`Loaded`), kept for the next draft that
    reads the same columns. Not in the reader's LRU of answers, where a run of
    drafts would push it out: a few of its own, per data stamp."""
    key = (r.stamp(), k, tuple(cols))
    with _HELD_LOCK:
        held: OrderedDict[tuple[Any, ...], Loaded] = r.__dict__.setdefault(
            "preview_held", OrderedDict()
        )
        lock = r.__dict__.setdefault("preview_loading", {}).setdefault(
            key, threading.Lock()
        )
    with lock:  # concurrent drafts wait for one load instead of each loading
        with _HELD_LOCK:
            got = held.get(key)
            if got is not None:
                held.move_to_end(key)
                return got
        customers, events = r.cached(
            ("preview_sample", k, tuple(cols)), lambda: _sample(r, k, cols)
        )
        got = Loaded(customers, events)
        with _HELD_LOCK:
            held[key] = got
            # Samples of older data are of no more use; column sets differ only
            # when drafts read other event columns (the sample's DuckDB is ~30-60
            # MB at 20,000 customers of the benchmark). Dropped, not closed: a
            # draft still running on one finishes, and the memory goes with it.
            loading = r.__dict__["preview_loading"]
            for old in [x for x in held if x[0] != key[0]] + list(held)[:-3]:
                if old in held:
                    del held[old]
                    loading.pop(old, None)
        return got


_HELD_LOCK = threading.Lock()


def warm(r: Any) -> None:
    """Load the sample and build the grids the saved models' drafts will need, so
    that the first edited draft after a start (or an import) is as fast as the
    next. Run by the server in the background once its look-up tables are ready."""
    total, last = _facts(r)
    if last is None or total == 0:
        return
    k = max(1, math.ceil(total / PREVIEW_CUSTOMERS))
    if k == 1:
        return  # small workspaces: every draft is exact and quick anyway
    for model in r.models():
        try:
            params = _params(r, model)
            loaded = _loaded(r, k, _columns(r, model))
            if loaded.first_s is not None:
                # Dynamic or forward-only, a draft of this model with its features
                # unchanged reads this grid.
                loaded.grid(model, r.tz, last, params)
        except ModelError:
            # p_alive() without a fit, or a model the engine refuses: its drafts
            # say so when asked; the next model is still warmed.
            continue


def _estimate(r: Any, draft: StageModel, *, exact: bool) -> dict[str, Any]:
    from clm.server import views

    total, last = _facts(r)
    k = 1 if exact else max(1, math.ceil(total / PREVIEW_CUSTOMERS))
    cols = _columns(r, draft)
    engine = _engine(draft)
    params = _params(r, draft)
    if k == 1:
        customers, events = _sample(r, k, cols)
        loaded = None
    else:
        loaded = _loaded(r, k, cols)
        customers, events = loaded.customers, loaded.raw_events
    n = (
        pc.count_distinct(customers.column("customer_id")).as_py()
        if loaded is None
        else loaded.sample_customers
    )
    base = {
        "method": "exact" if k == 1 else "sample",
        "estimate": k > 1,
        "engine": engine,
        "customers": total,
        "sample_customers": n,
        "sample_every": k,
    }
    if events.num_rows == 0 or n == 0 or last is None:
        return {**base, "scale": 1.0, "populations": []}
    if loaded is None:
        once = Loaded(customers, events, arrays=False)  # everyone: not kept
        try:
            day, pops = _counted(r, draft, once, last, engine, params)
        finally:
            once.close()
    else:
        if engine == "snapshot" and (
            grid_arrays.supported(draft) is None
            or loaded.has_grid(draft, r.tz, last, params)
        ):
            # Both are exact; a grid built in NumPy (or there already) costs a
            # fraction of the snapshot's compiled aggregate.
            engine = base["engine"] = "grid"
        day, pops = _counted(r, draft, loaded, last, engine, params)
    scale = total / n
    # 95% margin of a share estimated from a sample of n of N customers (normal
    # approximation with the finite population correction), in customers.
    fpc = max(0.0, 1 - n / total)
    rows = []
    for rec in views.records(pops):
        p = rec["customers"] / n
        margin = Z95 * total * math.sqrt(p * (1 - p) / n * fpc)
        rows.append(
            {
                **rec,
                "customers": round(rec["customers"] * scale),
                "margin": round(margin),
            }
        )
    return {**base, "as_of": day.isoformat(), "scale": scale, "populations": rows}
