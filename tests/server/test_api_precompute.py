"""The answers `clm run` precomputes for the dashboard (`view_cache`), the schema step
that adds the table, and the JSON envelope of Starlette's own 404 and 405 under /api/v1.

The precomputed answers are compared with the same views computed afresh with the
table turned off, on a small simulated shop; a row is tampered with to show that the
views read it, and a new receipt shows that a stale row is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

import clm
from clm.demo.simulate import write_parquet
from clm.metrics.compute import compute_metrics
from clm.receipts import Receipt
from clm.server import views
from clm.server.app import create_app
from clm.warehouse.engine import Warehouse
from clm.warehouse.migrations import migrate
from clm.warehouse.schema import SCHEMA_VERSION
from clm.workspace import Workspace


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("precompute")
    events = root / "events.parquet"
    write_parquet(events, 300, seed=11)
    ws = clm.init(root / "ws", timezone="Europe/Berlin")
    ws._save_receipt(ws.import_events(events))
    # `clm run` precomputes from PRECOMPUTE_MIN_EVENTS events on: lower it for this
    # small shop so that the run itself writes the table.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(views, "PRECOMPUTE_MIN_EVENTS", 1)
        ws.run()
    yield ws
    ws.close()


def test_a_small_workspace_is_not_precomputed(tmp_path: Path) -> None:
    events = tmp_path / "events.parquet"
    rows = write_parquet(events, 40, seed=3)
    assert rows < views.PRECOMPUTE_MIN_EVENTS
    ws = clm.init(tmp_path / "ws", timezone="Europe/Berlin")
    try:
        ws._save_receipt(ws.import_events(events))
        ws.run()
        n = ws.warehouse.con.con.execute("SELECT count(*) FROM view_cache").fetchone()
        assert n == (0,)
    finally:
        ws.close()


def stored_rows(ws: Workspace) -> list[tuple[list[Any], str, str]]:
    rows = ws.warehouse.con.con.execute(
        "SELECT key, body, stamp FROM view_cache ORDER BY key"
    ).fetchall()
    return [(json.loads(k), b, s) for k, b, s in rows]


def fresh(ws: Workspace, key: list[Any]) -> Any:
    """The answer of the view behind `key`, computed now without the table."""
    r = views.Reader(ws, ws.warehouse, stored=False)
    view, rest = key[0], key[1:]
    if view == "populations":
        return views.populations(r, rest[0], date.fromisoformat(rest[2]))
    if view == "series":
        return views.population_series(r, rest[0], rest[2])["series"]
    if view == "transitions":
        s, e = date.fromisoformat(rest[2]), date.fromisoformat(rest[3])
        return views.transitions(r, rest[0], s, e)
    if view == "stage":
        got = views.stage_detail(r, rest[0], rest[2], None)
        keys = ("time_in_stage_days", "channels", "entered_from", "exited_to")
        return {k: got[k] for k in keys}
    if view == "stage_customers":
        got = views.stage_detail(r, rest[0], rest[2], None, rest[4], rest[5])
        assert got["as_of"] == rest[3]
        return {"total": got["customers"]["total"], "rows": got["customers"]["rows"]}
    if view == "overview":
        got = views.overview(r, rest[0], rest[2])
        del got["caveats"]  # computed on each request: they depend on today
        return got
    if view == "cohorts":
        return views.cohorts(r, rest[0])
    raise AssertionError(f"unexpected stored view {key}")


def test_precomputed_answers_equal_the_views(shop: Workspace) -> None:
    rows = stored_rows(shop)
    m = shop.model()
    kinds = {k[0] for k, _, _ in rows}
    assert kinds == {
        "populations",
        "series",
        "transitions",
        "stage",
        "stage_customers",
        "overview",
        "cohorts",
    }
    # Both grains the run promises, and every stage of the model.
    assert {k[3] for k, _, _ in rows if k[0] == "series"} == {m.grain, "month"}
    assert {k[3] for k, _, _ in rows if k[0] == "stage"} == set(m.stage_names)
    assert {k[3] for k, _, _ in rows if k[0] == "overview"} == {m.grain, "month"}
    stamp = views.Reader(shop, shop.warehouse).stamp()
    for key, body, at in rows:
        assert at == stamp
        # Through JSON, as the server sends it: the stored text must say the same.
        want = json.loads(json.dumps(views.plain(fresh(shop, key))))
        assert json.loads(body) == want, key


def test_overview_cards_from_the_run_equal_a_fresh_computation(
    shop: Workspace,
) -> None:
    m = shop.model()
    stored = views.overview(views.Reader(shop, shop.warehouse), m.name, "month")
    computed = views.overview(
        views.Reader(shop, shop.warehouse, stored=False), m.name, "month"
    )
    assert stored["cards"] and stored["series"]
    assert stored == computed


def test_views_read_the_table_and_ignore_a_stale_row(shop: Workspace) -> None:
    con = shop.warehouse.con.con
    key = views.cache_key(("cohorts", 12))
    (real,) = con.execute("SELECT body FROM view_cache WHERE key = ?", [key]).fetchone()
    con.execute("UPDATE view_cache SET body = ? WHERE key = ?", ['{"marker": 1}', key])
    try:
        assert views.cohorts(views.Reader(shop, shop.warehouse)) == {"marker": 1}
        # Anything imported or erased since the run changes the stamp.
        shop._save_receipt(Receipt("test", source="stale"))
        again = views.cohorts(views.Reader(shop, shop.warehouse))
        assert again == json.loads(real)
    finally:
        con.execute("UPDATE view_cache SET body = ? WHERE key = ?", [real, key])


def test_migration_adds_the_view_table(tmp_path: Path) -> None:
    wh = Warehouse.duckdb(tmp_path / "old.duckdb")
    try:
        wh.con.drop_table("view_cache")
        wh.set_meta("schema_version", "3")
        migrate(wh)
        assert "view_cache" in wh.con.list_tables()
        assert wh.meta("schema_version") == str(SCHEMA_VERSION) == "4"
    finally:
        wh.close()


class NoWarehouse:
    wh = None


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/api/v1/no/such/thing", 404, None),
        ("POST", "/api/v1/stages", 405, "GET"),
        ("DELETE", "/api/v1/customers/c1", 405, "GET"),
        ("PUT", "/api/v1/models/validate", 405, "POST"),
    ],
)
def test_404_and_405_under_the_api_use_the_envelope(
    method: str, path: str, status: int, allow: str | None
) -> None:
    client = TestClient(create_app(NoWarehouse()))  # type: ignore[arg-type]
    r = client.request(method, path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["status"] == status and err["retry"] is False and path in err["message"]
    if allow:
        assert allow in r.headers["allow"] and allow in err["valid"]
        assert err["field"] == "method" and err["value"] == method


def test_404_outside_the_api_stays_plain() -> None:
    client = TestClient(create_app(NoWarehouse()))  # type: ignore[arg-type]
    r = client.get("/no-such-page.txt")
    assert r.status_code == 404
    assert not r.headers["content-type"].startswith("application/json")


def test_cohorts_match_pandas_and_leave_unseen_months_empty(shop: Workspace) -> None:
    con = shop.warehouse.con.con
    ev = con.execute(
        "SELECT user_id, anonymous_id, timestamp FROM events "
        "WHERE event = 'order_completed'"
    ).df()
    ids = con.execute("SELECT identifier, customer_id FROM customers").df()
    user = ev.user_id.fillna("").str.strip()
    key = ("user:" + user).where(
        user != "", "anon:" + ev.anonymous_id.fillna("").str.strip()
    )
    ev["customer_id"] = key.map(dict(zip(ids.identifier, ids.customer_id, strict=True)))
    local = ev.timestamp.dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    ev["m"] = local.dt.year * 12 + local.dt.month - 1
    ev = ev.dropna(subset=["customer_id"])
    first = ev.groupby("customer_id").m.transform("min")
    ev["k"] = ev.m - first
    ev["cohort"] = first
    last = int(ev.m.max())
    cells = ev.drop_duplicates(["customer_id", "k"]).groupby(["cohort", "k"]).size()
    got = views.cohorts(views.Reader(shop, shop.warehouse, stored=False), 6)
    assert len(got["cohorts"]) == ev.cohort.nunique()
    for row in got["cohorts"]:
        d = date.fromisoformat(row["cohort"])
        c = d.year * 12 + d.month - 1
        size = int(cells.get((c, 0), 0))
        assert row["customers"] == size
        for k, share in enumerate(row["retention"]):
            if c + k > last:
                assert share is None, (row["cohort"], k)
            else:
                assert share == pytest.approx(cells.get((c, k), 0) / size)


def expected_search(ws: Workspace, q: str, exact: str | None) -> list[str]:
    con = ws.warehouse.con.con
    ids = con.execute("SELECT identifier, customer_id FROM customers").df()
    prof = con.execute("SELECT customer_id, traits FROM profiles").df()
    # A prefix search (clm.server.lookups): of an identifier, of its value after
    # the kind, or of a trait value. The queries below are prefixes of user ids,
    # so ranking by the best matching term is ranking by customer id.
    low = q.lower()
    ident = ids.identifier.str.lower()
    value = ident.str.split(":", n=1).str[1]
    hits = set(ids.customer_id[ident.str.startswith(low) | value.str.startswith(low)])
    for cid, traits in zip(prof.customer_id, prof.traits, strict=True):
        values = [str(v).lower() for v in json.loads(traits or "{}").values()]
        if any(w.startswith(low) for v in values for w in [v, *v.split()]):
            hits.add(cid)
    rest = sorted(hits - {exact})
    return ([exact] if exact else []) + rest


@pytest.mark.parametrize("exact", [False, True])
def test_search_pages_cover_every_hit_once(shop: Workspace, exact: bool) -> None:
    r = views.Reader(shop, shop.warehouse, stored=False)
    cid = str(
        shop.warehouse.con.con.execute(
            "SELECT min(customer_id) FROM customers WHERE customer_id LIKE 'user-%'"
        ).fetchone()[0]
    )
    # A short query matches many customers; a whole id is found exactly first.
    q = cid if exact else cid[:-2]
    want = expected_search(shop, q, cid if exact else None)
    got: list[str] = []
    page = 1
    while True:
        body = views.search_customers(r, q, page, 7)
        assert body["total"] == len(want)
        assert body["pages"] == max(1, -(-len(want) // 7))
        got += [row["customer_id"] for row in body["rows"]]
        if body["next"] is None:
            break
        page = body["next"]
    assert got == want
    # The exact hit is a LIKE hit too: it must come once, first; a short query
    # must fill more than one page.
    assert want[0] == cid if exact else len(want) > 7
    past = views.search_customers(r, q, page + 1, 7)
    assert past["rows"] == [] and past["total"] == len(want)


def test_dashboard_metrics_never_show_values_of_older_data(tmp_path: Path) -> None:
    # A small workspace (no precompute): `clm metrics` stores values, then more events
    # arrive and `clm run` replays the history without storing metrics. The page must
    # show the new data's values, equal to a fresh computation, not the stored ones.
    first, more = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_parquet(first, 40, seed=3)
    write_parquet(more, 60, seed=4)
    ws = clm.init(tmp_path / "ws", timezone="Europe/Berlin")
    try:
        ws._save_receipt(ws.import_events(first))
        ws.run()
        ws.metrics(grain="month")
        before = views.metrics(views.Reader(ws, ws.warehouse), None, "month")
        ws._save_receipt(ws.import_events(more))
        ws.run()
        after = views.metrics(views.Reader(ws, ws.warehouse), None, "month")
        fresh = compute_metrics(
            ws.warehouse,
            ws.model("ecommerce"),
            grain="month",
            timezone=ZoneInfo("Europe/Berlin"),
            store=False,
        ).values

        def key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
            return {
                (r["stage"], r["metric"], str(r["period_start"])): r["value"]
                for r in rows
                if r["value"] is not None
            }

        want = {
            (r.stage, r.metric, str(r.period_start)): r.value
            for r in fresh.itertuples()
            if r.value == r.value  # NaN: no value, as the page leaves it out
        }
        assert key(after["values"]) == pytest.approx(want)
        assert key(after["values"]) != key(before["values"])
    finally:
        ws.close()
