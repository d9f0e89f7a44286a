"""The customer-level RFM summary every CLV model reads, in the established terms.

From a transactions frame (customer_id, timestamp, amount) per customer:

* frequency: the number of *repeat* purchase days in the calibration period. Several
  purchases by one customer on one calendar day count as one transaction (their amounts
  summed), and the first purchase does not count (Fader, Hardie & Lee 2005, section 2;
  this is how the published CDNOW summary was built).
* recency: time from the first to the last purchase day (0 without a repeat).
* T: time from the first purchase day to the end of the calibration period.
* monetary_value: the mean of the repeat-day amounts, the first purchase excluded;
  0 when frequency is 0.
* with a `calibration_period_end`: frequency_holdout (purchase days after the
  calibration end up to observation_period_end), monetary_value_holdout (their mean,
  0 when none) and duration_holdout (the holdout length).

Times are calendar days (timestamps are cut to their date, in their own time zone),
expressed in days (`time_unit="D"`) or weeks (`"W"`, days / 7). Customers whose first
purchase falls after the calibration end are not in the summary. The work is a sort
and segment reductions over integer codes: no per-customer Python loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from clm.errors import ImportFormatError, known

TimeUnit = Literal["D", "W"]
DAYS_PER_UNIT: dict[str, float] = {"D": 1.0, "W": 7.0}
REQUIRED = ("customer_id", "timestamp", "amount")


def _day_numbers(timestamps: pd.Series) -> np.ndarray:
    """Whole days since the epoch, from the wall-clock date of each timestamp."""
    values = timestamps
    if not pd.api.types.is_datetime64_any_dtype(values):
        try:
            values = pd.to_datetime(values)
        except (ValueError, TypeError) as exc:
            raise ImportFormatError(
                f"timestamp: cannot read {timestamps.iloc[0]!r} as a date-time "
                f"({exc}); give datetime values or ISO 8601 text."
            ) from exc
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_localize(None)  # the customer's calendar day counts
    return values.to_numpy().astype("datetime64[D]").astype(np.int64)


def _day_number(moment: object, name: str) -> int:
    stamp = pd.Timestamp(moment)  # type: ignore[arg-type]
    if stamp is pd.NaT:
        raise ImportFormatError(f"{name}: {moment!r} is not a date; give a date.")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_localize(None)
    return int(np.datetime64(stamp.date(), "D").astype(np.int64))


def summary(
    transactions: pd.DataFrame,
    *,
    observation_period_end: object,
    calibration_period_end: object | None = None,
    time_unit: TimeUnit = "W",
) -> pd.DataFrame:
    """The RFM summary of `transactions` (see the module docstring for the terms).

    Returns a frame indexed by customer_id with frequency, recency, T and
    monetary_value, plus frequency_holdout, monetary_value_holdout and
    duration_holdout when `calibration_period_end` is given.
    """
    missing = [c for c in REQUIRED if c not in transactions.columns]
    if missing:
        raise ImportFormatError(
            f"transactions: missing column(s) {', '.join(missing)}; the summary needs "
            f"{', '.join(REQUIRED)} (found: {known(map(str, transactions.columns))}). "
            "Rename the columns before calling summary()."
        )
    if time_unit not in DAYS_PER_UNIT:
        raise ValueError(
            f"time_unit: {time_unit!r} is not a time unit; valid: D (days), "
            "W (weeks = days / 7)."
        )
    unit = DAYS_PER_UNIT[time_unit]
    end = _day_number(observation_period_end, "observation_period_end")
    cal_end = (
        end
        if calibration_period_end is None
        else _day_number(calibration_period_end, "calibration_period_end")
    )
    if cal_end > end:
        raise ValueError(
            f"calibration_period_end: {calibration_period_end!r} is after "
            f"observation_period_end {observation_period_end!r}; the calibration "
            "period must end on or before the observation end."
        )

    # Integer codes for customers and days; rows after the observation end go.
    codes, customers = pd.factorize(transactions["customer_id"], sort=True)
    days = _day_numbers(transactions["timestamp"])
    amounts = transactions["amount"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(amounts).any():
        raise ImportFormatError(
            f"amount: {int(np.isnan(amounts).sum())} missing value(s); give every "
            "transaction an amount (0 where there was none)."
        )
    keep = (days <= end) & (codes >= 0)
    codes, days, amounts = codes[keep].astype(np.int64), days[keep], amounts[keep]

    # One sort by (customer, day); equal neighbours are the same customer-day, so one
    # reduceat sums same-day purchases into one transaction.
    first_day = days.min() if len(days) else 0
    span = int(days.max() - first_day + 1) if len(days) else 1
    key = codes * span + (days - first_day)
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[len(key) > 0, key[1:] != key[:-1]])
    day_code = key[starts] // span
    day = key[starts] % span + first_day
    day_amount = np.add.reduceat(amounts[order], starts) if len(starts) else amounts[:0]
    return _per_customer(day_code, day, day_amount, customers, cal_end, end, unit)


def _per_customer(
    code: np.ndarray,
    day: np.ndarray,
    amount: np.ndarray,
    customers: pd.Index,
    cal_end: int,
    end: int,
    unit: float,
) -> pd.DataFrame:
    """Reduce sorted customer-days to one row per customer."""
    n = len(customers)
    in_cal = day <= cal_end

    # Calibration: first and last day and counts per customer; code is sorted.
    c_code, c_day, c_amount = code[in_cal], day[in_cal], amount[in_cal]
    counts = np.bincount(c_code, minlength=n)
    present = counts > 0
    bounds = np.cumsum(counts)
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    first[present] = c_day[bounds[present] - counts[present]]
    last[present] = c_day[bounds[present] - 1]
    total = np.bincount(c_code, weights=c_amount, minlength=n)
    first_amount = np.zeros(n)
    first_amount[present] = c_amount[bounds[present] - counts[present]]

    frequency = np.maximum(counts - 1, 0)
    repeat_total = total - first_amount
    monetary = np.divide(repeat_total, frequency, out=np.zeros(n), where=frequency > 0)
    out = pd.DataFrame(
        {
            "frequency": frequency.astype(np.float64),
            "recency": (last - first) / unit,
            "T": (cal_end - first) / unit,
            "monetary_value": monetary,
        },
        index=pd.Index(customers, name="customer_id"),
    )

    if cal_end < end:
        h_code, h_amount = code[~in_cal], amount[~in_cal]
        h_counts = np.bincount(h_code, minlength=n)
        h_total = np.bincount(h_code, weights=h_amount, minlength=n)
        out["frequency_holdout"] = h_counts.astype(np.float64)
        out["monetary_value_holdout"] = np.divide(
            h_total, h_counts, out=np.zeros(n), where=h_counts > 0
        )
        out["duration_holdout"] = (end - cal_end) / unit
    return out[present]
