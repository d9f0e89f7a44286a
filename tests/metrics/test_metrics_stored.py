"""Stored metric values are reused only for the same question on the same data, and
then give exactly the numbers of a fresh computation.

The history is the hand-checked one of test_metrics_builtins (weeks named by their
Monday): buyer population 1, 1, 2, 2 in the weeks of Jan 1, 8, 15 and 22, so the
stored buyer population of the week of Jan 15 is 2 with previous 1 (change +100%)
and that of Jan 8 is 1 with previous 1 (change 0).
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from builders import WEEKLY_MODEL as MODEL
from builders import WEEKLY_ROWS as ROWS
from builders import events
from clm.lifecycle.history import run_model
from clm.lifecycle.model import load_model_text
from clm.metrics.compute import compute_metrics, stored_metrics
from clm.warehouse.engine import Warehouse

UTC = ZoneInfo("UTC")


@pytest.fixture
def ran():
    wh = Warehouse.duckdb(None)
    wh.append("events", events(ROWS))
    model = load_model_text(MODEL)
    run_model(wh, model, timezone="UTC")
    yield wh, model
    wh.close()


def fresh(wh, model, grain, stage=None):
    return compute_metrics(
        wh, model, grain=grain, timezone=UTC, stage=stage, store=False
    )


@pytest.mark.parametrize("grain", ["week", "month", "day"])
def test_stored_equals_fresh(ran, grain):
    wh, model = ran
    compute_metrics(wh, model, grain=grain, timezone=UTC)
    got = stored_metrics(wh, model, grain=grain, timezone=UTC)
    assert got is not None and got.context is None
    want = fresh(wh, model, grain)
    pd.testing.assert_frame_equal(got.values, want.values)
    assert got.caveats == want.caveats


def test_stored_figures_by_hand(ran):
    wh, model = ran
    compute_metrics(wh, model, grain="week", timezone=UTC)
    got = stored_metrics(wh, model, grain="week", timezone=UTC)
    assert got is not None
    v = got.values
    pop = v[(v.stage == "buyer") & (v.metric == "population")].set_index("period_start")
    assert pop.loc[date(2024, 1, 15), ["value", "previous", "change"]].tolist() == [
        2.0,
        1.0,
        1.0,
    ]
    assert pop.loc[date(2024, 1, 8), ["value", "previous", "change"]].tolist() == [
        1.0,
        1.0,
        0.0,
    ]


def test_one_stage_is_read_from_the_stored_set(ran):
    wh, model = ran
    compute_metrics(wh, model, grain="week", timezone=UTC)
    got = stored_metrics(wh, model, grain="week", timezone=UTC, stage="active")
    assert got is not None
    want = fresh(wh, model, "week", stage="active")
    pd.testing.assert_frame_equal(got.values, want.values)


def test_other_questions_compute_afresh(ran):
    wh, model = ran
    compute_metrics(wh, model, grain="week", timezone=UTC)
    # Another grain or time zone was never stored.
    assert stored_metrics(wh, model, grain="month", timezone=UTC) is None
    berlin = ZoneInfo("Europe/Berlin")
    assert stored_metrics(wh, model, grain="week", timezone=berlin) is None
    # A computation of one stage stores nothing.
    compute_metrics(wh, model, grain="month", timezone=UTC, stage="buyer")
    assert stored_metrics(wh, model, grain="month", timezone=UTC) is None
    # Another model text (a metric less) than the one stored.
    fewer = load_model_text(MODEL.replace(", revenue_share]", "]"))
    assert stored_metrics(wh, fewer, grain="week", timezone=UTC) is None


def test_new_data_computes_afresh(ran):
    wh, model = ran
    compute_metrics(wh, model, grain="week", timezone=UTC)
    assert stored_metrics(wh, model, grain="week", timezone=UTC) is not None
    # An event added without a run (as the collector does) changes the orders.
    wh.append("events", events([("c2", "order_completed", "2024-03-21 10:00")]))
    assert stored_metrics(wh, model, grain="week", timezone=UTC) is None
    compute_metrics(wh, model, grain="week", timezone=UTC)
    assert stored_metrics(wh, model, grain="week", timezone=UTC) is not None
    # A new run of the model (a new run id) too.
    run_model(wh, model, timezone="UTC")
    assert stored_metrics(wh, model, grain="week", timezone=UTC) is None


def test_run_keys_and_shared_orders_give_the_same_numbers(ran):
    """Inside a run both grains share one staged-orders table; the numbers are
    those computed outside a run, and the table is gone once released."""
    from clm.identity.resolve import run_customer_keys
    from clm.metrics.context import _STAGED, release_staged_orders

    wh, model = ran
    want = {g: fresh(wh, model, g).values for g in ("week", "month")}
    with run_customer_keys(wh):
        got = {g: fresh(wh, model, g).values for g in ("week", "month")}
        names = [name for _, name in _STAGED.values()]
        assert len(names) == 1
        release_staged_orders(wh)
    assert not _STAGED
    assert names[0] not in wh.con.list_tables()
    for g in want:
        pd.testing.assert_frame_equal(got[g], want[g])
