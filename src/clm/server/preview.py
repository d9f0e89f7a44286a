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

How the sample (or everyone) is evaluated, the answer's `engine`:

- `snapshot`, for `progression: dynamic` drafts without `p_alive()`: the stage as
  of the last day depends only on the features at that day, so one aggregate per
  customer and the rules give the replay's answer exactly
  (`lifecycle.snapshot`). The sample's rows are loaded once into an in-memory
  DuckDB with their customer keys and attributed events (a few seconds, the first
  draft after a start or an import); each draft then costs its parsing, the Ibis
  compilation and one aggregate: ~0.1 s on the 10M-event benchmark.
- `replay`, for `forward_only` drafts (the furthest stage reached depends on the
  whole history) and drafts with `p_alive()`: the stage history engine replays the
  sample in a fresh in-memory DuckDB, 2-4 s on the benchmark (about 0.8 s of it
  fixed: statements and their compilation), over the p95 target of issue 6. Known
  shortcoming; see docs/benchmarks-dashboard.md.

Populations are those as of the last day of the data (the end of the data), the
same day the Overview shows. Answers are kept per draft text and data stamp in the
reader's cache, so asking again is immediate.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from datetime import date, datetime
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from clm.errors import ModelError
from clm.lifecycle.model import load_model_text
from clm.lifecycle.spec import StageModel
from clm.warehouse.engine import Warehouse

# The sample replays at most this many customers (20,000: about 2 s of replay on
# two cores; the 95% margin of a stage holding 10% of customers is then ±0.4 points).
PREVIEW_CUSTOMERS = 20_000
# Read by every replay whatever the draft says: identity, bot flag and time.
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
    """The event columns a replay of `draft` reads (the others stay NULL)."""
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
        # (in the replay: only events whose key is a sampled identifier count).
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
    """The local day of the workspace's last event: a sample's replay ends where a
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


def _replay(
    r: Any, draft: StageModel, customers: pa.Table, events: pa.Table, last: date
) -> tuple[Any, Any]:
    """(last day, populations) of `draft` replayed over the given rows, in memory
    (the whole stage history, then the populations as of `last`)."""
    from clm.lifecycle import queries
    from clm.lifecycle.history import run_model

    mem = _load(customers, events)
    try:
        run_model(mem, draft, timezone=r.tz, as_of=last)
        day = queries.last_day(mem, draft, r.tz)
        return day, queries.populations(mem, draft, day, r.tz)
    finally:
        mem.close()


class Loaded:
    """A sample's attributed events (`lifecycle.snapshot.customer_events`) in an
    in-memory DuckDB, kept in the reader's cache for the next draft that reads the
    same columns: a snapshot then costs one aggregate. They are a table of the
    in-memory database (not a temporary one), so concurrent drafts each read it
    through a cursor of their own instead of queueing for one connection."""

    def __init__(self, customers: pa.Table, events: pa.Table) -> None:
        from clm.identity.resolve import build_customer_keys, drop_customer_keys
        from clm.lifecycle.snapshot import customer_events

        self.wh = _load(customers, events)
        keys = build_customer_keys(self.wh, tag="preview")
        slim = customer_events(self.wh, keys, set(events.column_names))
        self.wh.con.create_table("preview_events", slim, overwrite=True)
        drop_customer_keys(self.wh, keys)
        self.events = self.wh.con.table("preview_events")
        self.lock = threading.Lock()  # cursors and `compiled` change under it
        # The compiled query per draft semantics (see `_semantics`): drafts that
        # differ only in comments, version, labels or descriptions run the same
        # aggregate, which is still run for each of them.
        self.compiled: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def run(self, sql: str) -> list[tuple[Any, ...]]:
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

    features = tuple(
        (
            f.name,
            f.kind,
            f.column,
            None if f.filter is None else to_text(f.filter),
            f.within_days,
            f.within_periods,
        )
        for f in draft.features.values()
    )
    stages = tuple((s.name, to_text(s.when)) for s in draft.stages)
    return (draft.grain, draft.progression, features, stages)


def _snapshot(
    r: Any, draft: StageModel, loaded: Loaded, day: date
) -> tuple[date, pd.DataFrame]:
    """(day, populations) of a `dynamic` draft as of `day` (see lifecycle.snapshot):
    the same answer as the replay's at that day, without the replay."""
    from clm.lifecycle.snapshot import stage_counts_query

    key = (_semantics(draft), str(r.tz), day)
    with loaded.lock:
        sql = loaded.compiled.get(key)
    if sql is None:
        query = stage_counts_query(draft, loaded.events, timezone=r.tz, as_of=day)
        sql = str(ibis.to_sql(query, dialect="duckdb"))
        with loaded.lock:
            loaded.compiled[key] = sql
            while len(loaded.compiled) > 64:
                loaded.compiled.popitem(last=False)
    counts = {str(s): int(n) for s, n in loaded.run(sql)}
    df = pd.DataFrame(
        [(s, counts.get(s, 0)) for s in draft.stage_names],
        columns=["stage", "customers"],
    )
    total = df.customers.sum()
    df["share"] = df.customers / total if total else 0.0
    return day, df


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


def _estimate(r: Any, draft: StageModel, *, exact: bool) -> dict[str, Any]:
    from clm.lifecycle.snapshot import supported
    from clm.server import views

    # Both are the same for every draft until the data changes: per data stamp.
    total = r.cached(
        ("preview_total",),
        lambda: int(
            r.sql("SELECT count(DISTINCT customer_id) AS n FROM customers").n.iloc[0]
        ),
    )
    last = r.cached(("preview_last_day",), lambda: _last_day(r))
    k = 1 if exact else max(1, math.ceil(total / PREVIEW_CUSTOMERS))
    cols = _columns(r, draft)
    snapshot = supported(draft) is None
    if k == 1:
        customers, events = _sample(r, k, cols)
    else:
        # The sample's rows are the same for every draft that reads the same
        # columns: kept in the reader's cache (per data stamp), the next draft
        # costs only its replay. (~30 MB at 20,000 customers of the benchmark.)
        customers, events = r.cached(
            ("preview_sample", k, tuple(cols)), lambda: _sample(r, k, cols)
        )
    n = pc.count_distinct(customers.column("customer_id")).as_py()
    base = {
        "method": "exact" if k == 1 else "sample",
        "estimate": k > 1,
        "engine": "snapshot" if snapshot else "replay",
        "customers": total,
        "sample_customers": n,
        "sample_every": k,
    }
    if events.num_rows == 0 or n == 0 or last is None:
        return {**base, "scale": 1.0, "populations": []}
    if snapshot and k == 1:
        loaded = Loaded(customers, events)  # all events: not kept
        day, pops = _snapshot(r, draft, loaded, last)
    elif snapshot:
        loaded = r.cached(
            ("preview_loaded", k, tuple(cols)), lambda: Loaded(customers, events)
        )
        day, pops = _snapshot(r, draft, loaded, last)
    else:
        day, pops = _replay(r, draft, customers, events, last)
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
