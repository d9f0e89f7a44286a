"""Bad input to the Segment endpoints: each gets the right status and a message that
names the field, refused events land in `rejected`, and valid events still arrive."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from collect_http_support import KEY, Server, make_workspace, table

NOW = datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ok(mid: str, **extra: object) -> dict:
    return {
        "type": "track",
        "event": "Clicked",
        "userId": "u1",
        "messageId": mid,
        **extra,
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ws = make_workspace(tmp_path_factory.mktemp("bad") / "ws")
    r: dict[str, httpx.Response] = {}
    with Server(ws) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        auth = (KEY, "")
        post = c.post
        r["malformed"] = post("/v1/track", auth=auth, content=b'{"userId": "u1",')
        r["wrong_type"] = post(
            "/v1/track", auth=auth, json={"event": "X", "userId": {"id": 1}}
        )
        r["props_list"] = post(
            "/v1/track",
            auth=auth,
            json={"event": "X", "userId": "u", "properties": [1]},
        )
        r["missing_ids"] = post(
            "/v1/track",
            auth=auth,
            json={"event": "X", "context": {"ip": "192.0.2.201"}},
        )
        r["no_event"] = post("/v1/track", auth=auth, json={"userId": "u1"})
        r["bad_type"] = post(
            "/v1/batch",
            auth=auth,
            json={"batch": [{"type": "purchase", "userId": "u"}]},
        )
        big = {"event": "X", "userId": "u", "properties": {"pad": "x" * 33_000}}
        r["oversize"] = post("/v1/track", auth=auth, json=big)
        huge = {
            "batch": [_ok(f"h{i}", properties={"pad": "y" * 6000}) for i in range(90)]
        }
        r["oversize_batch"] = post("/v1/batch", auth=auth, json=huge)
        r["no_key"] = post("/v1/track", json=_ok("k1"))
        r["wrong_key"] = post("/v1/track", auth=("nope", ""), json=_ok("k2"))
        r["body_key"] = post("/v1/track", json={**_ok("k3"), "writeKey": KEY})
        r["nul_escaped"] = post(
            "/v1/track", auth=auth, json={"event": "X", "userId": "u\u0000x"}
        )
        r["nul_raw"] = post(
            "/v1/track", auth=auth, content=b'{"event":"X","userId":"u\x00x"}'
        )
        r["bad_utf8"] = post(
            "/v1/track", auth=auth, content=b'{"event":"X","userId":"\xff\xfe"}'
        )
        r["future"] = post(
            "/v1/track",
            auth=auth,
            json=_ok("f1", timestamp=_iso(NOW + timedelta(days=3))),
        )
        r["past"] = post(
            "/v1/track", auth=auth, json=_ok("p1", timestamp="1999-12-31T23:00:00Z")
        )
        r["bad_ts"] = post("/v1/track", auth=auth, json=_ok("t1", timestamp="soon"))
        mixed = [
            _ok("mix-0"),
            {"type": "track", "userId": "u"},
            _ok("mix-2"),
            {"type": "track", "event": "E", "messageId": "mix-3"},
            _ok("mix-4", timestamp=_iso(NOW + timedelta(days=30))),
        ]
        r["mixed"] = post("/v1/batch", auth=auth, json={"batch": mixed})
        r["gzip"] = post(
            "/v1/batch",
            auth=auth,
            content=gzip.compress(json.dumps({"batch": [_ok("gz-1")]}).encode()),
            headers={"Content-Encoding": "gzip"},
        )
        fat = _ok("fat", properties={"pad": "z" * 33_000})
        r["fat_in_batch"] = post(
            "/v1/batch", auth=auth, json={"batch": [fat, _ok("thin")]}
        )
        r["retry"] = post("/v1/track", auth=auth, json=_ok("mix-0"))  # a resend
        r["unknown_path"] = post("/v1/purchase", auth=auth, json=_ok("x"))
        srv.stop()
    return {"r": r, "events": table(ws, "events"), "rejected": table(ws, "rejected")}


@pytest.mark.parametrize(
    ("case", "status", "field", "words"),
    [
        ("malformed", 400, "body", "not valid JSON"),
        ("wrong_type", 400, "userId", "expected a string, got dict"),
        ("props_list", 400, "properties", "expected a JSON object"),
        ("missing_ids", 400, "userId", "neither userId nor anonymousId"),
        ("no_event", 400, "event", "without an event name"),
        ("bad_type", 400, "type", "expected one of track, page"),
        ("oversize", 413, "body", "too large"),
        ("oversize_batch", 413, "body", "too large"),
        ("no_key", 401, "writeKey", "not accepted"),
        ("wrong_key", 401, "writeKey", "not accepted"),
        ("nul_escaped", 400, "userId", "NUL"),
        ("nul_raw", 400, "body", "not valid JSON"),
        ("bad_utf8", 400, "body", "UTF-8"),
        ("future", 400, "timestamp", "future"),
        ("past", 400, "timestamp", "past"),
        ("bad_ts", 400, "timestamp", "ISO 8601"),
        ("unknown_path", 404, "path", "unknown endpoint"),
    ],
)
def test_status_and_message(
    run: dict, case: str, status: int, field: str, words: str
) -> None:
    resp = run["r"][case]
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["errors"][0]["field"] == field
    assert words in body["errors"][0]["problem"]
    assert body["error"]  # a sentence for people


def test_key_messages_say_what_to_do(run: dict) -> None:
    assert "basic-auth user name" in run["r"]["no_key"].json()["error"]
    assert "serve.write_keys" in run["r"]["wrong_key"].json()["error"]
    assert "500 KB" in run["r"]["oversize_batch"].json()["error"]


def test_mixed_batch_keeps_valid_events(run: dict) -> None:
    body = run["r"]["mixed"].json()
    assert run["r"]["mixed"].status_code == 400
    assert body["accepted"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "event"),
        (3, "userId"),
        (4, "timestamp"),
    ]
    ids = set(run["events"].event_id)
    assert {"mix-0", "mix-2", "gz-1", "k3"} <= ids
    assert not ids & {"mix-4", "f1", "p1", "t1", "k1", "k2", "mix-3"}


def test_message_over_32kb_in_a_batch(run: dict) -> None:
    resp = run["r"]["fat_in_batch"]
    assert resp.status_code == 400
    assert resp.json()["errors"] == [
        {"index": 0, "field": "message", "problem": "over the 32 KB limit per message"}
    ]
    ids = set(run["events"].event_id)
    assert "thin" in ids and "fat" not in ids


def test_resent_message_stored_once(run: dict) -> None:
    assert run["r"]["retry"].status_code == 200
    assert (run["events"].event_id == "mix-0").sum() == 1
    assert run["events"].event_id.is_unique


def test_rejected_rows_have_reasons(run: dict) -> None:
    rej = run["rejected"]
    assert set(rej.source) == {"segment:web"}
    # Every refused message of an authenticated, parseable body is kept with its
    # reason: wrong_type, props_list, missing_ids, no_event, bad_type, nul_escaped,
    # future, past, bad_ts and the three bad ones of the mixed batch.
    # And the message over 32 KB in the fat batch.
    assert len(rej) == 13
    by_field = rej.groupby("field").size().to_dict()
    assert by_field == {
        "event": 2,
        "userId": 4,
        "properties": 1,
        "type": 1,
        "timestamp": 4,
        "message": 1,
    }
    with_ip = [json.loads(x) for x in rej.raw if '"ip"' in x]
    assert [m["context"]["ip"] for m in with_ip] == ["192.0.2.0"]
    raw = rej[rej.reason.str.contains("ten years")].raw.iloc[0]
    assert json.loads(raw)["messageId"] == "p1"
    assert rej.rejected_at.notna().all()
