"""The main job end to end through the real `clm` command on the real CDNOW file.

Stage populations are checked against an independent pandas evaluation of the
`ecommerce` template's rules, written here from the template's text: orders are CDNOW's
rows (several on one day are separate purchases), and a period's stage is decided at its
end (or at the observation end for the last, unfinished one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CLM = str(Path(sys.executable).with_name("clm"))


def clm(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLM, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cdnow(shared_data, tmp_path_factory):
    ws = tmp_path_factory.mktemp("cdnow") / "ws"
    clm("init", str(ws))
    imp = json.loads(
        clm(
            "import",
            "transactions",
            str(shared_data / "cdnow" / "CDNOW_master.txt"),
            "-w",
            str(ws),
            "--json",
        ).stdout
    )
    run = json.loads(clm("run", "-w", str(ws), "--json").stdout)
    raw = pd.read_csv(
        shared_data / "cdnow" / "CDNOW_master.txt",
        sep=r"\s+",
        dtype={"customer_id": str},
    )
    raw["t"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    return ws, imp, run, raw


def expected_stages(raw: pd.DataFrame, evaluated_at: str) -> dict[str, int]:
    """The ecommerce rules, evaluated for every customer at one instant, in pandas."""
    e = pd.Timestamp(evaluated_at)
    seen = raw[raw.t < e]
    g = seen.groupby("customer_id").t
    total = g.size()
    o365 = seen[seen.t >= e - pd.Timedelta(days=365)].groupby("customer_id").size()
    o90 = seen[seen.t >= e - pd.Timedelta(days=90)].groupby("customer_id").size()
    o365 = o365.reindex(total.index, fill_value=0)
    o90 = o90.reindex(total.index, fill_value=0)
    days = ((e - g.max()).dt.total_seconds() // 86400).astype(int)
    stage = np.select(
        [
            (o90 >= 1) & (o365 == o90) & (total > o365),
            (o365 >= 3) & (days <= 90),
            (total >= 1) & (days > 180),
            (total >= 1) & (days > 90),
            total >= 2,
            total == 1,
        ],
        ["won_back", "loyalty", "lapsed", "at_risk", "retention", "conversion"],
        default="reach",  # no sessions or sign-ups in CDNOW
    )
    return {k: int(v) for k, v in pd.Series(stage).value_counts().items()}


def populations(ws: Path, *extra: str) -> dict[str, int]:
    out = json.loads(clm("stages", "-w", str(ws), "--json", *extra).stdout)
    return {row["stage"]: row["customers"] for row in out["stages"] if row["customers"]}


def test_import_receipt(cdnow):
    _, imp, _, raw = cdnow
    assert imp["counts"]["orders"] == len(raw) == 69_659
    assert imp["counts"]["customers"] == raw.customer_id.nunique() == 23_570
    assert imp["counts"]["revenue"] == pytest.approx(raw.dollar_value.sum(), abs=0.005)
    assert imp["counts"]["rejected"] == 0


def test_run_receipt(cdnow):
    _, _, run, _ = cdnow
    assert run[0]["counts"]["customers"] == 23_570
    assert run[0]["details"]["observation_end"] == "1998-07-01 00:00:00"


def test_populations_at_the_end_match_pandas(cdnow):
    ws, _, _, raw = cdnow
    # Last event 1998-06-30: the last week (Jun 29 – Jul 5) is evaluated at Jul 1 00:00.
    assert populations(ws) == expected_stages(raw, "1998-07-01")


def test_populations_as_of_a_past_day_match_pandas(cdnow):
    ws, _, _, raw = cdnow
    # 1997-09-30 is a Tuesday: the latest stage decided by its end is that of the week
    # Sep 22 – 28, evaluated at Sep 29 00:00 (nothing after the day is looked at).
    assert populations(ws, "--as-of", "1997-09-30") == expected_stages(
        raw, "1997-09-29"
    )
    # On Sunday Oct 5 the week Sep 29 – Oct 5 is complete: evaluated at Oct 6 00:00.
    assert populations(ws, "--as-of", "1997-10-05") == expected_stages(
        raw, "1997-10-06"
    )
    # Before the first week ends (Jan 6, 1997), nobody has a stage yet.
    assert populations(ws, "--as-of", "1997-01-03") == {}


def test_transition_matrix_rows_and_columns_add_up(cdnow):
    ws, _, _, raw = cdnow
    out = json.loads(
        clm(
            "stages",
            "transitions",
            "--from",
            "1997-09-30",
            "--to",
            "1998-06-30",
            "-w",
            str(ws),
            "--json",
        ).stdout
    )
    m = pd.DataFrame(out["matrix"]).T.fillna(0)
    rows = {k: int(v) for k, v in m.sum(axis=1).items() if v}
    cols = {k: int(v) for k, v in m.sum(axis=0).items() if v}
    assert rows == expected_stages(raw, "1997-09-29")
    assert cols == expected_stages(raw, "1998-07-01")
    # Nobody comes back from nothing: every CDNOW customer bought before September 1997.
    assert "(not yet)" not in rows


def test_metrics_and_report(cdnow, tmp_path):
    ws, _, _, raw = cdnow
    out = json.loads(
        clm("metrics", "-w", str(ws), "--json", "--grain", "quarter").stdout
    )
    v = pd.DataFrame(out["values"])
    # Revenue by stage adds up to all revenue of each quarter (every order is made
    # while its customer is in some stage).
    rev = v[v.metric == "revenue"].groupby("period_start").value.sum()
    # An order puts its customer in conversion, retention, loyalty or won_back for the
    # week it falls in (90 days or less since the order), and those four stages list
    # `revenue`: so their revenue adds up to all revenue of each quarter.
    q = raw.groupby(raw.t.dt.to_period("Q")).dollar_value.sum()
    assert sorted(set(v[v.metric == "revenue"].stage)) == [
        "conversion",
        "loyalty",
        "retention",
        "won_back",
    ]
    # (The first quarter is 1996 Q4: the week of 1 January 1997 starts on 30 December.)
    got = {p: round(x, 2) for p, x in rev.items() if x}
    assert got == {str(p.start_time.date()): round(x, 2) for p, x in q.items()}
    for lang in ("en", "de"):
        path = tmp_path / f"r-{lang}.html"
        clm("report", "-w", str(ws), "--out", str(path), "--lang", lang)
        html = path.read_text(encoding="utf-8")
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in html
    assert "Abgewandert" in (tmp_path / "r-de.html").read_text(encoding="utf-8")


def test_errors_are_clear_and_without_traceback(cdnow, tmp_path):
    ws, _, _, _ = cdnow
    p = clm("stages", "-w", str(tmp_path / "nowhere"), ok=False)
    assert p.returncode == 1
    assert "no workspace" in p.stderr and "clm init" in p.stderr
    assert "Traceback" not in p.stderr
    p = clm("stages", "-w", str(ws), "--as-of", "30.09.1997", ok=False)
    assert (
        p.returncode == 1
        and "'30.09.1997' is not a date; expected YYYY-MM-DD" in p.stderr
    )
    p = clm("stages", "-w", str(ws), "--model", "nope", ok=False)
    assert "no stage model `nope`" in p.stderr and "known: ecommerce" in p.stderr
    p = clm("metrics", "-w", str(ws), "--grain", "year", ok=False)
    assert "grain 'year'" in p.stderr and "quarter" in p.stderr
    p = clm(
        "import", "transactions", str(tmp_path / "missing.csv"), "-w", str(ws), ok=False
    )
    assert p.returncode == 1 and "missing.csv" in p.stderr
    assert "Traceback" not in p.stderr


def test_uci_online_retail_end_to_end(shared_data, tmp_path):
    """The issue's mapping on the messy UCI file; then run, stages, metrics, report."""
    ws = tmp_path / "uci"
    clm("init", str(ws), "--timezone", "Europe/London", "--currency", "GBP")
    imp = json.loads(
        clm(
            "import",
            "transactions",
            str(shared_data / "online_retail" / "online_retail.csv.gz"),
            "-w",
            str(ws),
            "--customer",
            "CustomerID",
            "--time",
            "InvoiceDate",
            "--order",
            "InvoiceNo",
            "--amount",
            "Quantity * UnitPrice",
            "--json",
        ).stdout
    )
    df = pd.read_csv(
        shared_data / "online_retail" / "online_retail.csv.gz", dtype={"InvoiceNo": str}
    )
    # Independent count of people: every known customer, plus one anonymous customer
    # per usable invoice without a CustomerID: not a cancellation, with a line of
    # positive quantity and an amount that is not negative (two "Adjust bad debt"
    # invoices have a negative price and are rejected).
    known = df.CustomerID.dropna().nunique()
    usable = (df.Quantity > 0) & (df.Quantity * df.UnitPrice >= 0)
    anon = df[df.CustomerID.isna() & ~df.InvoiceNo.str.startswith("C") & usable]
    assert imp["counts"]["customers"] == known == 4_372
    assert imp["counts"]["anonymous_orders"] == anon.InvoiceNo.nunique()
    clm("run", "-w", str(ws))
    out = json.loads(clm("stages", "-w", str(ws), "--json").stdout)
    assert out["as_of"] == "2011-12-09"
    total = sum(r["customers"] for r in out["stages"])
    # A cancellation (a `C` invoice, or a negative total such as the two "Adjust bad
    # debt" invoices) without a CustomerID keeps an anonymous id of its own (it still
    # counts in net revenue), so it is a customer too.
    df["amount"] = df.Quantity * df.UnitPrice
    totals = df[df.CustomerID.isna()].groupby("InvoiceNo").amount.sum()
    cancels = {i for i in totals.index if i.startswith("C")} | set(
        totals[totals < 0].index
    )
    assert total == known + anon.InvoiceNo.nunique() + len(cancels)
    m = json.loads(clm("metrics", "-w", str(ws), "--json").stdout)
    months = {r["period_start"] for r in m["values"]}
    assert "2011-12-01" in months and "2010-12-01" in months
    assert any(c[0] == "last_period_incomplete" for c in m["caveats"])
    clm("report", "-w", str(ws), "--out", str(tmp_path / "uci.html"), "--lang", "de")
    assert "Abgewandert" in (tmp_path / "uci.html").read_text(encoding="utf-8")


