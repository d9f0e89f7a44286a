"""The spool and the loader in-process: group commit, torn-tail recovery, and loading
the same segment twice (a crash between commit and delete) adding nothing."""

from __future__ import annotations

import hashlib
import shutil
import threading
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from clm.collect.loader import load_segments
from clm.collect.spool import Spool, recover, sealed_segments
from clm.errors import ConfigError
from clm.warehouse.engine import Warehouse


def _event(i: int) -> bytes:
    row = {
        "k": "e",
        "event_id": f"e{i}",
        "type": "track",
        "event": "X",
        "anonymous_id": "a",
        "timestamp": datetime(2026, 1, 1, 0, 0, i % 60),
        "received_at": datetime(2026, 1, 1),
        "properties": "{}",
        "context": "{}",
        "source": "segment:t",
    }
    return orjson.dumps(row) + b"\n"


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    spool = Spool(tmp_path, rotate_seconds=60)
    spool.start()
    futures = []
    threads = [
        threading.Thread(
            target=lambda j=j: futures.extend(
                spool.write(_event(j * 100 + i)) for i in range(100)
            )
        )
        for j in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in futures:
        f.result(timeout=10)
    spool.close()
    assert spool.records == 800
    assert spool.fsyncs < 800  # many writes shared one fsync
    segs = sealed_segments(tmp_path)
    lines = b"".join(p.read_bytes() for p in segs).splitlines()
    assert sorted(orjson.loads(x)["event_id"] for x in lines) == sorted(
        f"e{i}" for i in range(800)
    )


def test_second_spool_on_same_folder_refused(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.start()
    try:
        with pytest.raises(ConfigError, match="in use by another clm serve"):
            Spool(tmp_path).start()
    finally:
        first.close()


def test_torn_tail_dropped_on_recovery(tmp_path: Path) -> None:
    torn = tmp_path / "seg-000000000004.open"
    torn.write_bytes(_event(1) + _event(2) + _event(3)[:25])
    assert recover(tmp_path) == 5
    (sealed,) = sealed_segments(tmp_path)
    assert sealed.name == "seg-000000000004.jsonl"
    assert sealed.read_bytes() == _event(1) + _event(2)


def test_loading_twice_adds_nothing(tmp_path: Path) -> None:
    wh = Warehouse.duckdb(tmp_path / "w.duckdb")
    seg = tmp_path / "seg-000000000001.jsonl"
    # e5 twice within the segment: a client's retry; one reject record.
    reject = (
        orjson.dumps(
            {
                "k": "r",
                "source": "segment:t",
                "field": "event",
                "reason": "missing",
                "raw": "{}",
                "rejected_at": datetime(2026, 1, 1),
            }
        )
        + b"\n"
    )
    seg.write_bytes(b"".join(_event(i) for i in range(10)) + _event(5) + reject)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(seg, copy)
    first = load_segments(wh, [seg])
    assert first == {"events_written": 10, "duplicates_skipped": 1, "rejected": 1}
    assert not seg.exists()
    # The same records again, as after a crash between COMMIT and the delete.
    again = load_segments(wh, [copy])
    assert again["events_written"] == 0
    con = wh.con.con
    assert con.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
    ).fetchone() == (10, 10)
    assert con.execute("SELECT count(*) FROM rejected").fetchone() == (1,)
    wh.close()


def test_dedup_window_is_a_day_before_the_batch(tmp_path: Path) -> None:
    wh = Warehouse.duckdb(tmp_path / "w.duckdb")

    def record(event_id: str, received: datetime) -> bytes:
        row = {
            "k": "e",
            "event_id": event_id,
            "type": "track",
            "event": "X",
            "anonymous_id": "a",
            "timestamp": received,
            "received_at": received,
            "source": "segment:t",
        }
        return orjson.dumps(row) + b"\n"

    first = tmp_path / "seg-000000000001.jsonl"
    first.write_bytes(
        record("old", datetime(2026, 1, 1)) + record("recent", datetime(2026, 1, 4, 12))
    )
    load_segments(wh, [first])
    # A batch received on 5 January: "recent" (12 hours earlier) is caught, "old"
    # (four days earlier, outside the 24-hour window) is stored again.
    second = tmp_path / "seg-000000000002.jsonl"
    second.write_bytes(
        record("old", datetime(2026, 1, 5)) + record("recent", datetime(2026, 1, 5))
    )
    assert load_segments(wh, [second])["events_written"] == 1
    rows = wh.con.con.execute(
        "SELECT event_id, count(*) FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("old", 2), ("recent", 1)]
    wh.close()


def test_loader_enriches_per_batch(tmp_path: Path) -> None:
    """context.clm, channel, utm_* and session come from the loader; a client's own
    context.clm is kept (less `bot` when bot filtering is off); records of the older
    format (properties and context as JSON text, enriched already) load as they
    were."""
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
    )
    base = {
        "k": "e",
        "type": "page",
        "anonymous_id": "a",
        "received_at": datetime(2026, 1, 1),
        "source": "segment:t",
        "protocol": "segment",
        "properties": {"n": 1},
    }
    records = [
        {
            **base,
            "event_id": "plain",
            "timestamp": datetime(2026, 1, 1, 10, 0),
            "context": {"ip": "192.0.2.0"},
            "user_agent": chrome,
            "url": "https://s.example/?utm_source=nl&utm_medium=email",
        },
        {
            **base,
            "event_id": "own-clm",
            "timestamp": datetime(2026, 1, 1, 10, 5),
            "context": {},
            "clm_in": {"consent": "yes", "bot": True},
            "user_agent": "curl/8.5.0",
            "url": "https://s.example/?utm_source=nl&utm_medium=email",
        },
        {
            **base,
            "event_id": "legacy",
            "timestamp": datetime(2026, 1, 1, 10, 6),
            "properties": '{"n": 2}',
            "context": '{"clm": {"protocol": "matomo", "bot": false}}',
            "channel": "direct",
            "session_id": "s-old",
        },
    ]
    for bot_filter in (True, False):
        wh = Warehouse.duckdb(tmp_path / f"w{bot_filter}.duckdb")
        seg = tmp_path / "seg-000000000001.jsonl"
        seg.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        load_segments(wh, [seg], bot_filter=bot_filter)
        got = {
            r[0]: r[1:]
            for r in wh.con.con.execute(
                "SELECT event_id, context, properties, channel, utm_source, "
                "utm_medium, session_id FROM events"
            ).fetchall()
        }
        plain = orjson.loads(got["plain"][0])
        want = {"protocol": "segment", "browser": "Chrome", "os": "Windows"}
        want |= {"device": "Other", "bot": False} if bot_filter else {"device": "Other"}
        assert plain == {"ip": "192.0.2.0", "clm": want}
        assert got["plain"][1:5] == ('{"n":1}', "email", "nl", "email")
        own = orjson.loads(got["own-clm"][0])["clm"]
        # curl is a bot; the client's "bot": true goes when bot filtering is off.
        assert own["consent"] == "yes" and own["protocol"] == "segment"
        assert own.get("bot", "absent") == (True if bot_filter else "absent")
        # Five minutes later, same visitor and campaign: the same session, whose
        # id is the md5 of visitor and start worked out by hand.
        sid = hashlib.md5(b"a|2026-01-01T10:00:00").hexdigest()
        assert got["plain"][5] == got["own-clm"][5] == sid
        legacy = orjson.loads(got["legacy"][0])["clm"]
        assert legacy["protocol"] == "matomo"
        assert got["legacy"][1] == '{"n": 2}' and got["legacy"][2] == "direct"
        assert got["legacy"][5] == "s-old"
        wh.close()


def test_loader_batches_are_capped_in_bytes(tmp_path: Path, monkeypatch) -> None:
    from clm.collect import loader

    monkeypatch.setattr(loader, "MAX_BATCH_BYTES", 250)
    segs = []
    for i, size in enumerate([100, 100, 100, 400]):
        p = tmp_path / f"seg-{i:012d}.jsonl"
        p.write_bytes(b"x" * size)
        segs.append(p)
    # 100 + 100 fit in 250 bytes; a third would not; one segment over the cap
    # still goes alone; `most` caps the count too.
    assert loader._take(segs, 32) == segs[:2]
    assert loader._take(segs[3:], 32) == segs[3:]
    assert loader._take(segs, 1) == segs[:1]


def test_dedup_window_setting(tmp_path: Path) -> None:
    """With a 60-minute window an id stored 2 hours before the batch is stored
    again, one stored 30 minutes before is not; a replay (same received_at) is
    caught even with a window of 0."""
    wh = Warehouse.duckdb(tmp_path / "w.duckdb")

    def seg(n: int, *events: tuple[str, datetime]) -> Path:
        return _id_segment(tmp_path / f"seg-{n:012d}.jsonl", list(events))

    noon = datetime(2026, 1, 5, 12)
    load_segments(
        wh,
        [
            seg(
                1,
                ("early", datetime(2026, 1, 5, 10)),
                ("late", datetime(2026, 1, 5, 11, 30)),
            )
        ],
    )
    again = seg(2, ("early", noon), ("late", noon))
    assert load_segments(wh, [again], dedup_window_minutes=60)["events_written"] == 1
    replay = seg(3, ("late", datetime(2026, 1, 5, 11, 30)))
    assert load_segments(wh, [replay], dedup_window_minutes=0)["events_written"] == 0
    rows = wh.con.con.execute(
        "SELECT event_id, count(*) FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("early", 2), ("late", 1)]
    wh.close()


def _id_segment(path: Path, events: list[tuple[str, datetime]]) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "k": "e",
                    "event_id": e,
                    "type": "track",
                    "event": "X",
                    "anonymous_id": "a",
                    "timestamp": at,
                    "received_at": at,
                    "source": "segment:t",
                    "protocol": "segment",
                }
            )
            + b"\n"
            for e, at in events
        )
    )
    return path


