"""Import events from files: Segment-spec JSON lines, or Parquet/CSV already shaped
like the `events` table.

JSON lines follow the Segment Spec (https://segment.com/docs/connections/spec/common/):
`messageId` becomes `event_id` (else an md5 of the line plus its occurrence number
among identical lines), `userId`/`anonymousId`, `type`, `event` (for page and screen
calls the `name`), `timestamp` (else `originalTimestamp`), `properties` and `context`
kept as JSON text. Lifted columns: revenue from `properties.revenue` else
`properties.total`; `currency`; `order_id` (or `orderId`); url and referrer from
`context.page` else `properties`; `utm_*` from `context.campaign` (its `name` is the
campaign); `user_agent` and `ip` from `context.userAgent` / `context.ip`. Where both
`sentAt` and `receivedAt` are given, the timestamp is corrected by the device's clock
skew, timestamp + (receivedAt - sentAt), as the Segment spec's "timestamps" page
describes. For `identify` calls without `properties` the `traits` are kept there.

Rejected, with the field at fault: a line that is not a JSON object, a `type` outside
track/page/screen/identify/alias/group, neither `userId` nor `anonymousId`, a missing
or unparseable `timestamp`, and a `track` call without `event`. A timestamp without a
zone is read in `timezone`. Lines with a `messageId` already stored, or repeated in the
file, are skipped and counted in `duplicates_skipped`.

Parquet or CSV files whose columns are those of the `events` table (at least
`event_id`, `type` and `timestamp`) take the fast path: one INSERT … SELECT from the
file, skipping event ids already stored and repeated ones, with rows lacking an
event id or a valid timestamp or type rejected. In a CSV file, `revenue` is read with
the decimal mark given (`decimal`) or detected (`,` only in a `;`-delimited file
whose every revenue value is written that way, see `readers.detect_decimal`), and a
revenue that is not a number is rejected with the value rather than stored as empty.
Times without a zone are UTC there, as in the events table itself, read with
`time_format` when given, else with the format of `transactions.TIME_FORMATS` that
parses most of a sample (`dayfirst` breaks the tie of 01/02/2024). Parquet columns
are typed and JSON numbers have a point: there these options do not apply, and the
receipt says so when one was given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from clm.collect.readers import (
    check_decimal,
    detect_decimal,
    detect_format,
    execute,
    ident,
    number_sql,
    reader_sql,
    rows,
    scalar,
    sql_str,
    stage,
)
from clm.collect.transactions import _store, check_timezone, time_sql
from clm.errors import ImportFormatError
from clm.progress import SILENT, Progress
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse
from clm.warehouse.schema import EVENTS

log = logging.getLogger("clm.collect")

TYPES = ("track", "page", "screen", "identify", "alias", "group")
REQUIRED = ("event_id", "type", "timestamp")
_ZONED = r"(Z|[+-]\d\d(:?\d\d)?)$"


def _ts(text: str, timezone: str) -> str:
    """SQL for an ISO 8601 text as a UTC timestamp; zone-less text is `timezone`."""
    return (
        f"CASE WHEN regexp_matches({text}, {sql_str(_ZONED)}) "
        f"THEN CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP) "
        f"ELSE CAST(timezone({sql_str(timezone)}, TRY_CAST({text} AS TIMESTAMP)) "
        "AS TIMESTAMP) END"
    )


def import_events(
    wh: Warehouse,
    path: str | Path,
    *,
    timezone: str = "UTC",
    progress: Progress = SILENT,
    decimal: str | None = None,
    dayfirst: bool = False,
    time_format: str | None = None,
) -> Receipt:
    """Import an events file; see the module docstring for the rules."""
    path = Path(path)
    check_timezone(timezone)
    if decimal is not None:
        decimal = check_decimal(decimal)
    receipt = Receipt("import_events", source=str(path))
    source = f"import:{path.name}"
    fmt = detect_format(path)
    receipt.details["format"] = {"kind": fmt.label, "delimiter": fmt.delimiter}
    given = [
        flag
        for flag, value in (
            ("--decimal", decimal not in (None, ".")),
            ("--dayfirst", dayfirst),
            ("--time-format", time_format is not None),
        )
        if value
    ]
    if given and fmt.kind != "csv":
        receipt.warnings.append(
            f"{', '.join(given)} ignored: only CSV files carry numbers and times as "
            f"text ({fmt.label} has them typed or in ISO 8601)"
        )
    if fmt.kind == "jsonl":
        _segment(wh, path, fmt, timezone, source, receipt, progress)
    else:
        missing = [c for c in REQUIRED if c not in fmt.columns]
        if missing:
            raise ImportFormatError(
                f"{str(path)!r} is not shaped like the events table: column(s) "
                f"{', '.join(missing)} missing (it has {', '.join(fmt.columns)}); "
                "import purchase rows with `clm import transactions` instead"
            )
        extra = [c for c in fmt.columns if c not in EVENTS.names]
        if extra:
            receipt.warnings.append(f"columns not in the events table ignored: {extra}")
        text = _TextOptions(decimal, dayfirst, time_format)
        _events_table(wh, path, fmt, timezone, source, receipt, progress, text)
    _store(wh, receipt)
    log.info("imported %s: %s", path, receipt.counts)
    return receipt


def _finish(
    wh: Warehouse,
    candidates: str,
    rejects: str,
    source: str,
    receipt: Receipt,
    progress: Progress,
    rows_read: int,
) -> None:
    """Insert the valid, new events of `candidates` and the rows of `rejects`."""
    before = int(scalar(wh, "SELECT count(*) AS n FROM events")["n"])
    n = int(
        scalar(wh, f"SELECT count(*) AS n FROM {candidates} WHERE _reason IS NULL")["n"]
    )
    cols = ", ".join(ident(c) for c in EVENTS.names)
    with receipt.timed("write"):
        execute(
            wh,
            f"""INSERT INTO events ({cols})
            SELECT {cols} FROM {candidates} c
            WHERE _reason IS NULL AND NOT EXISTS (
              SELECT 1 FROM events x WHERE x.event_id = c.event_id)
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _row) = 1""",
            progress,
            "writing events",
        )
        _store_rejects(wh, rejects, source, receipt.receipt_id)
    written = int(scalar(wh, "SELECT count(*) AS n FROM events")["n"]) - before
    reasons = rows(
        wh,
        f"SELECT _reason AS r, count(*) AS n FROM {rejects} GROUP BY 1 ORDER BY 2 DESC",
    )
    stats = scalar(
        wh,
        f"""SELECT count(DISTINCT user_id) AS customers,
                   coalesce(sum(revenue), 0) AS revenue
            FROM {candidates} WHERE _reason IS NULL""",
    )
    receipt.rejects.update({r["r"]: r["n"] for r in reasons})
    receipt.counts.update(
        rows_read=rows_read,
        events_written=written,
        duplicates_skipped=n - written,
        rejected=sum(r["n"] for r in reasons),
        customers=stats["customers"],
        revenue=round(float(stats["revenue"]), 2),
    )


def _store_rejects(wh: Warehouse, rejects: str, source: str, import_id: str) -> None:
    """Append the rows of `rejects` to `rejected`, skipping rows (same source, row
    and reason) that an earlier import of the same file already stored."""
    wh.con.raw_sql(
        f"""INSERT INTO rejected BY NAME
        SELECT {sql_str(source)} AS source, _row AS row_number, _field AS field,
               _value AS value, _reason AS reason, _raw AS raw,
               now()::TIMESTAMP AS rejected_at, {sql_str(import_id)} AS import_id
        FROM {rejects} r WHERE NOT EXISTS (
          SELECT 1 FROM rejected x WHERE x.source = {sql_str(source)}
            AND x.row_number = r._row AND x.reason = r._reason)"""
    )


def _segment(
    wh: Warehouse,
    path: Path,
    fmt: object,
    timezone: str,
    source: str,
    receipt: Receipt,
    progress: Progress,
) -> None:
    from clm.collect.readers import FileFormat

    assert isinstance(fmt, FileFormat)
    with receipt.timed("read"):
        progress.start(f"reading {path.name}")
        staged = stage(wh, path, fmt)
        progress.done()
    try:

        def s(p: str) -> str:
            return f"json_extract_string(j, {sql_str('$.' + p)})"

        ts_text = f"coalesce({s('timestamp')}, {s('originalTimestamp')})"
        skew = (
            f"CASE WHEN {s('sentAt')} IS NOT NULL AND {s('receivedAt')} IS NOT NULL "
            f"THEN {_ts(s('receivedAt'), timezone)} - {_ts(s('sentAt'), timezone)} "
            "ELSE INTERVAL 0 SECOND END"
        )
        types = ", ".join(sql_str(t) for t in TYPES)
        checks = [
            ("j IS NULL", "line", "not a JSON object"),
            (
                f"lower({s('type')}) NOT IN ({types}) OR {s('type')} IS NULL",
                "type",
                f"unknown type; expected one of {', '.join(TYPES)}",
            ),
            (
                f"{s('userId')} IS NULL AND {s('anonymousId')} IS NULL",
                "userId",
                "neither userId nor anonymousId",
            ),
            (f"{ts_text} IS NULL", "timestamp", "missing timestamp"),
            (
                f"{_ts(ts_text, timezone)} IS NULL",
                "timestamp",
                "unparseable timestamp: expected ISO 8601 such as 2024-05-01T12:00:00Z",
            ),
            (
                f"lower({s('type')}) = 'track' AND {s('event')} IS NULL",
                "event",
                "a track call without an event name",
            ),
        ]
        value = {"line": "NULL", "userId": "NULL"}
        field = (
            "CASE " + " ".join(f"WHEN {w} THEN '{f}'" for w, f, _ in checks) + " END"
        )
        val = (
            "CASE "
            + " ".join(
                f"WHEN {w} THEN " + value.get(f, s(f) if f != "timestamp" else ts_text)
                for w, f, _ in checks
            )
            + " END"
        )
        reason = (
            "CASE "
            + " ".join(f"WHEN {w} THEN {sql_str(r)}" for w, _, r in checks)
            + " END"
        )
        props = "coalesce(json_extract(j, '$.properties'), json_extract(j, '$.traits'))"
        hashed = "md5(coalesce(json(j)::VARCHAR, line))"
        with receipt.timed("transform"):
            progress.start("parsing events")
            wh.con.raw_sql(
                f"""CREATE TEMP TABLE {staged}_e AS
                SELECT *, {field} AS _field, {val} AS _value, {reason} AS _reason,
                  coalesce({s("messageId")}, md5({hashed} || '|' || row_number() OVER
                    (PARTITION BY {hashed} ORDER BY _row))) AS event_id,
                  lower({s("type")}) AS type,
                  coalesce({s("event")}, {s("name")}) AS event,
                  {s("anonymousId")} AS anonymous_id, {s("userId")} AS user_id,
                  {_ts(ts_text, timezone)} + {skew} AS timestamp,
                  coalesce({_ts(s("receivedAt"), timezone)}, now()::TIMESTAMP)
                    AS received_at,
                  NULL::VARCHAR AS session_id,
                  ({props})::VARCHAR AS properties,
                  json_extract(j, '$.context')::VARCHAR AS context,
                  TRY_CAST(coalesce({s("properties.revenue")}, {s("properties.total")})
                    AS DOUBLE) AS revenue,
                  {s("properties.currency")} AS currency,
                  coalesce({s("properties.order_id")}, {s("properties.orderId")})
                    AS order_id,
                  coalesce({s("context.page.url")}, {s("properties.url")}) AS url,
                  coalesce({s("context.page.referrer")}, {s("properties.referrer")})
                    AS referrer,
                  NULL::VARCHAR AS channel,
                  {s("context.campaign.source")} AS utm_source,
                  {s("context.campaign.medium")} AS utm_medium,
                  {s("context.campaign.name")} AS utm_campaign,
                  {s("context.campaign.term")} AS utm_term,
                  {s("context.campaign.content")} AS utm_content,
                  {s("context.userAgent")} AS user_agent, {s("context.ip")} AS ip,
                  {sql_str(source)} AS source,
                  {sql_str(receipt.receipt_id)} AS import_id,
                  to_json(line)::VARCHAR AS _raw
                FROM (SELECT _row, line,
                        CASE WHEN json_valid(line) AND json_type(line::JSON) = 'OBJECT'
                             THEN line::JSON END AS j
                      FROM {staged})"""
            )
            wh.con.raw_sql(
                f"UPDATE {staged}_e SET _raw = line::JSON::VARCHAR WHERE j IS NOT NULL"
            )
            progress.done()
        rows_read = int(scalar(wh, f"SELECT count(*) AS n FROM {staged}")["n"])
        wh.con.raw_sql(
            f"CREATE TEMP VIEW {staged}_r AS "
            f"SELECT * FROM {staged}_e WHERE _reason IS NOT NULL"
        )
        _finish(wh, f"{staged}_e", f"{staged}_r", source, receipt, progress, rows_read)
    finally:
        wh.con.raw_sql(f"DROP VIEW IF EXISTS {staged}_r")
        for suffix in ("", "_e"):
            wh.drop(staged + suffix)


@dataclass(frozen=True)
class _TextOptions:
    """How a CSV file writes numbers and times (the import's options)."""

    decimal: str | None = None
    dayfirst: bool = False
    time_format: str | None = None


def _events_table(
    wh: Warehouse,
    path: Path,
    fmt: object,
    timezone: str,
    source: str,
    receipt: Receipt,
    progress: Progress,
    text: _TextOptions | None = None,
) -> None:
    """The fast path: the file already has the events table's columns."""
    from clm.collect.readers import FileFormat

    assert isinstance(fmt, FileFormat)
    text = text or _TextOptions()
    p = sql_str(str(path))
    if fmt.kind == "parquet":
        read = f"read_parquet({p}, file_row_number=true)"
        src = f"(SELECT *, file_row_number + 1 AS _row FROM {read})"
    else:
        src = f"(SELECT *, row_number() OVER () AS _row FROM {reader_sql(path, fmt)})"
    view = f"_clm_events_{receipt.receipt_id}"
    csv = fmt.kind == "csv"
    has_revenue = csv and "revenue" in fmt.columns
    mark = "."
    times: dict[str, str] = {}
    if csv:
        # A view of the raw text, for the detection of the decimal mark and the time
        # format (both read the columns' text, as the type checks below do).
        wh.con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {view}_t AS SELECT * FROM {src}")
        try:
            if has_revenue:
                mark = text.decimal or detect_decimal(
                    wh, f"{view}_t", ["revenue"], fmt.delimiter
                )
                receipt.details["decimal"] = mark
            for name in ("timestamp", "received_at"):
                if name in fmt.columns:
                    # Zone-less times are UTC, as in the events table itself
                    # (a file exported from it comes back unchanged).
                    times[name], chosen = time_sql(
                        wh,
                        f"{view}_t",
                        name,
                        "UTC",
                        time_format=text.time_format,
                        dayfirst=text.dayfirst,
                    )
                    receipt.details.setdefault("time_format", chosen)
        finally:
            wh.con.raw_sql(f"DROP VIEW IF EXISTS {view}_t")
    cols = []
    for name, dtype in EVENTS.items():
        if name == "import_id":
            # Rows carry the receipt of the import that wrote them, whatever the file
            # says: that is how the receipt's counts are read back below.
            cols.append(f"{sql_str(receipt.receipt_id)} AS import_id")
        elif name not in fmt.columns:
            cols.append(f"NULL AS {ident(name)}")
        elif dtype.is_timestamp() and csv:
            cols.append(f"{times[name]} AS {ident(name)}")
            if name == "timestamp":
                # The text as written, quoted in the reject when it does not parse.
                cols.append("nullif(trim(timestamp), '') AS _timestamp_text")
        elif dtype.is_timestamp():
            cols.append(f"CAST({ident(name)} AS TIMESTAMP) AS {ident(name)}")
        elif name == "revenue" and has_revenue:
            raw = "CAST(revenue AS VARCHAR)"
            cols.append(f"{number_sql(raw, mark)} AS revenue")
            cols.append(f"nullif(trim({raw}), '') AS _revenue_text")
        else:
            sql_type = "DOUBLE" if dtype.is_floating() else "VARCHAR"
            cols.append(f"TRY_CAST({ident(name)} AS {sql_type}) AS {ident(name)}")
    types = ", ".join(sql_str(t) for t in TYPES)
    # A revenue given but not a number is rejected, not stored as empty: that would
    # lose the order's value without a trace.
    bad_revenue = "_revenue_text IS NOT NULL AND revenue IS NULL"
    example = "12,50 or 1.234,50" if mark == "," else "12.50"
    why = (
        f"revenue is not a number written with `{mark}` as the decimal mark "
        f"(for example {example})"
    )
    revenue_reason = f"WHEN {bad_revenue} THEN {sql_str(why)} " if has_revenue else ""
    reason = (
        "CASE WHEN event_id IS NULL THEN 'missing event_id' "
        "WHEN timestamp IS NULL THEN 'missing or unparseable timestamp' "
        f"WHEN type IS NULL OR type NOT IN ({types}) THEN "
        f"'unknown type; expected one of {', '.join(TYPES)}' {revenue_reason}END"
    )
    field = (
        "CASE WHEN event_id IS NULL THEN 'event_id' WHEN timestamp IS NULL "
        "THEN 'timestamp' "
        + (f"WHEN {bad_revenue} THEN 'revenue' " if has_revenue else "")
        + "ELSE 'type' END"
    )
    value = (
        "CASE WHEN event_id IS NULL THEN NULL "
        + (
            "WHEN timestamp IS NULL THEN _timestamp_text "
            if csv and "timestamp" in fmt.columns
            else ""
        )
        + (f"WHEN {bad_revenue} THEN _revenue_text " if has_revenue else "")
        + "END"
    )
    wh.con.raw_sql(
        f"CREATE TEMP VIEW {view} AS SELECT *, {reason} AS _reason FROM "
        f"(SELECT _row, {', '.join(cols)} FROM {src})"
    )
    packed = ", ".join(f"{ident(c)} := {ident(c)}" for c in EVENTS.names)
    wh.con.raw_sql(
        f"CREATE TEMP VIEW {view}_r AS SELECT *, {field} AS _field, "
        f"CAST({value} AS VARCHAR) AS _value, "
        f"to_json(struct_pack({packed}))::VARCHAR AS _raw "
        f"FROM {view} WHERE _reason IS NOT NULL"
    )
    try:
        rows_read = int(scalar(wh, f"SELECT count(*) AS n FROM {src}")["n"])
        _finish_fast(wh, view, f"{view}_r", source, receipt, progress, rows_read)
    finally:
        wh.con.raw_sql(f"DROP VIEW IF EXISTS {view}_r")
        wh.con.raw_sql(f"DROP VIEW IF EXISTS {view}")


def _finish_fast(
    wh: Warehouse,
    candidates: str,
    rejects: str,
    source: str,
    receipt: Receipt,
    progress: Progress,
    rows_read: int,
) -> None:
    """Like `_finish`, but reads the file once for the events: at millions of rows the
    file is the cost. Duplicates inside the file are removed after the insert, in the
    usually empty case cheaply confirmed by a distinct count of the new rows' id
    hashes (distinct hashes mean distinct ids; equal ones are checked exactly). Which
    copy of a repeated event id stays is not defined when the copies differ. Rejects
    are looked for with a scan of the three checked columns, skipped when every row
    of the file went into an empty table: then none was invalid."""
    import_id = sql_str(receipt.receipt_id)
    cols = ", ".join(ident(c) for c in EVENTS.names)
    stored = int(scalar(wh, "SELECT count(*) AS n FROM events")["n"])
    new_only = (
        " AND NOT EXISTS (SELECT 1 FROM events x WHERE x.event_id = c.event_id)"
        if stored
        else ""
    )
    mine = f"FROM events WHERE import_id = {import_id}"
    stats_sql = f"""SELECT count(*) AS written, count(DISTINCT hash(event_id)) AS ids,
          count(DISTINCT user_id) AS customers, coalesce(sum(revenue), 0) AS revenue
        {mine}"""
    with receipt.timed("write"):
        # Row order inside `events` means nothing, and not keeping it lets DuckDB
        # write in parallel with far less memory; file row numbers are already taken.
        wh.con.raw_sql("SET preserve_insertion_order = false")
        try:
            execute(
                wh,
                f"INSERT INTO events ({cols}) SELECT {cols} FROM {candidates} c "
                f"WHERE _reason IS NULL{new_only}",
                progress,
                "writing events",
            )
        finally:
            wh.con.raw_sql("RESET preserve_insertion_order")
        stats = scalar(wh, stats_sql)
        inserted = int(stats["written"])
        repeated = 0
        if int(stats["ids"]) != inserted:
            repeated = int(
                scalar(wh, f"SELECT count(*) - count(DISTINCT event_id) AS n {mine}")[
                    "n"
                ]
            )
        if repeated:
            wh.con.raw_sql(
                f"""DELETE FROM events WHERE import_id = {import_id} AND rowid NOT IN (
                  SELECT min(rowid) FROM events WHERE import_id = {import_id}
                  GROUP BY event_id)"""
            )
            stats = scalar(wh, stats_sql)
        invalid = 0
        if stored or inserted != rows_read:
            invalid = int(
                scalar(
                    wh,
                    f"SELECT count(*) AS n FROM {candidates} WHERE _reason IS NOT NULL",
                )["n"]
            )
        if invalid:
            _store_rejects(wh, rejects, source, receipt.receipt_id)
    reasons = (
        rows(
            wh,
            f"SELECT _reason AS r, count(*) AS n FROM {rejects} "
            "GROUP BY 1 ORDER BY 2 DESC",
        )
        if invalid
        else []
    )
    written = int(stats["written"])
    receipt.rejects.update({r["r"]: r["n"] for r in reasons})
    receipt.counts.update(
        rows_read=rows_read,
        events_written=written,
        duplicates_skipped=rows_read - invalid - written,
        rejected=invalid,
        customers=stats["customers"],
        revenue=round(float(stats["revenue"]), 2),
    )
