"""Data subject rights (GDPR Art. 15, 17, 20): export and erase one customer.

`export_customer` writes everything stored about a person as one JSON document: the
profile, identifiers, links, merges, conflicts, blocks, every event, the stage history
and the predicted value. `erase_customer` deletes the same rows, plus rejected rows
that quote one of the person's raw ids, precomputed dashboard answers that name them
and the collector's session state of their ids, and records the erasure as a random
id, a time and per-table row counts: nothing that could identify the person.
Aggregates computed from these rows (stage populations, KPIs) change on the next
`clm run`; `clm customer erase` runs it.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from clm.identity.resolve import _db, customer_events
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse

# Tables holding a customer's rows, with the condition that selects them, by the
# customer id ($cid); `_clm_mine` is the temp table of their identifier keys.
_MINE = "SELECT identifier FROM _clm_mine"
WHERE: dict[str, str] = {
    "profiles": "customer_id = $cid",
    "customers": "customer_id = $cid",
    "identities": f"a IN ({_MINE}) OR b IN ({_MINE})",
    "identity_blocks": f"a IN ({_MINE}) OR b IN ({_MINE})",
    "identity_conflicts": (
        f"customer_a = $cid OR customer_b = $cid OR a IN ({_MINE}) OR b IN ({_MINE})"
    ),
    "merge_log": (
        "into_id = $cid OR merged_id = $cid OR merged_id IN "
        "(SELECT merged_id FROM merge_log WHERE into_id = $cid)"
    ),
    "stage_history": "customer_id = $cid",
    "stage_transitions": "customer_id = $cid",
    "customer_value": "customer_id = $cid",
}
# Precomputed dashboard answers (lists of a stage's customers, for example) are JSON
# text that may quote the customer id: those answers are deleted, not edited, and the
# pages compute them afresh until the next `clm run` stores them again.
VIEW_CACHE_WHERE = "contains(body, '\"' || $cid || '\"')"
# The collector's session state (created by its loader, see clm.collect.sessions)
# keys a visitor by md5_number of their anonymous or user id.
SESSIONS_TABLE = "collect_sessions"
SESSIONS_WHERE = "visitor_key IN (SELECT md5_number(v) FROM _clm_raw)"


def _prepare(wh: Warehouse, cid: str) -> Any:
    con = _db(wh)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _clm_mine AS SELECT identifier FROM customers "
        "WHERE customer_id = $cid",
        {"cid": cid},
    )
    sql = wh.con.compile(customer_events(wh))
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _clm_mine_events AS SELECT * FROM ({sql}) "
        "WHERE customer_id = $cid",
        {"cid": cid},
    )
    return con


def _raw_ids(con: Any) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT substr(identifier, 6) FROM _clm_mine "
        "WHERE starts_with(identifier, 'user:') OR starts_with(identifier, 'anon:')"
    ).fetchall()
    return [r[0] for r in rows]


def _rejected_where() -> str:
    return (
        "EXISTS (SELECT 1 FROM _clm_raw r WHERE contains(rejected.raw, "
        "'\"' || r.v || '\"'))"
    )


def export_customer(wh: Warehouse, customer_id: str, path: str | Path) -> Path:
    """Write everything stored about `customer_id` to `path` (JSON)."""
    con = _prepare(wh, customer_id)
    doc: dict[str, Any] = {"customer_id": customer_id, "format": "clm-export-1"}
    try:
        for table, where in WHERE.items():
            params = {"cid": customer_id} if "$cid" in where else {}
            df = con.execute(f"SELECT * FROM {table} WHERE {where}", params).df()
            doc[table] = json.loads(df.to_json(orient="records", date_format="iso"))
        ev = con.execute("SELECT * FROM _clm_mine_events ORDER BY timestamp").df()
        doc["events"] = json.loads(ev.to_json(orient="records", date_format="iso"))
        for rec in doc["events"]:
            for k in ("properties", "context"):
                if isinstance(rec.get(k), str):
                    # Text that is not JSON is kept as it was stored.
                    with contextlib.suppress(ValueError):
                        rec[k] = json.loads(rec[k])
    finally:
        con.execute("DROP TABLE IF EXISTS _clm_mine")
        con.execute("DROP TABLE IF EXISTS _clm_mine_events")
    out = Path(path)
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


def erase_customer(wh: Warehouse, customer_id: str) -> Receipt:
    """Delete every row about `customer_id`; log the erasure without personal data."""
    receipt = Receipt("erase")
    con = _prepare(wh, customer_id)
    erasure_id = uuid.uuid4().hex
    counts: dict[str, int] = {}
    sessions = wh.has_table(SESSIONS_TABLE)  # made by the collector's first load
    try:
        import pyarrow as pa

        raw = pa.table({"v": pa.array(_raw_ids(con), pa.string())})
        con.register("_clm_raw", raw)
        con.execute("BEGIN TRANSACTION")
        try:
            counts["events"] = _delete(
                con,
                "events",
                "event_id IN (SELECT event_id FROM _clm_mine_events)",
                customer_id,
            )
            # merge_log's condition reads merge_log itself: delete it first.
            for table in ("merge_log", *[t for t in WHERE if t != "merge_log"]):
                counts[table] = _delete(con, table, WHERE[table], customer_id)
            counts["rejected"] = _delete(
                con, "rejected", _rejected_where(), customer_id
            )
            counts["view_cache"] = _delete(
                con, "view_cache", VIEW_CACHE_WHERE, customer_id
            )
            if sessions:
                counts[SESSIONS_TABLE] = _delete(
                    con, SESSIONS_TABLE, SESSIONS_WHERE, customer_id
                )
            con.execute(
                "INSERT INTO erasures VALUES (?, now()::TIMESTAMP, ?)",
                [erasure_id, json.dumps(counts, sort_keys=True)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("_clm_raw")
    finally:
        con.execute("DROP TABLE IF EXISTS _clm_mine")
        con.execute("DROP TABLE IF EXISTS _clm_mine_events")
    receipt.counts.update(counts)
    receipt.details["erasure_id"] = erasure_id
    return receipt


def _delete(con: Any, table: str, where: str, cid: str) -> int:
    params = {"cid": cid} if "$cid" in where else {}
    n = con.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
    con.execute(f"DELETE FROM {table} WHERE {where}", params)
    return int(n)
