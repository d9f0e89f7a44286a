"""Customer value through the warehouse and the `clm` command, on the CDNOW sample.

The sample is imported with `clm import transactions` (a CSV written here from the
published file); the RFM summary read back from the warehouse must equal the published
calibration summary, and the fits the published parameters (Fader, Hardie & Lee 2005).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clm
from clm.analyses.value import rfm_summary

CLM = str(Path(sys.executable).with_name("clm"))


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLM, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def sample_frame(shared_data: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        shared_data / "cdnow" / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "cds", "amount"],
    )
    return raw


# One worker runs this module in file order: its tests share one workspace.
pytestmark = pytest.mark.xdist_group("value_cdnow")


@pytest.fixture(scope="module")
def cdnow_ws(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("value")
    raw = sample_frame(shared_data)
    csv = root / "cdnow_sample.csv"
    raw[["customer_id", "date", "amount"]].to_csv(csv, index=False)
    ws = root / "ws"
    run("init", str(ws))
    run("import", "transactions", str(csv), "-w", str(ws), "--json")
    return ws


def test_summary_from_the_warehouse_equals_the_published_file(
    cdnow_ws: Path, shared_data: Path
) -> None:
    published = pd.read_csv(
        shared_data / "cdnow" / "cdnow_customers_summary_with_transactions.csv"
    )
    with clm.open(cdnow_ws) as ws:
        summ = rfm_summary(ws.warehouse, ws.timezone, as_of=date(1997, 9, 30))
    summ.index = summ.index.astype(int)
    pub = published.set_index("ID").sort_index()
    summ = summ.loc[pub.index]
    assert len(summ) == 2357
    assert summ.frequency.sum() == 2457
    assert (summ.frequency.to_numpy() == pub.x.to_numpy()).all()
    # The published file prints t_x and T to 2 decimals.
    np.testing.assert_allclose(summ.recency.round(2), pub.t_x, atol=1e-9)
    np.testing.assert_allclose(summ["T"].round(2), pub["T"], atol=1e-9)
    np.testing.assert_allclose(summ.monetary_value, pub.zbar, atol=5e-3)


def test_clv_fit_json_gives_the_published_parameters(cdnow_ws: Path) -> None:
    out = json.loads(
        run("clv", "fit", "-w", str(cdnow_ws), "--as-of", "1997-09-30", "--json").stdout
    )
    p = out["purchases"]
    assert p["converged"] is True
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert round(p["params"][name], 3) == value, name
    assert round(p["log_likelihood"], 1) == -9582.4
    s = out["spend"]["params"]
    assert (round(s["p"], 2), round(s["q"], 2), round(s["gamma"], 2)) == (
        6.25,
        3.74,
        15.44,
    )
    assert out["customers"] == 2357 and out["repeat_customers"] == 946


def test_clv_fit_paretonbd_on_request(cdnow_ws: Path) -> None:
    out = json.loads(
        run(
            "clv", "fit", "-w", str(cdnow_ws), "--as-of", "1997-09-30",
            "-m", "paretonbd", "--json",
        ).stdout
    )  # fmt: skip
    p = out["purchases"]["params"]
    assert (round(p["r"], 3), round(p["alpha"], 2)) == (0.553, 10.58)
    assert (round(p["s"], 3), round(p["beta"], 2)) == (0.606, 11.67)
    assert round(out["purchases"]["log_likelihood"], 1) == -9595.0


def test_clv_predict_stores_customer_value(cdnow_ws: Path, shared_data: Path) -> None:
    out = json.loads(
        run(
            "clv", "predict", "-w", str(cdnow_ws), "--as-of", "1997-09-30",
            "--top", "3", "--json",
        ).stdout
    )  # fmt: skip
    with clm.open(cdnow_ws) as ws:
        rows = ws.warehouse.table("customer_value").to_pandas()
        receipts = ws.warehouse.table("receipts").to_pandas()
    assert len(rows) == 2357 and set(rows.model) == {"bgnbd"}
    # A receipt, so that caches keyed by the receipts see the new values.
    mine = receipts[receipts.operation == "clv_predict"]
    assert len(mine) == 1 and json.loads(mine.body.iloc[0])["counts"] == {
        "customers": 2357
    }
    assert rows.notna()[["p_alive", "predicted_clv", "rfm_segment"]].all().all()
    # P(alive) by hand (FHL 2008 note) for the first customer with a repeat.
    r, alpha, a, b = (
        out["fit"]["purchases"]["params"][k] for k in ("r", "alpha", "a", "b")
    )
    row = rows[rows.frequency > 0].iloc[0]
    x, t_x, t = row.frequency, row.recency, row["T"]
    hand = 1 / (1 + a / (b + x - 1) * ((alpha + t) / (alpha + t_x)) ** (r + x))
    assert row.p_alive == pytest.approx(hand, rel=1e-9)
    assert rows[rows.frequency == 0].p_alive.eq(1.0).all()
    # Totals are the sums of the stored rows; the top list is sorted.
    assert out["totals"]["customer_equity"] == pytest.approx(rows.predicted_clv.sum())
    top = [c["predicted_clv"] for c in out["top"]]
    assert top == sorted(top, reverse=True) and len(top) == 3
    assert top[0] == pytest.approx(rows.predicted_clv.max())


def test_clv_validate_holdout_totals_and_chart(cdnow_ws: Path, tmp_path: Path) -> None:
    chart = tmp_path / "holdout.svg"
    out = json.loads(
        run(
            "clv", "validate", "-w", str(cdnow_ws), "--calibration-end", "1997-09-30",
            "--chart", str(chart), "--json",
        ).stdout
    )  # fmt: skip
    # README of the data: 1,882 holdout repeat transactions (distinct days).
    assert out["totals"]["actual"] == 1882
    buckets = {b["frequency"]: b for b in out["buckets"]}
    assert buckets["0"]["customers"] == 2357 - 946
    assert sum(b["customers"] for b in out["buckets"]) == 2357
    assert chart.read_text().startswith("<svg")
    assert 'class="predicted"' in chart.read_text()


def test_rfm_json_segment_table(cdnow_ws: Path) -> None:
    out = json.loads(run("rfm", "-w", str(cdnow_ws), "--json").stdout)
    assert out["observation_period_end"] == "1998-06-30"
    seg = {s["segment"]: s for s in out["segments"]}
    assert sum(s["customers"] for s in seg.values()) == 2357
    assert sum(s["share"] for s in seg.values()) == pytest.approx(1.0)
    # Customers who never repeated have frequency 0 and F = 1: with FM <= 2 they sit
    # in About to sleep, Hibernating, Lost, New or Promising only.
    never = {"About to sleep", "Hibernating", "Lost"}
    assert all(seg[n]["frequency"] == 0 for n in never if seg[n]["customers"])


def test_report_sections_rfm_grid_and_holdout_chart(cdnow_ws: Path) -> None:
    import re

    from clm.report.build import value_sections

    # The report needs value rows and a calibration fit. Write them here too, so that
    # the test does not depend on which tests ran before it on this worker.
    ws_dir = str(cdnow_ws)
    run("clv", "predict", "-w", ws_dir, "--as-of", "1997-09-30", "--json")
    run("clv", "validate", "-w", ws_dir, "--calibration-end", "1997-09-30", "--json")
    with clm.open(cdnow_ws) as ws:
        rows = ws.warehouse.table("customer_value").to_pandas()
        for lang, grid_title, chart_title in (
            ("en", "RFM grid", "CLV model check"),
            ("de", "RFM-Raster", "Prüfung des CLV-Modells"),
        ):
            sections = value_sections(ws, lang)
            assert sections[0][0] == grid_title
            assert sections[1][0].startswith(chart_title)
            assert sections[1][1].startswith("<svg")
    # Cell counts of the grid add up to every customer; R=5, FM=5 is Champions.
    grid = sections[0][1]
    counts = [int(n.replace(".", "")) for n in re.findall(r">([\d.]+)<br>", grid)]
    assert sum(counts) == len(rows) == 2357
    fm = (rows.f + rows.m + 1) // 2
    champions = int(((rows.r == 5) & (fm >= 4)).sum())
    assert champions == int((rows.rfm_segment == "Champions").sum())
