"""Move sealed spool segments into the warehouse, exactly once.

The loader takes every sealed segment (oldest first, at most `batch_files` at a time),
and in one DuckDB transaction inserts its event records into `events` and its reject
records into `rejected`; then it deletes the segment files. On the way it enriches
the events (user agent, bot flag, utm_* from the URL, channel: Python rules of
`enrich.py` run once per distinct value and joined back; sessions in SQL, see
`sessions.py`), work that the request path leaves out because the client's answer
does not depend on it.

Exactly once across crashes: a crash after the commit but before the delete leaves
the segments in place, and they are loaded again on restart. That second load adds
nothing, because the insert skips every `event_id` already in `events` (and keeps one
row per `event_id` within the batch, so a client's retried message counts once).
Rejects are matched on (source, rejected_at, field, raw) the same way. The event-id
check looks at events received up to `serve.dedup_window_minutes` (default a day)
before the batch, so that its cost does not grow with the warehouse: a client
resending a messageId later than that would be stored twice (SDKs retry within
minutes; a replayed segment keeps its original received_at, so a replay is caught
with any window, 0 included). Progress is therefore never "marked" anywhere but in
the warehouse itself, which is the only mark that cannot disagree with the data.

How the check stays cheap: the `Loader` keeps 64-bit hashes of the ids stored in the
window in memory (`RecentIds`: numpy hash tables, filled from `events` by the first
load after a start, which checks in SQL) and looks up only the batch's ids there, so a
load's check costs the same however much the window holds; an id found there is
confirmed against `events` before it is dropped (a scan of the window as before, but
only in loads that hold a retried id or a hash collision). Memory: 16 to 32 bytes per
id, for one to one and a half windows of ids, so a day's window at a sustained 1,000
events/s (86 million ids) takes 2 to 4 GB and its first load after a start about 30 s:
such a collector wants a window of hours. Known limit: ids written to `events` by
anything else while the server runs (a file import) are not in memory, so the
collector would store an event with such an id again (the SQL check of earlier
versions caught those within the window).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clm.collect.enrich import UTM, campaign_and_channel, parse_user_agent
from clm.collect.sessions import assign_sessions
from clm.collect.spool import name_os_thread, sealed_segments
from clm.errors import EngineError
from clm.warehouse.engine import Warehouse
from clm.warehouse.schema import EVENTS, REJECTED

log = logging.getLogger("clm.collect")

_DUCK = {"string": "VARCHAR", "timestamp": "TIMESTAMP", "float64": "DOUBLE"}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns() -> str:
    cols: dict[str, str] = {"k": "VARCHAR"}
    for name, dtype in EVENTS.items():
        cols[name] = _DUCK[str(dtype).split("(")[0]]
    # Objects in today's records, JSON strings in those of older versions. Read as
    # VARCHAR, either arrives as the text to store (an object as its JSON text, a
    # string as its content). `context` stays JSON: its type tells an older
    # record (enriched already) apart.
    cols.update(properties="VARCHAR", context="JSON")
    # The request path keeps `context.clm` apart (a client's own, rarely sent) and
    # the protocol; the loader builds `context.clm` from them (see _context_sql).
    cols.update(clm_in="JSON", protocol="VARCHAR")
    cols.update(
        row_number="BIGINT",
        field="VARCHAR",
        value="VARCHAR",
        reason="VARCHAR",
        raw="VARCHAR",
        rejected_at="TIMESTAMP",
    )
    return "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in cols.items()) + "}"


COLUMNS = _columns()
DEDUP_WINDOW_HOURS = 24
# The loader thread's nice value. 10 (below the request and fsync threads) until
# back-pressure (intake.py) bounded the lag: at 10 the loader lost the CPU to every
# other process on a busy machine and answers were held back three times as long;
# at 0 it keeps up, and the answers' p99 stayed the same (docs/benchmarks-collector.md).
LOADER_NICE = 0


def _spool_table(
    con: Any, files: list[Path], window_minutes: int
) -> tuple[int, int, str, datetime | None, datetime | None]:
    """Read `files` into temp table `_clm_spool`; (events, rejects, dedup start,
    oldest and newest received_at of the events)."""
    paths = "[" + ", ".join(_q(str(p)) for p in files) + "]"
    read = (
        f"read_json({paths}, format='newline_delimited', columns={COLUMNS}, "
        "maximum_object_size=1048576)"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _clm_spool AS SELECT * FROM {read}")
    seen = con.execute(
        "SELECT count(*) FILTER (WHERE k = 'e'), count(*) FILTER (WHERE k = 'r'), "
        f"strftime(coalesce(min(received_at), now()::TIMESTAMP) "
        f"- INTERVAL {int(window_minutes)} MINUTE, '%Y-%m-%d %H:%M:%S.%f'), "
        "min(received_at) FILTER (WHERE k = 'e'), "
        "max(received_at) FILTER (WHERE k = 'e') FROM _clm_spool"
    ).fetchone()
    assert seen is not None
    return int(seen[0]), int(seen[1]), str(seen[2]), seen[3], seen[4]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads any key bits


class HashSet:
    """A set of uint64 keys in one numpy array (open addressing, linear probing),
    looked up and added to a whole batch at a time. At most half full, so it takes
    16 to 32 bytes per key, against about 70 for a Python set of the same ints.
    Key 0 marks a free slot, so 0 is stored as 1: a false match that the loader's
    SQL confirmation catches, like any other hash collision."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.table = np.zeros(capacity, dtype=np.uint64)
        self.count = 0

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        bits = len(self.table).bit_length() - 1
        return (keys * _GOLDEN) >> np.uint64(64 - bits)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `hashes` are in the set."""
        keys = np.where(hashes == 0, np.uint64(1), hashes)
        mask = np.uint64(len(self.table) - 1)
        slot = self._slots(keys)
        found = np.zeros(len(keys), dtype=bool)
        todo = np.arange(len(keys))
        while len(todo):
            v = self.table[slot[todo]]
            hit = v == keys[todo]
            found[todo[hit]] = True
            todo = todo[~hit & (v != 0)]
            slot[todo] = (slot[todo] + np.uint64(1)) & mask
        return found

    def add(self, hashes: np.ndarray) -> None:
        """Add `hashes`. A key added twice takes two slots (and counts twice), which
        look-ups do not mind; the loader adds ids once, so that is rare."""
        if (self.count + len(hashes)) * 2 > len(self.table):
            old = self.table[self.table != 0]
            cap = len(self.table)
            while (self.count + len(hashes)) * 2 > cap:
                cap *= 2
            self.table, self.count = np.zeros(cap, dtype=np.uint64), 0
            self._insert(old)
        self._insert(np.where(hashes == 0, np.uint64(1), hashes))

    def _insert(self, keys: np.ndarray) -> None:
        mask = np.uint64(len(self.table) - 1)
        slot = self._slots(keys)
        todo = np.arange(len(keys))
        while len(todo):
            cand = todo[self.table[slot[todo]] == 0]
            # Keys wanting the same free slot: one write lands; read back which.
            self.table[slot[cand]] = keys[cand]
            won = self.table[slot[cand]] == keys[cand]
            self.count += int(won.sum())
            done = np.zeros(len(keys), dtype=bool)
            done[cand[won]] = True
            todo = todo[~done[todo]]
            slot[todo] = (slot[todo] + np.uint64(1)) & mask


class RecentIds:
    """Hashes of the event ids stored in the dedup window, in memory, so that the
    loader checks a batch's ids without reading the warehouse (see the module
    docstring).

    The hashes are 64-bit (DuckDB's `hash` of the event id), kept in generations of
    half the window each (a `HashSet` per generation); a generation is dropped once
    its newest event left the window, so an id is held for one to one and a half
    windows and a check costs at most three hash look-ups per id, whatever the
    warehouse holds. `since` is the oldest received_at from which on every stored
    id is known; a batch reaching further back (a replay of old segments) is
    checked in SQL. A hash found here is only a candidate: the loader confirms it
    against `events`, so a collision never drops an event.
    """

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self.span = max(window / 2, timedelta(seconds=1))
        self.since: datetime | None = None  # None: nothing known yet
        self.frozen: list[tuple[datetime, HashSet]] = []  # (newest, hashes)
        self.current = HashSet()
        self.current_start: datetime | None = None
        self.current_newest: datetime | None = None

    def __len__(self) -> int:
        return self.current.count + sum(g.count for _, g in self.frozen)

    def covers(self, since: datetime) -> bool:
        return self.since is not None and since >= self.since

    def reset(self, since: datetime, hashes: np.ndarray, newest: datetime) -> None:
        """Start over from every id stored since `since` (read from `events`)."""
        self.since = since
        known = HashSet()
        known.add(hashes.astype(np.uint64))
        self.frozen = [(newest, known)]
        self.current, self.current_start, self.current_newest = HashSet(), None, None

    def seen(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `hashes` (uint64) may have been stored."""
        found = self.current.contains(hashes)
        for _, gen in self.frozen:
            found |= gen.contains(hashes)
        return found

    def add(self, hashes: np.ndarray, oldest: datetime, newest: datetime) -> None:
        """Record the ids of a committed load received from `oldest` to `newest`."""
        if self.current_start is None:
            self.current_start = oldest
        # A hash held already (a collision, an id stored again after it left the
        # window) is added again: a second slot, found by look-ups all the same.
        self.current.add(hashes.astype(np.uint64))
        self.current_newest = max(self.current_newest or newest, newest)
        if newest - self.current_start >= self.span:
            self.frozen.append((self.current_newest, self.current))
            self.current, self.current_start, self.current_newest = (
                HashSet(),
                None,
                None,
            )
        # Generations wholly out of the window go; ids after them stay known.
        cutoff = oldest - self.window
        while self.frozen and self.frozen[0][0] < cutoff:
            gone, _ = self.frozen.pop(0)
            if self.since is not None:
                self.since = max(self.since, gone)


# Records of an older clm carry `context` as a JSON string (enriched already), whose
# JSON text starts with a quote; today's carry an object. Telling them apart by the
# first character costs a string look-up, `json_type` a parse of the whole context.
_LEGACY = "coalesce(starts_with(context::VARCHAR, '\"'), false) AS legacy"


def _new_events(
    con: Any, since: str, n_events: int, recent: RecentIds | None
) -> tuple[np.ndarray | None, int]:
    """View `_clm_new`: the batch's events not yet stored, one per event_id (the
    first record of an id in file order, which is spool order), with `rid` unique.

    Returns the hashes of the ids kept (for `recent`, once committed) and the
    number of events kept. With `recent` covering `since`, ids are looked up in
    memory, and only candidates found there are confirmed against `events`;
    otherwise (first load after a start, a replay of old segments, tests calling
    `load_segments` alone) ids already stored are found by a semi-join over the
    events received since `since`, and `recent` is rebuilt from them.
    """
    first = con.execute(
        "SELECT min(rowid) AS r, hash(event_id) AS h FROM _clm_spool "
        "WHERE k = 'e' GROUP BY event_id"
    ).fetchnumpy()
    rows, hashes = first["r"], first["h"]
    since_ts = datetime.fromisoformat(since)
    if recent is not None and recent.covers(since_ts):
        candidates = recent.seen(hashes)
        drop = np.zeros(len(rows), dtype=bool)
        if candidates.any():
            hit = con.execute(
                f"""SELECT s.rowid AS r FROM _clm_spool s
                WHERE s.rowid IN (SELECT unnest(?::BIGINT[]))
                  AND s.event_id IN (SELECT event_id FROM events
                                     WHERE received_at >= TIMESTAMP {_q(since)})""",
                [rows[candidates].tolist()],
            ).fetchnumpy()["r"]
            drop = np.isin(rows, hit)
    else:
        known = con.execute(
            f"""SELECT s.r FROM (SELECT min(rowid) AS r, event_id FROM _clm_spool
                WHERE k = 'e' GROUP BY event_id) s
            WHERE s.event_id IN (
              SELECT event_id FROM events
              WHERE received_at >= TIMESTAMP {_q(since)}
                AND event_id IN (SELECT event_id FROM _clm_spool WHERE k = 'e'))"""
        ).fetchnumpy()["r"]
        drop = np.isin(rows, known)
        if recent is not None:
            stored = con.execute(
                f"""SELECT hash(event_id) AS h FROM events
                WHERE received_at >= TIMESTAMP {_q(since)}"""
            ).fetchnumpy()
            newest = con.execute(
                f"""SELECT max(received_at) FROM events
                WHERE received_at >= TIMESTAMP {_q(since)}"""
            ).fetchone()
            last = newest[0] if newest and newest[0] is not None else since_ts
            recent.reset(since_ts, stored["h"], last)
    keep = rows[~drop]
    if len(keep) == n_events:
        # The common case: no id twice, none stored before; no join needed.
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _clm_new AS "
            f"SELECT rowid AS rid, *, {_LEGACY} "
            "FROM _clm_spool WHERE k = 'e'"
        )
    else:
        con.register("_clm_keep", pa.table({"r": pa.array(keep, pa.int64())}))
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _clm_keep_t AS SELECT r FROM _clm_keep"
        )
        con.unregister("_clm_keep")
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _clm_new AS "
            f"SELECT rowid AS rid, *, {_LEGACY} "
            "FROM _clm_spool WHERE rowid IN (SELECT r FROM _clm_keep_t)"
        )
    return hashes[~drop], len(keep)


