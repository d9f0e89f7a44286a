"""CSV variants, Parquet, JSON lines and mapping errors, on files written here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clm.collect import detect_format, import_events, import_transactions
from clm.errors import ImportFormatError
from clm.warehouse.engine import Warehouse

ROWS = [
    ("c1", "2024-03-01 10:00:00", "o1", "2", "5.00"),
    ("c1", "2024-03-01 10:00:00", "o1", "1", "2.50"),
    ("c2", "2024-03-02 11:30:00", "o2", "3", "1.00"),
    ("", "2024-03-03 09:00:00", "o3", "1", "4.00"),
    ("c2", "not a date", "o4", "1", "1.00"),
]
HEADER = ("customer_id", "order_date", "order_id", "quantity", "price")
# By hand: o1 = 2*5 + 1*2.5 = 12.5, o2 = 3, o3 = 4 (anonymous); o4 rejected.
REVENUE, ORDERS = 19.5, 3


def _text(sep: str, header: bool = True) -> str:
    lines = [sep.join(HEADER)] if header else []
    lines += [sep.join(r) for r in ROWS]
    return "\n".join(lines) + "\n"


def _check(path: Path, **opts: str) -> None:
    wh = Warehouse.duckdb()
    r = import_transactions(wh, path, **opts)
    assert r.counts["orders"] == ORDERS
    assert r.counts["revenue"] == pytest.approx(REVENUE)
    assert r.counts["anonymous_orders"] == 1
    assert r.counts["customers"] == 2
    assert r.rejects == {
        "unparseable time: expected a date such as 2011-12-09 12:50:00": 1
    }
    bad = wh.con.sql("SELECT row_number, field, value FROM rejected").to_pyarrow()
    assert bad.to_pylist()[0]["row_number"] == 5
    assert bad.to_pylist()[0]["value"] == "not a date"
    anon = wh.con.sql("SELECT anonymous_id FROM events WHERE user_id IS NULL")
    assert anon.to_pyarrow().to_pylist() == [{"anonymous_id": "order:o3"}]
    wh.close()


@pytest.mark.parametrize(
    ("name", "sep", "bom", "gz"),
    [
        ("plain.csv", ",", False, False),
        ("semi.csv", ";", False, False),
        ("tab.tsv", "\t", False, False),
        ("bom.csv", ",", True, False),
        ("zipped.csv.gz", ",", False, True),
        ("pipe.txt", "|", True, True),
    ],
)
def test_delimited_variants(
    tmp_path: Path, name: str, sep: str, bom: bool, gz: bool
) -> None:
    data = ("\ufeff" if bom else "") + _text(sep)
    path = tmp_path / name
    if gz:
        path.write_bytes(gzip.compress(data.encode("utf-8")))
    else:
        path.write_text(data, encoding="utf-8")
    fmt = detect_format(path)
    assert (fmt.delimiter, fmt.header, fmt.bom) == (sep, True, bom)
    assert fmt.compression == ("gzip" if gz else None)
    _check(path, amount="price * quantity")


def test_whitespace_and_no_header(tmp_path: Path) -> None:
    rows = [
        "  c1   2024-03-01   5.5\r",
        " c2 2024-03-02\t1.5\r",
        " c1  2024-03-01  5.5",
    ]
    path = tmp_path / "ws.txt"
    path.write_text("\n".join(rows) + "\n")
    fmt = detect_format(path)
    assert (fmt.delimiter, fmt.header) == ("whitespace", False)
    wh = Warehouse.duckdb()
    r = import_transactions(
        wh, path, customer="column0", time="column1", amount="column2"
    )
    # Two identical rows are two purchases: both stay.
    assert r.counts["events_written"] == 3
    assert r.counts["revenue"] == pytest.approx(12.5)
    again = import_transactions(
        wh, path, customer="column0", time="column1", amount="column2"
    )
    assert again.counts["events_written"] == 0


def test_parquet_transactions_and_time_zone(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "CustomerID": [17850.0, 17850.0, None],
                "InvoiceNo": ["1", "C2", "3"],
                "InvoiceDate": ["2024-07-01 12:00:00"] * 3,
                "Quantity": [2, -1, 1],
                "UnitPrice": [3.0, 3.0, 1.0],
            }
        ),
        path,
    )
    wh = Warehouse.duckdb()
    r = import_transactions(
        wh, path, amount="Quantity * UnitPrice", timezone="Europe/Berlin"
    )
    ev = (
        wh.con.sql(
            "SELECT event, user_id, revenue, order_id, "
            "CAST(timestamp AS VARCHAR) AS ts FROM events ORDER BY revenue"
        )
        .to_pyarrow()
        .to_pylist()
    )
    assert [e["event"] for e in ev] == ["order_refunded", "order_completed"] * 1 + [
        "order_completed"
    ]
    assert ev[0]["revenue"] == -3.0 and ev[0]["user_id"] == "17850"
    assert ev[0]["order_id"] is None  # no stock code column: not determinable
    assert ev[0]["ts"] == "2024-07-01 10:00:00"  # CEST is UTC+2
    assert r.counts["refunds"] == 1 and r.counts["orders"] == 2


def test_missing_mapped_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(_text(","))
    with pytest.raises(ImportFormatError) as err:
        import_transactions(Warehouse.duckdb(), path, customer="CustomerNo")
    assert "'CustomerNo'" in str(err.value)
    assert "customer_id, order_date, order_id, quantity, price" in str(err.value)


def test_json_lines_good_and_bad(tmp_path: Path) -> None:
    good = [
        {
            "type": "track",
            "event": "Signed Up",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2024-05-01T12:00:00Z",
        },
        {
            "type": "page",
            "anonymousId": "a1",
            "timestamp": "2024-05-01T12:00:00+02:00",
            "context": {
                "page": {"url": "https://shop.test/"},
                "campaign": {"source": "mail", "name": "may"},
            },
        },
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "timestamp": "2024-05-02T08:00:00Z",
            "properties": {"total": 30.5, "order_id": "o9", "currency": "EUR"},
        },
    ]
    ts = '"timestamp": "2024-05-01T12:00:00Z"'
    bad = {
        '{"type": "track", "event": "x", ' + ts + "}": "userId",
        '{"type": "fly", "userId": "u", ' + ts + "}": "type",
        '{"type": "track", "event": "x", "userId": "u", "timestamp": "soon"}': (
            "timestamp"
        ),
        "{broken": "line",
    }
    lines = [json.dumps(g) for g in good] + list(bad)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    wh = Warehouse.duckdb()
    r = import_events(wh, path)
    assert r.counts["events_written"] == 3
    assert r.counts["rejected"] == 4
    got = wh.con.sql("SELECT field, raw FROM rejected ORDER BY row_number")
    assert [g["field"] for g in got.to_pyarrow().to_pylist()] == list(bad.values())
    ev = {
        e["type"]: e
        for e in wh.con.sql("SELECT * FROM events").to_pyarrow().to_pylist()
        if e["event"] != "Order Completed"
    }
    assert ev["track"]["event_id"] == "m1"
    assert str(ev["page"]["timestamp"]) == "2024-05-01 10:00:00"
    assert ev["page"]["url"] == "https://shop.test/"
    assert (ev["page"]["utm_source"], ev["page"]["utm_campaign"]) == ("mail", "may")
    order = wh.con.sql("SELECT revenue, order_id FROM events WHERE revenue > 0")
    assert order.to_pyarrow().to_pylist() == [{"revenue": 30.5, "order_id": "o9"}]
    assert import_events(wh, path).counts["events_written"] == 0


def test_events_shaped_parquet(tmp_path: Path) -> None:
    path = tmp_path / "ev.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["e1", "e2", "e2", None],
                "type": ["track", "track", "track", "track"],
                "event": ["a", "b", "b", "c"],
                "user_id": ["u1", "u2", "u2", "u3"],
                "timestamp": pa.array([1, 2, 2, 3], pa.timestamp("s")),
            }
        ),
        path,
    )
    wh = Warehouse.duckdb()
    r = import_events(wh, path)
    assert r.counts["events_written"] == 2
    assert r.counts["duplicates_skipped"] == 1
    assert r.rejects == {"missing event_id": 1}
