"""Sessions, assigned by the loader per batch (one sorted read from DuckDB, then
array passes in numpy), with state that survives restarts.

The rule is the one Google Analytics and Matomo use: one visitor's events (visitor =
anonymous id, else user id) belong to one session until `timeout` passes without an
event, or an event with a different campaign (utm source, medium, campaign; any of
them set) arrives. Within a batch a visitor's events are taken in timestamp order
(arrival order breaks ties), so the answer does not depend on how requests
interleaved. Across batches the table `collect_sessions` holds, per visitor, the
current session's id, its last event time and its campaign; an event older than
that last event (a late or retried one) joins the current session unless its
campaign differs. The table is updated in the same transaction as the events, so a
crash replay (see `loader.py`) sees the state that matches the stored events.

The session id is the md5 of `visitor|<start timestamp in ISO 8601>`, so it is
stable. The state table keys visitors by their md5 as a number (`md5_number`: a
128-bit integer sorts faster than its 32 hex digits), so it holds no identifier in
clear.

How: DuckDB sorts the batch's rows and the stored state once (per visitor by order
time, the state first); three vectorised passes over the sorted arrays then find
the starts (a gap over the timeout; a campaign differing from the last one seen
since the segment's start) and carry each start's id forward. Until December 2026
these were three nested SQL window passes: 1.7 against 1.0 µs per event
(docs/benchmarks-collector.md); a test keeps the passes equal to an
event-by-event walk of the rule.
Rows of visitors from whom nothing arrived for longer than the timeout plus an hour
(by the server's clock, `received_at`, so a device clock set in the future cannot
prune anyone else's state) are pruned on every load: with sane clocks such a
visitor's next event starts a new session in any case. Known limit: a visitor's
events sent more than the timeout plus an hour apart but dated less than the
timeout apart (a replay of old events, slowly) start a new session each time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

STATE_TABLE = "collect_sessions"

NUL = chr(0)  # the mark of a segment start without a campaign
_LOW = (1 << 64) - 1

_ISO = (
    "CASE WHEN strftime({c}, '%f') = '000000' "
    "THEN strftime({c}, '%Y-%m-%dT%H:%M:%S') "
    "ELSE strftime({c}, '%Y-%m-%dT%H:%M:%S.%f') END"
)


def ensure_state(con: Any) -> None:
    """Create the session state table if this warehouse has none yet."""
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
            visitor_key UHUGEINT, session_id VARCHAR, last_ts TIMESTAMP,
            campaign VARCHAR, updated_at TIMESTAMP)"""
    )


def _objects(column: Any) -> np.ndarray:
    """A fetched text column as an object array, NULL as None."""
    data = np.ma.getdata(column).astype(object)
    data[np.ma.getmaskarray(column)] = None
    return data


def _fill_forward(valid: np.ndarray) -> np.ndarray:
    """Per row, the index of the last row up to it (itself included) where `valid`
    holds; 0 before the first such row."""
    idx = np.where(valid, np.arange(len(valid)), 0)
    np.maximum.accumulate(idx, out=idx)
    return idx


