"""What a new user meets in the terminal: German files, JSON errors, days outside the
data, a readable customer view, currency codes and tables that are never cut.

One small German shop export is written here; its figures are worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from clm.cli.main import app

# Sundays are 2024-03-03, -10 and -17; Berlin is UTC+1 in early March.
EXPORT = (
    "Kundennummer;Bestelldatum;Bestellnummer;Betrag\n"
    "K1;03.03.2024 10:00;A1;10,00\n"
    "K3;05.03.2024 09:15;A2;5,25\n"
    "K1;10.03.2024 11:30;A3;20,50\n"
    "K2;17.03.2024 12:00;A4;1.000,00\n"
)
# By hand: 10 + 5.25 + 20.50 + 1000 = 1035.75 from 4 orders of 3 customers;
# K1 spent 10 + 20.50 = 30.50.
REVENUE = 1035.75


def clm(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("usability")
    ws = root / "ws"
    clm("init", str(ws), "--timezone", "Europe/Berlin")
    export = root / "bestellungen.csv"
    export.write_text(EXPORT, encoding="utf-8")
    receipt = json.loads(
        clm("import", "transactions", str(export), "-w", str(ws), "--json").stdout
    )
    assert receipt["counts"]["revenue"] == pytest.approx(REVENUE)
    assert (receipt["counts"]["orders"], receipt["counts"]["customers"]) == (4, 3)
    assert receipt["details"]["mapping"]["decimal"] == ","
    clm("run", "-w", str(ws), "--json")
    return ws


def _error(result: Any) -> dict[str, Any]:
    body = json.loads(result.stderr)
    assert set(body["error"]) >= {"code", "field", "value", "message"}
    return body["error"]  # type: ignore[no-any-return]


def test_json_errors_are_json(shop: Path) -> None:
    bad_day = _error(
        clm("stages", "-w", str(shop), "--as-of", "3.3.24", "--json", code=1)
    )
    assert (bad_day["field"], bad_day["value"]) == ("--as-of", "3.3.24")
    assert "YYYY-MM-DD" in bad_day["message"]

    unknown = _error(clm("stages", "-w", str(shop), "--bogus", "--json", code=2))
    assert (unknown["code"], unknown["field"]) == ("usage_error", "--bogus")

    missing = _error(clm("stages", "-w", str(shop / "nope"), "--json", code=1))
    assert missing["code"] == "workspace_error"

    # Without --json the same error stays one plain line.
    plain = clm("stages", "-w", str(shop), "--as-of", "3.3.24", code=1)
    assert plain.stderr.startswith("error: --as-of: '3.3.24'")


def test_days_outside_the_data(shop: Path) -> None:
    after = clm("stages", "-w", str(shop), "--as-of", "2030-01-01", "--json")
    body = json.loads(after.stdout)
    assert "ends on 2024-03-17" in body["note"]
    assert sum(s["customers"] for s in body["stages"]) == 3  # everyone, as on 03-17
    assert after.stderr.count("\n") == 1 and after.stderr.startswith("warning: ")

    inside = json.loads(clm("stages", "-w", str(shop), "--json").stdout)
    assert inside["note"] is None and inside["as_of"] == "2024-03-17"

    before = clm("stages", "-w", str(shop), "--as-of", "2024-01-01", "--json", code=1)
    err = _error(before)
    assert (err["field"], err["value"]) == ("--as-of", "2024-01-01")
    assert "starts on 2024-03-03" in err["message"]


def test_customer_show_reads_like_a_person_wrote_it(shop: Path) -> None:
    text = clm("customer", "show", "K1", "-w", str(shop)).stdout
    for raw in ("NaT", "None", "nan", "UTC"):
        assert raw not in text
    assert "times in Europe/Berlin" in text
    assert "2024-03-10 11:30:00" in text  # local time, as in the file
    assert "revenue: 30.50 EUR" in text

    view = json.loads(clm("customer", "show", "K1", "-w", str(shop), "--json").stdout)
    times = sorted(r["timestamp"] for r in view["timeline"]["rows"])
    assert times == ["2024-03-03T09:00:00", "2024-03-10T10:30:00"]  # UTC
    assert view["profile"]["revenue"] == pytest.approx(30.5)
    open_ended = [h for h in view["stage_history"] if h["valid_to"] is None]
    assert len(open_ended) == 1  # null, not "NaT"


def test_piped_tables_are_not_cut(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CliRunner's output is not a terminal, as with `clm metrics > file`. An exported
    # COLUMNS would be obeyed (pytest-xdist's workers have one): not here.
    monkeypatch.delenv("COLUMNS", raising=False)
    text = clm("metrics", "-w", str(shop), "--grain", "week", "--last", "0").stdout
    assert "…" not in text
    # Weeks from Monday 2024-02-26 (the ISO week of the first order) to 03-11:
    # Jan 1 2024 is a Monday, so 03-11 (day 71) starts week (71 - 1) // 7 + 1 = 11.
    for week in ("2024-W09", "2024-W10", "2024-W11"):
        assert week in text
    assert "│ conversion_rate_to(acquisition) │" in text

    # By day: from Monday 02-26 (the model's weekly calendar starts there) to 03-17,
    # 21 periods, far more than 80 columns, all there.
    days = clm("metrics", "-w", str(shop), "--grain", "day", "--last", "0").stdout
    assert "…" not in days and "note: the last" not in days
    assert "2024-02-26" in days and "2024-03-17" in days
    assert max(len(line) for line in days.splitlines()) > 21 * 10
    assert "note: the last" not in text

    # Too narrow for every period: the oldest are left out, never cut, and it says so.
    narrow = clm("metrics", "-w", str(shop), "--grain", "week", "--width", "70")
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 70
    assert "…" not in narrow.stdout and "2024-W11" in narrow.stdout
    assert any(line.startswith("note: the last ") for line in lines)


def test_currency_must_be_iso_4217(tmp_path: Path) -> None:
    bad = clm("init", str(tmp_path / "a"), "--currency", "EURO", "--json", code=1)
    err = _error(bad)
    assert (err["field"], err["value"]) == ("currency", "EURO")
    assert not (tmp_path / "a" / "clm.yaml").exists()

    lower = clm("init", str(tmp_path / "b"), "--currency", "chf", code=1)
    assert "did you mean 'CHF'" in lower.stderr

    clm("init", str(tmp_path / "c"), "--currency", "CHF")
    cfg = tmp_path / "c" / "clm.yaml"
    assert yaml.safe_load(cfg.read_text())["currency"] == "CHF"
    cfg.write_text(cfg.read_text().replace("CHF", "Franken"))
    err = _error(clm("stages", "-w", str(tmp_path / "c"), "--json", code=1))
    assert (err["code"], err["field"], err["value"]) == (
        "config_error",
        "currency",
        "Franken",
    )


def test_import_options_checked(shop: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("customer;date;amount\nc;2024-01-01;1,5\n", encoding="utf-8")
    err = _error(
        clm(
            "import", "transactions", str(path), "-w", str(shop),
            "--decimal", "·", "--json", code=1,
        )
    )  # fmt: skip
    assert (err["field"], err["value"]) == ("decimal", "·")
    # A time format without strptime codes is refused for events too, by name.
    events = _error(
        clm(
            "import", "events", str(path), "-w", str(shop),
            "--time-format", "YYYY", "--json", code=1,
        )
    )  # fmt: skip
    assert "'YYYY'" in events["message"] and "strptime" in events["message"]
