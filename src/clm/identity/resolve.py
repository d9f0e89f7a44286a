"""Which customer an event belongs to: identity resolution and its seam.

`customer_events(wh)` is what every later stage reads: the events table with a
`customer_id`. It joins each event's attributing key (its user id, else its anonymous
id; see `identifiers.event_key_sql`) to the `customers` mapping that `resolve` keeps.
Events not resolved yet fall back to the user id, else `anon:` + the anonymous id, so
a warehouse that never ran resolution reads as before. Inside `clm run` the pair
look-up is made once (`run_customer_keys`) and the stage engine, profiles and metrics
join events to it, reading customers as integer keys.

`resolve(wh)` runs incrementally: it extracts identifiers and links only from import
batches (events grouped by `import_id`) whose row count changed since the last run, then
recomputes the components of the customers those identifiers touch, with the passes of
`graph.py`. Re-reading a batch is harmless because extraction is idempotent; events
without an import id form one batch that is re-read whenever it grows.
Shortcoming: resolution runs on DuckDB only (raw SQL); on Spark `customer_events`
reads the mapping written by a DuckDB run, or falls back as above.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pyarrow as pa

from clm.errors import ConfigError
from clm.identity.identifiers import (
    ANON,
    PLACEHOLDERS,
    extract_sql,
    plain_sql,
    sql_str,
)
from clm.progress import SILENT, Progress
from clm.receipts import Receipt
from clm.settings import CONFLICT_POLICIES
from clm.warehouse.engine import Warehouse

log = logging.getLogger("clm.identity")

ANON_PREFIX = ANON
SALT_KEY = "identity_salt"
_KEY_TO_CID = (
    "CASE WHEN starts_with({0}, 'user:') THEN {0}[6:] ELSE {0} END"  # customer_id_of
)
_CID_TO_KEY = (
    "CASE WHEN regexp_matches({0}, '^(anon|email|phone|custom):') THEN {0} "
    "ELSE 'user:' || {0} END"
)


# -- the seam ------------------------------------------------------------------------


def _valid(col: ir.StringValue) -> ir.BooleanValue:
    # A constant array, not IN (…): DuckDB turns a long IN list into a join per use.
    placeholders = ibis.literal(list(PLACEHOLDERS), "array<string>")
    return col.notnull() & ~placeholders.contains(col.strip().lower())


def customer_events(wh: Warehouse, events: ir.Table | None = None) -> ir.Table:
    """`events` with a `customer_id` column; events with no identifier are left out,
    and so are events the collector flagged as coming from a bot or crawler
    (`context.clm.bot`, written compactly by `clm serve` when `serve.bot_filter` is
    on): stages, metrics and profiles count people.

    Every caller reads events through here, so it must be cheap: the identifier
    checks and the look-up in `customers` run once per distinct (user id, anonymous
    id) pair, and the events join that small table on the raw pair (null-safe).
    A caller that needs only some events passes them filtered as `events` (a
    filter of `wh.table("events")`), so that only their id pairs are looked up."""
    ev, mapped = _mapped_pairs(wh, events)
    joined = ev.join(
        mapped,
        [ev.user_id.identical_to(mapped._u), ev.anonymous_id.identical_to(mapped._a)],
    )
    return joined.drop("_u", "_a")


def _mapped_pairs(wh: Warehouse, events: ir.Table | None) -> tuple[ir.Table, ir.Table]:
    """The events without bots, and their distinct raw id pairs (`_u`, `_a`) with
    the customer each pair belongs to."""
    ev = wh.table("events") if events is None else events
    ev = ev.filter(~ev.context.contains('"bot":true').fill_null(False))
    pairs = ev.select(_u=ev.user_id, _a=ev.anonymous_id).distinct()
    user_ok, anon_ok = _valid(pairs._u), _valid(pairs._a)
    key = ibis.cases(
        (user_ok, "user:" + pairs._u.strip()),
        (anon_ok, ANON + pairs._a.strip()),
        else_=ibis.null("string"),
    )
    pairs = pairs.mutate(_k=key)
    # Not resolved yet: the user id itself, else the `anon:` key (as _KEY_TO_CID).
    user_key = pairs._k.startswith("user:")
    pairs = pairs.mutate(_f=ibis.ifelse(user_key, pairs._k.substr(5), pairs._k))
    cust = wh.table("customers").select(
        _i=lambda t: t.identifier, _c=lambda t: t.customer_id
    )
    mapped = pairs.left_join(cust, pairs._k == cust._i)
    mapped = mapped.select(
        _u=mapped._u, _a=mapped._a, customer_id=ibis.coalesce(mapped._c, mapped._f)
    )
    return ev, mapped.filter(mapped.customer_id.notnull())


# -- the identity join, prepared once per run ----------------------------------------

_PAIRS = "_clm_shared_pairs"
_KEYS = "_clm_shared_keys"


@dataclass(frozen=True)
class CustomerKeys:
    """Which customer each raw id pair belongs to, as an integer key, made once per
    `clm run` (or per step outside a run) so that the steps reading events do not
    each look every pair up again.

    `pairs` maps the raw (`_u` user id, `_a` anonymous id) pairs of all events to
    `ck`, an integer customer key (group-bys and windows on integers are far faster
    than on the id text); `keys` maps `ck` to `customer_id`. Both are small (one row
    per pair, per customer) temporary tables: they hold what `customers` said when
    they were made, so they are dropped when the run ends and nothing else (an
    import, a merge, an erasure) can find them stale.
    """

    pairs: ir.Table
    keys: ir.Table

    def events(self, wh: Warehouse, events: ir.Table | None = None) -> ir.Table:
        """`events` (default: all) with `ck`; like `customer_events`, events with no
        identifier and bot events are left out."""
        ev = wh.table("events") if events is None else events
        ev = ev.filter(~ev.context.contains('"bot":true').fill_null(False))
        p = self.pairs
        joined = ev.join(
            p, [ev.user_id.identical_to(p._u), ev.anonymous_id.identical_to(p._a)]
        )
        return joined.drop("_u", "_a")

    def named(self, table: ir.Table, key: str) -> ir.Table:
        """`table`, whose column `key` holds customer keys, with `customer_id` in
        their place (rows whose key names no customer left out)."""
        names = self.keys.select(_k=self.keys.ck, _cid=self.keys.customer_id)
        out = table.join(names, table[key] == names._k)
        out = out.mutate(customer_id=out._cid)
        return out.drop("_k", "_cid", *([key] if key != "customer_id" else []))


# The keys of the run under way, by warehouse object: steps called with only the
# warehouse (or, like the dashboard's precompute, with the workspace) find them here
# without each signature growing a parameter.
_current: dict[int, CustomerKeys] = {}


def current_customer_keys(wh: Warehouse) -> CustomerKeys | None:
    """The keys of the run under way on `wh` (see `run_customer_keys`), else None."""
    return _current.get(id(wh))


def build_customer_keys(wh: Warehouse, tag: str = "") -> CustomerKeys:
    """Materialise the pair → customer key mapping (see `CustomerKeys`)."""
    suffix = f"_{tag}" if tag else ""
    _, mapped = _mapped_pairs(wh, None)
    mapped = wh.materialize(mapped, f"_clm_shared_mapped{suffix}")
    try:
        names = mapped.select("customer_id").distinct()
        names = names.mutate(ck=ibis.row_number().cast("int64"))
        keys = wh.materialize(names, _KEYS + suffix)
        pairs = mapped.join(keys, "customer_id").select("_u", "_a", "ck")
        pairs = wh.materialize(pairs, _PAIRS + suffix)
    finally:
        wh.drop(f"_clm_shared_mapped{suffix}")
    return CustomerKeys(pairs, keys)


def drop_customer_keys(wh: Warehouse, ck: CustomerKeys) -> None:
    for t in (ck.pairs, ck.keys):
        wh.drop(t.get_name())


@contextmanager
def run_customer_keys(wh: Warehouse) -> Iterator[CustomerKeys]:
    """Make the run's customer keys; the steps of the run find them through
    `current_customer_keys` until the block ends, when they are dropped."""
    made = build_customer_keys(wh)
    _current[id(wh)] = made
    try:
        yield made
    finally:
        _current.pop(id(wh), None)
        drop_customer_keys(wh, made)


@contextmanager
def customer_keys(wh: Warehouse) -> Iterator[CustomerKeys]:
    """The run's customer keys, else keys of its own for the block."""
    made = current_customer_keys(wh)
    if made is not None:
        yield made
        return
    own = build_customer_keys(wh, tag=uuid.uuid4().hex[:8])
    try:
        yield own
    finally:
        drop_customer_keys(wh, own)