def _values_table(
    con: Any, name: str, columns: dict[str, str], rows: list[Any]
) -> None:
    """A temp table from Python rows: one list parameter per column, unnested."""
    select = ", ".join(f"unnest(?::{kind}[]) AS {col}" for col, kind in columns.items())
    params = (
        [list(col) for col in zip(*rows, strict=True)]
        if rows
        else [[] for _ in columns]
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {select}", params)


def _enrichment_tables(con: Any) -> None:
    """`_clm_ua` (per distinct user agent) and `_clm_ch` (per distinct url, referrer
    and utm_*): the Python rules of `enrich.py`, run once per distinct value."""
    uas = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT user_agent FROM _clm_new WHERE user_agent <> ''"
        ).fetchall()
    ]
    _values_table(
        con,
        "_clm_ua",
        {
            "user_agent": "VARCHAR",
            "browser": "VARCHAR",
            "os": "VARCHAR",
            "device": "VARCHAR",
            "bot": "BOOLEAN",
        },
        [(ua, *parse_user_agent(ua)) for ua in uas],
    )
    keys = con.execute(
        f"SELECT DISTINCT url, referrer, {', '.join(UTM)} FROM _clm_new"
    ).fetchall()
    _values_table(
        con,
        "_clm_ch",
        {
            "url": "VARCHAR",
            "referrer": "VARCHAR",
            **{f"k_{u}": "VARCHAR" for u in UTM},
            **{u: "VARCHAR" for u in UTM},
            "channel": "VARCHAR",
        },
        [(*k, *campaign_and_channel(k[0], k[1], k[2:])) for k in keys],
    )