def test_new_model_version_replays_and_old_stays_queryable(cdnow, tmp_path):
    import shutil

    import yaml

    from clm.lifecycle.model import load_model

    ws_src, _, _, raw = cdnow
    ws = tmp_path / "ws"
    shutil.copytree(ws_src, ws)
    text = load_model("ecommerce").text
    v2 = text.replace("version: 1", "version: 2").replace(
        "days_since_order > 180", "days_since_order > 120"
    )
    (ws / "ecommerce-v2.yaml").write_text(v2, encoding="utf-8")
    cfg = yaml.safe_load((ws / "clm.yaml").read_text(encoding="utf-8"))
    cfg["models"] = ["ecommerce-v2.yaml"]
    (ws / "clm.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    clm("run", "-w", str(ws))
    now = populations(ws)
    old = populations(ws, "--version", "1")
    assert old == expected_stages(raw, "1998-07-01")
    # Lapsing after 120 instead of 180 days moves customers from at_risk to lapsed.
    assert now["lapsed"] > old["lapsed"]
    assert now["lapsed"] + now["at_risk"] == old["lapsed"] + old["at_risk"]
    p = clm("stages", "-w", str(ws), "--version", "7", ok=False)
    assert "no stored version 7" in p.stderr and "versions that ran: 1, 2" in p.stderr


def test_validate_names_an_unknown_metric_with_file_and_line(tmp_path):
    model = tmp_path / "mine.yaml"
    model.write_text(
        "name: mine\nversion: 1\nfeatures:\n"
        "  orders: count(event = 'order_completed')\n"
        'stages:\n  - {name: buyer, when: "orders >= 1"}\n'
        '  - {name: visitor, when: "true"}\n'
        "metrics:\n  buyer: [population, revenu_share]\n",
        encoding="utf-8",
    )
    p = clm("validate", str(model), ok=False)
    assert p.returncode == 1
    assert f"{model}:9, stage `buyer`: unknown metric `revenu_share`" in p.stderr
    assert "revenue_share" in p.stderr and "Traceback" not in p.stderr


def test_json_output_into_a_closed_pipe_is_not_an_error(cdnow):
    ws, _, _, _ = cdnow
    proc = subprocess.run(
        f"'{CLM}' metrics -w '{ws}' --json --grain week | head -c 10",
        shell=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.stdout.startswith("{") and "internal error" not in proc.stderr
