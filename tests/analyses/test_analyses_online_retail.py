"""UCI Online Retail: real, messy data through the summary and the fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.analyses.clv import fit_bgnbd, fit_gammagamma, summary, validate_holdout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lines(shared_data: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        shared_data / "online_retail" / "online_retail.csv.gz",
        usecols=["InvoiceNo", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"],
        dtype={"InvoiceNo": str},
    )
    raw = raw[raw["CustomerID"].notna()]
    return pd.DataFrame(
        {
            "customer_id": raw["CustomerID"].astype(int),
            "timestamp": pd.to_datetime(raw["InvoiceDate"]),
            "amount": raw["Quantity"] * raw["UnitPrice"],
            "invoice": raw["InvoiceNo"],
            "quantity": raw["Quantity"],
            "price": raw["UnitPrice"],
        }
    )


def test_cleaned_data_fit_converges_and_predicts_finitely(lines: pd.DataFrame) -> None:
    clean = lines[
        ~lines["invoice"].str.startswith("C")
        & (lines["quantity"] > 0)
        & (lines["price"] > 0)
    ]
    frame = summary(
        clean,
        observation_period_end="2011-12-09",
        calibration_period_end="2011-06-30",
    )
    first = clean.groupby("customer_id")["timestamp"].min()
    assert len(frame) == int((first < pd.Timestamp("2011-07-01")).sum())
    model = fit_bgnbd(frame["frequency"], frame["recency"], frame["T"])
    assert model.result is not None
    assert model.result.converged, model.result.message
    table = validate_holdout(model, frame)
    assert np.isfinite(table.to_numpy()).all()
    alive = model.p_alive(frame["frequency"], frame["recency"], frame["T"])
    assert ((alive >= 0) & (alive <= 1)).all()


def test_raw_data_with_returns_fits_and_says_what_it_left_out(
    lines: pd.DataFrame,
) -> None:
    # Cancellations and returns stay in: some customers' repeat spend is <= 0.
    frame = summary(lines, observation_period_end="2011-12-09")
    assert len(frame) == 4372  # every customer with an ID (README)
    bad = int(((frame["frequency"] > 0) & (frame["monetary_value"] <= 0)).sum())
    assert bad > 0
    spend = fit_gammagamma(frame["frequency"], frame["monetary_value"])
    assert spend.result is not None
    assert spend.result.converged or spend.result.message
    assert f"{bad} repeat customer(s) with monetary_value <= 0" in spend.result.message
    model = fit_bgnbd(frame["frequency"], frame["recency"], frame["T"])
    assert model.result is not None and np.isfinite(model.result.log_likelihood)
