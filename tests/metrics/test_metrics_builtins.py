"""Built-in metrics on a hand-made history whose every figure was counted by hand.

The events are those of the stage-history suite; the intervals they produce (worked out
there) are, with weeks named by their Monday:
    c1: buyer Jan 1 | active Jan 8–22 | lapsed Jan 29–Feb 5 | buyer Feb 12–26 |
        lapsed Mar 4+
    c2: visitor Mar 18 (its only event, in the last week)
    c3: buyer Jan 15–22 | lapsed Jan 29+
    c4: buyer Jan 8–22  | lapsed Jan 29+
Orders (10.00 each): c1 Jan 3 (buyer), Jan 10 (active), Feb 12 (buyer); c3 Jan 15
(buyer); c4 Jan 14 (buyer).
"""

from __future__ import annotations

import math
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from builders import WEEKLY_MODEL as MODEL
from builders import WEEKLY_ROWS as ROWS
from builders import events
from clm.errors import MetricError
from clm.lifecycle.history import run_model
from clm.lifecycle.model import load_model_text
from clm.metrics.compute import compute_metrics
from clm.metrics.registry import all_metrics, check_call
from clm.warehouse.engine import Warehouse


@pytest.fixture(scope="module")
def weekly():
    wh = Warehouse.duckdb(None)
    wh.append("events", events(ROWS))
    model = load_model_text(MODEL)
    run_model(wh, model, timezone="UTC")
    result = compute_metrics(wh, model, grain="week", timezone=ZoneInfo("UTC"))
    yield wh, model, result
    wh.close()


def series(result, stage: str, metric: str) -> dict[date, float]:
    v = result.values
    rows = v[(v.stage == stage) & (v.metric == metric)]
    return dict(zip(rows.period_start, rows.value, strict=True))


def nonzero(d: dict[date, float]) -> dict[str, float]:
    return {p.isoformat(): x for p, x in d.items() if not math.isnan(x) and x != 0}


def test_population_per_week(weekly):
    _, _, r = weekly
    assert nonzero(series(r, "buyer", "population")) == {
        "2024-01-01": 1,
        "2024-01-08": 1,
        "2024-01-15": 2,
        "2024-01-22": 2,
        "2024-02-12": 1,
        "2024-02-19": 1,
        "2024-02-26": 1,
    }
    assert nonzero(series(r, "active", "population")) == {
        "2024-01-08": 1,
        "2024-01-15": 1,
        "2024-01-22": 1,
    }
    lapsed = nonzero(series(r, "lapsed", "population"))
    assert lapsed["2024-01-29"] == 3
    assert lapsed["2024-02-12"] == 2
    assert lapsed["2024-03-18"] == 3


def test_entered_exited(weekly):
    _, _, r = weekly
    assert nonzero(series(r, "buyer", "entered")) == {
        "2024-01-01": 1,
        "2024-01-08": 1,
        "2024-01-15": 1,
        "2024-02-12": 1,
    }
    # c1 to active on Jan 8; c3 and c4 to lapsed on Jan 29; c1 to lapsed on Mar 4.
    assert nonzero(series(r, "buyer", "exited")) == {
        "2024-01-08": 1,
        "2024-01-29": 2,
        "2024-03-04": 1,
    }
    assert nonzero(series(r, "lapsed", "entered")) == {
        "2024-01-29": 3,
        "2024-03-04": 1,
    }


def test_rates(weekly):
    _, _, r = weekly
    # Week Jan 8: buyers during the week = 1 at the end of Jan 1 + 1 entered (c4); one
    # of them (c1) moved to active → 1/2.
    conv = series(r, "buyer", "conversion_rate_to(active)")
    assert conv[date(2024, 1, 8)] == pytest.approx(0.5)
    assert conv[date(2024, 1, 1)] == 0.0
    # Active during week Jan 29: 1 (c1), who moved to the churned stage lapsed.
    churn = series(r, "active", "churn_rate")
    assert churn[date(2024, 1, 29)] == pytest.approx(1.0)
    assert churn[date(2024, 1, 15)] == 0.0
    # No one was in active in week Mar 4: the rate is undefined, not 0.
    assert math.isnan(churn[date(2024, 3, 4)])
    # c1's stay in active lasted Jan 8 → Jan 29 = 21 days, ending in week Jan 29.
    assert nonzero(series(r, "active", "median_days_in_stage")) == {"2024-01-29": 21.0}


