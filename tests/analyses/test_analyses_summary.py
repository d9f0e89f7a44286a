"""The RFM summary: the published CDNOW summary and the conventions, by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.analyses.clv import summary
from clm.errors import ImportFormatError


def read_cdnow_sample(shared_data: Path) -> pd.DataFrame:
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


@pytest.fixture(scope="module")
def cdnow(shared_data: Path) -> pd.DataFrame:
    return read_cdnow_sample(shared_data)


def test_cdnow_summary_equals_the_published_file(
    cdnow: pd.DataFrame, shared_data: Path
) -> None:
    published = pd.read_csv(
        shared_data / "cdnow" / "cdnow_customers_summary_with_transactions.csv",
        index_col="ID",
    )
    got = summary(
        cdnow,
        observation_period_end="1998-06-30",
        calibration_period_end="1997-09-30",
    )
    assert list(got.index) == list(published.index)
    # The published file prints t_x and T with two decimals.
    np.testing.assert_array_equal(got["frequency"], published["x"])
    np.testing.assert_array_equal(got["recency"].round(2), published["t_x"])
    np.testing.assert_array_equal(got["T"].round(2), published["T"])
    assert np.abs(got["monetary_value"] - published["zbar"]).max() <= 0.005 + 1e-9
    # README: 946 repeat customers, sum of x 2,457, 1,882 holdout transactions.
    assert (got["frequency"] > 0).sum() == 946
    assert got["frequency"].sum() == 2457
    assert got["frequency_holdout"].sum() == 1882
    assert (got["duration_holdout"] == 39).all()


def test_same_day_purchases_are_one_transaction_and_the_first_does_not_count() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "a", "b", "c", "a"],
            "timestamp": pd.to_datetime(
                [
                    "2020-01-01 10:00",
                    "2020-01-01 15:00",  # same day as the first purchase
                    "2020-01-08 09:00",
                    "2020-01-15 08:00",
                    "2020-01-15 23:59",  # same day: summed with the one above
                    "2020-01-20 12:00",
                    "2020-02-03 12:00",  # after the calibration end
                    "2020-03-01 12:00",  # after the observation end: ignored
                ]
            ),
            "amount": [10.0, 5.0, 20.0, 30.0, 4.0, 7.0, 9.0, 1000.0],
        }
    )
    days = summary(tx, observation_period_end="2020-01-29", time_unit="D")
    assert days.loc["a"].to_dict() == {
        "frequency": 2.0,
        "recency": 14.0,
        "T": 28.0,
        "monetary_value": (20 + 34) / 2,
    }
    assert days.loc["b"].to_dict() == {
        "frequency": 0.0,
        "recency": 0.0,
        "T": 9.0,
        "monetary_value": 0.0,
    }
    assert "c" not in days.index

    weeks = summary(
        tx,
        observation_period_end="2020-02-05",
        calibration_period_end="2020-01-29",
        time_unit="W",
    )
    assert list(weeks.index) == ["a", "b"]  # c's first purchase is in the holdout
    assert weeks.loc["a", "recency"] == 2.0
    assert weeks.loc["a", "T"] == 4.0
    assert weeks.loc["b", "frequency_holdout"] == 0
    assert weeks.loc["a", "duration_holdout"] == 1.0


def test_holdout_counts_days_and_averages_their_values() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 1],
            "timestamp": pd.to_datetime(
                ["2021-05-01", "2021-06-02 08:00", "2021-06-02 18:00", "2021-06-09"],
                format="ISO8601",
            ),
            "amount": [1.0, 2.0, 3.0, 7.0],
        }
    )
    got = summary(
        tx,
        observation_period_end="2021-06-30",
        calibration_period_end="2021-05-31",
        time_unit="D",
    )
    assert got.loc[1, "frequency"] == 0
    assert got.loc[1, "frequency_holdout"] == 2
    assert got.loc[1, "monetary_value_holdout"] == pytest.approx((5 + 7) / 2)
    assert got.loc[1, "duration_holdout"] == 30


def test_time_zone_aware_timestamps_use_the_local_calendar_day() -> None:
    stamps = pd.to_datetime(["2022-03-01 23:30", "2022-03-02 00:30"]).tz_localize(
        "Europe/Berlin"
    )
    tx = pd.DataFrame({"customer_id": [7, 7], "timestamp": stamps, "amount": [1, 2]})
    got = summary(tx, observation_period_end="2022-03-10", time_unit="D")
    assert got.loc[7, "frequency"] == 1  # two local days, not one UTC day
    assert got.loc[7, "recency"] == 1


def test_missing_column_message_names_it_and_lists_what_is_there() -> None:
    tx = pd.DataFrame({"customer": [1], "timestamp": ["2020-01-01"], "amount": [1.0]})
    with pytest.raises(
        ImportFormatError, match=r"customer_id.*found: amount, customer"
    ):
        summary(tx, observation_period_end="2020-02-01")


def test_bad_time_unit_and_calibration_after_end_are_refused() -> None:
    tx = pd.DataFrame(
        {"customer_id": [1], "timestamp": pd.to_datetime(["2020-01-01"]), "amount": [1]}
    )
    with pytest.raises(ValueError, match=r"'M'.*valid: D"):
        summary(tx, observation_period_end="2020-02-01", time_unit="M")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibration_period_end"):
        summary(
            tx,
            observation_period_end="2020-02-01",
            calibration_period_end="2020-03-01",
        )


def test_empty_transactions_give_an_empty_summary() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=int),
            "timestamp": pd.to_datetime(pd.Series([], dtype=str)),
            "amount": pd.Series([], dtype=float),
        }
    )
    got = summary(tx, observation_period_end="2020-01-01")
    assert len(got) == 0
    assert list(got.columns) == ["frequency", "recency", "T", "monetary_value"]


def test_sparse_integer_ids_and_strings_give_the_same_summary() -> None:
    stamps = pd.to_datetime(["2020-01-01", "2020-01-05", "2020-01-02", "2020-01-09"])
    amounts = [1.0, 2.0, 3.0, 4.0]
    numbers = pd.DataFrame(
        {"customer_id": [10**12, 10**12, 3, 3], "timestamp": stamps, "amount": amounts}
    )
    words = numbers.assign(customer_id=["z", "z", "a", "a"])
    by_number = summary(numbers, observation_period_end="2020-01-10", time_unit="D")
    by_word = summary(words, observation_period_end="2020-01-10", time_unit="D")
    assert list(by_number.index) == [3, 10**12]  # sorted ids
    np.testing.assert_array_equal(by_number.to_numpy(), by_word.to_numpy())
    assert by_number.loc[3].tolist() == [1.0, 7.0, 8.0, 4.0]


def test_transactions_without_a_customer_are_refused_with_a_count() -> None:
    tx = pd.DataFrame(
        {
            "customer_id": ["a", None, None],
            "timestamp": pd.to_datetime(["2020-01-01"] * 3),
            "amount": [1.0, 2.0, 3.0],
        }
    )
    with pytest.raises(ImportFormatError, match="2 transaction"):
        summary(tx, observation_period_end="2020-01-10")
