"""The read API of `clm serve` against figures worked out from the warehouse by hand
(pandas in `server_support`), its one error envelope, tokens and pagination."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_support import TOKEN, Served, serve_demo

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_demo(tmp_path_factory.mktemp("api")) as s:
        yield s


def get(s: Served, path: str, **params: Any) -> httpx.Response:
    return httpx.get(s.url + path, params=params, headers=AUTH, timeout=30)


def is_envelope(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["status"] == status and err["message"] and err["retry"] is False
    if field:
        assert err["field"] == field
    return err


def test_populations_match_pandas(server: Served) -> None:
    body = get(server, "/api/v1/stages").json()
    assert body["as_of"] == server.truth["as_of"]
    assert body["timezone"] == "Europe/Berlin"
    got = {s["stage"]: s["customers"] for s in body["stages"] if s["customers"]}
    assert got == server.truth["populations"]
    assert body["total"] == sum(server.truth["populations"].values())


def test_transitions_end_column_is_the_end_population(server: Served) -> None:
    body = get(server, "/api/v1/transitions", start="2025-06-01").json()
    assert body["end"] == server.truth["as_of"]
    cols = dict(zip(body["columns"], zip(*body["matrix"], strict=True), strict=True))
    per_stage = {c: sum(v) for c, v in cols.items() if sum(v)}
    assert per_stage == server.truth["populations"]


def test_metrics_overview_series_and_stage(server: Served) -> None:
    m = get(server, "/api/v1/metrics", grain="month", stage="loyalty").json()
    assert m["grain"] == "month" and {v["stage"] for v in m["values"]} == {"loyalty"}
    # change is (value - previous) / |previous|, checked on every row by hand.
    for v in m["values"]:
        if v["previous"] not in (None, 0) and v["value"] is not None:
            assert v["change"] == pytest.approx(
                (v["value"] - v["previous"]) / abs(v["previous"])
            )
    ov = get(server, "/api/v1/overview").json()
    assert len(ov["cards"]) == len(ov["populations"]) and ov["series"]
    series = get(server, "/api/v1/stages/series", start="2025-01-01").json()
    assert min(p["period_start"] for p in series["series"]) >= "2025-01-01"
    st = get(server, "/api/v1/stages/loyalty", page_size=5).json()
    assert st["customers"]["total"] == server.truth["populations"]["loyalty"]
    assert len(st["customers"]["rows"]) == min(5, st["customers"]["total"])


def test_customer_search_and_view(server: Served) -> None:
    cid = server.truth["customer"]
    found = get(server, "/api/v1/customers", q=cid).json()
    assert found["rows"][0]["customer_id"] == cid
    view = get(server, f"/api/v1/customers/{cid}", page_size=3).json()
    assert len(view["identifiers"]) == server.truth["customer_identifiers"]
    assert view["timeline"]["total"] == server.truth["customer_events"]
    assert len(view["timeline"]["rows"]) == min(3, server.truth["customer_events"])
    page2 = get(server, f"/api/v1/customers/{cid}", page_size=3, page=2).json()
    ids1 = {e["event_id"] for e in view["timeline"]["rows"]}
    assert not ids1 & {e["event_id"] for e in page2["timeline"]["rows"]}
    is_envelope(get(server, "/api/v1/customers/nobody-at-all"), 404)


def test_pagination_of_receipts(server: Served) -> None:
    all_rows = get(server, "/api/v1/receipts").json()
    assert all_rows["total"] == len(all_rows["rows"]) >= 3
    one = get(server, "/api/v1/receipts", page_size=1, page=2).json()
    assert one["rows"][0]["receipt_id"] == all_rows["rows"][1]["receipt_id"]
    assert one["next"] == 3 and one["pages"] == all_rows["total"]
    rid = one["rows"][0]["receipt_id"]
    assert get(server, f"/api/v1/receipts/{rid}").json()["receipt_id"] == rid


def test_models_validate_and_preview(server: Served) -> None:
    model = get(server, "/api/v1/models/ecommerce").json()
    text = model["yaml"]
    lines = text.splitlines()
    bad_line = next(i for i, ln in enumerate(lines, 1) if "orders_365d >=" in ln)
    bad = text.replace("orders_365d >=", "orders_366d >=", 1)
    r = httpx.post(
        server.url + "/api/v1/models/validate", json={"yaml": bad}, headers=AUTH
    )
    err = r.json()["errors"][0]
    assert r.json()["valid"] is False and err["line"] == bad_line
    assert "orders_366d" in err["message"] and "orders_365d" in err["message"]
    r = httpx.post(
        server.url + "/api/v1/models/preview",
        json={"yaml": text},
        headers=AUTH,
        timeout=60,
    )
    body = r.json()
    # 2000 customers fit the preview sample: the replay must equal the stored run.
    assert body["sample_every"] == 1
    got = {p["stage"]: p["customers"] for p in body["populations"] if p["customers"]}
    assert got == server.truth["populations"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/stages", {"as_of": "2024-13-01"}, "as_of"),
        ("/api/v1/metrics", {"grain": "year"}, "grain"),
        ("/api/v1/customers", {"q": "x", "page_size": "0"}, "page_size"),
        ("/api/v1/receipts", {"page": "abc"}, "page"),
        ("/api/v1/cohorts", {"months": "99"}, "months"),
    ],
)
def test_bad_parameters_share_the_envelope(
    server: Served, path: str, params: dict[str, str], field: str
) -> None:
    err = is_envelope(get(server, path, **params), 400, field)
    assert params[field] in err["message"]


def test_preview_exact_flag(server: Served) -> None:
    text = get(server, "/api/v1/models/ecommerce").json()["yaml"]
    url = server.url + "/api/v1/models/preview"
    r = httpx.post(url, params={"exact": "maybe"}, json={"yaml": text}, headers=AUTH)
    err = is_envelope(r, 400, "exact")
    assert "maybe" in err["message"]
    # An edited draft (new version): exact replays every customer of the demo,
    # which must give the populations of the stored run.
    draft = text.replace("version: 1", "version: 7", 1)
    r = httpx.post(
        url, params={"exact": "1"}, json={"yaml": draft}, headers=AUTH, timeout=120
    )
    body = r.json()
    assert body["method"] == "exact" and body["estimate"] is False
    got = {p["stage"]: p["customers"] for p in body["populations"] if p["customers"]}
    assert got == server.truth["populations"]
    index = get(server, "/api/v1/").json()
    assert set(index["lookups"]) >= {"ready", "building", "seconds"}


def test_unknown_names_are_404_with_valid_values(server: Served) -> None:
    err = is_envelope(get(server, "/api/v1/stages", model="nope"), 404)
    assert "ecommerce" in err["message"]
    err = is_envelope(get(server, "/api/v1/stages/nope"), 404)
    assert "loyalty" in err["message"]
    is_envelope(get(server, "/api/v1/no/such/endpoint"), 404)
    err = is_envelope(get(server, "/api/v1/clv"), 404)
    assert "clm clv predict" in err["message"]


def test_tokens_are_required(server: Served) -> None:
    r = httpx.get(server.url + "/api/v1/stages")
    assert is_envelope(r, 401) and r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(
        server.url + "/api/v1/stages", headers={"Authorization": "Bearer wrong"}
    )
    is_envelope(r, 401)
    r = httpx.post(server.url + "/api/v1/models/validate", content=b"name: x")
    is_envelope(r, 401)
    # The dashboard asks for the token instead.
    page = httpx.get(server.url + "/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_openapi_lists_every_endpoint(server: Served) -> None:
    doc = get(server, "/api/v1/openapi.json").json()
    index = get(server, "/api/v1/").json()
    assert set(index["endpoints"]) <= set(doc["paths"])