def test_orders_and_revenue(weekly):
    _, _, r = weekly
    assert nonzero(series(r, "buyer", "orders")) == {
        "2024-01-01": 1,
        "2024-01-08": 1,
        "2024-01-15": 1,
        "2024-02-12": 1,
    }
    assert nonzero(series(r, "buyer", "revenue")) == {
        "2024-01-01": 10,
        "2024-01-08": 10,
        "2024-01-15": 10,
        "2024-02-12": 10,
    }
    assert series(r, "buyer", "average_order_value")[date(2024, 2, 12)] == 10.0
    # c1's Feb 12 order is its third: a repeat purchase; c4's Jan 14 order its first.
    rpr = series(r, "buyer", "repeat_purchase_rate")
    assert rpr[date(2024, 2, 12)] == 1.0
    assert rpr[date(2024, 1, 8)] == 0.0
    # Week Jan 8: c1 ordered in active, c4 in buyer → active has half the revenue.
    assert series(r, "active", "revenue")[date(2024, 1, 8)] == 10.0
    assert series(r, "active", "revenue_share")[date(2024, 1, 8)] == pytest.approx(0.5)


def test_change_against_previous_period(weekly):
    _, _, r = weekly
    v = r.values
    row = v[(v.stage == "buyer") & (v.metric == "population")]
    row = row[row.period_start == date(2024, 1, 15)].iloc[0]
    assert (row.previous, row.value) == (1, 2)
    assert row.change == pytest.approx(1.0)


def test_monthly_grain_and_incomplete_last_period(weekly):
    wh, model, _ = weekly
    r = compute_metrics(wh, model, grain="month", timezone=ZoneInfo("UTC"), store=False)
    pop = {
        s: nonzero(series(r, s, "population")) for s in ("buyer", "lapsed", "active")
    }
    # End of January: everyone with an order is lapsed; end of February c1 is a buyer
    # again; end of March (observed until Mar 21) all three are lapsed.
    assert pop["lapsed"] == {"2024-01-01": 3, "2024-02-01": 2, "2024-03-01": 3}
    assert pop["buyer"] == {"2024-02-01": 1}
    assert pop["active"] == {}
    assert (
        "last_period_incomplete",
        {"period_end": "2024-03-21", "grain": "month"},
    ) in (r.caveats)


def test_metric_calls_are_checked():
    stages = ["a", "b"]
    with pytest.raises(MetricError, match=r"unknown metric `revnue`; known: .*revenue"):
        check_call("revnue", (), stages)
    with pytest.raises(MetricError, match=r"takes \(stage\), got 0"):
        check_call("conversion_rate_to", (), stages)
    with pytest.raises(MetricError, match=r"unknown stage `c`; known: a, b"):
        check_call("conversion_rate_to", ("c",), stages)
    for name in (
        "population",
        "entered",
        "exited",
        "conversion_rate_to",
        "median_days_in_stage",
        "revenue",
        "orders",
        "average_order_value",
        "repeat_purchase_rate",
        "churn_rate",
        "revenue_share",
    ):
        assert name in all_metrics()


def test_user_metric_registers_like_a_builtin(weekly):
    from clm.metrics.registry import register

    @register("orders_per_customer", unit="ratio", help="orders per customer in stage")
    def orders_per_customer(ctx, stage):
        return ctx.order_col(stage, "orders") / ctx.col(ctx.population, stage)

    wh, _, _ = weekly
    model = load_model_text(
        MODEL.replace(
            "lapsed: [population, entered]",
            "lapsed: [population, entered]\n  visitor: [orders_per_customer]",
        )
    )
    r = compute_metrics(wh, model, grain="week", timezone=ZoneInfo("UTC"), store=False)
    assert "orders_per_customer" in set(r.values.metric)
