"""In-memory look-up tables of `clm serve` for the customer pages, and the reads over
them.

Three questions of the dashboard cannot be answered from the pipeline's tables
without scanning them whole, which on 10M events costs 0.03-1.5 s per request:

- **Which events belong to a customer?** (the timeline of the single customer view)
  `event_keys` holds, per distinct (user id, anonymous id) pair of the events, the
  hash of the identifier key the pair is attributed by (`identifiers.event_key_sql`:
  the user id, else the anonymous id) and the rowids of its events. A timeline
  hashes the customer's identifier keys, finds their entries through `rows` (below)
  and fetches the events by rowid, which DuckDB does row group by row group without
  a scan. The fetched rows are checked again with the attribution rule, so a hash
  collision or a stale entry can only ever drop an event, never show another's.
- **Where are a customer's rows?** `rows` holds hash(customer id), table and rowid of
  every row of `profiles`, `customers` and `stage_history`, hash(identifier) of
  `customers` and the key hash of `event_keys`, sorted by the hash, so the single
  customer view and the exact search read their few rows by rowid instead of
  comparing 1-2M ids per table.
- **Which customers match a search?** `search` holds lower-cased search terms and the
  customer they lead to: every identifier key that is not hashed (`user:…`, `anon:…`,
  `custom:…`), its value alone, every profile trait value and each word of one. It
  is sorted by term, so a prefix search is a range predicate that DuckDB's zone maps
  narrow to a row group or two.

Where they live. Not in the workspace file: they are built by the server itself, in
an in-memory database attached to its DuckDB instance (`ATTACH ':memory:'`, so every
request cursor can join them with the workspace's tables), in a background thread
when the reader is first used and again whenever the receipts stamp changes (an
import, erase or split). `clm run` pays nothing for them; no copy of identifiers
outlives an erasure on disk. Until a build is ready (10-15 s at 10.7M events on
one thread, more on a loaded machine; 174 MB of memory, compressed) the readers use
the same queries over the pipeline's tables, slower but with the same answers.
Events the collector appends after a build lie past its recorded last rowid and
are found by a scan of that tail alone (skipped while the event count is unchanged).

Shortcoming: DuckDB keeps rowids stable while rows are only appended; deleting
events (an erase) changes the stamp, and the tables are rebuilt.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from clm.identity import view
from clm.identity.identifiers import ANON, USER, event_key_sql

log = logging.getLogger("clm.server")

# The name of the attached in-memory database.
DB = "clm_lookups"
# The largest code point: `q || TOP` is above every text that starts with q.
TOP = chr(0x10FFFF)
# A search lists at most this many customers (the best-matching terms first).
SEARCH_CAP = 1000
# One mark per this many rows of the sorted search terms.
SPARSE = 1024

# Identifier kinds whose value is kept in clear, so a prefix of it can be searched.
# Emails and phones are hashed: they are found by the exact look-up only.
CLEAR_KINDS = ("user", "anon", "custom")


def terms_sql() -> str:
    """SQL: (term, customer_id) rows of every search term, duplicates included."""
    kinds = ", ".join(f"'{k}'" for k in CLEAR_KINDS)
    return f"""
        SELECT lower(identifier) AS term, customer_id FROM customers
          WHERE kind IN ({kinds})
        UNION ALL
        SELECT lower(CASE kind
            WHEN 'custom' THEN regexp_replace(identifier, '^custom:[^:]*:', '')
            ELSE substr(identifier, strpos(identifier, ':') + 1) END), customer_id
          FROM customers WHERE kind IN ({kinds})
        UNION ALL
        SELECT term, customer_id FROM (
            SELECT customer_id,
              unnest(list_distinct([v] || string_split_regex(v, '\\s+'))) AS term
            FROM (
                SELECT p.customer_id, lower(j.value ->> '$') AS v
                FROM profiles p, json_each(p.traits) j
                WHERE p.traits IS NOT NULL AND p.traits <> '{{}}'
                  AND j.type NOT IN ('OBJECT', 'ARRAY', 'NULL')))
        WHERE term <> ''"""


class Lookups:
    """The server's look-up tables: built in the background, one generation at a
    time, swapped in when complete. `ready(stamp)` gives the names of a generation
    built at `stamp`, or None (and starts a build)."""

    def __init__(self, con: Any) -> None:
        self.con = con  # the server's DuckDB connection; builds use a cursor of it
        self.lock = threading.Lock()
        self.current: dict[str, Any] | None = None
        self.building: str | None = None
        self.generation = 0
        self.seconds: float | None = None
        self.error: str | None = None
        # Run in the build's thread once a generation is ready (the server warms
        # the model preview's sample there); `warmed`: the stamp it last finished.
        self.after: Callable[[str], None] | None = None
        self.warmed: str | None = None

    def ready(self, stamp: str) -> dict[str, Any] | None:
        with self.lock:
            cur = self.current
            if cur is not None and cur["stamp"] == stamp:
                return cur
            if self.building != stamp:
                self.building = stamp
                threading.Thread(
                    target=self._build, args=(stamp,), name="clm-lookups", daemon=True
                ).start()
        return None

    def build_now(self, stamp: str) -> dict[str, Any]:
        """Build a generation in this thread and use it (tests, benchmarks)."""
        names = self._write(stamp)
        with self.lock:
            self.current = names
        return names

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {
            "ready": cur is not None,
            "stamp": cur["stamp"] if cur else None,
            "building": self.building is not None,
            "seconds": self.seconds,
            "error": self.error,
            # Whether the work after the build (the preview's sample) is done too.
            "warm": cur is not None and self.warmed == cur["stamp"],
        }

    def _build(self, stamp: str) -> None:
        t = time.perf_counter()
        try:
            names = self._write(stamp)
        except Exception as exc:  # a failed build leaves the scans in place
            log.exception("look-up tables for the customer pages failed")
            with self.lock:
                self.building, self.error = None, f"{type(exc).__name__}: {exc}"
            return
        with self.lock:
            old, self.current = self.current, names
            self.building, self.error = None, None
            self.seconds = time.perf_counter() - t
        log.info("look-up tables ready in %.1f s", self.seconds)
        if self.after is not None:
            try:
                self.after(stamp)
            except Exception:  # the preview then loads its sample on first use
                log.exception("warming after the look-up tables failed")
        self.warmed = stamp
        if old is not None:
            # Requests that read the old names finish within seconds; a later one
            # reads the new names. Dropping them frees their memory.
            time.sleep(30)
            cur = self.con.cursor()
            for key in ("event_keys", "rows", "search"):
                cur.execute(f"DROP TABLE IF EXISTS {old[key]}")

    def _write(self, stamp: str) -> dict[str, Any]:
        """Build one generation; returns its table names and last rowid."""
        cur = self.con.cursor()
        cur.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {DB} (COMPRESS)")
        self.generation += 1
        g = self.generation
        names = {k: f"{DB}.{k}_{g}" for k in ("event_keys", "rows", "search")}
        # Events past `last` may be written while this runs: they are the tail that
        # timelines scan.
        last = cur.execute(
            "SELECT coalesce(max(rowid) + 1, 0), count(*) FROM events"
        ).fetchone()
        rows, count = (int(last[0]), int(last[1])) if last else (0, 0)
        # Group by the raw pair first: the attribution rule (trim, placeholder list)
        # then runs once per pair (~1.3M) instead of once per event (~10M), as
        # identity.resolve.customer_events does. No sort: a list column makes it
        # costly, and comparing 1.3M integers takes a few ms.
        cur.execute(
            f"""CREATE OR REPLACE TABLE {names["event_keys"]} AS
            SELECT hash(k) AS h, rids FROM (
                SELECT {event_key_sql("u", "a")} AS k, rids FROM (
                    SELECT user_id AS u, anonymous_id AS a, list(rowid) AS rids
                    FROM events WHERE rowid < ? GROUP BY ALL))
            WHERE k IS NOT NULL""",
            [rows],
        )
        cur.execute(
            f"""CREATE OR REPLACE TABLE {names["rows"]} AS
            SELECT * FROM (
                SELECT hash(customer_id) AS h, 'profiles' AS tbl, rowid AS rid
                  FROM profiles
                UNION ALL SELECT hash(customer_id), 'customers', rowid FROM customers
                UNION ALL SELECT hash(identifier), 'identifiers', rowid FROM customers
                UNION ALL SELECT h, 'event_keys', rowid FROM {names["event_keys"]}
                UNION ALL SELECT hash(customer_id), 'stage_history', rowid
                  FROM stage_history)
            ORDER BY h"""
        )
        # Sorted by (term, customer id), the order a search ranks in; DuckDB keeps
        # the insertion order, so rowids follow it too.
        # With the rowid of the customer's profile (`prow`): a page of hits then
        # reads its 50 profiles by rowid.
        cur.execute(
            f"""CREATE OR REPLACE TABLE {names["search"]} AS
            SELECT t.term, t.customer_id, min(p.rowid) AS prow
            FROM ({terms_sql()}) t LEFT JOIN profiles p USING (customer_id)
            GROUP BY ALL ORDER BY t.term, t.customer_id"""
        )
        # Every SPARSE-th term with its rowid: a search bisects this list for where
        # its prefix starts and reads only the rowids from there (see search_sql).
        marks = cur.execute(
            f"SELECT rowid, term FROM {names['search']} "
            f"WHERE rowid % {SPARSE} = 0 ORDER BY rowid"
        ).fetchall()
        # Compressed when checkpointed (`COMPRESS` above): 626 MB → 174 MB at
        # 10.7M events, for ~2 s more of this background build.
        cur.execute(f"CHECKPOINT {DB}")
        return {
            "stamp": stamp,
            "last_rowid": rows,
            "count": count,
            "marks": ([str(t) for _, t in marks], [int(r) for r, _ in marks]),
            **names,
        }


# -- the timeline ---------------------------------------------------------------------

# The timeline's columns, as `identity.view.customer_view` shows them.
TIMELINE = view.TIMELINE


def rowids(con: Any, look: dict[str, Any], cids: list[str], table: str) -> list[int]:
    """The rowids of `table` ("profiles", "customers", "stage_history") that may
    hold the customers `cids` (the caller still filters by customer_id)."""
    got = con.execute(
        f"SELECT rid FROM {look['rows']} "
        "WHERE h IN (SELECT hash(unnest(?::VARCHAR[]))) AND tbl = ?",
        [cids, table],
    ).fetchall()
    return [int(x[0]) for x in got]


def customer_rowids(con: Any, look: dict[str, Any], cid: str) -> dict[str, list[int]]:
    """The rowids per table ("profiles", "customers", "stage_history") that may
    hold customer `cid`, in one look-up."""
    got = con.execute(
        f"SELECT tbl, rid FROM {look['rows']} WHERE h IN (SELECT hash(?)) "
        "AND tbl IN ('profiles', 'customers', 'stage_history')",
        [cid],
    ).fetchall()
    out: dict[str, list[int]] = {}
    for tbl, rid in got:
        out.setdefault(str(tbl), []).append(int(rid))
    return out


def exact_rowids(con: Any, look: dict[str, Any], q: str, keys: list[str]) -> list[int]:
    """The rowids of `customers` whose customer id is `q` or identifier in `keys`
    (up to hash collisions: the caller compares again)."""
    # A union, not one filter with OR: an OR is not pushed into the sorted scan;
    # `h IN (SELECT hash(?))`, not `h = hash(?)`: only the first narrows the scan
    # of the sorted hashes (a join filter) when the value is a parameter.
    got = con.execute(
        f"""SELECT rid FROM {look["rows"]}
        WHERE h IN (SELECT hash(?)) AND tbl = 'customers'
        UNION ALL
        SELECT rid FROM {look["rows"]}
        WHERE h IN (SELECT hash(unnest(?::VARCHAR[]))) AND tbl = 'identifiers'""",
        [q, keys],
    ).fetchall()
    return [int(x[0]) for x in got]


def customer_rows_sql(table: str, look: dict[str, Any] | None) -> str:
    """SQL of the rows of `table` of one customer: parameters (rowids, customer id)
    with a look-up, (customer id) without."""
    if look is None:
        return f"SELECT * FROM {table} WHERE customer_id = ?"
    return (
        f"SELECT * FROM {table} WHERE rowid IN (SELECT unnest(?::BIGINT[])) "
        "AND customer_id = ?"
    )


def timeline_sql(
    con: Any, keys: list[str], look: dict[str, Any] | None
) -> tuple[str, list[Any]]:
    """SQL and parameters of the events of the customer with identifier `keys`.

    With a look-up (`look`), the events are fetched by rowid, plus a scan of the
    rows appended since it was built; without, every event is scanned for the raw
    ids. Either way an event is kept only when its key, by the rule of
    `identity.resolve.customer_events` (user id, else anonymous id; bot events left
    out), is one of `keys`."""
    users = [k[len(USER) :] for k in keys if k.startswith(USER)]
    anons = [k[len(ANON) :] for k in keys if k.startswith(ANON)]
    # contains() before the exact rule: a raw id may carry spaces that the key
    # trims, and a substring test is several times cheaper than trimming.
    near = ["contains(user_id, ?)" for _ in users]
    near += ["contains(anonymous_id, ?)" for _ in anons]
    scan = " OR ".join(near) or "false"
    check = (
        "NOT coalesce(contains(context, '\"bot\":true'), false) "
        f"AND {event_key_sql()} IN (SELECT unnest(?::VARCHAR[]))"
    )
    if look is None:
        sql = f"SELECT * FROM events WHERE ({scan}) AND {check}"
        return sql, [*users, *anons, keys]
    # The rowids first, in their own query: a rowid list is pushed into the scan
    # of events (only the row groups holding them are read); a subquery is not.
    got = con.execute(
        f"SELECT unnest(rids) FROM {look['event_keys']} "
        "WHERE rowid IN (SELECT unnest(?::BIGINT[])) "
        "AND h IN (SELECT hash(unnest(?::VARCHAR[])))",
        [rowids(con, look, keys, "event_keys"), keys],
    ).fetchall()
    rids = [int(x[0]) for x in got]
    by_rowid = "SELECT * FROM events WHERE rowid IN (SELECT unnest(?::BIGINT[]))"
    # The tail appended since the build, scanned only when there is one (the
    # count, unlike max(rowid), comes from the table's metadata).
    now = con.execute("SELECT count(*) FROM events").fetchone()
    if now is not None and int(now[0]) == int(look["count"]):
        return f"SELECT * FROM ({by_rowid}) WHERE {check}", [rids, keys]
    sql = f"""SELECT * FROM (
        {by_rowid}
        UNION ALL
        SELECT * FROM events WHERE rowid >= ? AND ({scan}))
    WHERE {check}"""
    return sql, [rids, int(look["last_rowid"]), *users, *anons, keys]


# -- search ---------------------------------------------------------------------------


def _terms_from(look: dict[str, Any] | None, low: str) -> str:
    """The search terms a query starting with `low` needs to read.

    Without a look-up, all of them (computed). With one, only the rows from the
    last mark below `low` on: matches are contiguous in the sorted table, so the
    first 4 x SEARCH_CAP of them lie within SPARSE + 4 x SEARCH_CAP rows of that
    mark, and a rowid range is read without touching the rest (a broad query such
    as `an`, matching a million terms, then costs what a narrow one does)."""
    if look is None:
        return f"(SELECT *, NULL::BIGINT AS prow FROM ({terms_sql()}))"
    terms, rids = look["marks"]
    # The last mark strictly below `low`: the first match comes after it and
    # before the next mark, however many terms equal `low`.
    i = bisect.bisect_left(terms, low) - 1
    lo = rids[i] if i >= 0 else 0
    hi = lo + SPARSE + 4 * SEARCH_CAP
    return f"(SELECT * FROM {look['search']} WHERE rowid >= {lo} AND rowid < {hi})"


def search_sql(look: dict[str, Any] | None, low: str) -> str:
    """SQL of one page of hits of the lower-cased query `low`: parameters (low,
    high, skip, limit, offset).

    Matching terms are taken in term order up to 4 x SEARCH_CAP rows (a customer has
    a few terms), grouped by customer and ranked by the customer's smallest matching
    term, then by id; `total` counts them and `capped` says whether the cap was
    reached (then more customers match than are listed); `prow` is the rowid of
    the customer's profile (NULL without a look-up)."""
    source = _terms_from(look, low)
    cap = 4 * SEARCH_CAP
    return f"""
        WITH m AS (
            SELECT term, customer_id, prow FROM {source}
            WHERE term >= ? AND term < ?
            ORDER BY term, customer_id LIMIT {cap}),
        c AS (
            SELECT customer_id, min(term) AS best, min(prow) AS prow FROM m
            WHERE customer_id <> ? GROUP BY 1
            ORDER BY best, customer_id LIMIT {SEARCH_CAP})
        SELECT customer_id, prow, count(*) OVER () AS total,
          (SELECT count(*) FROM m) >= {cap} AS capped
        FROM c ORDER BY best, customer_id LIMIT ? OFFSET ?"""


def search_count_sql(look: dict[str, Any] | None, low: str) -> str:
    """SQL of the number of hits alone (for a page past the last): parameters
    (low, high, skip)."""
    source = _terms_from(look, low)
    cap = 4 * SEARCH_CAP
    return f"""
        WITH m AS (
            SELECT term, customer_id FROM {source}
            WHERE term >= ? AND term < ?
            ORDER BY term, customer_id LIMIT {cap})
        SELECT least(count(DISTINCT customer_id), {SEARCH_CAP}) AS total,
          count(*) >= {cap} AS capped
        FROM m WHERE customer_id <> ?"""
