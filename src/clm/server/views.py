"""The read functions behind every dashboard page and its JSON twin (STYLE.md point 14).

Each public function takes a `Reader` and plain, already checked arguments, and returns
a JSON-ready dict; `clm.server.api` serialises it, `clm.server.dashboard` renders it.
Neither front end queries the warehouse itself, so a page and its API call always show
the same figures.

Concurrency. `clm serve` holds the workspace's DuckDB file open (one writer process per
file), and its loader thread writes events through that connection. A DuckDB Python
connection must not be used by two threads at once, but `connection.cursor()` opens an
independent connection to the *same* database instance: it sees every committed write
(MVCC snapshots per query) and may run beside the loader. The `Reader` therefore keeps
one cursor, wrapped in an Ibis backend and a `Warehouse`, per request thread
(`threading.local`); Starlette runs our sync endpoints in its thread pool, so a thread
never shares its cursor. Nothing here writes to the warehouse: the model preview runs
on a copy of a sample of customers in an in-memory DuckDB.

Speed. Stage populations, transitions and KPIs only change when `clm run` stores a new
history (which cannot happen while the server holds the file), so their results are
cached per "data stamp" (the latest receipt and the number of receipts). On a big
workspace the first computation of a page costs seconds, so `clm run` ends with
`precompute` (from PRECOMPUTE_MIN_EVENTS events on): it calls the same view
functions once (overview and stage pages of each model at its own grain and by
month, the default transitions and the cohorts), stores their answers as JSON in
the `view_cache` table with the stamp, and stores `metric_values` for those grains.
`Reader.cached` looks there before computing; an answer stored under another stamp
(an import, erase or split since the run) is ignored and the view computes as
before, so a stale row can never be shown.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd

from clm.errors import ConfigError, ModelError, NotFoundError, known
from clm.lifecycle import queries
from clm.lifecycle.spec import StageModel
from clm.server import lookups
from clm.warehouse.engine import Warehouse
from clm.workspace import CONFIG_FILE, Workspace

log = logging.getLogger("clm.server")

GRAINS = ("day", "week", "month", "quarter")
MAX_PAGE_SIZE = 500


class Reader:
    """The server's read side: workspace settings and models, a cursor per thread."""

    def __init__(self, ws: Workspace, wh: Warehouse, *, stored: bool = True) -> None:
        self.ws = ws
        self.base = wh
        self.local = threading.local()
        self.cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.lock = threading.Lock()
        self._models: tuple[float, list[StageModel]] | None = None
        # Whether to read answers precomputed by `clm run` (off while precomputing).
        self.use_stored = stored
        self._has_store: bool | None = None
        # In-memory look-up tables of the customer pages (server only).
        self.lookups = lookups.Lookups(wh.con.con) if stored else None
        if self.lookups is not None:
            self.lookups.after = self._warm
        self._salt: str | None = None

    def _warm(self, stamp: str) -> None:
        """After the look-up tables: the model preview's sample and grids."""
        from clm.server import preview

        t = time.perf_counter()
        preview.warm(self)
        log.info("model preview warmed in %.1f s", time.perf_counter() - t)

    @classmethod
    def for_warehouse(cls, wh: Warehouse, near: Path) -> Reader:
        """Find the workspace (clm.yaml) at or above `near` and read over `wh`."""
        for folder in (near, *near.parents):
            if (folder / CONFIG_FILE).exists():
                return cls(Workspace(folder), wh)
        raise ConfigError(f"no {CONFIG_FILE} at or above {near}; serve a workspace")

    @property
    def wh(self) -> Warehouse:
        """This thread's warehouse: its own DuckDB cursor on the server's database."""
        wh: Warehouse | None = getattr(self.local, "wh", None)
        if wh is None:
            cursor = self.base.con.con.cursor()
            wh = Warehouse(ibis.duckdb.from_connection(cursor), self.base.capabilities)
            self.local.wh = wh
        return wh

    @property
    def tz(self) -> Any:
        return self.ws.timezone

    def models(self) -> list[StageModel]:
        """The workspace's models, reloaded when clm.yaml changes."""
        stamp = (self.ws.root / CONFIG_FILE).stat().st_mtime
        if self._models is None or self._models[0] != stamp:
            self.ws = Workspace(self.ws.root)
            self._models = (stamp, self.ws.models())
        return self._models[1]

    def model(self, name: str | None) -> StageModel:
        models = self.models()
        if not models:
            raise ConfigError("clm.yaml lists no stage models under `models`")
        if not name:
            return models[0]
        for m in models:
            if m.name == name:
                return m
        raise NotFoundError(
            f"model={name!r}: no such stage model; known: "
            f"{known(m.name for m in models)} (add it to `models` in clm.yaml)"
        )

    def stamp(self) -> str:
        """Changes whenever something is imported or run: the cache key's data part."""
        row = self.wh.con.con.execute(
            "SELECT max(started_at), count(*) FROM receipts"
        ).fetchone()
        return f"{row[0]}|{row[1]}" if row else ""

    def cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """`make()` once per key and data stamp; a small LRU of 256 results.

        Before computing, the answer `clm run` stored in `view_cache` under the same
        key and stamp is used when there is one."""
        stamp = self.stamp()
        full = (*key, stamp)
        with self.lock:
            if full in self.cache:
                self.cache.move_to_end(full)
                return self.cache[full]
        value = self.stored(key, stamp)
        if value is None:
            value = make()
        with self.lock:
            self.cache[full] = value
            while len(self.cache) > 256:
                self.cache.popitem(last=False)
        return value

    def stored(self, key: tuple[Any, ...], stamp: str) -> Any:
        """The answer precomputed for `key` at `stamp`, or None."""
        if not self.use_stored:
            return None
        if self._has_store is None:
            self._has_store = self.has("view_cache")
        if not self._has_store:
            return None
        row = self.wh.con.con.execute(
            "SELECT body FROM view_cache WHERE key = ? AND stamp = ? LIMIT 1",
            [cache_key(key), stamp],
        ).fetchone()
        return json.loads(row[0]) if row else None

    def salt(self) -> str:
        """The salt identity hashes emails and phones with (fixed per workspace)."""
        if self._salt is None:
            from clm.identity.resolve import workspace_salt

            configured = str(self.ws.config.get("identity.salt", ""))
            self._salt = workspace_salt(self.wh, configured)
        return self._salt

    def look(self) -> dict[str, Any] | None:
        """The look-up tables built for the current data, or None (being built, or
        not a server): the customer pages then scan."""
        if self.lookups is None or self.base.con.name != "duckdb":
            return None
        return self.lookups.ready(self.stamp())

    def sql(self, text: str, params: list[Any] | None = None) -> pd.DataFrame:
        return self.wh.con.con.execute(text, params or []).df()

    def has(self, table: str) -> bool:
        row = self.wh.con.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchone()
        return bool(row and row[0])


