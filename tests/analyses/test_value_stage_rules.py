"""A stage rule on p_alive(), evaluated over history with fixed BG/NBD parameters.

Expected stages come from the P(alive) formula (Fader, Hardie & Lee 2008 note, eq. 6)
evaluated here in plain Python at every weekly period end, independent of the engine.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from clm.errors import ModelError
from clm.lifecycle.history import run_model
from clm.lifecycle.model import load_model_text
from clm.warehouse.engine import now_utc

R, ALPHA, A, B = 0.25, 4.0, 0.8, 2.5
ORDERS = {
    "a": ["2024-01-01", "2024-01-08"],
    "b": ["2024-01-03"],
    "c": ["2024-01-01", "2024-03-01", "2024-03-02", "2024-03-02"],
}
AS_OF = date(2024, 9, 29)  # a Sunday: the last week is complete

MODEL = """
name: value
version: 1
grain: week
features:
  orders_total: count(event = 'order_completed')
  alive: p_alive()
stages:
  - {{name: at_risk, when: "{rule} and orders_total >= 2"}}
  - {{name: active, when: "orders_total >= 1"}}
"""


def p_alive(x: int, t_x: float, t: float) -> float:
    if x == 0:
        return 1.0
    odds = A / (B + x - 1) * ((ALPHA + t) / (ALPHA + t_x)) ** (R + x)
    return 1 / (1 + odds)


def expected_stage_starts(customer: str) -> dict[date, str]:
    """Stage per week (Monday start) by the formula, collapsed to changes."""
    days = sorted({date.fromisoformat(d) for d in ORDERS[customer]})
    monday = days[0] - timedelta(days=days[0].weekday())
    out: dict[date, str] = {}
    last_stage = None
    while monday <= AS_OF:
        last_day = min(monday + timedelta(days=6), AS_OF)
        seen = [d for d in days if d <= last_day]
        if seen:
            x = len(seen) - 1
            t_x = (seen[-1] - seen[0]).days / 7
            t = (last_day - seen[0]).days / 7
            risky = (
                p_alive(x, t_x, t) < 0.3
                and len(
                    [o for o in ORDERS[customer] if date.fromisoformat(o) <= last_day]
                )
                >= 2
            )
            stage = "at_risk" if risky else "active"
            if stage != last_stage:
                out[monday] = stage
                last_stage = stage
        monday += timedelta(days=7)
    return out


@pytest.fixture
def ws(workspace, tmp_path: Path):  # type: ignore[no-untyped-def]
    lines = [f"{c},{d},10" for c, ds in ORDERS.items() for d in ds]
    csv = tmp_path / "orders.csv"
    csv.write_text("customer_id,date,amount\n" + "\n".join(lines) + "\n")
    workspace.import_transactions(csv)
    return workspace


def add_fit(ws) -> None:  # type: ignore[no-untyped-def]
    ws.warehouse.append(
        "value_fits",
        pd.DataFrame(
            {
                "fit_id": ["test"],
                "computed_at": [now_utc()],
                "observation_period_end": [datetime(2024, 9, 29)],
                "model": ["bgnbd"],
                "time_unit": ["W"],
                "params": [json.dumps({"r": R, "alpha": ALPHA, "a": A, "b": B})],
                "log_likelihood": [-1.0],
                "converged": [True],
            }
        ),
    )


def stored_starts(ws, customer: str) -> dict[date, str]:  # type: ignore[no-untyped-def]
    t = ws.warehouse.table("stage_history")
    rows = t.filter(t.customer_id == customer).to_pandas().sort_values("valid_from")
    return {
        pd.Timestamp(v).date(): s
        for v, s in zip(rows.valid_from, rows.stage, strict=True)
    }


@pytest.mark.parametrize("rule", ["alive < 0.3", "alive * 2 < 0.6"])
def test_p_alive_rule_matches_the_formula(ws, rule: str) -> None:  # type: ignore[no-untyped-def]
    add_fit(ws)
    model = load_model_text(MODEL.format(rule=rule))
    result = run_model(ws.warehouse, model, as_of=AS_OF)
    assert result.receipt.details["dense"] is ("*" in rule)
    for customer in ORDERS:
        assert stored_starts(ws, customer) == expected_stage_starts(customer), customer
    # Worked by hand for a: x = 1, t_x = 1 week; P < 0.3 once T > 20.505 weeks,
    # i.e. on day 144 after 2024-01-01 (Friday 2024-05-24, week of 20 May).
    assert stored_starts(ws, "a") == {
        date(2024, 1, 1): "active",
        date(2024, 5, 20): "at_risk",
    }
    assert stored_starts(ws, "b") == {date(2024, 1, 1): "active"}


def test_without_a_fit_the_message_says_what_to_run(ws) -> None:  # type: ignore[no-untyped-def]
    model = load_model_text(MODEL.format(rule="alive < 0.3"))
    with pytest.raises(ModelError, match="run `clm clv fit` first"):
        run_model(ws.warehouse, model, as_of=AS_OF)


def test_p_alive_takes_no_arguments() -> None:
    text = MODEL.format(rule="alive < 0.3").replace("p_alive()", "p_alive(event = 'x')")
    with pytest.raises(ModelError, match="takes no arguments"):
        load_model_text(text)


CLV = {"a": 100.0, "b": 10.0, "c": 40.0}


def test_predicted_clv_and_customer_equity_per_stage(ws) -> None:  # type: ignore[no-untyped-def]
    from zoneinfo import ZoneInfo

    from clm.metrics.compute import compute_metrics

    add_fit(ws)
    text = MODEL.format(rule="alive < 0.3") + (
        "metrics:\n"
        "  active: [population, predicted_clv, customer_equity]\n"
        "  at_risk: [population, predicted_clv, customer_equity]\n"
    )
    model = load_model_text(text)
    run_model(ws.warehouse, model, as_of=AS_OF)
    empty = compute_metrics(
        ws.warehouse, model, grain="month", timezone=ZoneInfo("UTC"), store=False
    )
    assert ("no_customer_value", {}) in empty.caveats
    ws.warehouse.append(
        "customer_value",
        pd.DataFrame(
            {
                "customer_id": list(CLV),
                "computed_at": now_utc(),
                "model": "bgnbd",
                "predicted_clv": list(CLV.values()),
            }
        ),
    )
    result = compute_metrics(
        ws.warehouse, model, grain="month", timezone=ZoneInfo("UTC"), store=False
    )
    values = result.values.set_index(["stage", "metric", "period_start"]).value

    # Independently: each customer's stage at each month end from the formula.
    for month_end in (date(2024, 2, 29), date(2024, 6, 30), date(2024, 9, 29)):
        members: dict[str, list[float]] = {"active": [], "at_risk": []}
        for customer in ORDERS:
            starts = expected_stage_starts(customer)
            held = [s for d, s in sorted(starts.items()) if d <= month_end]
            if held:
                members[held[-1]].append(CLV[customer])
        start = month_end.replace(day=1)
        for stage, clvs in members.items():
            equity = values[(stage, "customer_equity", start)]
            assert equity == pytest.approx(sum(clvs)), (stage, month_end)
            mean = values[(stage, "predicted_clv", start)]
            if clvs:
                assert mean == pytest.approx(sum(clvs) / len(clvs))
            else:
                assert pd.isna(mean)


@pytest.mark.parametrize("progression", ["dynamic", "forward_only"])
@pytest.mark.parametrize("rule", ["alive < 0.3", "alive * 2 < 0.6"])
def test_grid_at_the_end_matches_the_formula(ws, rule: str, progression: str) -> None:  # type: ignore[no-untyped-def]
    # The model preview's engine (`lifecycle.standing`) with p_alive(): the stage
    # as of AS_OF from the formula, and under forward_only the furthest one held
    # at any week (at_risk is listed first, so it is the furthest).
    from clm.lifecycle import standing

    add_fit(ws)
    text = MODEL.format(rule=rule).replace(
        "grain: week\n", f"grain: week\nprogression: {progression}\n"
    )
    model = load_model_text(text)
    rows = standing.stages_at(ws.warehouse, model, as_of=AS_OF).to_pylist()
    got = {r["customer_id"]: r["stage"] for r in rows}
    want = {}
    for customer in ORDERS:
        held = list(expected_stage_starts(customer).values())
        if progression == "dynamic":
            want[customer] = held[-1]
        else:
            want[customer] = "at_risk" if "at_risk" in held else "active"
    assert got == want
    assert set(want.values()) == {"active", "at_risk"}  # the case tells them apart
