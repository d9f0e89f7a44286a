"""The official Segment Python SDK (segment-analytics-python) against `clm serve` on
loopback: every call type arrives with the fields the SDK sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from collect_http_support import KEY, Server, make_workspace, table
from segment.analytics import Client

UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Safari/605.1.15"
)


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ws = make_workspace(tmp_path_factory.mktemp("sdk") / "ws")
    sent_ts = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    with Server(ws) as srv:
        errors: list[Exception] = []
        client = Client(
            KEY,
            host=srv.url,
            on_error=lambda e, b: errors.append(e),
            upload_size=50,
            gzip=True,
            max_retries=1,
        )
        ctx = {
            "ip": "203.0.113.77",
            "userAgent": UA,
            "page": {
                "url": "https://shop.example/p/1",
                "referrer": "https://www.google.com/search?q=x",
            },
        }
        client.track(
            "u1",
            "Order Completed",
            {"revenue": 42.5, "currency": "EUR", "order_id": "o-1"},
            context=ctx,
            timestamp=sent_ts,
            message_id="m-track",
        )
        client.identify(
            "u1",
            {"email_hash": "abc", "plan": "pro"},
            timestamp=sent_ts,
            message_id="m-identify",
        )
        client.page(
            "u1",
            "Docs",
            "Install",
            {"url": "https://shop.example/docs"},
            timestamp=sent_ts,
            message_id="m-page",
        )
        client.screen("u1", "App", "Home", timestamp=sent_ts, message_id="m-screen")
        client.group(
            "u1", "g-9", {"name": "ACME"}, timestamp=sent_ts, message_id="m-group"
        )
        client.alias("anon-7", "u1", timestamp=sent_ts, message_id="m-alias")
        # A real batch: 120 events go out as /v1/batch requests of up to 50.
        for i in range(120):
            client.track(
                anonymous_id=f"a{i % 7}",
                event="Viewed",
                properties={"i": i},
                timestamp=sent_ts,
                message_id=f"b-{i}",
            )
        client.flush()
        client.join()
        # The plain endpoints with basic auth, as the HTTP API describes them.
        single = httpx.post(
            srv.url + "/v1/track",
            auth=(KEY, ""),
            json={
                "userId": "u2",
                "event": "Signed Up",
                "messageId": "m-plain",
                "timestamp": "2026-01-05T10:00:00Z",
            },
        )
        srv.stop()
    return {"events": table(ws, "events"), "errors": errors, "single": single}


def _row(events, message_id: str) -> dict:
    rows = events[events.event_id == message_id]
    assert len(rows) == 1, f"{message_id}: {len(rows)} rows"
    return rows.iloc[0].to_dict()


def test_sdk_calls_all_accepted(collected: dict) -> None:
    assert collected["errors"] == []
    assert collected["single"].status_code == 200
    assert collected["single"].json() == {"success": True}
    assert len(collected["events"]) == 6 + 120 + 1
    assert collected["events"].event_id.is_unique


def test_track_fields(collected: dict) -> None:
    r = _row(collected["events"], "m-track")
    assert (r["type"], r["event"], r["user_id"]) == ("track", "Order Completed", "u1")
    assert (r["revenue"], r["currency"], r["order_id"]) == (42.5, "EUR", "o-1")
    assert r["url"] == "https://shop.example/p/1"
    assert r["ip"] == "203.0.113.0"  # last octet zeroed before storing
    assert r["channel"] == "organic search"  # google.com referrer, no UTM
    assert r["source"] == "segment:web"
    ctx = json.loads(r["context"])
    assert ctx["ip"] == "203.0.113.0"
    assert ctx["clm"]["browser"] == "Safari" and ctx["clm"]["os"] == "Mac OS X"
    assert ctx["clm"]["bot"] is False
    # The SDK's sentAt is its clock at sending; ours agrees within the test's run, so
    # the skew-corrected time stays within a minute of what the SDK said.
    assert abs(r["timestamp"] - datetime(2026, 1, 5, 10, 0)) < timedelta(minutes=1)
    assert r["session_id"]


def test_identify_page_screen_group_alias(collected: dict) -> None:
    ev = collected["events"]
    ident = _row(ev, "m-identify")
    assert ident["type"] == "identify"
    assert json.loads(ident["properties"]) == {"email_hash": "abc", "plan": "pro"}
    page = _row(ev, "m-page")
    assert (page["type"], page["event"]) == ("page", "Install")
    assert json.loads(page["properties"])["category"] == "Docs"
    assert page["url"] == "https://shop.example/docs"
    screen = _row(ev, "m-screen")
    assert (screen["type"], screen["event"]) == ("screen", "Home")
    group = _row(ev, "m-group")
    assert json.loads(group["properties"])["groupId"] == "g-9"
    assert json.loads(group["properties"])["traits"] == {"name": "ACME"}
    alias = _row(ev, "m-alias")
    assert (alias["type"], alias["user_id"]) == ("alias", "u1")
    assert json.loads(alias["properties"])["previousId"] == "anon-7"


def test_batched_events(collected: dict) -> None:
    ev = collected["events"]
    batch = ev[ev.event_id.str.startswith("b-")]
    assert sorted(batch.event_id) == sorted(f"b-{i}" for i in range(120))
    got = {r.event_id: json.loads(r.properties)["i"] for r in batch.itertuples()}
    assert got == {f"b-{i}": i for i in range(120)}
    assert set(batch.anonymous_id) == {f"a{i}" for i in range(7)}
    # One session per visitor: all events fell within 30 minutes.
    assert batch.groupby("anonymous_id").session_id.nunique().max() == 1