# -- JSON helpers --------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A value JSON can carry: NaN → None, timestamps → ISO 8601 with offset."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        # Stored timestamps are UTC without a zone; say so in the text.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def cache_key(key: tuple[Any, ...]) -> str:
    """A cache key as the text stored in `view_cache.key`: a JSON list."""
    return json.dumps(plain(list(key)))


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): plain(v) for k, v in row.items()} for row in df.to_dict("records")]


def page_of(total: int, page: int, page_size: int) -> dict[str, Any]:
    pages = max(1, math.ceil(total / page_size)) if page_size else 1
    return {
        "page": page,
        "page_size": page_size,
        "total": total,
        "pages": pages,
        "next": page + 1 if page < pages else None,
    }


# -- models --------------------------------------------------------------------------


def model_summary(m: StageModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "version": m.version,
        "grain": m.grain,
        "progression": m.progression,
        "description": m.description,
        "source": m.source,
        "stages": [
            {"name": s.name, "labels": dict(s.labels), "churned": bool(s.churned)}
            for s in m.stages
        ],
        "features": sorted(m.features),
        "metrics": {k: [c.key for c in v] for k, v in m.metrics.items()},
    }


def list_models(r: Reader) -> dict[str, Any]:
    return {"models": [model_summary(m) for m in r.models()]}


def show_model(r: Reader, name: str) -> dict[str, Any]:
    m = r.model(name)
    runs = r.sql(
        "SELECT value FROM clm_meta WHERE key = ?", [f"run:{m.name}:{m.version}"]
    )
    return {
        **model_summary(m),
        "yaml": m.text,
        "last_run": json.loads(runs.value.iloc[-1]) if len(runs) else None,
    }


def validate_model(text: str) -> dict[str, Any]:
    """Parse and check a draft; errors carry the line the editor marks."""
    from clm.lifecycle.model import load_model_text

    try:
        m = load_model_text(text, "draft.yaml")
    except ModelError as exc:
        return {
            "valid": False,
            "errors": [
                {
                    "message": str(exc),
                    "detail": exc.detail,
                    "line": exc.line,
                    "stage": exc.stage,
                }
            ],
        }
    return {"valid": True, "errors": [], "model": model_summary(m)}


def preview_model(r: Reader, text: str, exact: bool = False) -> dict[str, Any]:
    """Stage populations under a draft: stored, estimated on a sample of customers
    or (`exact`) replayed on all of them; see `clm.server.preview`."""
    from clm.server.preview import preview

    return preview(r, text, exact)


# -- stages --------------------------------------------------------------------------


def _as_of(r: Reader, m: StageModel, day: date | None) -> date:
    return day or queries.last_day(r.wh, m, r.tz)


def populations(r: Reader, model: str | None, as_of: date | None) -> dict[str, Any]:
    m = r.model(model)
    day = _as_of(r, m, as_of)

    def make() -> dict[str, Any]:
        df = queries.populations(r.wh, m, day, r.tz)
        return {
            "model": m.name,
            "version": m.version,
            "as_of": day.isoformat(),
            "timezone": r.tz.key,
            "total": int(df.customers.sum()),
            "stages": records(df),
        }

    return dict(r.cached(("populations", m.name, m.version, day), make))


