"""The single customer view: find a customer by id or identifier, and gather what
is stored about them (profile, identifiers, links, merges, stages, timeline).

A customer is found by its customer id, by an identifier key (`anon:…`), by a raw
user id, anonymous id, email or phone (hashed with the workspace salt before the
look-up), or by an id that was merged away (followed through `merge_log`).
"""

from __future__ import annotations

import json
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd

from clm.errors import NotFoundError
from clm.identity.identifiers import ANON, USER, sql_str
from clm.identity.resolve import _db, customer_events, workspace_salt
from clm.warehouse.engine import Warehouse


def _one(wh: Warehouse, sql: str, params: list[Any]) -> str | None:
    row = _db(wh).execute(sql, params).fetchone()
    return None if row is None else str(row[0])


def find_customer(wh: Warehouse, ref: str, *, salt: str = "") -> str:
    """The customer id that `ref` (an id or any identifier) points to."""
    ref = ref.strip()
    hit = _one(wh, "SELECT customer_id FROM customers WHERE customer_id = ?", [ref])
    if hit:
        return hit
    keys = [ref, USER + ref, ANON + ref]
    if "@" in ref or sum(c.isdigit() for c in ref) >= 5:
        s = sql_str(workspace_salt(wh, salt))
        email = _one(
            wh, f"SELECT 'email:' || sha256({s} || ':' || lower(trim(?)))", [ref]
        )
        phone = _one(
            wh,
            f"SELECT 'phone:' || sha256({s} || ':' || "
            "regexp_replace(?, '[^0-9]', '', 'g'))",
            [ref],
        )
        keys += [k for k in (email, phone) if k]
    marks = ", ".join("?" for _ in keys)
    hit = _one(
        wh,
        f"SELECT customer_id FROM customers WHERE identifier IN ({marks}) "
        "ORDER BY identifier LIMIT 1",
        keys,
    )
    if hit:
        return hit
    # A merged-away id: follow the chain of merges to the survivor.
    seen = {ref}
    current = ref
    while True:
        nxt = _one(
            wh,
            "SELECT into_id FROM merge_log WHERE merged_id = ? AND reason <> 'split' "
            "ORDER BY logged_at DESC LIMIT 1",
            [current],
        )
        if nxt is None or nxt in seen:
            break
        seen.add(nxt)
        current = nxt
        if _one(wh, "SELECT 1 FROM customers WHERE customer_id = ?", [current]):
            return current
    # Not resolved yet: the stand-in ids of `customer_events` still name the events.
    ev = _events_of(wh, ref, [])
    n = wh.scalar(ev.filter(ev.customer_id == ref).count())
    if n:
        return ref
    raise NotFoundError(
        f"no customer or identifier {ref!r}; look up a customer id, a user id, an "
        "anonymous id, an email or a phone (run `clm run` first to resolve new events)"
    )


def _events_of(wh: Warehouse, cid: str, keys: list[str]) -> ir.Table:
    """`customer_events` of the events that can belong to customer `cid`.

    Attributing every event of the warehouse (the identity join) takes seconds on
    10M events; the events of one customer carry one of its raw user or anonymous
    ids (from its identifier `keys`, or from `cid` itself, which for a customer not
    resolved yet is its raw user id or `anon:` + its anonymous id). A substring
    test keeps those events (a raw id may carry blanks the key trims), and only
    they are attributed, by the same rule, so the rows are the same."""
    users = {k[len(USER) :] for k in keys if k.startswith(USER)}
    anons = {k[len(ANON) :] for k in keys if k.startswith(ANON)}
    if cid.startswith(ANON):
        anons.add(cid[len(ANON) :])
    elif ":" not in cid:
        users.add(cid)
    raw = wh.table("events")
    near = [raw.user_id.contains(u) for u in sorted(users) if u]
    near += [raw.anonymous_id.contains(a) for a in sorted(anons) if a]
    if not near:
        return customer_events(wh)  # an email:/phone: id: no raw id to narrow by
    return customer_events(wh, raw.filter(ibis.or_(*near).fill_null(False)))


# The timeline's columns, newest event first (the server's fast path reads the same).
TIMELINE = (
    "timestamp",
    "type",
    "event",
    "event_id",
    "user_id",
    "anonymous_id",
    "revenue",
    "channel",
    "url",
)


def profile_record(rows: pd.DataFrame) -> dict[str, Any]:
    """A customer's `profiles` row as a dict with its JSON columns decoded; empty
    when there is no row."""
    if not len(rows):
        return {}
    profile: dict[str, Any] = rows.iloc[0].to_dict()
    for k in ("traits", "trait_times", "stages"):
        profile[k] = json.loads(profile[k] or "{}")
    return profile


def _frame(wh: Warehouse, sql: str, params: list[Any]) -> pd.DataFrame:
    return _db(wh).execute(sql, params).df()


def customer_view(
    wh: Warehouse, customer_id: str, *, page: int = 1, page_size: int = 50
) -> dict[str, Any]:
    """Profile, identifiers, links, merges, conflicts, stage history and one page of
    the timeline (newest first) of one customer."""
    cid = customer_id
    profile = profile_record(
        _frame(wh, "SELECT * FROM profiles WHERE customer_id = ?", [cid])
    )
    idents = _frame(
        wh,
        "SELECT identifier, kind, first_seen, last_seen, status FROM customers "
        "WHERE customer_id = ? ORDER BY kind, identifier",
        [cid],
    )
    links = _frame(
        wh,
        """WITH mine AS (SELECT identifier FROM customers WHERE customer_id = ?)
        SELECT i.* FROM identities i
        WHERE i.a IN (SELECT * FROM mine) OR i.b IN (SELECT * FROM mine)
        ORDER BY i.at""",
        [cid],
    )
    merges = _frame(
        wh,
        "SELECT * FROM merge_log WHERE into_id = ? OR merged_id = ? ORDER BY logged_at",
        [cid, cid],
    )
    conflicts = _frame(
        wh,
        "SELECT * FROM identity_conflicts WHERE customer_a = ? OR customer_b = ?",
        [cid, cid],
    )
    stages = _frame(
        wh,
        "SELECT model, model_version, stage, valid_from, valid_to FROM stage_history "
        "WHERE customer_id = ? ORDER BY model, model_version, valid_from",
        [cid],
    )
    ev = _events_of(wh, cid, [str(i) for i in idents.identifier])
    ev = ev.filter(ev.customer_id == cid)
    total = int(wh.scalar(ev.count()))
    rows = (
        ev.order_by([ev.timestamp.desc(), ev.event_id.desc()])
        .limit(page_size, offset=max(page - 1, 0) * page_size)
        .select(*TIMELINE)
        .to_pandas()
    )
    return {
        "customer_id": cid,
        "profile": profile,
        "identifiers": idents,
        "links": links,
        "merges": merges,
        "conflicts": conflicts,
        "stage_history": stages,
        "timeline": {
            "page": page,
            "page_size": page_size,
            "events": total,
            "rows": rows,
        },
    }
