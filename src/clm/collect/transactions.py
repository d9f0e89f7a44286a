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
  sample of the column (`TIME_FORMATS`, first that parses most wins).
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
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ibis

from clm.collect import mapping as mp
from clm.collect.readers import (
    FileFormat,
    detect_format,
    execute,
    ident,
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


def time_sql(wh: Warehouse, table: str, column: str, timezone: str) -> tuple[str, str]:
    """SQL turning `column` into a UTC timestamp, and the format chosen for it."""
    col = ident(column)
    dtype = scalar(
        wh,
        f"SELECT data_type FROM information_schema.columns WHERE "
        f"table_name = {sql_str(table)} AND column_name = {sql_str(column)}",
    )["data_type"]
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
    hits = rows(wh, f"SELECT {counts} FROM ({sample})")[0]
    best = max(range(len(TIME_FORMATS)), key=lambda i: (hits[f"f{i}"], -i))
    fmt = TIME_FORMATS[best]
    parsed = f"try_strptime({value}, {sql_str(fmt)})"
    local = f"coalesce({parsed}, TRY_CAST({value} AS TIMESTAMP))"
    zoned = f"CAST(TRY_CAST({value} AS TIMESTAMPTZ) AS TIMESTAMP)"
    expr = (
        f"CASE WHEN regexp_matches({value}, {sql_str(_ZONED)}) THEN {zoned} "
        f"ELSE CAST(timezone({sql_str(timezone)}, {local}) AS TIMESTAMP) END"
    )
    return expr, fmt


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
    progress: Progress = SILENT,
) -> Receipt:
    """Import purchase lines from CSV or Parquet; see the module docstring."""
    path = Path(path)
    check_timezone(timezone)
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
            time_expr, time_fmt = time_sql(wh, staged, m.time, timezone)
            receipt.details["mapping"]["time_format"] = time_fmt
            _transform(
                wh, staged, columns, m, time_expr, currency, source, receipt, progress
            )
        with receipt.timed("write"):
            _write(wh, staged, source, receipt, progress)
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
    currency: str,
    source: str,
    receipt: Receipt,
    progress: Progress,
) -> None:
    """Build `<staged>_e` (candidate events) and `<staged>_r` (rejected rows)."""
    # The amount goes through Ibis: its expression is the rule language's tree.
    t = wh.table(staged)
    typed = t.select(
        "_row", **{c: t[c].cast("string").try_cast("float64") for c in m.amount_columns}
    )
    amount_sql = wh.con.compile(typed.select("_row", _amount=mp.amount_expr(m, typed)))

    def text(col: str | None) -> str:
        return (
            f"nullif(trim(CAST(s.{ident(col)} AS VARCHAR)), '')"
            if col
            else "NULL::VARCHAR"
        )

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
            "unparseable time: expected a date such as 2011-12-09 12:50:00",
        ),
    ]
    for c in m.amount_columns:
        checks.append((f"{text(c)} IS NULL", c, "missing amount"))
        checks.append(
            (
                f"TRY_CAST({text(c)} AS DOUBLE) IS NULL",
                c,
                "non-numeric amount: expected a number such as 12.50",
            )
        )
    if m.quantity:
        checks.append(
            (
                f"{text(m.quantity)} IS NOT NULL AND "
                f"TRY_CAST({text(m.quantity)} AS DOUBLE) IS NULL",
                m.quantity,
                "non-numeric quantity: expected a number",
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
    qty = f"TRY_CAST({text(m.quantity)} AS DOUBLE)" if m.quantity else "NULL::DOUBLE"
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
