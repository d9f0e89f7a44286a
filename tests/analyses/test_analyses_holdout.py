"""Holdout validation on CDNOW: actual holdout purchases per frequency bucket."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.analyses.clv import BGNBD, holdout_chart_svg, summary, validate_holdout


@pytest.fixture(scope="module")
def transactions(shared_data: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        shared_data / "cdnow" / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "cds", "amount"],
    )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
            "amount": raw["amount"],
        }
    )


def test_buckets_match_a_pandas_count_of_the_raw_data(
    transactions: pd.DataFrame,
) -> None:
    frame = summary(
        transactions,
        observation_period_end="1998-06-30",
        calibration_period_end="1997-09-30",
    )
    model = BGNBD(r=0.243, alpha=4.414, a=0.793, b=2.426)
    table = validate_holdout(model, frame)

    # Independently: distinct purchase days per customer before and after the split.
    days = transactions.assign(day=transactions["timestamp"].dt.normalize())
    days = days.drop_duplicates(["customer_id", "day"])
    split = pd.Timestamp("1997-09-30")
    calibration = days[days["day"] <= split].groupby("customer_id").size() - 1
    holdout = days[days["day"] > split].groupby("customer_id").size()
    holdout = holdout.reindex(calibration.index, fill_value=0)
    bucket = calibration.clip(upper=7)
    expected = holdout.groupby(bucket).mean()

    assert list(table.index) == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    np.testing.assert_allclose(table["actual"].to_numpy(), expected.to_numpy())
    assert table["customers"].tolist() == bucket.value_counts().sort_index().tolist()
    assert (table["actual"] * table["customers"]).sum() == pytest.approx(1882)
    # The model tracks the holdout (FHL 2005, Figure 4): within 30 % in every bucket.
    ratio = table["predicted"] / table["actual"]
    assert ((ratio > 0.7) & (ratio < 1.3)).all(), table


def test_chart_is_valid_svg_with_both_lines() -> None:
    table = pd.DataFrame(
        {"customers": [3, 2], "actual": [0.5, 2.0], "predicted": [0.4, 2.5]},
        index=["0", "1+"],
    )
    svg = holdout_chart_svg(table, title="CDNOW <holdout>")
    root = ET.fromstring(svg)
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert {line.get("class") for line in lines} == {"actual", "predicted"}
    assert "CDNOW &lt;holdout&gt;" in svg
    # The highest value (2.5) sits at the top of the plot area (y = 36).
    predicted = next(line for line in lines if line.get("class") == "predicted")
    assert predicted.get("points", "").split()[-1].endswith(",36.0")


def test_missing_holdout_columns_say_how_to_get_them(
    transactions: pd.DataFrame,
) -> None:
    frame = summary(transactions, observation_period_end="1997-09-30")
    with pytest.raises(ValueError, match="calibration_period_end"):
        validate_holdout(BGNBD(1, 1, 1, 1), frame)
