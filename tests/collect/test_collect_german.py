"""German-style exports: `;` delimiter, decimal comma, day-first dates, German names.

Every file is written here; the sums below are worked out by hand from its rows.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from clm.collect import import_transactions
from clm.errors import ConfigError, ImportFormatError
from clm.warehouse.engine import Warehouse

# A shop export as Excel writes it in Germany (BOM, `;`, CRLF).
GERMAN = (
    "\ufeffKundennummer;Bestelldatum;Bestellnummer;Betrag\r\n"
    "K1;31.12.2024 14:05;1001;12,50\r\n"
    "K1;31.12.2024 14:05;1001;1.234,50\r\n"
    "K2;02.01.2025 09:30;1002;7\r\n"
    "K2;03.01.2025 10:00;1003;abc\r\n"
    "K3;32.01.2025 10:00;1004;5,00\r\n"
    "K3;04.01.2025 11:15;1005;0,99\r\n"
)
# By hand: order 1001 = 12.50 + 1234.50 = 1247.00, 1002 = 7, 1005 = 0.99;
# 1003 (amount "abc") and 1004 (31 days in January only) are rejected.
GERMAN_REVENUE = 1247.00 + 7 + 0.99


def _events(wh: Warehouse) -> list[dict[str, object]]:
    sql = "SELECT order_id, user_id, timestamp, revenue FROM events ORDER BY order_id"
    return wh.con.sql(sql).to_pyarrow().to_pylist()  # type: ignore[no-any-return]


def _rejected(wh: Warehouse) -> list[dict[str, object]]:
    sql = "SELECT row_number, field, value, reason FROM rejected ORDER BY row_number"
    return wh.con.sql(sql).to_pyarrow().to_pylist()  # type: ignore[no-any-return]


def test_german_export_detected(tmp_path: Path) -> None:
    path = tmp_path / "bestellungen.csv"
    path.write_text(GERMAN, encoding="utf-8")
    wh = Warehouse.duckdb()
    r = import_transactions(wh, path, timezone="Europe/Berlin")

    assert r.details["mapping"]["decimal"] == ","
    assert "decimal" in r.details["mapping"]["detected"]
    assert r.details["mapping"]["time_format"] == "%d.%m.%Y %H:%M"
    assert (r.counts["orders"], r.counts["customers"]) == (3, 3)
    assert r.counts["revenue"] == pytest.approx(GERMAN_REVENUE)
    assert r.counts["rejected"] == 2

    # Berlin is UTC+1 in winter: 14:05 local is 13:05 UTC.
    ev = _events(wh)
    assert [e["order_id"] for e in ev] == ["1001", "1002", "1005"]
    assert [e["revenue"] for e in ev] == pytest.approx([1247.0, 7.0, 0.99])
    assert ev[0]["timestamp"] == datetime(2024, 12, 31, 13, 5)
    assert ev[1]["timestamp"] == datetime(2025, 1, 2, 8, 30)

    bad = _rejected(wh)
    assert [(b["row_number"], b["field"], b["value"]) for b in bad] == [
        (4, "Betrag", "abc"),
        (5, "Bestelldatum", "32.01.2025 10:00"),
    ]
    assert "decimal comma such as 12,50" in str(bad[0]["reason"])
    assert "31.12.2024" not in str(bad[1]["reason"])  # the example is 09.12.2011
    assert "09.12.2011 12:50" in str(bad[1]["reason"])
    wh.close()


def test_explicit_decimal_comma_rejects_point_values(tmp_path: Path) -> None:
    # Tab-delimited: detection is for `;` files only, so the option is needed.
    path = tmp_path / "tab.tsv"
    path.write_text(
        "customer\tdate\torder\tamount\tqty\n"
        "a\t2024-05-01\tx1\t1.000,00\t2\n"
        "a\t2024-05-01\tx1\t0,25\t1,5\n"
        "b\t2024-05-02\tx2\t12.50\t1\n"
        "b\t2024-05-03\tx3\t-4,00\t1\n",
        encoding="utf-8",
    )
    wh = Warehouse.duckdb()
    r = import_transactions(wh, path, decimal=",")
    # x1 = 1000 + 0.25 = 1000.25 with 2 + 1.5 = 3.5 pieces; x2 has a decimal point
    # (rejected, never read as 1250); x3 is a cancellation of -4.
    assert r.counts["orders"] == 1
    assert r.counts["revenue"] == pytest.approx(1000.25)
    assert r.counts["refunded"] == pytest.approx(-4.0)
    props = wh.con.sql("SELECT properties FROM events WHERE order_id = 'x1'")
    assert '"quantity":3.5' in props.to_pyarrow().to_pylist()[0]["properties"]
    bad = _rejected(wh)
    assert [(b["field"], b["value"]) for b in bad] == [("amount", "12.50")]
    wh.close()


def test_point_file_not_taken_for_comma(tmp_path: Path) -> None:
    # `;` but English numbers, one of which looks German (1.500): not detected.
    path = tmp_path / "semi.csv"
    path.write_text(
        "customer;date;amount\nc;2024-01-01;1.500\nc;2024-01-02;2.25\n",
        encoding="utf-8",
    )
    wh = Warehouse.duckdb()
    r = import_transactions(wh, path)
    assert r.details["mapping"]["decimal"] == "."
    assert r.counts["revenue"] == pytest.approx(1.5 + 2.25)
    wh.close()


def test_ambiguous_thousands_read_with_point_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "ambiguous.csv"
    path.write_text("customer;date;amount\nc;2024-01-01;1.500\n", encoding="utf-8")
    wh = Warehouse.duckdb()
    assert import_transactions(wh, path).counts["revenue"] == pytest.approx(1.5)
    wh.close()
    wh = Warehouse.duckdb()
    r = import_transactions(wh, path, decimal=",")
    assert r.counts["revenue"] == pytest.approx(1500.0)
    wh.close()


def test_decimal_comma_without_option_hints(tmp_path: Path) -> None:
    # A `;` file with one English value: detection stays off, and the receipt says
    # how to import the comma values that were rejected.
    path = tmp_path / "mixed.csv"
    path.write_text(
        "customer;date;amount\nc;2024-01-01;3,50\nc;2024-01-02;2.25\n",
        encoding="utf-8",
    )
    wh = Warehouse.duckdb()
    r = import_transactions(wh, path)
    assert r.counts["revenue"] == pytest.approx(2.25)
    assert r.counts["rejected"] == 1
    assert any("--decimal ," in w and "'3,50'" in w for w in r.warnings)
    wh.close()


def test_dayfirst_and_time_format(tmp_path: Path) -> None:
    path = tmp_path / "slash.csv"
    path.write_text("customer,date,amount\nc,01/02/2024,1\n", encoding="utf-8")
    wh = Warehouse.duckdb()
    import_transactions(wh, path)
    assert _events(wh)[0]["timestamp"] == datetime(2024, 1, 2)  # month first
    wh.close()
    wh = Warehouse.duckdb()
    import_transactions(wh, path, dayfirst=True)
    assert _events(wh)[0]["timestamp"] == datetime(2024, 2, 1)
    wh.close()

    short = tmp_path / "short.csv"
    short.write_text("customer;date;amount\nc;31.12.24 14:05;1\n", encoding="utf-8")
    wh = Warehouse.duckdb()
    r = import_transactions(wh, short)  # two-digit year: 2024, not the year 24
    assert r.details["mapping"]["time_format"] == "%d.%m.%y %H:%M"
    assert _events(wh)[0]["timestamp"] == datetime(2024, 12, 31, 14, 5)
    wh.close()

    odd = tmp_path / "odd.csv"
    odd.write_text("customer;date;amount\nc;2024|12|31;1\n", encoding="utf-8")
    wh = Warehouse.duckdb()
    import_transactions(wh, odd, time_format="%Y|%m|%d")
    assert _events(wh)[0]["timestamp"] == datetime(2024, 12, 31)
    wh.close()


def test_bad_decimal_and_time_format_named(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("customer;date;amount\nc;2024-01-01;1\n", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="decimal ';'"):
        import_transactions(Warehouse.duckdb(), path, decimal=";")
    with pytest.raises(ConfigError, match=r"time format 'dd\.mm\.yyyy'"):
        import_transactions(Warehouse.duckdb(), path, time_format="dd.mm.yyyy")