# -- resolution ----------------------------------------------------------------------


def _db(wh: Warehouse) -> Any:
    """The DuckDB connection under Ibis: the graph work moves arrow in and out."""
    if wh.capabilities.name != "duckdb":
        raise ConfigError(
            f"identity resolution runs on DuckDB; this warehouse is "
            f"{wh.capabilities.name!r}: resolve in the DuckDB file, then read it here"
        )
    return wh.con.con


def workspace_salt(wh: Warehouse, configured: str = "") -> str:
    """The configured salt, else the warehouse's own (made once; never printed)."""
    if configured:
        return configured
    salt = wh.meta(SALT_KEY)
    if not salt:
        salt = secrets.token_hex(16)
        wh.set_meta(SALT_KEY, salt)
    return salt


def resolve(
    wh: Warehouse,
    *,
    cap: int = 5,
    conflicts: str = "block",
    salt: str = "",
    custom_ids: Sequence[str] = ("crm_id",),
    full: bool = False,
    extra_names: Sequence[str] = (),
    only_customers: Sequence[str] = (),
    progress: Progress = SILENT,
) -> Receipt:
    """Resolve new events into customers; `full` re-reads every event.

    `only_customers` recomputes those customers' components without reading events
    (after a split or a block); `extra_names` are customer ids that may name a
    component again although no identifier carries them now (a split's merged ids).
    """
    if conflicts not in CONFLICT_POLICIES:
        raise ConfigError(
            f"identity conflict policy {conflicts!r}; expected one of "
            f"{', '.join(CONFLICT_POLICIES)} (setting `identity.conflicts`)"
        )
    if cap < 1:
        raise ConfigError(
            f"identity cap {cap}: must be at least 1 (setting `identity.cap`)"
        )
    receipt = Receipt("resolve_identities", source="full" if full else "incremental")
    run_id = receipt.receipt_id
    salt = workspace_salt(wh, salt)
    con = _db(wh)
    progress.start("resolving identities", total=4)
    try:
        with receipt.timed("extract"):
            scanned = _extract(wh, salt, custom_ids, full, bool(only_customers))
            receipt.counts["events_scanned"] = scanned
            progress.advance()
        with receipt.timed("subgraph"):
            n = _subgraph(wh, full, only_customers)
            receipt.counts["identifiers_resolved"] = n
            progress.advance()
        with receipt.timed("components"):
            stats = _components(wh, n, cap, conflicts, extra_names, run_id)
            receipt.counts.update(stats)
            progress.advance()
        with receipt.timed("store"):
            _store(wh, run_id)
            progress.advance()
    finally:
        for t in ("_id_plain", "_id_rich", "_id_newkeys", "_id_newedges", "_id_nodes"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        for t in ("_id_changed", "_id_edges", "_id_assign", "_id_chosen"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
        progress.done()
    log.info("identity resolution: %s", receipt.counts)
    return receipt


def _extract(
    wh: Warehouse, salt: str, custom_ids: Sequence[str], full: bool, none: bool
) -> int:
    """Read changed batches into `_id_newkeys` and `_id_newedges`; store the edges."""
    con = _db(wh)
    batches = "SELECT import_id, count(*) AS events FROM events GROUP BY 1"
    if none:
        changed = f"SELECT * FROM ({batches}) WHERE false"
    elif full:
        changed = batches
    else:
        changed = f"""SELECT * FROM ({batches}) c WHERE NOT EXISTS (
            SELECT 1 FROM identity_batches b WHERE b.events = c.events
            AND b.import_id IS NOT DISTINCT FROM c.import_id)"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _id_changed AS {changed}")
    # A full pass reads every event: no batch filter (the batch list is still kept).
    where = "true" if full and not none else _batch_filter(con)
    con.execute("CREATE OR REPLACE TEMP TABLE _id_plain AS " + plain_sql(where))
    rich = f"(SELECT * FROM events WHERE {where})"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _id_rich AS "
        + extract_sql(rich, salt, custom_ids)
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _id_newkeys AS
        SELECT key, min(first_seen) AS first_seen, max(last_seen) AS last_seen
        FROM (SELECT ukey AS key, first_seen, last_seen FROM _id_plain
              UNION ALL SELECT akey, first_seen, last_seen FROM _id_plain
              UNION ALL SELECT unnest(ids), timestamp, timestamp FROM _id_rich)
        WHERE key IS NOT NULL GROUP BY key"""
    )
    # A star per event (first key to each other key) connects the same components as
    # all pairs would, with len-1 edges instead of len*(len-1)/2. Plain rows are
    # already the earliest event of their raw pair, so taking the earliest again
    # gives the earliest event per link.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _id_newedges AS
        SELECT least(hub, other) AS a, greatest(hub, other) AS b,
               arg_min(event_id, (ts, event_id)) AS event_id,
               min(ts) AS at, arg_min(reason, (ts, event_id)) AS reason
        FROM (SELECT ukey AS hub, akey AS other, event_id, first_seen AS ts,
                'event' AS reason
              FROM _id_plain WHERE ukey IS NOT NULL AND akey IS NOT NULL
              UNION ALL
              SELECT hub, other, event_id, ts, reason FROM (
                SELECT hub, unnest(ids) AS other, event_id, timestamp AS ts, reason
                FROM _id_rich WHERE hub IS NOT NULL)
              WHERE other IS NOT NULL AND other <> hub)
        GROUP BY ALL"""
    )
    # Keep, per pair, the earliest event that linked it (old or new).
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _id_edges AS
        SELECT n.* FROM _id_newedges n WHERE NOT EXISTS (
          SELECT 1 FROM identities i WHERE i.a = n.a AND i.b = n.b
          AND (i.at < n.at OR (i.at = n.at AND i.event_id <= n.event_id)))"""
    )
    con.execute(
        """DELETE FROM identities i USING _id_edges n
        WHERE i.a = n.a AND i.b = n.b"""
    )
    con.execute("INSERT INTO identities BY NAME SELECT * FROM _id_edges")
    scanned = con.execute("SELECT sum(events) FROM _id_changed").fetchone()[0]
    return int(scanned or 0)


