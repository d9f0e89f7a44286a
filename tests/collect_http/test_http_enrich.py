"""Enrichment rules worked out by hand, and the per-message Segment mapping agreeing
with the file importer's SQL mapping on the same messages."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from clm.collect.enrich import anonymize_ip, channel, parse_user_agent, utm_from_url
from clm.collect.segment import map_message
from clm.collect.sessions import assign_sessions


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        # 2001:db8:85a3:8d3:1319:8a2e:370:7348 keeps its first 48 bits.
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("::1", "::"),
        ("not an ip", None),
        (None, None),
    ],
)
def test_anonymize_ip(ip: str | None, expected: str | None) -> None:
    assert anonymize_ip(ip) == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({}, "direct"),
        (
            {"referrer": "https://shop.example/a", "url": "https://shop.example/b"},
            "direct",
        ),
        ({"referrer": "https://www.google.de/"}, "organic search"),
        ({"referrer": "https://duckduckgo.com/"}, "organic search"),
        ({"utm_medium": "cpc", "utm_source": "google"}, "paid search"),
        ({"referrer": "https://l.facebook.com/"}, "social"),
        ({"utm_source": "linkedin", "utm_medium": "post"}, "social"),
        ({"utm_medium": "email", "utm_campaign": "may"}, "email"),
        ({"referrer": "https://blog.example.net/post"}, "referral"),
        ({"utm_campaign": "spring", "utm_medium": "banner"}, "campaign"),
    ],
)
def test_channel(row: dict, expected: str) -> None:
    assert channel(row) == expected


def test_utm_from_url_reads_matomo_names_and_gclid() -> None:
    assert utm_from_url("https://x.example/?mtm_campaign=a&pk_kwd=b") == {
        "utm_campaign": "a",
        "utm_term": "b",
    }
    assert utm_from_url("https://x.example/?gclid=abc") == {
        "utm_medium": "cpc",
        "utm_source": "google",
    }


def test_user_agents_and_bots() -> None:
    firefox = (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    )
    assert parse_user_agent(firefox) == ("Firefox", "Ubuntu", "Other", False)
    iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
    )
    assert parse_user_agent(iphone)[1:] == ("iOS", "iPhone", False)
    google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert parse_user_agent(google)[3] is True
    assert parse_user_agent("python-requests/2.31.0")[3] is True
    assert parse_user_agent("curl/8.5.0")[3] is True


def _sessions(
    con: duckdb.DuckDBPyConnection,
    rows: list[dict],
    received: datetime = datetime(2026, 3, 1, 12, 0),
) -> list[str]:
    """Session ids of `rows` (one loader batch received at `received`) as the
    loader assigns them."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE batch (rid BIGINT, anonymous_id VARCHAR, "
        "user_id VARCHAR, timestamp TIMESTAMP, received_at TIMESTAMP, "
        "utm_source VARCHAR, utm_medium VARCHAR, utm_campaign VARCHAR)"
    )
    con.executemany(
        "INSERT INTO batch VALUES (?, ?, NULL, ?, ?, NULL, NULL, ?)",
        [
            (i, r["anonymous_id"], r["timestamp"], received, r.get("utm_campaign"))
            for i, r in enumerate(rows)
        ],
    )
    assign_sessions(con, "batch", "out", 30)
    got = dict(con.execute("SELECT rid, session_id FROM out").fetchall())
    return [got[i] for i in range(len(rows))]