def test_recent_ids_dedup_across_loads(tmp_path: Path) -> None:
    """With the loader's in-memory RecentIds the same answers as the SQL check: a
    retried id within the window is skipped, one outside it is stored again, an id
    twice in one batch counts once; a hash in memory that no stored event has (as a
    collision would be) drops nothing."""
    import numpy as np

    from clm.collect.loader import RecentIds

    wh = Warehouse.duckdb(tmp_path / "w.duckdb")
    recent = RecentIds(timedelta(minutes=60))
    t0 = datetime(2026, 1, 5, 10)

    def load(n: int, events: list[tuple[str, datetime]]) -> int:
        seg = _id_segment(tmp_path / f"seg-{n:012d}.jsonl", events)
        out = load_segments(wh, [seg], dedup_window_minutes=60, recent=recent)
        return out["events_written"]

    # First load: nothing in memory yet, the SQL check runs and fills `recent`.
    assert load(1, [("a", t0), ("b", t0), ("a", t0)]) == 2
    assert recent.covers(t0 - timedelta(minutes=60)) and len(recent) == 2
    # 10 minutes later: "a" again (skipped), "c" new.
    t1 = t0 + timedelta(minutes=10)
    assert load(2, [("a", t1), ("c", t1)]) == 1
    # A fake hash of "zzz" put in memory: found there, not in events, so stored.
    h = wh.con.con.execute("SELECT hash('zzz')").fetchone()[0]
    recent.add(np.array([h], dtype=np.uint64), t1, t1)
    assert load(3, [("zzz", t1)]) == 1
    # Three hours on, the generations of "a" and "b" have left the 60-minute
    # window: both are stored again, "zzz" (within 60 minutes of nothing) too.
    t2 = t0 + timedelta(hours=3)
    assert load(4, [("x", t2)]) == 1
    t3 = t2 + timedelta(minutes=20)
    assert load(5, [("a", t3), ("b", t3), ("x", t3)]) == 2
    rows = wh.con.con.execute(
        "SELECT event_id, count(*) FROM events GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert rows == [("a", 2), ("b", 2), ("c", 1), ("x", 1), ("zzz", 1)]
    wh.close()


def test_hash_set_against_python_set() -> None:
    """The loader's numpy hash set answers like a Python set, through growth, for
    key 0 and for keys added twice."""
    import numpy as np

    from clm.collect.loader import HashSet

    rng = np.random.default_rng(7)
    hs, ref = HashSet(capacity=16), set()
    for i in range(20):
        batch = rng.integers(0, 2**64, 5_000, dtype=np.uint64)
        if i == 3:
            batch[:3] = 0
            batch[3:6] = batch[10:13]  # twice in one batch
        want = np.array([int(x) in ref for x in batch])
        assert (hs.contains(batch) == want).all()
        hs.add(batch)
        ref.update(int(x) for x in batch)
    assert hs.contains(np.array(sorted(ref), dtype=np.uint64)).all()
    assert len(hs.table) >= 2 * len(ref)  # at most half full
    others = rng.integers(0, 2**64, 20_000, dtype=np.uint64)
    want = np.array([int(x) in ref for x in others])
    assert (hs.contains(others) == want).all()


def test_answers_wait_only_while_the_loader_lags(tmp_path: Path, monkeypatch) -> None:
    """Back-pressure: with no more than LAG_START bytes of sealed spool waiting an
    answer is not held back; halfway to LAG_START + LAG_SPAN it waits half of
    MAX_DELAY, and never longer than MAX_DELAY however far the loader lags."""
    import asyncio

    from clm.collect import intake as intake_mod
    from clm.collect.intake import CollectorConfig, Intake

    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(intake_mod.asyncio, "sleep", fake_sleep)
    # No rotation during the test: the spool's own seals would add to sealed_bytes.
    config = CollectorConfig(spool_dir=tmp_path / "spool", flush_interval=3600)
    intake = Intake(config, None)
    intake.spool.start()

    class Lagging:
        loaded_bytes = 1000

    intake.loader = Lagging()  # type: ignore[assignment]
    start, span = intake_mod.LAG_START, intake_mod.LAG_SPAN
    try:
        for waiting in (0, start, start + span // 2, start + 10 * span):
            # Sealed by the spool, not loaded yet: `waiting` bytes.
            intake.spool.sealed_bytes = 1000 + waiting
            asyncio.run(intake.commit(b'{"k":"e"}\n'))
    finally:
        intake.spool.close()
    assert slept == [intake_mod.MAX_DELAY / 2, intake_mod.MAX_DELAY]
