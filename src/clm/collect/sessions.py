"""Sessions, assigned by the loader per batch in DuckDB SQL, with state that survives
restarts.

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
128-bit integer sorts faster than its 32 hex digits in the window passes), so it
holds no identifier in clear.
Rows of visitors from whom nothing arrived for longer than the timeout plus an hour
(by the server's clock, `received_at`, so a device clock set in the future cannot
prune anyone else's state) are pruned on every load: with sane clocks such a
visitor's next event starts a new session in any case. Known limit: a visitor's
events sent more than the timeout plus an hour apart but dated less than the
timeout apart (a replay of old events, slowly) start a new session each time.
"""

from __future__ import annotations

from typing import Any

STATE_TABLE = "collect_sessions"

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


def assign_sessions(con: Any, source: str, target: str, timeout_minutes: int) -> None:
    """Create temp table `target` (rid, session_id) for the rows of `source`.

    `source` must have columns rid (unique), anonymous_id, user_id, timestamp,
    received_at, utm_source, utm_medium, utm_campaign (with the url's campaign
    already filled in). Updates `collect_sessions` to the state after these rows.
    """
    ensure_state(con)
    timeout = f"INTERVAL {int(timeout_minutes)} MINUTE"
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
    # One ordering throughout: per visitor by order time, the stored state first.
    # Three window passes: (1) a gap of more than `timeout` starts a segment; (2) a
    # campaign differing from the last campaign seen since the last start starts a
    # session (`mark` is that campaign, chr(0) at a start without one); (3) every
    # row takes the id of the last start before it.
    order = "PARTITION BY visitor_key ORDER BY ots, phase, ts, rid"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _clm_sw AS
        WITH st AS (
          SELECT s.* FROM {STATE_TABLE} s
          WHERE s.visitor_key IN (SELECT visitor_key FROM _clm_sv)),
        rows AS (
          -- The stored state as a row before the batch's rows of that visitor.
          SELECT NULL::BIGINT AS rid, NULL::VARCHAR AS visitor, visitor_key,
                 last_ts AS ots, last_ts AS ts, campaign AS ckey, session_id,
                 0 AS phase
          FROM st
          UNION ALL
          -- ots: the order time; an event older than the stored last event is
          -- placed right after it (it joins the current session).
          SELECT v.rid, v.visitor, v.visitor_key, greatest(v.ts, st.last_ts), v.ts,
                 v.ckey, NULL, 1
          FROM _clm_sv v LEFT JOIN st USING (visitor_key)),
        gaps AS (
          SELECT *, coalesce(ots - lag(ots) OVER ({order}) > {timeout}, true)
            AS gap_start
          FROM rows),
        starts AS (
          SELECT *, gap_start OR (ckey IS NOT NULL AND ckey IS DISTINCT FROM
              last_value(CASE WHEN gap_start THEN coalesce(ckey, chr(0)) ELSE ckey
                         END IGNORE NULLS)
              OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
            AS starts
          FROM gaps)
        SELECT rid, visitor_key, ots, phase,
          row_number() OVER ({order}) AS ord,
          last_value(CASE WHEN starts THEN coalesce(ckey, chr(0)) ELSE ckey END
                     IGNORE NULLS) OVER ({order} ROWS UNBOUNDED PRECEDING) AS kept,
          last_value(CASE WHEN starts THEN coalesce(session_id, md5(visitor || '|'
                     || {_ISO.format(c="ts")})) END IGNORE NULLS)
            OVER ({order} ROWS UNBOUNDED PRECEDING) AS session_id
        FROM starts"""
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {target} AS "
        "SELECT rid, session_id FROM _clm_sw WHERE phase = 1"
    )
    # New state per visitor of the batch: its last row's session, time and campaign.
    con.execute(
        f"DELETE FROM {STATE_TABLE} WHERE visitor_key IN "
        "(SELECT DISTINCT visitor_key FROM _clm_sv)"
    )
    con.execute(
        f"""INSERT INTO {STATE_TABLE}
        SELECT visitor_key, arg_max(session_id, ord), max(ots),
               nullif(arg_max(kept, ord), chr(0)),
               (SELECT max(received_at) FROM _clm_sv)
        FROM _clm_sw GROUP BY visitor_key"""
    )
    con.execute(
        f"""DELETE FROM {STATE_TABLE} WHERE updated_at <
        (SELECT max(received_at) FROM _clm_sv) - {timeout} - INTERVAL 1 HOUR"""
    )
    con.execute("DROP TABLE _clm_sv")
    con.execute("DROP TABLE _clm_sw")
