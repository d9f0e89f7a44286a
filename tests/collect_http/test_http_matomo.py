"""Matomo Tracking API requests as Matomo's and Piwik PRO's JavaScript trackers send
them (GET image requests, POST form bodies, the bulk JSON form) against `clm serve`."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import quote

import httpx
import pytest
from collect_http_support import KEY, Server, make_workspace, table

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/124.0.0.0 Safari/537.36"
)
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
# A page view exactly as matomo.js builds it (parameter order and all).
PAGEVIEW = (
    "action_name=Spring%20sale&idsite=1&rec=1&r=482913&h=14&m=3&s=22"
    "&url=https%3A%2F%2Fshop.example%2Fsale%3Fmtm_campaign%3Dspring%26mtm_source"
    "%3Dnewsletter%26mtm_medium%3Demail&urlref=https%3A%2F%2Fmail.example.org%2F"
    "&_id=5c6a2e1ad1a8f4b1&_idn=0&send_image=0&_refts=0&pv_id=AbC123&pf_net=0"
    "&pf_srv=41&pf_tfr=2&pf_dm1=180&uadata=%7B%7D&cookie=1&res=1920x1080"
    "&dimension1=premium"
)
ITEMS = json.dumps(
    [["SKU-1", "Shirt", "Clothes", 24.95, 2], ["SKU-2", "Cap", "", 10, 1]]
)
ORDER = (
    "idsite=1&rec=1&r=771002&h=14&m=5&s=1&url=https%3A%2F%2Fshop.example%2Fthanks"
    "&_id=5c6a2e1ad1a8f4b1&uid=user-42&idgoal=0&ec_id=A100&revenue=69.9&ec_st=59.9"
    f"&ec_tx=10&ec_sh=0&ec_dt=0&ec_items={quote(ITEMS)}&pv_id=AbC124&send_image=0"
)
EVENT = (
    "e_c=Video&e_a=Play&e_n=intro.mp4&e_v=3.5&idsite=1&rec=1&r=101010&h=14&m=6&s=2"
    "&url=https%3A%2F%2Fshop.example%2Fvideo&_id=5c6a2e1ad1a8f4b1&send_image=0"
)
# Piwik PRO's tracker: same protocol, its own extra parameters, sent to /piwik.php.
PIWIK = (
    "action_name=Home&idsite=7&rec=1&r=220044&h=9&m=0&s=0&url=https%3A%2F%2Fppro"
    ".example%2F&urlref=https%3A%2F%2Fwww.bing.com%2F&_id=0a1b2c3d4e5f6a7b&ts_n="
    "jstc_tm&ts_v=15.12.0&res=1280x720&send_image=0"
)
BULK = {
    "requests": [
        "?idsite=1&rec=1&r=900001&action_name=A&url=https%3A%2F%2Fshop.example%2Fa"
        "&_id=1111111111111111&send_image=0",
        "?idsite=1&rec=1&r=900002&action_name=B&url=https%3A%2F%2Fshop.example%2Fb"
        "&_id=1111111111111111&send_image=0",
        "?idsite=1&rec=1&r=900003&idgoal=abc&_id=1111111111111111",
        "?idsite=1&rec=1&r=900004&e_c=Form&e_a=Submit&_id=2222222222222222",
    ]
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ws = make_workspace(tmp_path_factory.mktemp("matomo") / "ws")
    r: dict[str, httpx.Response] = {}
    with (
        Server(ws) as srv,
        httpx.Client(base_url=srv.url, timeout=10, headers={"User-Agent": UA}) as c,
    ):
        r["pageview"] = c.get("/matomo.php?" + PAGEVIEW)
        r["order"] = c.post("/matomo.php", content=ORDER, headers=FORM)
        r["event"] = c.get("/matomo.php?" + EVENT)
        r["piwik"] = c.get("/piwik.php?" + PIWIK)
        r["image"] = c.get("/matomo.php?idsite=1&rec=1&r=5&_id=3333333333333333")
        r["bulk"] = c.post("/matomo.php", content=json.dumps(BULK), headers=FORM)
        r["cdt_no_token"] = c.get("/matomo.php?idsite=1&rec=1&r=6&cdt=1767607200")
        r["cdt_token"] = c.post(
            "/matomo.php",
            content=json.dumps(
                {
                    "requests": [
                        "?idsite=1&rec=1&r=7&uid=srv&cdt=2026-01-05%2010:00:00"
                        "&cip=198.51.100.23&action_name=Backfill"
                    ],
                    "token_auth": KEY,
                }
            ),
            headers=FORM,
        )
        r["no_rec"] = c.get("/matomo.php?idsite=1&r=8&cip=192.0.2.55")
        r["bad_site"] = c.get("/matomo.php?idsite=abc&rec=1")
        r["bad_json_bulk"] = c.post("/matomo.php", content='{"requests": 5}')
        r["resend"] = c.get("/matomo.php?" + PAGEVIEW)
        srv.stop()
    ev = table(ws, "events")
    return {"r": r, "events": ev, "rejected": table(ws, "rejected")}


def _one(ev, **match: str) -> dict:
    rows = ev
    for k, v in match.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, f"{match}: {len(rows)} rows"
    return rows.iloc[0].to_dict()


def test_answers(run: dict) -> None:
    r = run["r"]
    for case in ("pageview", "order", "event", "piwik", "resend"):
        assert r[case].status_code == 204, (case, r[case].text)
    assert r["image"].status_code == 200
    assert r["image"].headers["content-type"] == "image/gif"
    assert r["image"].content.startswith(b"GIF89a")
    assert r["cdt_token"].json() == {
        "status": "success",
        "tracked": 1,
        "invalid": 0,
        "invalid_indices": [],
    }


def test_pageview(run: dict) -> None:
    row = _one(run["events"], type="page", event="Spring sale")
    assert row["anonymous_id"] == "5c6a2e1ad1a8f4b1"
    assert row["source"] == "matomo:1"
    assert (row["utm_campaign"], row["utm_source"], row["utm_medium"]) == (
        "spring",
        "newsletter",
        "email",
    )
    assert row["channel"] == "email"
    assert row["referrer"] == "https://mail.example.org/"
    assert row["ip"] == "127.0.0.0"
    assert json.loads(row["properties"]) == {"dimensions": {"1": "premium"}}
    ctx = json.loads(row["context"])
    assert ctx["screen"] == "1920x1080" and ctx["clm"]["protocol"] == "matomo"
    assert ctx["clm"]["browser"] == "Chrome" and ctx["clm"]["os"] == "Windows"
    assert ctx["matomo"]["pv_id"] == "AbC123"


def test_resent_pageview_stored_once(run: dict) -> None:
    assert (run["events"].event == "Spring sale").sum() == 1


def test_ecommerce_order(run: dict) -> None:
    row = _one(run["events"], event="order_completed")
    assert (row["order_id"], row["revenue"], row["user_id"]) == (
        "A100",
        69.9,
        "user-42",
    )
    props = json.loads(row["properties"])
    assert props["products"] == [
        {
            "sku": "SKU-1",
            "name": "Shirt",
            "category": "Clothes",
            "price": 24.95,
            "quantity": 2,
        },
        {"sku": "SKU-2", "name": "Cap", "category": "", "price": 10, "quantity": 1},
    ]
    assert (props["subtotal"], props["tax"]) == (59.9, 10.0)


def test_event_and_piwik(run: dict) -> None:
    row = _one(run["events"], event="Play")
    assert json.loads(row["properties"]) == {
        "category": "Video",
        "action": "Play",
        "label": "intro.mp4",
        "value": 3.5,
    }
    pp = _one(run["events"], source="matomo:7")
    assert (pp["type"], pp["event"], pp["channel"]) == (
        "page",
        "Home",
        "organic search",
    )


def test_bulk_partial(run: dict) -> None:
    resp = run["r"]["bulk"]
    assert resp.status_code == 400
    body = resp.json()
    assert (body["tracked"], body["invalid"], body["invalid_indices"]) == (3, 1, [2])
    assert body["errors"][0]["field"] == "idgoal"
    ev = run["events"]
    assert {"A", "B"} <= set(ev.event) and "Submit" in set(ev.event)
    # Two page views by one visitor within minutes: one session.
    ab = ev[ev.anonymous_id == "1111111111111111"]
    assert len(ab) == 2 and ab.session_id.nunique() == 1


def test_overrides_need_token(run: dict) -> None:
    r = run["r"]["cdt_no_token"]
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "cdt"
    row = _one(run["events"], user_id="srv")
    assert row["timestamp"] == datetime(2026, 1, 5, 10, 0)
    assert row["ip"] == "198.51.100.0"
    kept = json.loads(row["context"])["matomo"]
    assert "token_auth" not in kept
    assert kept["cip"] == "198.51.100.0"


def test_invalid_requests(run: dict) -> None:
    r = run["r"]
    assert r["no_rec"].status_code == 400
    assert r["no_rec"].json()["errors"][0]["field"] == "rec"
    assert r["bad_site"].json()["errors"][0]["field"] == "idsite"
    assert r["bad_json_bulk"].status_code == 400
    assert r["bad_json_bulk"].json()["errors"][0]["field"] == "requests"
    rej = run["rejected"]
    assert sorted(rej.field) == ["cdt", "idgoal", "idsite", "rec"]
    # A refused request is written too, so its address is anonymised as well.
    assert json.loads(rej[rej.field == "rec"].raw.iloc[0])["cip"] == "192.0.2.0"
    assert rej.source.str.startswith("matomo:").all()
