"""Import a file of purchase lines as `order_completed` and `order_refunded` events.

The work runs inside DuckDB: the file is staged as text (`readers.stage`), parsed,
grouped into orders and written with one INSERT that skips event ids already stored.

Rules, and the choices made where the issue is silent:

* One event per order: the lines sharing an order id (every row alone when there is no
  order column). Revenue is the sum of the line amounts; time is the earliest line's;
  the customer is the order's non-empty customer value.
* Customer ids written as floats by spreadsheets (`17850.0`) lose the `.0`. An order
  without a customer is kept with `anonymous_id` = `order:<order id>` (or
  `order:<event id prefix>` without an order column).
* A timestamp without a zone is local time in `timezone`; one with a zone (`Z`,
  `+02:00`) is taken as written. Both are stored as UTC. The format is chosen from a
  sample of the column (`TIME_FORMATS`, first that parses most wins), unless the
  caller gives `time_format` (strptime codes, e.g. `%d.%m.%Y %H:%M`). `31.12.2024
  14:05` parses only day first and is recognised as such; a column that parses both
  ways (`01/02/2024`) is read month first unless `dayfirst=True`.
* Amounts and quantities are read with a decimal point, or with a decimal comma
  (`12,50`, `1.234,50`) when `decimal=","` is given or detected
  (`readers.detect_decimal`: `;`-delimited files whose amount columns hold only such
  numbers). Typed numeric columns (Parquet) are taken as they are. A value not
  written with the chosen mark (`12.50` in a decimal-comma file) is rejected with the
  column and value, never guessed.
* A cancellation is an order whose total is negative, or whose id is `C` followed by
  a digit (the UCI convention) and whose total is not positive: a shop whose ordinary
  order numbers start with C keeps its orders. It becomes `order_refunded` with
  revenue = -|total|.
  With a stock-code column, `order_id` is the same customer's latest earlier order
  that contains the cancelled stock codes (most codes matched, then the latest);
  otherwise `order_id` is NULL. The cancellation's own id is in
  `properties.cancellation_id`.
* Rejected (to the `rejected` table, counted by reason): a missing or unparseable
  time, a missing or non-numeric amount column, a non-numeric quantity, and on an
  order that is not a cancellation a line with a negative amount or a quantity <= 0.
  Zero amounts are real (CDNOW has 80 free purchases) and kept.
* `event_id` = md5 over the event name, order id, customer and time for files with an
  order column; without one, md5 over the whole raw row plus its occurrence number
  among identical rows, so that identical purchases in one file both stay while a
  second import of the file adds nothing.
* Receipt: `revenue` is the sum over `order_completed` events of the file,
  `refunded` the sum over `order_refunded` (negative); both before de-duplication.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ibis

from clm.collect import mapping as mp
from clm.collect.readers import (
    DECIMAL_COMMA,
    FileFormat,
    check_decimal,
    detect_decimal,
    detect_format,
    execute,
    ident,
    number_sql,
    rows,
    scalar,
    sql_str,
    stage,
    with_delimiter,
)
from clm.errors import ConfigError, ImportFormatError
from clm.progress import SILENT, Progress
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse

log = logging.getLogger("clm.collect")

TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y%m%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y",
    # Two-digit years before four: `%Y` would read 31.12.24 as the year 24 AD, and
    # ties go to the earlier format, while `%y` cannot parse 31.12.2024 at all.
    "%d.%m.%y %H:%M:%S",
    "%d.%m.%y %H:%M",
    "%d.%m.%y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
)
_ZONED = r"(Z|[+-]\d\d(:?\d\d)?)$"
CANCELLATION_ID = "^C[0-9]"


def check_timezone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"timezone {timezone!r} is not an IANA time zone (for example "
            "Europe/Berlin or UTC)"
        ) from None


def _dtype(wh: Warehouse, table: str, column: str) -> str:
    return str(
        scalar(
            wh,
            f"SELECT data_type FROM information_schema.columns WHERE "
            f"table_name = {sql_str(table)} AND column_name = {sql_str(column)}",
        )["data_type"]
    )


def time_sql(
    wh: Warehouse,
    table: str,
    column: str,
    timezone: str,
    *,
    time_format: str | None = None,
    dayfirst: bool = False,
) -> tuple[str, str]:
    """SQL turning `column` into a UTC timestamp, and the format chosen for it:
    `time_format` when given, else the one of `TIME_FORMATS` that parses most of a
    sample (ties: day-first formats first with `dayfirst`, else the earlier)."""
    col = ident(column)
    dtype = _dtype(wh, table, column)
    if str(dtype).upper().startswith(("TIMESTAMP WITH", "TIMESTAMPTZ")):
        return f"CAST({col} AS TIMESTAMP)", "typed"
    if str(dtype).upper().startswith(("TIMESTAMP", "DATE")):
        local = f"CAST({col} AS TIMESTAMP)"
        return f"CAST(timezone({sql_str(timezone)}, {local}) AS TIMESTAMP)", "typed"

    value = f"trim(CAST({col} AS VARCHAR))"
    counts = ", ".join(
        f"count(try_strptime(v, {sql_str(f)})) AS f{i}"
        for i, f in enumerate(TIME_FORMATS)
    )
    sample = (
        f"SELECT {value} AS v FROM {table} WHERE nullif({value}, '') IS NOT NULL "
        f"AND NOT regexp_matches({value}, {sql_str(_ZONED)}) LIMIT 2000"
    )
    if time_format:
        check_time_format(time_format)
        fmt = time_format
    else:
        hits = rows(wh, f"SELECT {counts} FROM ({sample})")[0]

        def rank(i: int) -> tuple[int, bool, int]:
            first = dayfirst and TIME_FORMATS[i].startswith("%d")
            return hits[f"f{i}"], first, -i

        fmt = TIME_FORMATS[max(range(len(TIME_FORMATS)), key=rank)]
    parsed = f"try_strptime({value}, {sql_str(fmt)})"
    local = f"coalesce({parsed}, TRY_CAST({value} AS TIMESTAMP))"
    zoned = f"CAST(TRY_CAST({value} AS TIMESTAMPTZ) AS TIMESTAMP)"
    expr = (
        f"CASE WHEN regexp_matches({value}, {sql_str(_ZONED)}) THEN {zoned} "
        f"ELSE CAST(timezone({sql_str(timezone)}, {local}) AS TIMESTAMP) END"
    )
    return expr, fmt


def check_time_format(time_format: str) -> None:
    """Refuse a time format without strptime codes: it could never parse a time."""
    if "%" not in time_format:
        raise ConfigError(
            f"time format {time_format!r} has no strptime codes; expected for "
            "example '%d.%m.%Y %H:%M' for 31.12.2024 14:05"
        )


def time_example(fmt: str) -> str:
    """A sample time written in `fmt`, for messages (`typed` for typed columns)."""
    if "%" not in fmt:
        return "2011-12-09 12:50:00"
    return datetime(2011, 12, 9, 12, 50).strftime(fmt)


def import_transactions(
    wh: Warehouse,
    path: str | Path,
    *,
    customer: str | None = None,
    time: str | None = None,
    order: str | None = None,
    amount: str | None = None,
    quantity: str | None = None,
    currency: str = "EUR",
    timezone: str = "UTC",
    delimiter: str | None = None,
    decimal: str | None = None,
    dayfirst: bool = False,
    time_format: str | None = None,
    progress: Progress = SILENT,
) -> Receipt:
    """Import purchase lines from CSV or Parquet; see the module docstring.

    `decimal`: `.` or `,` (None: detected, see `readers.detect_decimal`).
    `dayfirst` / `time_format`: how to read times whose format is ambiguous."""
    path = Path(path)
    check_timezone(timezone)
    mark = check_decimal(decimal) if decimal else None
    if time_format:
        check_time_format(time_format)
    receipt = Receipt("import_transactions", source=str(path))
    source = f"import:{path.name}"

    with receipt.timed("read"):
        progress.start(f"reading {path.name}")
        fmt: FileFormat = detect_format(path)
        if delimiter and fmt.kind == "csv":
            fmt = with_delimiter(fmt, path, delimiter)
        if fmt.kind == "jsonl":
            raise ImportFormatError(
                f"{str(path)!r} holds JSON lines (events), not transaction rows; "
                "import it with `clm import events`"
            )
        staged = stage(wh, path, fmt)
        progress.done()
    try:
        columns = [c for c in wh.table(staged).columns if c != "_row"]
        m = mp.resolve(
            columns,
            customer=customer,
            time=time,
            order=order,
            amount=amount,
            quantity=quantity,
        )
        receipt.details["format"] = {
            "kind": fmt.label,
            "delimiter": fmt.delimiter,
            "header": fmt.header,
            "bom": fmt.bom,
        }
        receipt.details["mapping"] = m.as_dict()
        with receipt.timed("transform"):
            time_expr, time_fmt = time_sql(
                wh,
                staged,
                m.time,
                timezone,
                time_format=time_format,
                dayfirst=dayfirst,
            )
            receipt.details["mapping"]["time_format"] = time_fmt
            text_cols = [
                c
                for c in dict.fromkeys([*m.amount_columns, m.quantity])
                if c and _dtype(wh, staged, c).upper() == "VARCHAR"
            ]
            if mark is None:
                mark = detect_decimal(
                    wh,
                    staged,
                    [c for c in m.amount_columns if c in text_cols],
                    fmt.delimiter,
                )
                if mark == ",":
                    receipt.details["mapping"]["detected"].append("decimal")
            receipt.details["mapping"]["decimal"] = mark
            marks = {c: mark for c in text_cols}
            _transform(
                wh,
                staged,
                columns,
                m,
                time_expr,
                time_fmt,
                marks,
                currency,
                source,
                receipt,
                progress,
            )
        with receipt.timed("write"):
            _write(wh, staged, source, receipt, progress)
        if mark == ".":
            _hint_decimal_comma(wh, staged, receipt)
    finally:
        for suffix in ("", "_p", "_l", "_o", "_e", "_r"):
            wh.drop(staged + suffix)
    _store(wh, receipt)
    log.info("imported %s: %s", path, receipt.counts)
    return receipt


def _transform(
    wh: Warehouse,
    staged: str,
    columns: list[str],
    m: mp.Mapping,
    time_expr: str,
    time_fmt: str,
    marks: dict[str, str],
    currency: str,
    source: str,
    receipt: Receipt,
    progress: Progress,
) -> None:
    """Build `<staged>_e` (candidate events) and `<staged>_r` (rejected rows).

    `marks`: the decimal mark of each text number column (others are typed)."""

    def text(col: str | None, alias: str = "s.") -> str:
        return (
            f"nullif(trim(CAST({alias}{ident(col)} AS VARCHAR)), '')"
            if col
            else "NULL::VARCHAR"
        )

    def number(col: str, alias: str = "s.") -> str:
        return number_sql(text(col, alias), marks.get(col, "."))

    def expected(col: str) -> str:
        if marks.get(col) == ",":
            return "a number with a decimal comma such as 12,50 or 1.234,50"
        return "a number such as 12.50"

    # The amount goes through Ibis: its expression is the rule language's tree. Its
    # columns arrive as numbers already, read with their decimal mark.
    typed = wh.con.sql(
        "SELECT _row, "
        + ", ".join(f"{number(c, '')} AS {ident(c)}" for c in m.amount_columns)
        + f" FROM {staged}"
    )
    amount_sql = wh.con.compile(typed.select("_row", _amount=mp.amount_expr(m, typed)))

    raw = (
        "to_json(struct_pack("
        + ", ".join(f"{ident(c)} := s.{ident(c)}" for c in columns)
        + "))::VARCHAR"
    )
    checks = [
        (f"{text(m.time)} IS NULL", m.time, "missing time"),
        (
            "_ts IS NULL",
            m.time,
            f"unparseable time: expected a date such as {time_example(time_fmt)}",
        ),
    ]
    for c in m.amount_columns:
        checks.append((f"{text(c)} IS NULL", c, "missing amount"))
        checks.append(
            (
                f"{number(c)} IS NULL",
                c,
                f"non-numeric amount: expected {expected(c)}",
            )
        )
    if m.quantity:
        quantity_reason = "non-numeric quantity: expected a number"
        if marks.get(m.quantity) == ",":
            quantity_reason += " with a decimal comma such as 2 or 1,5"
        checks.append(
            (
                f"{text(m.quantity)} IS NOT NULL AND {number(m.quantity)} IS NULL",
                m.quantity,
                quantity_reason,
            )
        )
    checks.append(("_amount IS NULL", m.amount, "amount could not be computed"))
    field = (
        "CASE " + " ".join(f"WHEN {w} THEN {sql_str(f)}" for w, f, _ in checks) + " END"
    )
    reason = (
        "CASE " + " ".join(f"WHEN {w} THEN {sql_str(r)}" for w, _, r in checks) + " END"
    )
    customer = f"regexp_replace({text(m.customer)}, '^(-?[0-9]+)\\.0+$', '\\1')"
    qty = number(m.quantity) if m.quantity else "NULL::DOUBLE"
    order_key = text(m.order)
    value = (
        "CASE "
        + " ".join(
            f"WHEN {w} THEN CAST(s.{ident(f)} AS VARCHAR)"
            for w, f, _ in checks
            if f in columns
        )
        + " END"
    )
    progress.start("parsing rows")
    wh.con.raw_sql(
        f"""CREATE TEMP TABLE {staged}_p AS
        SELECT _row, _cust, _ts, _oid, _amount, _qty, _stock, _raw,
               {field} AS _field, {value} AS _value, {reason} AS _reason FROM (
          SELECT s.*, {customer} AS _cust, {time_expr} AS _ts,
                 {order_key} AS _oid, a._amount, {qty} AS _qty,
                 {text(m.stock_code)} AS _stock, {raw} AS _raw
          FROM {staged} s JOIN ({amount_sql}) a USING (_row)
        ) s"""
    )
    progress.done()

    # Orders: the lines that passed the row checks, grouped; cancellations first
    # decided on those lines, then lines that make no sense on a purchase rejected.
    cancel_id = (
        f"regexp_matches(order_id, {sql_str(CANCELLATION_ID)})" if m.order else "false"
    )
    progress.start("grouping orders")
    wh.con.raw_sql(
        f"""CREATE TEMP TABLE {staged}_l AS
        WITH ok AS (
          SELECT _row, _cust AS customer, _ts AS ts, _oid AS order_id,
                 _amount AS amount, _qty AS qty, _stock AS stock, _raw AS raw,
                 coalesce(_oid, 'row' || CAST(_row AS VARCHAR)) AS okey
          FROM {staged}_p WHERE _reason IS NULL),
        kind AS (SELECT okey,
                   (bool_or({cancel_id}) AND sum(amount) <= 0) OR sum(amount) < 0
                     AS cancel
                 FROM ok GROUP BY okey)
        SELECT ok.*, kind.cancel,
          CASE WHEN NOT kind.cancel AND amount < 0
                 THEN 'negative amount on an order that is not a cancellation'
               WHEN NOT kind.cancel AND qty <= 0
                 THEN 'quantity <= 0 on an order that is not a cancellation'
          END AS _late
        FROM ok JOIN kind USING (okey)"""
    )
    wh.con.raw_sql(
        f"""CREATE TEMP TABLE {staged}_o AS
        SELECT okey, any_value(order_id) AS order_id, max(customer) AS customer,
               min(ts) AS ts, sum(amount) AS total, count(*) AS lines,
               sum(qty) AS quantity, min(_row) AS first_row,
               any_value(cancel) AS cancel, min(raw) AS raw
        FROM {staged}_l WHERE _late IS NULL GROUP BY okey"""
    )

    # Link each cancellation to the order it cancels (same customer, same stock
    # codes, earlier): the candidate matching most codes, then the latest.
    link = "SELECT NULL::VARCHAR AS okey, NULL::VARCHAR AS original LIMIT 0"
    if m.stock_code and m.order:
        link = f"""
        WITH c AS (SELECT l.okey, l.customer, l.stock, o.ts FROM {staged}_l l
                   JOIN {staged}_o o USING (okey)
                   WHERE o.cancel AND l._late IS NULL AND l.customer IS NOT NULL),
        p AS (SELECT l.okey, l.customer, l.stock, o.ts FROM {staged}_l l
              JOIN {staged}_o o USING (okey) WHERE NOT o.cancel AND l._late IS NULL),
        best AS (SELECT c.okey, c.stock, arg_max(p.okey, p.ts) AS original,
                        max(p.ts) AS last_at
                 FROM c JOIN p ON p.customer = c.customer AND p.stock = c.stock
                      AND p.ts <= c.ts
                 GROUP BY c.okey, c.stock)
        SELECT okey, original FROM best GROUP BY okey, original
        QUALIFY row_number() OVER (
            PARTITION BY okey
            ORDER BY count(*) DESC, max(last_at) DESC, original DESC) = 1
        """
    ident_key = (
        "coalesce(o.order_id, '') || '|' || coalesce(o.customer, '') || '|' || "
        "strftime(o.ts, '%Y-%m-%dT%H:%M:%S.%f')"
        if m.order
        else "o.raw || '|' || "
        "row_number() OVER (PARTITION BY o.raw ORDER BY o.first_row)"
    )
    event = "CASE WHEN o.cancel THEN 'order_refunded' ELSE 'order_completed' END"
    wh.con.raw_sql(
        f"""CREATE TEMP TABLE {staged}_e AS
        WITH k AS (
          SELECT o.*, {event} AS event, md5({event} || '|' || {ident_key}) AS event_id
          FROM {staged}_o o)
        SELECT k.event_id, 'track' AS type, k.event,
          CASE WHEN k.customer IS NULL THEN
            'order:' || coalesce(k.order_id, substr(k.event_id, 1, 16)) END
            AS anonymous_id,
          k.customer AS user_id, k.ts AS timestamp, now()::TIMESTAMP AS received_at,
          json_object('lines', k.lines, 'quantity', k.quantity,
                      'first_row', k.first_row,
                      'cancellation_id', CASE WHEN k.cancel THEN k.order_id END
          )::VARCHAR AS properties,
          CASE WHEN k.cancel THEN -abs(k.total) ELSE k.total END AS revenue,
          {sql_str(currency)} AS currency,
          CASE WHEN k.cancel THEN link.original ELSE k.order_id END AS order_id,
          {sql_str(source)} AS source, {sql_str(receipt.receipt_id)} AS import_id
        FROM k LEFT JOIN ({link}) link USING (okey)"""
    )
    wh.con.raw_sql(
        f"""CREATE TEMP TABLE {staged}_r AS
        SELECT _row, _field AS field, _value AS value, _reason AS reason, _raw AS raw
          FROM {staged}_p WHERE _reason IS NOT NULL
        UNION ALL
        SELECT _row, CASE WHEN amount < 0 THEN {sql_str(m.amount)}
                          ELSE {sql_str(m.quantity or "")} END,
               CAST(CASE WHEN amount < 0 THEN amount ELSE qty END AS VARCHAR),
               _late, raw
          FROM {staged}_l WHERE _late IS NOT NULL"""
    )
    progress.done()


def _write(
    wh: Warehouse, staged: str, source: str, receipt: Receipt, progress: Progress
) -> None:
    """Insert the new events and rejects; fill the receipt's counts."""
    stats = rows(
        wh,
        f"""SELECT count(*) AS n,
          count(*) FILTER (WHERE event = 'order_completed') AS orders,
          count(*) FILTER (WHERE event = 'order_refunded') AS refunds,
          count(DISTINCT user_id) AS customers,
          count(*) FILTER (WHERE user_id IS NULL AND event = 'order_completed')
            AS anonymous_orders,
          coalesce(sum(revenue) FILTER (WHERE event = 'order_completed'), 0) AS revenue,
          coalesce(sum(revenue) FILTER (WHERE event = 'order_refunded'), 0) AS refunded,
          count(*) FILTER (WHERE event = 'order_refunded' AND order_id IS NOT NULL)
            AS refunds_linked
        FROM {staged}_e""",
    )[0]
    rows_read = scalar(wh, f"SELECT count(*) AS n FROM {staged}")["n"]
    before = _count(wh, "events")
    execute(
        wh,
        f"""INSERT INTO events BY NAME
        SELECT * FROM {staged}_e e
        WHERE NOT EXISTS (SELECT 1 FROM events x WHERE x.event_id = e.event_id)""",
        progress,
        "writing events",
    )
    written = _count(wh, "events") - before
    rejects = rows(
        wh,
        f"SELECT reason, count(*) AS n FROM {staged}_r GROUP BY reason ORDER BY 2 DESC",
    )
    wh.con.raw_sql(
        f"""INSERT INTO rejected BY NAME
        SELECT {sql_str(source)} AS source, _row AS row_number, field, value, reason,
               raw, now()::TIMESTAMP AS rejected_at,
               {sql_str(receipt.receipt_id)} AS import_id
        FROM {staged}_r r WHERE NOT EXISTS (
          SELECT 1 FROM rejected x WHERE x.source = {sql_str(source)}
            AND x.row_number = r._row AND x.reason = r.reason AND x.raw = r.raw)"""
    )
    receipt.counts.update(
        rows_read=rows_read,
        events_written=written,
        orders=stats["orders"],
        refunds=stats["refunds"],
        refunds_linked=stats["refunds_linked"],
        customers=stats["customers"],
        anonymous_orders=stats["anonymous_orders"],
        duplicates_skipped=stats["n"] - written,
        rejected=sum(r["n"] for r in rejects),
        revenue=round(float(stats["revenue"]), 2),
        refunded=round(float(stats["refunded"]), 2),
    )
    receipt.rejects.update({r["reason"]: r["n"] for r in rejects})
    if receipt.counts["duplicates_skipped"]:
        receipt.warnings.append(
            f"{receipt.counts['duplicates_skipped']} events were already in the "
            "warehouse (same event id) and were skipped"
        )