def _context_sql(bot_filter: bool) -> str:
    """The stored context: the spooled one with `clm` (protocol, browser, os,
    device, bot) added, over the columns of `_clm_rows` (alias u).

    The common case appends `"clm": {...}` to the context's JSON text, which costs a
    string copy; a JSON merge patch (parse and rewrite the whole context) is used
    only where the client sent a `context.clm` of its own (kept in `clm_in`) and for
    records of older versions. In a merge patch a null value removes the key: that
    is how `bot_filter = 0` leaves `bot` out.
    """
    protocol = "u.protocol"
    ua = f"'protocol', {protocol}, 'browser', u.browser, 'os', u.os, 'device', u.device"
    if bot_filter:
        fresh = patch = (
            "CASE WHEN coalesce(u.user_agent, '') = '' "
            f"THEN json_object('protocol', {protocol}, 'bot', false) "
            f"ELSE json_object({ua}, 'bot', u.bot) END"
        )
    else:
        fresh = (
            "CASE WHEN coalesce(u.user_agent, '') = '' "
            f"THEN json_object('protocol', {protocol}) ELSE json_object({ua}) END"
        )
        patch = (
            "CASE WHEN coalesce(u.user_agent, '') = '' "
            f"THEN json_object('protocol', {protocol}, 'bot', NULL) "
            f"ELSE json_object({ua}, 'bot', NULL) END"
        )

    def append(clm: str) -> str:
        return (
            "CASE WHEN u.context = '{}' "
            f"""THEN '{{"clm":' || ({clm})::VARCHAR || '}}' """
            f"""ELSE left(u.context, -1) || ',"clm":' || ({clm})::VARCHAR || '}}' END"""
        )

    merged = append(f"json_merge_patch(u.clm_in, {patch})")
    return (
        "CASE WHEN u.legacy THEN json_merge_patch(u.context, "
        f"json_object('clm', {patch}))::VARCHAR "
        f"WHEN u.clm_in IS NOT NULL THEN {merged} ELSE {append(fresh)} END"
    )