def assign_sessions(con: Any, source: str, target: str, timeout_minutes: int) -> None:
    """Create temp table `target` (rid, session_id) for the rows of `source`.

    `source` must have columns rid (unique), anonymous_id, user_id, timestamp,
    received_at, utm_source, utm_medium, utm_campaign (with the url's campaign
    already filled in). Updates `collect_sessions` to the state after these rows.
    """
    ensure_state(con)
    # ckey: NULL when the event carries no campaign; otherwise a text that is equal
    # exactly when source, medium and campaign all are.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _clm_sv AS
        SELECT rid, visitor, md5_number(visitor) AS visitor_key, "timestamp" AS ts,
          received_at,
          CASE WHEN coalesce(utm_source, '') <> '' OR coalesce(utm_medium, '') <> ''
                 OR coalesce(utm_campaign, '') <> ''
               THEN coalesce(utm_source, '') || chr(31) || coalesce(utm_medium, '')
                    || chr(31) || coalesce(utm_campaign, '') END AS ckey
        FROM (SELECT rid, coalesce(nullif(anonymous_id, ''), nullif(user_id, ''))
                AS visitor, "timestamp", received_at, utm_source, utm_medium,
                utm_campaign
              FROM {source}) WHERE visitor IS NOT NULL"""
    )
    # One ordering throughout, sorted once by DuckDB: per visitor by order time
    # (ots), the stored state first. An event older than the stored last event is
    # placed right after it (ots = the stored time), so it joins the current session.
    rows = con.execute(
        f"""WITH st AS (
          SELECT s.* FROM {STATE_TABLE} s
          WHERE s.visitor_key IN (SELECT visitor_key FROM _clm_sv))
        SELECT (visitor_key >> 64)::UBIGINT AS hi,
          (visitor_key & {_LOW})::UBIGINT AS lo, rid, epoch_us(ots) AS ots,
          ckey, session_id, phase
        FROM (
          SELECT visitor_key, NULL::BIGINT AS rid, last_ts AS ots, last_ts AS ts,
                 campaign AS ckey, session_id, 0 AS phase
          FROM st
          UNION ALL
          SELECT v.visitor_key, v.rid, greatest(v.ts, st.last_ts), v.ts, v.ckey,
                 NULL, 1
          FROM _clm_sv v LEFT JOIN st USING (visitor_key))
        ORDER BY visitor_key, ots, phase, ts, rid"""
    ).fetchnumpy()
    hi, lo = np.ma.getdata(rows["hi"]), np.ma.getdata(rows["lo"])
    ots = np.ma.getdata(rows["ots"])
    n = len(hi)
    stored = _objects(rows["session_id"])
    # Campaign keys as integer codes (-1: none, 0: NUL, 1...: the texts), so that
    # the passes below compare integers; only the rows with a campaign are looked at.
    has = ~np.ma.getmaskarray(rows["ckey"])
    texts = np.ma.getdata(rows["ckey"])[has]
    codes: dict[str, int] = {NUL: 0}
    ckey = np.full(n, -1, dtype=np.int64)
    ckey[has] = [codes.setdefault(t, len(codes)) for t in texts]
    names = np.array([None, *codes], dtype=object)  # code c is names[c + 1]
    rid = np.ma.getdata(rows["rid"])
    batch = np.ma.getdata(rows["phase"]) == 1

    # (1) A visitor's first row, or a gap of more than `timeout`, starts a segment.
    first = np.ones(n, dtype=bool)
    first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    gap = first.copy()
    gap[1:] |= ots[1:] - ots[:-1] > int(timeout_minutes) * 60_000_000
    # (2) A campaign differing from the mark before it starts a session. The mark
    # is the last campaign seen in the segment, NUL at a segment start without
    # one; every segment starts with a mark, so filling forward never reaches
    # into another visitor's rows.
    mark = np.where(gap & ~has, 0, ckey)
    last = _fill_forward(gap | has)
    before = np.empty(n, dtype=np.int64)
    before[1:] = mark[last[:-1]]
    starts = gap.copy()
    starts[1:] |= has[1:] & (ckey[1:] != before[1:])
    # The campaign that holds after each row (stored as the visitor's state).
    kept = np.where(starts & ~has, 0, ckey)[_fill_forward(starts | has)]
    # (3) Every row takes the id of the last start up to it: the stored one for the
    # state row, the md5 of visitor and start time for a start in the batch.
    ids = stored.copy()
    new = starts & batch
    if new.any():
        con.register("_clm_ss", pa.table({"rid": rid[new]}))
        made = con.execute(
            f"""SELECT v.rid, md5(v.visitor || '|' || {_ISO.format(c="v.ts")}) AS id
            FROM _clm_sv v SEMI JOIN _clm_ss s USING (rid) ORDER BY v.rid"""
        ).fetchnumpy()
        con.unregister("_clm_ss")
        pos = np.flatnonzero(new)
        order = np.argsort(rid[pos], kind="stable")
        ids[pos[order]] = _objects(made["id"])
    session = ids[_fill_forward(starts)]
    con.register(
        "_clm_sa",
        pa.table(
            {
                "rid": rid[batch],
                "session_id": pa.array(session[batch], pa.string()),
            }
        ),
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT * FROM _clm_sa")
    con.unregister("_clm_sa")

    # New state per visitor of the batch: its last row's session, time and campaign
    # (rows are sorted by time within a visitor, so the last row has the latest).
    end = np.ones(n, dtype=bool)
    end[:-1] = first[1:]
    campaign = names[kept[end] + 1]
    campaign[kept[end] == 0] = None  # NUL: no campaign
    con.register(
        "_clm_st",
        pa.table(
            {
                "hi": hi[end],
                "lo": lo[end],
                "session_id": pa.array(session[end], pa.string()),
                "last_ts": ots[end],
                "campaign": pa.array(campaign, pa.string()),
            }
        ),
    )
    con.execute(
        f"DELETE FROM {STATE_TABLE} WHERE visitor_key IN "
        "(SELECT DISTINCT visitor_key FROM _clm_sv)"
    )
    con.execute(
        f"""INSERT INTO {STATE_TABLE}
        SELECT (hi::UHUGEINT << 64) | lo::UHUGEINT, session_id, make_timestamp(last_ts),
               campaign, (SELECT max(received_at) FROM _clm_sv)
        FROM _clm_st"""
    )
    con.unregister("_clm_st")
    con.execute(
        f"""DELETE FROM {STATE_TABLE} WHERE updated_at <
        (SELECT max(received_at) FROM _clm_sv) - INTERVAL {int(timeout_minutes)}
        MINUTE - INTERVAL 1 HOUR"""
    )
    con.execute("DROP TABLE _clm_sv")
