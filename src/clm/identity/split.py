"""Undoing merges: block an identifier or a link, or split a customer's last merge.

A block is a row in `identity_blocks`; resolution honours it on every later run, so a
split stays split when the same events are read again. After a block the customers it
touches are recomputed at once (no events are re-read), and the ids that had been
merged into them may name their part again. The caller reruns the stage models and
profiles (`clm customer split` does), since those depend on who is who.
"""

from __future__ import annotations

from typing import Any

from clm.errors import NotFoundError
from clm.identity.resolve import _db, resolve
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse


def _customers_of(wh: Warehouse, keys: list[str]) -> list[str]:
    marks = ", ".join("?" for _ in keys) or "NULL"
    rows = _db(wh).execute(
        f"SELECT DISTINCT customer_id FROM customers WHERE identifier IN ({marks})",
        keys,
    )
    return [r[0] for r in rows.fetchall()]


def _merged_into(wh: Warehouse, cids: list[str]) -> list[str]:
    marks = ", ".join("?" for _ in cids) or "NULL"
    rows = _db(wh).execute(
        f"SELECT DISTINCT merged_id FROM merge_log WHERE into_id IN ({marks})", cids
    )
    return [r[0] for r in rows.fetchall()]


def _rerun(wh: Warehouse, cids: list[str], options: dict[str, Any]) -> Receipt:
    con = _db(wh)
    names = _merged_into(wh, cids)
    receipt = resolve(wh, only_customers=cids, extra_names=names, **options)
    # Each merged-away id that names a part again is recorded as split off.
    marks = ", ".join("?" for _ in cids)
    con.execute(
        f"""INSERT INTO merge_log BY NAME
        SELECT DISTINCT m.merged_id, m.into_id, 'split' AS reason, NULL AS event_id,
          NULL AS at, now()::TIMESTAMP AS logged_at, ? AS run_id
        FROM merge_log m WHERE m.into_id IN ({marks}) AND m.reason <> 'split'
          AND m.merged_id IN (SELECT customer_id FROM customers)""",
        [receipt.receipt_id, *cids],
    )
    receipt.counts["split_off"] = len([n for n in names if _customers_of_id(wh, n)])
    return receipt


def _customers_of_id(wh: Warehouse, cid: str) -> bool:
    row = (
        _db(wh)
        .execute("SELECT 1 FROM customers WHERE customer_id = ? LIMIT 1", [cid])
        .fetchone()
    )
    return row is not None


def block_identifier(
    wh: Warehouse, key: str, reason: str = "blocked by user", **options: Any
) -> Receipt:
    """Stop `key` (an identifier key such as `anon:abc`) from linking anything."""
    cids = _customers_of(wh, [key])
    if not cids:
        raise NotFoundError(
            f"no identifier {key!r}; keys look like user:ID, anon:ID, email:HASH "
            "(see `clm customer ID` for a customer's identifiers)"
        )
    _db(wh).execute(
        "INSERT INTO identity_blocks VALUES ('identifier', ?, NULL, ?, "
        "now()::TIMESTAMP)",
        [key, reason],
    )
    return _rerun(wh, cids, options)


def block_edge(
    wh: Warehouse, a: str, b: str, reason: str = "blocked by user", **options: Any
) -> Receipt:
    """Stop the link between identifier keys `a` and `b` from joining them."""
    a, b = min(a, b), max(a, b)
    found = (
        _db(wh)
        .execute("SELECT 1 FROM identities WHERE a = ? AND b = ?", [a, b])
        .fetchone()
    )
    if not found:
        raise NotFoundError(
            f"no link between {a!r} and {b!r}; `clm customer ID --json` lists a "
            "customer's links"
        )
    _db(wh).execute(
        "INSERT INTO identity_blocks VALUES ('edge', ?, ?, ?, now()::TIMESTAMP)",
        [a, b, reason],
    )
    return _rerun(wh, _customers_of(wh, [a, b]), options)


def split(
    wh: Warehouse,
    customer_id: str,
    *,
    identifier: str | None = None,
    **options: Any,
) -> Receipt:
    """Split `identifier` off `customer_id`, or undo the customer's latest merge.

    Undoing a merge blocks the links of the event that caused it. When other links
    still join the parts the customer stays whole; the receipt warns and the user
    can block an identifier instead.
    """
    con = _db(wh)
    if identifier is not None:
        keys = [
            r[0]
            for r in con.execute(
                "SELECT identifier FROM customers WHERE customer_id = ? "
                "AND identifier IN (?, 'user:' || ?, 'anon:' || ?)",
                [customer_id, identifier, identifier, identifier],
            ).fetchall()
        ]
        if not keys:
            raise NotFoundError(
                f"customer {customer_id!r} has no identifier {identifier!r}; "
                "`clm customer ID` lists its identifiers"
            )
        return block_identifier(wh, keys[0], "split", **options)

    last = con.execute(
        "SELECT merged_id, event_id FROM merge_log WHERE into_id = ? "
        "AND reason <> 'split' AND event_id IS NOT NULL "
        "ORDER BY logged_at DESC LIMIT 1",
        [customer_id],
    ).fetchone()
    if last is None:
        raise NotFoundError(
            f"customer {customer_id!r} has no merge to undo; split an identifier off "
            "with --identifier KEY instead"
        )
    merged_id, event_id = last
    con.execute(
        """INSERT INTO identity_blocks SELECT 'edge', a, b, 'split', now()::TIMESTAMP
        FROM identities WHERE event_id = ?""",
        [event_id],
    )
    receipt = _rerun(wh, [customer_id], options)
    receipt.details["undone_merge"] = {"merged_id": merged_id, "event_id": event_id}
    still = con.execute(
        "SELECT count(DISTINCT customer_id) FROM customers WHERE customer_id IN (?, ?)",
        [customer_id, merged_id],
    ).fetchone()[0]
    if still < 2:
        receipt.warnings.append(
            f"{merged_id} is still joined to {customer_id} by other links; "
            "split an identifier off with --identifier KEY"
        )
    return receipt