def load_segments(
    wh: Warehouse,
    files: list[Path],
    *,
    session_timeout_minutes: int = 30,
    bot_filter: bool = True,
    dedup_window_minutes: int = DEDUP_WINDOW_HOURS * 60,
    recent: RecentIds | None = None,
) -> dict[str, int]:
    """Insert the records of `files` (sealed segments); return counts. Idempotent.

    Events are enriched here, per batch: user agent (browser, OS, device, bot),
    utm_* from the page URL, channel and session (see `sessions.py`). `recent`
    (the loader's, kept across loads) makes the event-id check independent of the
    window's size; without it the check reads the window from `events`.
    """
    if not files:
        return {"events_written": 0, "duplicates_skipped": 0, "rejected": 0}
    batch_id = "load-" + uuid.uuid4().hex[:12]
    rcols = ", ".join(f'"{c}"' for c in REJECTED.names if c != "import_id")
    # A cursor of its own: a second connection to the same database, so that the
    # loader thread's transaction never mixes with statements that other threads
    # (the read API, the dashboard) run on the workspace's connection meanwhile.
    con = wh.con.con.cursor()
    con.execute("BEGIN TRANSACTION")
    try:
        n_events, n_rejects, since, oldest, newest = _spool_table(
            con, files, dedup_window_minutes
        )
        written, kept_hashes = 0, None
        if n_events:
            kept_hashes, _ = _new_events(con, since, n_events, recent)
            _enrichment_tables(con)
            # Records of an older clm carry properties/context as JSON text (a
            # JSON string) and were enriched already; today's carry objects.
            # A view, not a table: the session pass reads only its small columns,
            # and the big JSON texts are copied once, by the INSERT.
            con.execute(
                f"""CREATE OR REPLACE TEMP VIEW _clm_rows AS
                SELECT n.* EXCLUDE (context, protocol, {", ".join(UTM)}, channel),
                  CASE WHEN n.legacy THEN n.context ->> '$'
                       ELSE coalesce(n.context::VARCHAR, '{{}}') END AS context,
                  n.legacy,
                  CASE WHEN n.legacy
                       THEN json_extract_string(n.context ->> '$', '$.clm.protocol')
                       ELSE n.protocol END AS protocol,
                  {", ".join(f"c.{u}" for u in UTM)},
                  coalesce(n.channel, c.channel) AS channel,
                  u.browser, u.os, u.device, u.bot
                FROM _clm_new n
                LEFT JOIN _clm_ch c ON n.url IS NOT DISTINCT FROM c.url
                  AND n.referrer IS NOT DISTINCT FROM c.referrer
                  {" ".join(f"AND n.{u} IS NOT DISTINCT FROM c.k_{u}" for u in UTM)}
                LEFT JOIN _clm_ua u ON n.user_agent = u.user_agent"""
            )
            assign_sessions(con, "_clm_rows", "_clm_sess", session_timeout_minutes)
            exprs = {c: f'u."{c}"' for c in EVENTS.names if c != "import_id"}
            exprs["session_id"] = "coalesce(u.session_id, s.session_id)"
            exprs["context"] = _context_sql(bot_filter)
            cols = ", ".join(f'"{c}"' for c in exprs)
            row = con.execute(
                f"""INSERT INTO events ({cols}, import_id)
                SELECT {", ".join(exprs.values())}, {_q(batch_id)}
                FROM _clm_rows u LEFT JOIN _clm_sess s USING (rid)"""
            ).fetchone()
            assert row is not None
            written = int(row[0])
            con.execute("DROP VIEW _clm_rows")
            con.execute("DROP VIEW _clm_new")
            for t in ("_clm_ua", "_clm_ch", "_clm_sess"):
                con.execute(f"DROP TABLE {t}")
            con.execute("DROP TABLE IF EXISTS _clm_keep_t")
        if n_rejects:
            con.execute(
                f"""INSERT INTO rejected ({rcols}, import_id)
                SELECT DISTINCT {rcols}, {_q(batch_id)} FROM _clm_spool s
                WHERE k = 'r' AND NOT EXISTS (
                  SELECT 1 FROM rejected x WHERE x.source = s.source
                    AND x.rejected_at = s.rejected_at AND x.field = s.field
                    AND x.raw = s.raw)"""
            )
        con.execute("DROP TABLE _clm_spool")
        con.execute("COMMIT")
    except Exception as exc:
        con.execute("ROLLBACK")
        raise EngineError(
            f"loading spool segments failed: {exc}", transient=True
        ) from exc
    finally:
        con.close()
    if recent is not None and kept_hashes is not None:
        assert oldest is not None and newest is not None
        recent.add(kept_hashes, oldest, newest)

    # Deleting only now is what makes a crash in between harmless (see above).
    for p in files:
        p.unlink(missing_ok=True)
    return {
        "events_written": written,
        "duplicates_skipped": n_events - written,
        "rejected": n_rejects,
    }