def test_sessions_timeout_and_campaign() -> None:
    con = duckdb.connect()
    t0 = datetime(2026, 3, 1, 12, 0)
    rows = [
        {"anonymous_id": "a", "timestamp": t0},
        {"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=29)},
        {"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=58)},  # 29 min gap
        {"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=89)},  # 31 min gap
        {
            "anonymous_id": "a",
            "timestamp": t0 + timedelta(minutes=90),
            "utm_campaign": "spring",
        },  # a new campaign starts a new session
        {
            "anonymous_id": "a",
            "timestamp": t0 + timedelta(minutes=91),
            "utm_campaign": "spring",
        },
        {"anonymous_id": "b", "timestamp": t0},
    ]
    # The same events in another order within the batch (in a fresh warehouse):
    # the same sessions.
    ids = _sessions(con, rows)
    shuffled = [rows[i] for i in (5, 2, 6, 0, 4, 1, 3)]
    again = dict(
        zip((5, 2, 6, 0, 4, 1, 3), _sessions(duckdb.connect(), shuffled), strict=True)
    )
    assert [again[i] for i in range(7)] == ids
    assert ids[0] == ids[1] == ids[2]
    assert len({ids[2], ids[3], ids[4], ids[6]}) == 4
    assert ids[4] == ids[5]
    # The id is the md5 of visitor and session start, worked out by hand.
    assert ids[0] == hashlib.md5(b"a|2026-03-01T12:00:00").hexdigest()


def test_sessions_continue_across_batches_and_campaigns() -> None:
    """State kept in `collect_sessions` carries a session into the next batch."""
    con = duckdb.connect()
    t0 = datetime(2026, 3, 1, 12, 0)
    (first,) = _sessions(con, [{"anonymous_id": "a", "timestamp": t0}])
    # 20 minutes later, and a late event 5 minutes before the first one: both
    # continue the session (a late event joins the visitor's current session).
    later, late = _sessions(
        con,
        [
            {"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=20)},
            {"anonymous_id": "a", "timestamp": t0 - timedelta(minutes=5)},
        ],
    )
    assert later == late == first
    # A campaign starts a new session; a campaign-less event 10 minutes later
    # stays in it; the same campaign again (next batch) too; another one does not.
    c1, plain = _sessions(
        con,
        [
            {
                "anonymous_id": "a",
                "timestamp": t0 + timedelta(minutes=25),
                "utm_campaign": "x",
            },
            {"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=35)},
        ],
    )
    assert c1 == plain != first
    c1_again, c2 = _sessions(
        con,
        [
            {
                "anonymous_id": "a",
                "timestamp": t0 + timedelta(minutes=40),
                "utm_campaign": "x",
            },
            {
                "anonymous_id": "a",
                "timestamp": t0 + timedelta(minutes=41),
                "utm_campaign": "y",
            },
        ],
    )
    assert c1_again == c1 and c2 not in (c1, first)
    # After more than 30 idle minutes: a new session, and the state holds one row.
    (fresh,) = _sessions(
        con, [{"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=72)}]
    )
    assert fresh not in (first, c1, c2)
    assert con.execute("SELECT count(*) FROM collect_sessions").fetchone() == (1,)


def test_session_state_pruned_by_server_clock_only() -> None:
    """A device clock a day ahead does not prune other visitors' state; two hours
    of server time without an event from a visitor does."""
    con = duckdb.connect()
    t0 = datetime(2026, 3, 1, 12, 0)
    (first,) = _sessions(con, [{"anonymous_id": "a", "timestamp": t0}], t0)
    _sessions(
        con,
        [{"anonymous_id": "b", "timestamp": t0 + timedelta(hours=23)}],
        t0 + timedelta(minutes=1),
    )
    (again,) = _sessions(
        con,
        [{"anonymous_id": "a", "timestamp": t0 + timedelta(minutes=10)}],
        t0 + timedelta(minutes=10),
    )
    assert again == first
    # Two hours later (server time) only the visitor seen then is kept.
    _sessions(
        con,
        [{"anonymous_id": "c", "timestamp": t0 + timedelta(hours=2)}],
        t0 + timedelta(hours=2),
    )
    kept = con.execute("SELECT count(*) FROM collect_sessions").fetchone()
    assert kept == (1,)


def _walk(batches: list[list[dict]], timeout: timedelta) -> list[list[str | None]]:
    """The session rule applied one event at a time, visitor by visitor, written
    from the rule in sessions.py's docstring (independently of its array passes)."""
    state: dict[str, tuple[str, datetime, str | None]] = {}
    out = []
    for rows in batches:
        ids: list[str | None] = [None] * len(rows)
        visitors = {r["anonymous_id"] for r in rows if r["anonymous_id"]}
        for v in sorted(visitors):
            stored = state.get(v)
            mine = [i for i, r in enumerate(rows) if r["anonymous_id"] == v]
            # An event older than the stored last event is placed right after it.
            order = [
                (
                    max(rows[i]["timestamp"], stored[1])
                    if stored
                    else rows[i]["timestamp"],
                    rows[i]["timestamp"],
                    i,
                )
                for i in mine
            ]
            sid, last, mark = stored if stored else (None, None, None)
            for ots, ts, i in sorted(order):
                campaign = rows[i].get("utm_campaign")
                gap = last is None or ots - last > timeout
                if gap or (campaign is not None and campaign != mark):
                    sid, mark = None, campaign  # a new session starts here
                if sid is None:
                    iso = ts.isoformat(
                        timespec="microseconds" if ts.microsecond else "seconds"
                    )
                    sid = hashlib.md5(f"{v}|{iso}".encode()).hexdigest()
                ids[i], last = sid, ots
            state[v] = (sid, last, mark)
        out.append(ids)
    return out


def test_sessions_agree_with_an_event_by_event_walk() -> None:
    """Random batches (gaps around the timeout, late events, campaigns coming and
    going, several visitors, three batches): the loader's passes give the session
    ids of the plain walk."""
    import random

    rnd = random.Random(7)
    t0 = datetime(2026, 3, 1, 12, 0)
    batches = []
    for b in range(3):
        start = t0 + timedelta(minutes=50 * b)
        batches.append(
            [
                {
                    "anonymous_id": f"v{rnd.randint(0, 5)}",
                    "timestamp": start
                    + timedelta(minutes=rnd.choice([-40, -5, 0, 10, 29, 31, 45]))
                    + timedelta(microseconds=rnd.choice([0, 0, 250_000])),
                    "utm_campaign": rnd.choice([None, None, None, "x", "y"]),
                }
                for _ in range(rnd.randint(20, 60))
            ]
        )
    want = _walk(batches, timedelta(minutes=30))
    con = duckdb.connect()
    got = [
        _sessions(con, rows, t0 + timedelta(minutes=50 * b))
        for b, rows in enumerate(batches)
    ]
    assert got == want
    assert len({s for ids in want for s in ids}) > 10  # the test sees many sessions


MESSAGES = [
    {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
        "timestamp": "2026-02-01T10:00:00Z",
        "sentAt": "2026-02-01T10:00:05Z",
        "receivedAt": "2026-02-01T10:00:00Z",
        "properties": {"total": 19.5, "currency": "USD", "orderId": "o9"},
        "context": {
            "page": {"url": "https://s.example/x", "referrer": "https://r.example/"},
            "campaign": {"source": "nl", "medium": "email", "name": "feb"},
            "userAgent": "UA",
            "ip": "192.0.2.1",
        },
    },
    {
        "type": "page",
        "name": "Home",
        "anonymousId": "a1",
        "messageId": "m2",
        "timestamp": "2026-02-01T11:00:00+01:00",
        "properties": {"url": "https://s.example/", "referrer": "https://g.example/"},
    },
    {
        "type": "identify",
        "userId": "u2",
        "messageId": "m3",
        "timestamp": "2026-02-01T12:00:00Z",
        "traits": {"plan": "pro"},
    },
]


def test_mapping_agrees_with_file_import(workspace, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in MESSAGES) + "\n")
    workspace.import_events(path)
    imported = workspace.warehouse.con.sql("SELECT * FROM events").to_pandas()
    cols = [
        "type",
        "event",
        "anonymous_id",
        "user_id",
        "timestamp",
        "revenue",
        "currency",
        "order_id",
        "url",
        "referrer",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "user_agent",
        "ip",
    ]
    for msg in MESSAGES:
        # The file importer corrects skew by receivedAt - sentAt; the collector is
        # the receiver, so it passes its own receipt time.
        received = (
            datetime.fromisoformat(msg["receivedAt"].replace("Z", "+00:00")).replace(
                tzinfo=None
            )
            if "receivedAt" in msg
            else datetime(2026, 2, 2)
        )
        m = {k: v for k, v in msg.items() if k != "receivedAt"}
        if "receivedAt" not in msg:
            m.pop("sentAt", None)
        row = map_message(m, received)
        ref = imported[imported.event_id == msg["messageId"]].iloc[0]
        for c in cols:
            want = ref[c]
            got = row.get(c)  # a column without a value is left out of the row
            if want is None or (isinstance(want, float) and want != want):
                assert got is None, c
            else:
                assert got == want, (msg["messageId"], c, got, want)
        assert row["properties"] == json.loads(ref["properties"])


def test_collector_settings_refuse_bad_values(tmp_path: Path) -> None:
    from clm import settings
    from clm.collect.intake import CollectorConfig
    from clm.errors import ConfigError

    values = settings.resolve({"serve.write_keys": ["k1=web", "k2"]})
    cfg = CollectorConfig.from_settings(values, tmp_path)
    assert cfg.write_keys == {"k1": "web", "k2": "default"}
    assert cfg.spool_dir == tmp_path / "spool" and cfg.flush_interval == 1.0
    with pytest.raises(ConfigError, match=r"serve\.write_keys.*KEY=SOURCE"):
        CollectorConfig.from_settings(
            settings.resolve({"serve.write_keys": ["=web"]}), tmp_path
        )
    with pytest.raises(ConfigError, match=r"serve\.anonymize_ip.*1 \(on\) or 0"):
        CollectorConfig.from_settings(
            settings.resolve({"serve.anonymize_ip": 2}), tmp_path
        )


def test_ip_kept_only_when_anonymisation_is_off(tmp_path: Path) -> None:
    from clm.collect.intake import CollectorConfig, Intake

    msg = {
        "type": "track",
        "event": "E",
        "userId": "u",
        "messageId": "m",
        "context": {"ip": "198.51.100.200"},
    }
    for anonymize, want in ((True, "198.51.100.0"), (False, "198.51.100.200")):
        intake = Intake(CollectorConfig(tmp_path, anonymize_ip=anonymize), None)
        row = map_message(json.loads(json.dumps(msg)), datetime(2026, 1, 1))
        record = json.loads(intake.event(row, "segment", "segment:t"))
        assert record["ip"] == want
        assert record["context"]["ip"] == want


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T10:00:00Z", datetime(2026, 1, 5, 10, 0)),
        ("2026-01-05T10:00:00.123Z", datetime(2026, 1, 5, 10, 0, 0, 123000)),
        ("2026-01-05T10:00:00+01:00", datetime(2026, 1, 5, 9, 0)),  # one hour ahead
        ("2026-01-05T10:00:00-05:30", datetime(2026, 1, 5, 15, 30)),
        (" 2026-01-05T10:00:00z ", datetime(2026, 1, 5, 10, 0)),
        ("2026-01-05T10:00:00", datetime(2026, 1, 5, 10, 0)),  # no zone: UTC
        ("2026-01-05T10:00:00+01:00Z", None),
        ("2026-01-05T25:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_parse_time(text: str, expected: datetime | None) -> None:
    from clm.collect.segment import Invalid, parse_time

    if expected is None:
        with pytest.raises(Invalid, match="unparseable"):
            parse_time(text, "timestamp")
    else:
        assert parse_time(text, "timestamp") == expected