def _batch_filter(con: Any) -> str:
    """SQL filter on `events` for the changed batches.

    A few batches become a literal list, which DuckDB pushes into the scan and checks
    against each row group's min/max: an incremental run then reads the new rows, not
    every event's columns. Many batches fall back to a semi-join.
    """
    ids = [r[0] for r in con.execute("SELECT import_id FROM _id_changed").fetchall()]
    if len(ids) > 1000:
        return """import_id IN (SELECT import_id FROM _id_changed)
        OR (import_id IS NULL AND EXISTS (
          SELECT 1 FROM _id_changed WHERE import_id IS NULL))"""
    named = [sql_str(i) for i in ids if i is not None]
    terms = [f"import_id IN ({', '.join(named)})"] if named else []
    if None in ids:
        terms.append("import_id IS NULL")
    return " OR ".join(terms) or "false"


def _subgraph(wh: Warehouse, full: bool, only: Sequence[str]) -> int:
    """Nodes to recompute, numbered by key: whole customers touched plus new keys."""
    con = _db(wh)
    if full:
        touched = "SELECT customer_id FROM customers"
    else:
        con.register(
            "_id_only", pa.table({"customer_id": pa.array(list(only), pa.string())})
        )
        touched = """SELECT c.customer_id FROM customers c
            SEMI JOIN _id_newkeys k ON c.identifier = k.key
            UNION SELECT customer_id FROM _id_only"""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _id_nodes AS
        WITH t AS ({touched}),
        old AS (SELECT c.* FROM customers c
          SEMI JOIN t ON c.customer_id = t.customer_id),
        merged AS (
          SELECT coalesce(o.identifier, k.key) AS key, o.customer_id AS old_cid,
            least(o.first_seen, k.first_seen) AS first_seen,
            greatest(o.last_seen, k.last_seen) AS last_seen
          FROM old o FULL JOIN _id_newkeys k ON o.identifier = k.key)
        SELECT *, split_part(key, ':', 1) AS kind,
          (row_number() OVER (ORDER BY key) - 1)::BIGINT AS i FROM merged"""
    )
    if not full:
        con.unregister("_id_only")
    return int(con.execute("SELECT count(*) FROM _id_nodes").fetchone()[0])


def _components(
    wh: Warehouse,
    n: int,
    cap: int,
    policy: str,
    extra_names: Sequence[str],
    run_id: str,
) -> dict[str, int]:
    """The graph passes on the subgraph; writes `_id_assign` (i, label, status)."""
    # Imported here: graph needs scipy, whose import costs every clm command a few
    # tenths of a second; only resolution uses it.
    from clm.identity import graph

    con = _db(wh)
    nodes = con.execute(
        f"""SELECT i, kind = 'user' AS is_user,
          coalesce(epoch_us(first_seen), 0) AS fs,
          key IN (SELECT {_CID_TO_KEY.format("old_cid")} FROM _id_nodes
                  WHERE old_cid IS NOT NULL
                  UNION ALL SELECT unnest($names::VARCHAR[])) AS is_named,
          key IN (SELECT a FROM identity_blocks WHERE kind = 'identifier') AS blocked
        FROM _id_nodes ORDER BY i""",
        {"names": list(extra_names)},
    ).to_arrow_table()
    # Quarantine counts distinct user ids over ALL stored links, not just this subgraph.
    q = con.execute(
        f"""SELECT n.i, count(DISTINCT l.other) AS users FROM _id_nodes n
        JOIN (SELECT a AS x, b AS other FROM identities UNION ALL
              SELECT b, a FROM identities) l ON l.x = n.key
        WHERE n.kind <> 'user' AND starts_with(l.other, 'user:')
        GROUP BY n.i HAVING count(DISTINCT l.other) > {int(cap)}"""
    ).to_arrow_table()
    edges = con.execute(
        """SELECT na.i AS s, nb.i AS d, e.event_id, e.at, e.reason,
          (row_number() OVER (ORDER BY e.at, e.event_id) - 1)::BIGINT AS rank
        FROM identities e JOIN _id_nodes na ON e.a = na.key
        JOIN _id_nodes nb ON e.b = nb.key
        WHERE NOT EXISTS (SELECT 1 FROM identity_blocks x WHERE x.kind = 'edge'
          AND x.a = e.a AND x.b = e.b)
        ORDER BY rank"""
    ).to_arrow_table()

    is_user = nodes["is_user"].to_numpy(zero_copy_only=False).astype(bool)
    is_named = nodes["is_named"].to_numpy(zero_copy_only=False).astype(bool)
    blocked = nodes["blocked"].to_numpy(zero_copy_only=False).astype(bool)
    fs = nodes["fs"].to_numpy(zero_copy_only=False).astype(np.int64)
    quarantined = np.zeros(n, dtype=bool)
    quarantined[q["i"].to_numpy().astype(np.int64)] = True
    src = edges["s"].to_numpy().astype(np.int64)
    dst = edges["d"].to_numpy().astype(np.int64)
    rank = edges["rank"].to_numpy().astype(np.int64)

    # Quarantined and blocked identifiers link nothing: drop their edges.
    cut = quarantined | blocked
    keep = ~(cut[src] | cut[dst])
    labels = graph.components(n, src[keep], dst[keep])
    conflict_idx = np.zeros(0, dtype=np.int64)
    if policy == "block":
        split = graph.split_conflicts(labels, src[keep], dst[keep], rank[keep], is_user)
        labels = split.labels
        conflict_idx = np.flatnonzero(keep)[split.conflict_edges]
    chosen = graph.survivors(labels, is_user, is_named, fs)

    # Status as a small integer code, named in SQL: no 2M-row text array in numpy.
    status = np.where(blocked, 2, np.where(quarantined, 1, 0)).astype(np.int8)
    con.register(
        "_id_assign_arrow",
        pa.table(
            {
                "i": np.arange(n, dtype=np.int64),
                "label": labels,
                "chosen": chosen[labels] if n else labels,
                "status": status,
            }
        ),
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _id_assign AS
        SELECT a.i, a.label,
          ['linked', 'quarantined', 'blocked'][a.status + 1] AS status,
          {_KEY_TO_CID.format("c.key")} AS customer_id
        FROM _id_assign_arrow a JOIN _id_nodes c ON c.i = a.chosen"""
    )
    con.unregister("_id_assign_arrow")

    merges = _log_merges(wh, run_id)
    conflicts = _log_conflicts(wh, edges, conflict_idx, q, cap)
    return {
        # Labels are numbered 0..k-1 by both graph passes: k customers.
        "customers": int(labels.max()) + 1 if n else 0,
        "merges": merges,
        "conflicts": conflicts,
        "quarantined": int(quarantined.sum()),
    }