def _hint_decimal_comma(wh: Warehouse, staged: str, receipt: Receipt) -> None:
    """Read with a decimal point, amounts such as `12,50` were rejected: say how to
    import them (detection stays off when the file also holds `12.50`)."""
    found = rows(
        wh,
        f"""SELECT field, count(*) AS n, min(value) AS example FROM {staged}_r
        WHERE reason LIKE 'non-numeric %' AND regexp_full_match(trim(value),
          {sql_str(DECIMAL_COMMA)}) AND contains(value, ',')
        GROUP BY field ORDER BY field""",
    )
    for f in found:
        receipt.warnings.append(
            f"{f['n']} value(s) of column {f['field']!r} are written with a decimal "
            f"comma (e.g. {f['example']!r}) and were rejected; if the file uses a "
            "decimal comma, import it again with --decimal ,"
        )


def _count(wh: Warehouse, table: str) -> int:
    return int(scalar(wh, f"SELECT count(*) AS n FROM {table}")["n"])


def _store(wh: Warehouse, receipt: Receipt) -> None:
    """Keep the receipt in the warehouse's `receipts` table."""
    body: dict[str, Any] = receipt.to_dict()
    wh.append(
        "receipts",
        ibis.memtable(
            {
                "receipt_id": [receipt.receipt_id],
                "operation": [receipt.operation],
                "source": [receipt.source],
                "started_at": [receipt.started_at],
                "body": [json.dumps(body, default=str)],
            }
        ),
    )