def _metric_rows(r: Reader, m: StageModel, grain: str) -> pd.DataFrame:
    """The metric values of the model and grain: the stored ones when they answer
    this question on the current data (the rule of `clm.metrics.compute`, the same
    `clm metrics` follows), else computed (not stored)."""
    from clm.metrics.compute import compute_metrics, stored_metrics

    res = stored_metrics(r.wh, m, grain=grain, timezone=r.tz)
    if res is None:
        res = compute_metrics(r.wh, m, grain=grain, timezone=r.tz, store=False)
    df = res.values[["stage", "metric", "period_start", "value"]].copy()
    df["period_start"] = pd.to_datetime(df.period_start).dt.date
    df = df.sort_values(["stage", "metric", "period_start"]).reset_index(drop=True)
    prev = df.groupby(["stage", "metric"], sort=False).value.shift(1)
    df["previous"] = prev
    df["change"] = (df.value - prev) / prev.abs().where(prev != 0, np.nan)
    return df


def metrics(
    r: Reader,
    model: str | None,
    grain: str | None,
    stage: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    m = r.model(model)
    g = grain or m.grain
    if stage:
        m.stage(stage)
    df = r.cached(("metrics", m.name, m.version, g), lambda: _metric_rows(r, m, g))
    if stage:
        df = df[df.stage == stage]
    if start:
        df = df[df.period_start >= start]
    if end:
        df = df[df.period_start <= end]
    return {
        "model": m.name,
        "version": m.version,
        "grain": g,
        "timezone": r.tz.key,
        "values": records(df),
    }


def population_series(
    r: Reader,
    model: str | None,
    grain: str | None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """Customers per stage at the end of each period (the `population` metric)."""
    m = r.model(model)
    g = grain or m.grain

    def make() -> list[dict[str, Any]]:
        from clm.metrics.context import build_context

        return series_records(build_context(r.wh, m, g, r.tz).population, m)

    rows = r.cached(("series", m.name, m.version, g), make)
    # Days are ISO texts, so comparing the texts compares the days.
    first = start.isoformat() if start else ""
    last = end.isoformat() if end else "9999"
    return {
        "model": m.name,
        "version": m.version,
        "grain": g,
        "timezone": r.tz.key,
        "series": [x for x in rows if first <= x["period_start"] <= last],
    }


def series_records(population: pd.DataFrame, m: StageModel) -> list[dict[str, Any]]:
    """Rows (period_start, stage, population) of a metric context's population."""
    pop = population.reindex(columns=m.stage_names, fill_value=0)
    df = (
        pop.rename_axis("period_start")
        .reset_index()
        .melt(id_vars="period_start", var_name="stage", value_name="population")
    )
    df["period_start"] = pd.to_datetime(df.period_start).dt.date
    return records(df)


def transitions(
    r: Reader, model: str | None, start: date | None, end: date | None
) -> dict[str, Any]:
    m = r.model(model)
    last = queries.last_day(r.wh, m, r.tz)
    end = end or last
    start = start or end - timedelta(days=30)
    if start > end:
        raise ConfigError(
            f"start={start.isoformat()} is after end={end.isoformat()}; "
            "pass a start on or before the end"
        )

    def make() -> dict[str, Any]:
        mat = queries.transition_matrix(r.wh, m, start, end, r.tz)
        flows = (
            mat.rename_axis(index="from_stage", columns="to_stage")
            .stack()
            .rename("customers")
            .reset_index()
        )
        flows = flows[flows.customers > 0]
        return {
            "model": m.name,
            "version": m.version,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "timezone": r.tz.key,
            "not_yet": queries.NEW,
            "rows": [str(i) for i in mat.index],
            "columns": [str(c) for c in mat.columns],
            "matrix": [[int(v) for v in row] for row in mat.to_numpy()],
            "flows": records(flows),
        }

    return dict(r.cached(("transitions", m.name, m.version, start, end), make))


def _caveats(r: Reader, m: StageModel, last: date, total: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    run = show_model(r, m.name)["last_run"] or {}
    end = run.get("observation_end")
    if end:
        stop = datetime.fromisoformat(end)
        if stop.date() < date.today():
            out.append({"code": "data_until", "params": {"date": last.isoformat()}})
    if not any(s.churned for s in m.stages):
        out.append({"code": "no_churn_stage", "params": {}})
    if total < 30:
        out.append({"code": "few_customers", "params": {"count": total}})
    return out


def overview(r: Reader, model: str | None, grain: str | None) -> dict[str, Any]:
    """Populations now and over time, one KPI card per stage, the caveats."""
    m = r.model(model)
    g = grain or m.grain

    def make() -> dict[str, Any]:
        now = populations(r, m.name, None)
        series = population_series(r, m.name, g)
        kpis = metrics(r, m.name, g)["values"]
        cards = []
        for s in m.stage_names:
            mine = [v for v in kpis if v["stage"] == s]
            last_period = max((v["period_start"] for v in mine), default=None)
            cards.append(
                {
                    "stage": s,
                    "kpis": [v for v in mine if v["period_start"] == last_period],
                    "trend": {
                        key: [v["value"] for v in mine if v["metric"] == key]
                        for key in dict.fromkeys(v["metric"] for v in mine)
                    },
                }
            )
        return {
            "model": m.name,
            "version": m.version,
            "grain": g,
            "timezone": r.tz.key,
            "as_of": now["as_of"],
            "populations": now["stages"],
            "total": now["total"],
            "series": series["series"],
            "cards": cards,
        }

    body = r.cached(("overview", m.name, m.version, g), make)
    # The caveats depend on today's date too: never stored.
    last = date.fromisoformat(body["as_of"])
    return {**body, "caveats": _caveats(r, m, last, int(body["total"]))}


def stage_detail(
    r: Reader,
    model: str | None,
    stage: str,
    grain: str | None,
    page: int = 1,
    page_size: int = 50,
) -> dict[str, Any]:
    """A stage's KPIs over time, entries and exits, time in stage, feeding channels
    and one page of the customers in it now."""
    m = r.model(model)
    m.stage(stage)
    g = grain or m.grain
    day = queries.last_day(r.wh, m, r.tz)
    key = (m.name, m.version, stage)

    def facts() -> dict[str, Any]:
        hist = "model = ? AND model_version = ? AND stage = ?"
        args = [m.name, m.version, stage]
        # Time in stage over finished intervals: the days from entering to leaving.
        # Rounded to 1e-6 days (0.1 s): the last digits of a float sum depend on
        # the order DuckDB adds in, and the same answer must come out every time.
        dur = r.sql(
            "SELECT round(quantile_cont(d, 0.5), 6) AS median, "
            "round(avg(d), 6) AS mean, count(*) AS n "
            "FROM (SELECT date_diff('second', valid_from, valid_to) / 86400.0 AS d "
            f"FROM stage_history WHERE {hist} AND valid_to IS NOT NULL)",
            args,
        )
        # Channels that feed the stage: the first-touch channel of whoever entered it.
        channels = r.sql(
            "SELECT coalesce(p.first_channel, '(unknown)') AS channel, "
            "count(DISTINCT h.customer_id) AS customers "
            "FROM stage_history h LEFT JOIN profiles p USING (customer_id) "
            f"WHERE h.{hist.replace(' AND ', ' AND h.')} GROUP BY 1 ORDER BY 2 DESC, 1",
            args,
        )
        moves = r.sql(
            "SELECT coalesce(from_stage, ?) AS from_stage, to_stage, count(*) AS n "
            "FROM stage_transitions WHERE model = ? AND model_version = ? "
            "AND (to_stage = ? OR from_stage = ?) GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            [queries.NEW, m.name, m.version, stage, stage],
        )
        return {
            "time_in_stage_days": records(dur)[0],
            "channels": records(channels),
            "entered_from": records(
                moves[moves.to_stage == stage][["from_stage", "n"]]
            ),
            "exited_to": records(moves[moves.from_stage == stage][["to_stage", "n"]]),
        }

    info = r.cached(("stage", *key), facts)

    def listed() -> dict[str, Any]:
        at = queries.stages_as_of(r.wh, m, day, r.tz)
        mine = at.filter(at.stage == stage)
        total = int(r.wh.scalar(mine.count()))
        rows = (
            mine.order_by("customer_id")
            .limit(page_size, offset=(page - 1) * page_size)
            .to_pandas()
        )
        return {"total": total, "rows": [str(c) for c in rows.customer_id]}

    # One scan of the stage's history per page; the first page is precomputed.
    now = r.cached(("stage_customers", *key, day, page, page_size), listed)
    return {
        "model": m.name,
        "version": m.version,
        "stage": stage,
        "grain": g,
        "as_of": day.isoformat(),
        "timezone": r.tz.key,
        "kpis": metrics(r, m.name, g, stage)["values"],
        **info,
        "customers": {
            **page_of(int(now["total"]), page, page_size),
            "rows": list(now["rows"]),
        },
    }


# -- cohorts -------------------------------------------------------------------------


def cohorts(r: Reader, months: int = 12) -> dict[str, Any]:
    """Retention by first-order month: the share of each cohort that ordered again
    in month k after its first (k = 0 is the first month, always 100%). Months after
    the last month with an order are not observed yet: None, not 0%."""
    tz = r.tz.key

    def make() -> dict[str, Any]:
        from clm.identity.resolve import customer_events

        raw = r.wh.table("events")
        ev = customer_events(r.wh, raw.filter(raw.event == "order_completed"))
        orders = ev.select("customer_id", "timestamp")
        with_sql = r.wh.con.compile(orders)
        df = r.sql(
            f"""WITH o AS (
                SELECT customer_id,
                  date_trunc('month', timezone('{tz}', timestamp::TIMESTAMPTZ)) AS m
                FROM ({with_sql})),
            f AS (SELECT customer_id, min(m) AS cohort FROM o GROUP BY 1),
            a AS (SELECT DISTINCT o.customer_id, f.cohort,
                  date_diff('month', f.cohort, o.m) AS k
                  FROM o JOIN f USING (customer_id))
            SELECT cohort::DATE AS cohort, k, count(*) AS customers FROM a
            GROUP BY 1, 2 ORDER BY 1, 2"""
        )
        rows = []
        # The last month seen: cohort + k of the latest cell (k counts months); every
        # k is kept until here so that a late order of an old cohort counts too.
        last = 0
        for cohort, k in zip(df.cohort, df.k, strict=True):
            c = pd.Timestamp(cohort)
            last = max(last, c.year * 12 + c.month - 1 + int(k))
        df = df[df.k <= months]
        for cohort, part in df.groupby("cohort", sort=True):
            by = dict(zip(part.k.astype(int), part.customers.astype(int), strict=True))
            size = by.get(0, 0)
            c = pd.Timestamp(cohort)
            seen = last - (c.year * 12 + c.month - 1)
            rows.append(
                {
                    "cohort": c.date().isoformat(),
                    "customers": size,
                    "retention": [
                        (by.get(k, 0) / size if size and k <= seen else None)
                        for k in range(months + 1)
                    ],
                }
            )
        return {"months": months, "timezone": tz, "cohorts": rows}

    return dict(r.cached(("cohorts", months), make))


# -- customers -----------------------------------------------------------------------


def _exact_customer(r: Reader, q: str, look: dict[str, Any] | None) -> str | None:
    """The resolved customer `q` names exactly: a customer id, an identifier key, a
    raw user or anonymous id, an email or phone (hashed with the workspace salt as
    `identity.view.find_customer` does), or an id merged away into another.

    Unlike `find_customer` it does not fall back to scanning every event for an id
    not resolved yet: on 10M events that scan takes seconds, and the search lists
    resolved customers only."""
    from clm.identity.identifiers import ANON, USER, sql_str

    con = r.wh.con.con
    keys = [q, USER + q, ANON + q]
    if "@" in q or sum(c.isdigit() for c in q) >= 5:
        salt = sql_str(r.salt())
        row = con.execute(
            f"SELECT 'email:' || sha256({salt} || ':' || lower(trim(?))), "
            f"'phone:' || sha256({salt} || ':' || "
            "regexp_replace(?, '[^0-9]', '', 'g'))",
            [q, q],
        ).fetchone()
        keys += [str(k) for k in row or () if k]
    marks = ", ".join("?" for _ in keys)
    where = f"(customer_id = ? OR identifier IN ({marks}))"
    args: list[Any] = [q, *keys]
    source = "customers"
    if look is not None:
        # Only the rows the look-up points at (by customer id or by identifier),
        # read by rowid before the comparison.
        source = "(SELECT * FROM customers WHERE rowid IN (SELECT unnest(?::BIGINT[])))"
        args.insert(0, lookups.exact_rowids(con, look, q, keys))
    found = con.execute(
        f"SELECT customer_id FROM {source} WHERE {where} "
        "ORDER BY customer_id <> ?, identifier LIMIT 1",
        [*args, q],
    ).fetchone()
    if found:
        return str(found[0])
    # An id merged away: follow merge_log to the survivor (a few rows at most).
    seen, current = {q}, q
    while True:
        nxt = con.execute(
            "SELECT into_id FROM merge_log WHERE merged_id = ? AND reason <> 'split' "
            "ORDER BY logged_at DESC LIMIT 1",
            [current],
        ).fetchone()
        if nxt is None or str(nxt[0]) in seen:
            return None
        current = str(nxt[0])
        seen.add(current)
        alive = con.execute(
            "SELECT 1 FROM customers WHERE customer_id = ? LIMIT 1", [current]
        ).fetchone()
        if alive:
            return current


def search_customers(
    r: Reader, q: str, page: int = 1, page_size: int = 50
) -> dict[str, Any]:
    """Customers found by `q`: the one it names exactly (a customer id, an
    identifier, an email or phone, hashed as identity does) first, then those with
    a search term that starts with `q` in any case: an identifier in clear
    (`anon:…`, `user:…`), its value alone, a trait value or a word of one.

    At most `lookups.SEARCH_CAP` customers are listed, best-matching term first;
    `capped` says when more match (the user should type more). An empty `q` lists
    every customer by id. The terms come from the server's look-up table
    (`lookups`) or, while that is being built, from the same query over `customers`
    and `profiles`: same hits, found by a scan."""
    q = q.strip()
    if not q:
        return _all_customers(r, page, page_size)
    look = r.look()
    hit = _exact_customer(r, q, look)
    exact = [hit] if hit else []
    low = q.lower()
    # The exact hit leads page 1; the database ranks and pages the rest.
    skip = exact[0] if exact else ""
    offset = (page - 1) * page_size - (1 if exact and page > 1 else 0)
    limit = page_size - (1 if exact and page == 1 else 0)
    bounds = [low, low + lookups.TOP, skip]
    found = r.sql(lookups.search_sql(look, low), [*bounds, limit, max(offset, 0)])
    if found.empty:
        # Past the last page, or nothing: the count alone, for the page fields.
        counted = r.sql(lookups.search_count_sql(look, low), bounds)
        n, capped = int(counted.total.iloc[0]), bool(counted.capped.iloc[0])
    else:
        n, capped = int(found.total.iloc[0]), bool(found.capped.iloc[0])
    total = n + len(exact)
    chosen = (exact if page == 1 else []) + [str(c) for c in found.customer_id]
    prows = None
    if look is not None and not exact:
        # The profiles' rowids came with the hits (an exact hit has none).
        prows = [int(x) for x in found.prow.dropna()]
    return {
        "q": q,
        **page_of(total, page, page_size),
        "capped": capped,
        "rows": _customer_rows(r, look, chosen, prows),
    }


def _all_customers(r: Reader, page: int, page_size: int) -> dict[str, Any]:
    """Every customer with a profile, by id (the search with an empty query)."""
    total = int(r.sql("SELECT count(*) AS n FROM profiles").n.iloc[0])
    ids = r.sql(
        "SELECT customer_id FROM profiles ORDER BY customer_id LIMIT ? OFFSET ?",
        [page_size, (page - 1) * page_size],
    )
    chosen = [str(c) for c in ids.customer_id]
    return {
        "q": "",
        **page_of(total, page, page_size),
        "capped": False,
        "rows": _customer_rows(r, r.look(), chosen),
    }


def _customer_rows(
    r: Reader,
    look: dict[str, Any] | None,
    chosen: list[str],
    prows: list[int] | None = None,
) -> list[dict[str, Any]]:
    """The profile summary of each customer in `chosen`, in that order; `prows`
    are their profiles' rowids when the caller knows them."""
    source, args = "profiles", []
    if prows is None and look is not None and chosen:
        prows = lookups.rowids(r.wh.con.con, look, chosen, "profiles")
    if prows is not None:
        # Rows by rowid first, compared after: with both filters on the table
        # DuckDB may compare every customer id instead.
        source = "(SELECT * FROM profiles WHERE rowid IN (SELECT unnest(?::BIGINT[])))"
        args.append(prows)
    prof = r.sql(
        "SELECT customer_id, first_seen, last_seen, orders, revenue, stages, traits "
        f"FROM {source} WHERE customer_id IN (SELECT unnest(?::VARCHAR[]))",
        [*args, chosen],
    )
    by = {str(row["customer_id"]): row for row in records(prof)}
    rows = []
    for cid in chosen:
        row = by.get(cid, {"customer_id": cid})
        for k in ("stages", "traits"):
            if isinstance(row.get(k), str):
                row[k] = json.loads(row[k] or "{}")
        rows.append(row)
    return rows


def customer(
    r: Reader, customer_id: str, page: int = 1, page_size: int = 50
) -> dict[str, Any]:
    """The single customer view: profile, identifiers, stage history, events."""
    from clm.identity.view import customer_view

    look = r.look()
    if look is not None:
        # Every rowid of the customer in one look-up, for all the tables below.
        look = {
            **look,
            "mine": lookups.customer_rowids(r.wh.con.con, look, customer_id),
        }
    resolved = _customer_table(r, look, "customers", customer_id, "1")
    if resolved.empty and _customer_table(r, look, "profiles", customer_id, "1").empty:
        raise NotFoundError(
            f"customer_id={customer_id!r}: no such customer; search with "
            "/api/v1/customers?q=… by any identifier or trait"
        )
    if resolved.empty:
        # A stand-in id of events not resolved yet: only the identity module's
        # view knows how to find them.
        v = customer_view(r.wh, customer_id, page=page, page_size=page_size)
    else:
        v = _resolved_view(r, look, customer_id, page, page_size)
    tl = v["timeline"]
    return {
        "customer_id": customer_id,
        "timezone": r.tz.key,
        "profile": plain(v["profile"]),
        "identifiers": records(v["identifiers"]),
        "merges": records(v["merges"]),
        "stage_history": records(v["stage_history"]),
        "timeline": {
            **page_of(int(tl["events"]), page, page_size),
            "rows": records(tl["rows"]),
        },
    }


def _customer_table(
    r: Reader,
    look: dict[str, Any] | None,
    table: str,
    cid: str,
    cols: str = "*",
    order: str = "",
) -> pd.DataFrame:
    """The rows of `table` about customer `cid`: by rowid through the server's
    look-up when there is one, else by comparing every customer id."""
    sql = lookups.customer_rows_sql(table, look)
    args: list[Any] = [cid]
    if look is not None:
        mine = look.get("mine")
        rids = mine.get(table, []) if mine is not None else None
        if rids is None:
            rids = lookups.rowids(r.wh.con.con, look, [cid], table)
        args = [rids, cid]
    return r.sql(
        f"SELECT {cols} FROM ({sql})" + (f" ORDER BY {order}" if order else ""), args
    )


def _resolved_view(
    r: Reader, look: dict[str, Any] | None, cid: str, page: int, page_size: int
) -> dict[str, Any]:
    """`identity.view.customer_view` for a resolved customer, with a timeline that
    reads only the customer's events.

    customer_view attributes every event of the warehouse to its customer and then
    keeps this one's: on 10M events that is seconds per page. Here the rows are
    read by rowid through the server's look-up tables when they are built for this
    data, else by a scan narrowed to the customer's raw ids; either way events are
    attributed with the same rule as `customer_events` and kept when the key is
    one of the customer's identifiers (`lookups.timeline_sql`). Same rows, same
    order."""
    from clm.identity.view import profile_record

    profile = profile_record(_customer_table(r, look, "profiles", cid))
    idents = _customer_table(
        r,
        look,
        "customers",
        cid,
        "identifier, kind, first_seen, last_seen, status",
        "kind, identifier",
    )
    merges = r.sql(
        "SELECT * FROM merge_log WHERE into_id = ? OR merged_id = ? ORDER BY logged_at",
        [cid, cid],
    )
    stages = _customer_table(
        r,
        look,
        "stage_history",
        cid,
        "model, model_version, stage, valid_from, valid_to",
        "model, model_version, valid_from",
    )
    keys = [str(i) for i in idents.identifier]
    sql, args = lookups.timeline_sql(r.wh.con.con, keys, look)
    # One read for the page and the count (a window over the customer's events).
    rows = r.sql(
        f"SELECT {', '.join(lookups.TIMELINE)}, count(*) OVER () AS _total "
        f"FROM ({sql}) ORDER BY timestamp DESC, event_id DESC LIMIT ? OFFSET ?",
        [*args, page_size, max(page - 1, 0) * page_size],
    )
    if len(rows):
        total = int(rows._total.iloc[0])
    else:
        total = int(r.sql(f"SELECT count(*) AS n FROM ({sql})", args).n.iloc[0])
    rows = rows.drop(columns="_total")
    return {
        "profile": profile,
        "identifiers": idents,
        "merges": merges,
        "stage_history": stages,
        "timeline": {"events": total, "rows": rows},
    }


# -- value, receipts -----------------------------------------------------------------


def _customer_value(r: Reader) -> pd.DataFrame:
    if not r.has("customer_value"):
        raise NotFoundError(
            "no customer values yet: run `clm clv predict` first (it also stores RFM)"
        )
    df = r.sql("SELECT * FROM customer_value")
    if df.empty:
        raise NotFoundError(
            "customer_value is empty: run `clm clv predict` first (it also stores RFM)"
        )
    return df


def rfm(r: Reader) -> dict[str, Any]:
    """Customers and value per RFM segment, from the `customer_value` table."""
    df = r.cached(("value",), lambda: _customer_value(r))
    seg = next((c for c in ("rfm_segment", "segment") if c in df.columns), None)
    if seg is None:
        raise NotFoundError(
            "customer_value has no RFM segment column; run `clm rfm` first"
        )
    agg = {"customers": (seg, "size")}
    for col in ("monetary_value", "revenue", "predicted_clv", "clv"):
        if col in df.columns:
            agg[f"mean_{col}"] = (col, "mean")
    out = df.groupby(seg).agg(**agg).reset_index().rename(columns={seg: "segment"})
    return {"customers": len(df), "segments": records(out)}


def clv(r: Reader) -> dict[str, Any]:
    """Summary of predicted CLV and P(alive) from the `customer_value` table."""
    df = r.cached(("value",), lambda: _customer_value(r))
    out: dict[str, Any] = {"customers": len(df), "columns": {}}
    for col in ("predicted_clv", "clv", "p_alive", "expected_purchases"):
        if col in df.columns:
            s = pd.to_numeric(df[col], errors="coerce")
            out["columns"][col] = {
                "mean": plain(s.mean()),
                "median": plain(s.median()),
                "p90": plain(s.quantile(0.9)),
                "sum": plain(s.sum()),
            }
    return out


def receipts(
    r: Reader, operation: str | None, page: int = 1, page_size: int = 50
) -> dict[str, Any]:
    where, args = ("WHERE operation = ?", [operation]) if operation else ("", [])
    total = int(r.sql(f"SELECT count(*) AS n FROM receipts {where}", args).n.iloc[0])
    df = r.sql(
        f"SELECT receipt_id, operation, source, started_at, body FROM receipts {where} "
        "ORDER BY started_at DESC LIMIT ? OFFSET ?",
        [*args, page_size, (page - 1) * page_size],
    )
    rows = []
    for row in records(df):
        row["body"] = json.loads(row["body"] or "{}")
        rows.append(row)
    return {**page_of(total, page, page_size), "rows": rows}


def receipt(r: Reader, receipt_id: str) -> dict[str, Any]:
    df = r.sql("SELECT * FROM receipts WHERE receipt_id = ?", [receipt_id])
    if df.empty:
        raise NotFoundError(
            f"receipt_id={receipt_id!r}: no such receipt; list them at /api/v1/receipts"
        )
    row = records(df)[0]
    row["body"] = json.loads(row["body"] or "{}")
    return row


# -- precomputed answers (written by `clm run`) ----------------------------------------

# Views whose cache key is (view, model, model version, …).
MODEL_VIEWS = (
    "populations",
    "series",
    "transitions",
    "stage",
    "stage_customers",
    "overview",
)


# Below this many events every page computes in about a second on first use, so
# `clm run` does not spend time (1.8 s on a 2,000-customer demo) precomputing.
PRECOMPUTE_MIN_EVENTS = 200_000


def precompute_after_run(ws: Workspace, models: list[StageModel]) -> int:
    """`precompute` when the workspace is big enough to need it (called by
    `Operations.run`); returns the number of answers stored, 0 when skipped."""
    wh = ws.warehouse
    if wh.con.name != "duckdb":
        return 0  # the server reads DuckDB cursors: nothing to serve from Spark
    if int(wh.scalar(wh.table("events").count())) < PRECOMPUTE_MIN_EVENTS:
        return 0
    return precompute(ws, models)


def _all_stages(r: Reader, m: StageModel, stamp: str) -> None:
    """The facts and the first page of customers of every stage of `m`, put into
    `r.cache` under the keys `stage_detail` reads, by one query per kind over all
    stages instead of one per stage (the precompute's stage pages cost a scan of
    `stage_history` each otherwise). Same rows and order as `stage_detail`."""
    day = queries.last_day(r.wh, m, r.tz)
    args = [m.name, m.version]
    hist = "model = ? AND model_version = ?"
    dur = r.sql(
        "SELECT stage, round(quantile_cont(d, 0.5), 6) AS median, "
        "round(avg(d), 6) AS mean, count(*) AS n FROM (SELECT stage, "
        "date_diff('second', valid_from, valid_to) / 86400.0 AS d "
        f"FROM stage_history WHERE {hist} AND valid_to IS NOT NULL) GROUP BY stage",
        args,
    )
    channels = r.sql(
        "SELECT h.stage, coalesce(p.first_channel, '(unknown)') AS channel, "
        "count(DISTINCT h.customer_id) AS customers "
        "FROM stage_history h LEFT JOIN profiles p USING (customer_id) "
        "WHERE h.model = ? AND h.model_version = ? GROUP BY 1, 2 "
        "ORDER BY 1, 3 DESC, 2",
        args,
    )
    moves = r.sql(
        "SELECT coalesce(from_stage, ?) AS from_stage, to_stage, count(*) AS n "
        "FROM stage_transitions WHERE model = ? AND model_version = ? "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        [queries.NEW, *args],
    )
    at = r.wh.con.compile(queries.stages_as_of(r.wh, m, day, r.tz))
    first = r.sql(
        "SELECT stage, customer_id, count(*) OVER (PARTITION BY stage) AS total "
        f"FROM ({at}) QUALIFY row_number() OVER "
        "(PARTITION BY stage ORDER BY customer_id) <= 50 ORDER BY stage, customer_id"
    )
    for stage in m.stage_names:
        d = dur[dur.stage == stage]
        none = {"median": None, "mean": None, "n": 0}
        r.cache[("stage", m.name, m.version, stage, stamp)] = {
            "time_in_stage_days": records(d.drop(columns="stage"))[0]
            if len(d)
            else none,
            "channels": records(
                channels[channels.stage == stage].drop(columns="stage")
            ),
            "entered_from": records(
                moves[moves.to_stage == stage][["from_stage", "n"]]
            ),
            "exited_to": records(moves[moves.from_stage == stage][["to_stage", "n"]]),
        }
        mine = first[first.stage == stage]
        r.cache[("stage_customers", m.name, m.version, stage, day, 1, 50, stamp)] = {
            "total": int(mine.total.iloc[0]) if len(mine) else 0,
            "rows": [str(c) for c in mine.customer_id],
        }


def precompute(ws: Workspace, models: list[StageModel]) -> int:
    """Store what the dashboard's pages need for `models` in `view_cache`.

    Runs the view functions once, exactly as the server would, with stored answers
    turned off, and keeps every JSON answer they cached; the metric values of each
    grain are stored in `metric_values` on the way (their context also gives the
    population series, so it is built once). Returns the number of answers stored.
    """
    from clm.metrics.context import release_staged_orders

    try:
        return _precompute(ws, models)
    finally:
        # The staged orders both grains' metrics shared (inside `clm run`).
        release_staged_orders(ws.warehouse)


def _precompute(ws: Workspace, models: list[StageModel]) -> int:
    from clm.metrics.compute import compute_metrics

    wh = ws.warehouse
    r = Reader(ws, wh, stored=False)
    stamp = r.stamp()
    for m in models:
        for g in dict.fromkeys((m.grain, "month")):
            res = compute_metrics(wh, m, grain=g, timezone=ws.timezone, store=True)
            if res.context is not None:
                key = ("series", m.name, m.version, g, stamp)
                r.cache[key] = series_records(res.context.population, m)
            overview(r, m.name, g)
        _all_stages(r, m, stamp)
        for s in m.stage_names:
            stage_detail(r, m.name, s, m.grain)
        transitions(r, m.name, None, None)
    cohorts(r)
    rows = []
    now = datetime.now(UTC).replace(tzinfo=None)
    for full, value in r.cache.items():
        # Only JSON answers; the metric frames are read from metric_values instead.
        if not isinstance(value, dict | list) or full[-1] != stamp:
            continue
        key = full[:-1]
        own = key[0] in MODEL_VIEWS
        rows.append(
            {
                "key": cache_key(key),
                "model": str(key[1]) if own else "",
                "model_version": int(key[2]) if own else 0,
                "body": json.dumps(value),
                "stamp": stamp,
                "computed_at": now,
            }
        )
    t = wh.table("view_cache")
    # Rows of any older stamp can never be read again: replace them all.
    wh.replace_rows("view_cache", t.key.notnull() | t.key.isnull(), pd.DataFrame(rows))
    return len(rows)