def _log_merges(wh: Warehouse, run_id: str) -> int:
    """Old customer ids that no component carries any more point to their survivor."""
    con = _db(wh)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _id_chosen AS
        SELECT DISTINCT n.old_cid, a.customer_id, a.label FROM _id_nodes n
        JOIN _id_assign a ON a.i = n.i WHERE n.old_cid IS NOT NULL
        AND n.old_cid <> a.customer_id
        AND n.old_cid NOT IN (SELECT customer_id FROM _id_assign)"""
    )
    # The cause: the earliest link stored in this run inside the survivor's component.
    con.execute(
        f"""INSERT INTO merge_log BY NAME
        SELECT m.old_cid AS merged_id, m.customer_id AS into_id,
          coalesce(c.reason, 'split') AS reason, c.event_id, c.at,
          now()::TIMESTAMP AS logged_at, '{run_id}' AS run_id
        FROM (SELECT DISTINCT old_cid, customer_id, label FROM _id_chosen) m
        LEFT JOIN (
          SELECT a.label, arg_min(e.reason, (e.at, e.event_id)) AS reason,
            arg_min(e.event_id, (e.at, e.event_id)) AS event_id, min(e.at) AS at
          FROM _id_edges e JOIN _id_nodes n ON n.key = e.a
          JOIN _id_assign a ON a.i = n.i GROUP BY a.label) c ON c.label = m.label"""
    )
    return int(
        con.execute("SELECT count(DISTINCT old_cid) FROM _id_chosen").fetchone()[0]
    )


def _log_conflicts(
    wh: Warehouse, edges: pa.Table, idx: Any, quarantined: pa.Table, cap: int
) -> int:
    """Links not made: record each once (a later run does not repeat it)."""
    con = _db(wh)
    rows = edges.take(pa.array(idx, pa.int64())).select(["s", "d", "event_id", "at"])
    con.register("_id_conf_arrow", rows)
    con.register("_id_q_arrow", quarantined)
    con.execute(
        f"""INSERT INTO identity_conflicts BY NAME
        SELECT 'two_user_ids' AS kind, na.key AS a, nb.key AS b,
          xa.customer_id AS customer_a, xb.customer_id AS customer_b, c.event_id,
          c.at, 'the link would join two customers who each have a user id'
            AS detail, now()::TIMESTAMP AS logged_at
        FROM _id_conf_arrow c JOIN _id_nodes na ON na.i = c.s
        JOIN _id_nodes nb ON nb.i = c.d JOIN _id_assign xa ON xa.i = c.s
        JOIN _id_assign xb ON xb.i = c.d
        WHERE NOT EXISTS (SELECT 1 FROM identity_conflicts k
          WHERE k.kind = 'two_user_ids' AND k.a = na.key AND k.b = nb.key)
        UNION ALL
        SELECT 'quarantine', n.key, NULL, NULL, NULL, NULL, NULL,
          'linked to ' || q.users || ' user ids, more than the cap of {int(cap)}',
          now()::TIMESTAMP
        FROM _id_q_arrow q JOIN _id_nodes n ON n.i = q.i
        WHERE NOT EXISTS (SELECT 1 FROM identity_conflicts k
          WHERE k.kind = 'quarantine' AND k.a = n.key)"""
    )
    con.unregister("_id_conf_arrow")
    con.unregister("_id_q_arrow")
    return len(rows)


def _store(wh: Warehouse, run_id: str) -> None:
    """Replace the subgraph's rows of `customers`; remember which batches were read."""
    con = _db(wh)
    con.execute("DELETE FROM customers c USING _id_nodes n WHERE c.identifier = n.key")
    con.execute(
        """INSERT INTO customers BY NAME
        SELECT n.key AS identifier, n.kind, a.customer_id, n.first_seen, n.last_seen,
          a.status FROM _id_nodes n JOIN _id_assign a ON a.i = n.i"""
    )
    con.execute(
        """DELETE FROM identity_batches b USING _id_changed c
        WHERE b.import_id IS NOT DISTINCT FROM c.import_id"""
    )
    con.execute("INSERT INTO identity_batches BY NAME SELECT * FROM _id_changed")


def options_from(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolve options a workspace's settings give (`identity.*`)."""
    return {
        "cap": int(config.get("identity.cap", 5)),
        "conflicts": str(config.get("identity.conflicts", "block")),
        "salt": str(config.get("identity.salt", "") or ""),
        "custom_ids": tuple(config.get("identity.custom_ids", ("crm_id",))),
    }