def tune_for_loading(wh: Warehouse) -> None:
    """DuckDB settings for a process that loads the spool (`clm serve`; they hold
    for every connection of that process).

    A load of more than one row group (122,880 rows) is written to the database
    file when it commits, compressed, in whole row groups plus a partly filled
    last one. At the next checkpoint DuckDB's vacuum merges such row groups with
    their neighbours, which rewrites and compresses every row again: 1.3 to 2.3 µs
    per event (docs/benchmarks-collector.md), as much as the commit itself, paid at
    the next checkpoint (in `clm serve` mostly when it stops). Without vacuum the
    events table keeps one partly filled row group per large load (with loads of
    about 130,000 events, half the row groups are half full): scans read a few
    more row-group headers, nothing else changes. Known limit: deleted rows of the
    tables `clm serve` writes are left for the next checkpoint of another clm
    process, which vacuums as usual; small tables (the session state) are
    rewritten whole at every checkpoint in any case."""
    wh.con.raw_sql("SET max_vacuum_tasks = 0")


# The loader waits for this much sealed spool (about 200,000 events of 450 bytes)
# or for LOAD_WAIT_INTERVALS flush intervals, whichever comes first: 100,000 events
# per load cost about 0.5 µs per event more to commit than 250,000
# (docs/benchmarks-collector.md).
MIN_LOAD_BYTES = 96 << 20
LOAD_WAIT_INTERVALS = 3

