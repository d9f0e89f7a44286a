"""Hand-made identity cases: each expected partition and id is worked out by hand."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from clm.collect.sessions import ensure_state
from clm.errors import NotFoundError
from clm.identity.profiles import build_profiles
from clm.identity.resolve import customer_events, resolve
from clm.identity.rights import erase_customer, export_customer
from clm.identity.split import split
from clm.identity.view import customer_view, find_customer
from clm.warehouse.engine import Warehouse

SALT = "test-salt"


def ev(
    eid: str,
    when: str,
    *,
    anon: str | None = None,
    user: str | None = None,
    type: str = "page",
    event: str | None = None,
    props: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    batch: str = "b1",
    revenue: float | None = None,
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": type,
        "event": event,
        "anonymous_id": anon,
        "user_id": user,
        "timestamp": pd.Timestamp(when),
        "properties": json.dumps(props) if props is not None else None,
        "context": json.dumps(context) if context is not None else None,
        "import_id": batch,
        "revenue": revenue,
    }


def load(wh: Warehouse, rows: list[dict[str, Any]]) -> None:
    wh.append("events", pd.DataFrame(rows))


def owners(wh: Warehouse) -> dict[str, str]:
    df = customer_events(wh).select("event_id", "customer_id").to_pandas()
    return dict(zip(df.event_id, df.customer_id, strict=True))


@pytest.fixture
def wh():
    w = Warehouse.duckdb(None)
    yield w
    w.close()


def test_identify_before_and_after_anonymous_activity(wh):
    load(
        wh,
        [
            ev("e1", "2024-01-01", anon="A"),
            ev("e2", "2024-01-02", anon="A", user="U1", type="identify"),
            ev("e3", "2024-01-03", anon="A"),
            ev("e4", "2024-01-04", anon="B"),
        ],
    )
    resolve(wh, salt=SALT)
    # Before and after the login, A's events are U1's; B stays anonymous.
    assert owners(wh) == {"e1": "U1", "e2": "U1", "e3": "U1", "e4": "anon:B"}


def test_anonymous_customer_takes_the_user_id_later_and_logs_the_merge(wh):
    load(wh, [ev("e1", "2024-01-01", anon="A")])
    resolve(wh, salt=SALT)
    assert owners(wh) == {"e1": "anon:A"}
    load(wh, [ev("e2", "2024-01-02", anon="A", user="U1", type="identify", batch="b2")])
    r = resolve(wh, salt=SALT)
    assert owners(wh) == {"e1": "U1", "e2": "U1"}
    log = wh.to_pandas(wh.table("merge_log"))
    assert log[["merged_id", "into_id", "reason", "event_id"]].values.tolist() == [
        ["anon:A", "U1", "identify", "e2"]
    ]
    assert r.counts["merges"] == 1
    assert find_customer(wh, "anon:A") == "U1"


def test_chained_aliases_and_a_loop(wh):
    load(
        wh,
        [
            ev("e1", "2024-01-01", anon="A"),
            ev("e2", "2024-01-02", anon="B", props={"previousId": "A"}, type="alias"),
            ev("e3", "2024-01-03", anon="C", props={"previousId": "B"}, type="alias"),
            # the loop: C back to A changes nothing
            ev("e4", "2024-01-04", anon="A", props={"previousId": "C"}, type="alias"),
        ],
    )
    resolve(wh, salt=SALT)
    # One component {A, B, C}; nobody has a user id, A was seen first.
    assert set(owners(wh).values()) == {"anon:A"}


def test_two_known_users_sharing_one_device_are_not_merged(wh):
    load(
        wh,
        [
            ev("e0", "2024-01-01", anon="D"),
            ev("e1", "2024-01-02", anon="D", user="U1", type="identify"),
            ev("e2", "2024-01-05", anon="D", user="U2", type="identify"),
            ev("e3", "2024-01-06", anon="D", user="U2"),
        ],
    )
    r = resolve(wh, salt=SALT)
    own = owners(wh)
    # Events with a user id belong to that user; the device stays with U1, who
    # used it first (e1 is the earlier link).
    assert own == {"e0": "U1", "e1": "U1", "e2": "U2", "e3": "U2"}
    conf = wh.to_pandas(wh.table("identity_conflicts"))
    assert conf[["kind", "a", "b"]].values.tolist() == [
        ["two_user_ids", "anon:D", "user:U2"]
    ]
    assert r.counts["conflicts"] == 1


def test_merge_policy_joins_them(wh):
    load(
        wh,
        [
            ev("e1", "2024-01-02", anon="D", user="U1", type="identify"),
            ev("e2", "2024-01-05", anon="D", user="U2", type="identify"),
        ],
    )
    resolve(wh, salt=SALT, conflicts="merge")
    assert set(owners(wh).values()) == {"U1"}


def test_emails_differing_in_case_and_spaces_link(wh):
    load(
        wh,
        [
            ev(
                "e1",
                "2024-01-01",
                anon="A",
                type="identify",
                props={"email": " Ann@Example.COM "},
            ),
            ev(
                "e2",
                "2024-01-02",
                anon="B",
                context={"traits": {"email": "ann@example.com"}},
            ),
            ev(
                "e3",
                "2024-01-03",
                anon="C",
                type="identify",
                props={"email": "other@example.com"},
            ),
        ],
    )
    resolve(wh, salt=SALT)
    own = owners(wh)
    assert own["e1"] == own["e2"] == "anon:A"
    assert own["e3"] == "anon:C"
    # The address is never stored in clear in the identity tables.
    keys = wh.to_pandas(wh.table("customers")).identifier.tolist()
    assert not any("example" in k for k in keys)
    assert find_customer(wh, "ANN@example.com ", salt=SALT) == "anon:A"


@pytest.mark.parametrize("value", ["undefined", "NULL", "0", "", " ", "Anonymous"])
def test_placeholders_link_nothing(wh, value):
    load(
        wh,
        [
            ev("e1", "2024-01-01", anon="A", user=value),
            ev("e2", "2024-01-02", anon="B", user=value),
        ],
    )
    resolve(wh, salt=SALT)
    assert owners(wh) == {"e1": "anon:A", "e2": "anon:B"}
    assert not wh.to_pandas(wh.table("identities")).shape[0]


def test_shared_identifier_over_the_cap_is_quarantined(wh):
    rows = [
        ev(f"e{i}", f"2024-01-{i + 1:02d}", anon="TILL", user=f"U{i}", type="identify")
        for i in range(4)
    ]
    rows.append(ev("x", "2024-02-01", anon="TILL"))
    load(wh, rows)
    r = resolve(wh, salt=SALT, cap=3)
    own = owners(wh)
    assert [own[f"e{i}"] for i in range(4)] == ["U0", "U1", "U2", "U3"]
    assert own["x"] == "anon:TILL"
    assert r.counts["quarantined"] == 1
    q = wh.to_pandas(wh.table("identity_conflicts"))
    assert q[q.kind == "quarantine"].a.tolist() == ["anon:TILL"]


def test_trait_updated_by_a_late_event_keeps_the_newer_value(wh):
    load(
        wh,
        [
            ev("e1", "2024-03-01", user="U1", type="identify", props={"plan": "pro"}),
        ],
    )
    resolve(wh, salt=SALT)
    # Arrives later but happened earlier: must not overwrite "pro".
    load(
        wh,
        [
            ev(
                "e2",
                "2024-01-01",
                user="U1",
                type="identify",
                props={"plan": "free", "city": "Bonn"},
                batch="b2",
            ),
            ev(
                "o1",
                "2024-03-02",
                user="U1",
                type="track",
                event="order_completed",
                revenue=20.0,
                batch="b2",
            ),
        ],
    )
    resolve(wh, salt=SALT)
    build_profiles(wh)
    p = wh.to_pandas(wh.table("profiles")).set_index("customer_id").loc["U1"]
    assert json.loads(p.traits) == {"plan": "pro", "city": "Bonn"}
    assert json.loads(p.trait_times)["plan"].startswith("2024-03-01")
    assert p.orders == 1 and p.revenue == 20.0
    assert str(p.first_seen) == "2024-01-01 00:00:00"


def test_split_after_merge_restores_both(wh):
    load(wh, [ev("e1", "2024-01-01", anon="A"), ev("e2", "2024-01-01", anon="B")])
    resolve(wh, salt=SALT)
    load(
        wh,
        [
            ev(
                "e3",
                "2024-01-02",
                anon="B",
                props={"previousId": "A"},
                type="alias",
                batch="b2",
            )
        ],
    )
    resolve(wh, salt=SALT)
    assert set(owners(wh).values()) == {"anon:A"}
    r = split(wh, "anon:A", salt=SALT)
    assert r.details["undone_merge"]["merged_id"] == "anon:B"
    assert owners(wh) == {"e1": "anon:A", "e2": "anon:B", "e3": "anon:B"}
    # The block holds when everything is read again.
    resolve(wh, salt=SALT, full=True)
    assert owners(wh) == {"e1": "anon:A", "e2": "anon:B", "e3": "anon:B"}
    with pytest.raises(NotFoundError):
        split(wh, "anon:B", salt=SALT)


def test_erasure_leaves_no_row_behind(wh, tmp_path):
    load(
        wh,
        [
            ev(
                "e1",
                "2024-01-01",
                anon="A",
                type="identify",
                props={"email": "eve@example.com"},
            ),
            ev("e2", "2024-01-02", anon="A", user="EVE", type="identify"),
            ev("e3", "2024-01-03", anon="Z", user="OTHER"),
        ],
    )
    resolve(wh, salt=SALT)
    build_profiles(wh)
    wh.con.con.execute(
        "INSERT INTO stage_history VALUES ('EVE', 'm', 1, 's', '2024-01-01', NULL, 'r')"
    )
    wh.con.con.execute(
        "INSERT INTO rejected (source, reason, raw) VALUES "
        "('x', 'bad', '{\"userId\": \"EVE\"}'), ('x', 'bad', '{\"userId\": \"OTHER\"}')"
    )
    wh.con.con.execute(
        "INSERT INTO customer_value (customer_id, predicted_clv) "
        "VALUES ('EVE', 12.5), ('OTHER', 3.0)"
    )
    wh.con.con.execute(
        "INSERT INTO view_cache (key, body) VALUES "
        '(\'["stage"]\', \'{"customers": ["EVE", "X"]}\'), '
        '(\'["other"]\', \'{"customers": ["EVELYN"]}\')'
    )
    ensure_state(wh.con.con)
    wh.con.con.execute(
        "INSERT INTO collect_sessions (visitor_key, session_id) VALUES "
        "(md5_number('A'), 's1'), (md5_number('EVE'), 's2'), (md5_number('B'), 's3')"
    )
    out = export_customer(wh, "EVE", tmp_path / "eve.json")
    doc = json.loads(out.read_text())
    assert [r["predicted_clv"] for r in doc["customer_value"]] == [12.5]
    assert sorted(e["event_id"] for e in doc["events"]) == ["e1", "e2"]
    assert len(doc["customers"]) == 3  # user:EVE, anon:A, email:<hash>

    r = erase_customer(wh, "EVE")
    assert r.counts["events"] == 2
    con = wh.con.con
    checks = {
        "events": "user_id = 'EVE' OR anonymous_id = 'A'",
        "customers": "customer_id = 'EVE' OR identifier IN ('anon:A', 'user:EVE') "
        "OR identifier LIKE 'email:%'",
        "identities": "a LIKE '%EVE%' OR b LIKE '%EVE%' "
        "OR a = 'anon:A' OR b = 'anon:A'",
        "profiles": "customer_id = 'EVE'",
        "stage_history": "customer_id = 'EVE'",
        "rejected": "raw LIKE '%EVE%'",
        "customer_value": "customer_id = 'EVE'",
        "view_cache": "body LIKE '%\"EVE\"%'",
        "erasures": "rows LIKE '%EVE%' OR rows LIKE '%eve@%'",
    }
    for table, where in checks.items():
        n = con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
        assert n == 0, table
    # The other customer is untouched; the erasure itself is recorded.
    assert owners(wh) == {"e3": "OTHER"}
    assert con.execute("SELECT count(*) FROM rejected").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM erasures").fetchone()[0] == 1
    # Another customer's value and a cached answer naming a different id stay.
    assert con.execute("SELECT count(*) FROM customer_value").fetchone()[0] == 1
    assert con.execute("SELECT key FROM view_cache").fetchall() == [('["other"]',)]
    # EVE's ids (user id EVE, anonymous id A) lose their session state; B keeps it.
    assert con.execute("SELECT session_id FROM collect_sessions").fetchall() == [
        ("s3",)
    ]


def test_view_pages_the_timeline(wh):
    load(wh, [ev(f"e{i}", f"2024-01-{i + 1:02d}", user="U1") for i in range(5)])
    resolve(wh, salt=SALT)
    v = customer_view(wh, "U1", page=2, page_size=2)
    assert v["timeline"]["events"] == 5
    # newest first: page 2 holds the 3rd and 4th newest
    assert v["timeline"]["rows"].event_id.tolist() == ["e2", "e1"]
    assert v["identifiers"].identifier.tolist() == ["user:U1"]
