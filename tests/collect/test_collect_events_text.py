"""Events files in CSV written the German way: `;`, decimal comma, day-first times.

The file is written here; every expected value is read off its rows by hand.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from clm.collect.events_file import import_events
from clm.warehouse.engine import Warehouse

EVENTS_DE = (
    "event_id;type;event;user_id;timestamp;revenue\n"
    "e1;track;order_completed;K1;31.12.2024 14:05;12,50\n"
    "e2;track;order_completed;K1;02.01.2025 09:30;1.234,50\n"
    "e3;track;order_completed;K2;03.01.2025 10:00;abc\n"
    "e4;page;;K2;04.01.2025 11:15;\n"
    "e5;track;order_completed;K3;32.01.2025 10:00;5,00\n"
)
# By hand: e1 + e2 = 12.50 + 1234.50 = 1247.00 stored; e4 is a page view without
# revenue (kept, revenue empty); e3 (revenue "abc") and e5 (January has 31 days)
# are rejected with the field and the value.


def _stored(wh: Warehouse) -> list[dict[str, object]]:
    sql = "SELECT event_id, timestamp, revenue FROM events ORDER BY event_id"
    return wh.con.sql(sql).to_pyarrow().to_pylist()  # type: ignore[no-any-return]


def _rejected(wh: Warehouse) -> list[tuple[object, ...]]:
    sql = "SELECT row_number, field, value FROM rejected ORDER BY row_number"
    return [tuple(r.values()) for r in wh.con.sql(sql).to_pyarrow().to_pylist()]


@pytest.mark.parametrize("decimal", [None, ","])
def test_events_csv_with_decimal_comma(tmp_path: Path, decimal: str | None) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_DE, encoding="utf-8")
    wh = Warehouse.duckdb()
    r = import_events(wh, path, timezone="Europe/Berlin", decimal=decimal)

    assert r.details["decimal"] == ","
    assert r.details["time_format"] == "%d.%m.%Y %H:%M"
    assert (r.counts["events_written"], r.counts["rejected"]) == (3, 2)
    assert r.counts["revenue"] == pytest.approx(1247.00)
    # Zone-less times in a file shaped like the events table are UTC, as stored.
    assert _stored(wh) == [
        {"event_id": "e1", "timestamp": datetime(2024, 12, 31, 14, 5), "revenue": 12.5},
        {"event_id": "e2", "timestamp": datetime(2025, 1, 2, 9, 30), "revenue": 1234.5},
        {"event_id": "e4", "timestamp": datetime(2025, 1, 4, 11, 15), "revenue": None},
    ]
    assert _rejected(wh) == [
        (3, "revenue", "abc"),
        (5, "timestamp", "32.01.2025 10:00"),
    ]


def test_events_csv_decimal_point_rejects_commas(tmp_path: Path) -> None:
    # With a decimal point, "12,50" is not a number: rejected by value, never emptied.
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,event,user_id,timestamp,revenue\n"
        'e1,track,order_completed,K1,2025-01-02T10:00:00Z,"12,50"\n'
        "e2,track,order_completed,K1,2025-01-03T10:00:00Z,8.25\n",
        encoding="utf-8",
    )
    wh = Warehouse.duckdb()
    r = import_events(wh, path)
    assert (r.counts["events_written"], r.counts["rejected"]) == (1, 1)
    assert _rejected(wh) == [(1, "revenue", "12,50")]
    assert [e["revenue"] for e in _stored(wh)] == [8.25]


def test_day_first_and_format_options(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,event,user_id,timestamp\n"
        "e1,track,signed_up,K1,01/02/2025 08:00\n",
        encoding="utf-8",
    )
    wh = Warehouse.duckdb()
    import_events(wh, path, dayfirst=True)
    assert _stored(wh)[0]["timestamp"] == datetime(2025, 2, 1, 8, 0)  # 1 February

    wh = Warehouse.duckdb()
    import_events(wh, path, time_format="%m/%d/%Y %H:%M")
    assert _stored(wh)[0]["timestamp"] == datetime(2025, 1, 2, 8, 0)  # 2 January


def test_options_ignored_for_parquet_say_so(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["e1"],
                "type": ["track"],
                "event": ["x"],
                "user_id": ["K1"],
                "timestamp": [datetime(2025, 1, 2)],
            }
        ),
        path,
    )
    r = import_events(Warehouse.duckdb(), path, decimal=",")
    assert r.counts["events_written"] == 1
    assert any("--decimal ignored" in w for w in r.warnings)