# A loader that fell behind would otherwise take `batch_files` large segments into
# one transaction, and DuckDB holds a batch's rows in memory while it loads them.
MAX_BATCH_BYTES = 256 << 20


def _sizes(segments: list[Path]) -> list[int]:
    """The sizes of `segments`; one deleted meanwhile counts 0."""
    out = []
    for p in segments:
        try:
            out.append(p.stat().st_size)
        except FileNotFoundError:
            out.append(0)
    return out


def _take(segments: list[Path], most: int) -> list[Path]:
    """The oldest segments, at most `most` of them and MAX_BATCH_BYTES (at least
    one, however large)."""
    out: list[Path] = []
    size = 0
    for p in segments[:most]:
        try:
            size += p.stat().st_size
        except FileNotFoundError:
            continue
        if out and size > MAX_BATCH_BYTES:
            break
        out.append(p)
    return out


class Loader:
    """A thread that loads sealed segments as they appear, in batches."""

    def __init__(
        self,
        wh: Warehouse,
        directory: str | Path,
        *,
        batch_files: int = 32,
        interval: float = 1.0,
        wake: threading.Event | None = None,
        session_timeout_minutes: int = 30,
        bot_filter: bool = True,
        dedup_window_minutes: int = DEDUP_WINDOW_HOURS * 60,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self.wh, self.directory = wh, Path(directory)
        self.idle = idle
        self.options: dict[str, Any] = {
            "session_timeout_minutes": session_timeout_minutes,
            "bot_filter": bot_filter,
            "dedup_window_minutes": dedup_window_minutes,
        }
        self.recent = RecentIds(timedelta(minutes=dedup_window_minutes))
        self.batch_files, self.interval = batch_files, interval
        self.wake = wake or threading.Event()
        self.totals: dict[str, int] = {
            "events_written": 0,
            "duplicates_skipped": 0,
            "rejected": 0,
        }
        self.last_error: str | None = None
        # Bytes of the segments loaded so far; the request path compares them with
        # the bytes the spool sealed to see how far the loader lags behind.
        self.loaded_bytes = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def load_pending(self) -> dict[str, int]:
        """Load every sealed segment now; return what this call wrote."""
        done = {k: 0 for k in self.totals}
        with self._lock:
            while True:
                files = _take(sealed_segments(self.directory), self.batch_files)
                if not files:
                    return done
                size = sum(_sizes(files))
                counts = load_segments(
                    self.wh, files, recent=self.recent, **self.options
                )
                self.loaded_bytes += size
                for k, v in counts.items():
                    done[k] += v
                    self.totals[k] += v
                log.info("loaded %d spool segment(s): %s", len(files), counts)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="clm-spool-loader", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        name_os_thread("clm-loader")
        # Linux applies a thread id's nice value to that thread only; elsewhere
        # this may not apply, which is harmless.
        if LOADER_NICE:
            with contextlib.suppress(OSError, AttributeError):
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, LOADER_NICE)
        while not self._stop.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            if not self._due():
                continue
            try:
                self.load_pending()
                self.last_error = None
            except Exception as exc:  # keep the spool; retry on the next turn
                self.last_error = str(exc)
                log.exception("spool loader failed; segments kept for a retry")
                time.sleep(self.interval)

    def _due(self) -> bool:
        """Whether to load now: once the sealed segments hold MIN_LOAD_BYTES, or
        the oldest has waited LOAD_WAIT_INTERVALS intervals, or the spool is idle
        (`idle()`: no record written lately, so waiting gains nothing). A load
        costs less per event the more it holds (commit, per-statement costs), so
        under load the loader waits for a few segments; when traffic is light it
        still loads within a few intervals, and when it stops, at once."""
        segments = sealed_segments(self.directory)
        size, oldest = 0, None
        for p in segments:
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            size += st.st_size
            oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
        if oldest is None:
            return False
        if self.idle is not None and self.idle():
            return True
        waited = time.time() - oldest
        return size >= MIN_LOAD_BYTES or waited >= LOAD_WAIT_INTERVALS * self.interval

    def status(self) -> dict[str, Any]:
        return {
            **self.totals,
            "segments_waiting": len(sealed_segments(self.directory)),
            "last_error": self.last_error,
        }
