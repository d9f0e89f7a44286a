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


def _customer_codes(ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes 0..n-1 in sorted customer order, and the customers (codes < 0: no id)."""
    values = ids.to_numpy()
    # Dense integer ids (the usual warehouse keys) need no hashing: a presence
    # table over their range gives sorted codes in two linear passes.
    if values.dtype.kind in "iu" and len(values):
        low, high = int(values.min()), int(values.max())
        if high - low <= 4 * len(values) + 1024:
            offset = (values - low).astype(np.int64)
            seen = np.bincount(offset, minlength=high - low + 1) > 0
            rank = np.cumsum(seen) - 1
            customers = pd.Index(np.flatnonzero(seen) + low, dtype=values.dtype)
            return rank[offset], customers
    codes, uniques = pd.factorize(ids, sort=True)
    return codes, pd.Index(uniques)


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
    codes, customers = _customer_codes(transactions["customer_id"])
    days = _day_numbers(transactions["timestamp"])
    amounts = transactions["amount"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(amounts).any():
        raise ImportFormatError(
            f"amount: {int(np.isnan(amounts).sum())} missing value(s); give every "
            "transaction an amount (0 where there was none)."
        )
    if (codes < 0).any():
        raise ImportFormatError(
            f"customer_id: {int((codes < 0).sum())} transaction(s) have no customer "
            "id; drop them (or resolve them to a customer) before the summary."
        )
    keep = days <= end
    codes = codes.astype(np.int64)
    if not keep.all():  # copying a million rows costs more than this check
        codes, days, amounts = codes[keep], days[keep], amounts[keep]

    return _per_customer(codes, days, amounts, customers, cal_end, end, unit)


def _per_customer(
    code: np.ndarray,
    day: np.ndarray,
    amount: np.ndarray,
    customers: pd.Index,
    cal_end: int,
    end: int,
    unit: float,
) -> pd.DataFrame:
    """Reduce transactions (customer code, day number, amount) to one row each.

    Only counting distinct purchase days needs a sort (of one int64 key); amounts
    and first/last days come from scatter reductions (bincount, minimum.at), which
    touch each row once and are several times faster than a sort with gathers.
    """
    n = len(customers)
    in_cal = day <= cal_end
    if in_cal.all():
        c_code, c_day, c_amount = code, day, amount
    else:
        c_code, c_day, c_amount = code[in_cal], day[in_cal], amount[in_cal]

    # First and last purchase day per customer in the calibration period.
    never = np.iinfo(np.int64).max
    first = np.full(n, never, dtype=np.int64)
    np.minimum.at(first, c_code, c_day)
    last = np.full(n, -never, dtype=np.int64)
    np.maximum.at(last, c_code, c_day)
    present = first != never
    first[~present], last[~present] = 0, 0

    # Distinct purchase days; the first day's amount (all its purchases summed)
    # leaves the mean, as the first purchase is not a repeat.
    days_bought = _distinct_days(c_code, c_day, n)
    total = np.bincount(c_code, weights=c_amount, minlength=n)
    on_first = c_day == first[c_code]
    first_amount = np.bincount(
        c_code[on_first], weights=c_amount[on_first], minlength=n
    )
    frequency = np.maximum(days_bought - 1, 0)
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
        h_code, h_day, h_amount = code[~in_cal], day[~in_cal], amount[~in_cal]
        h_days = _distinct_days(h_code, h_day, n)
        h_total = np.bincount(h_code, weights=h_amount, minlength=n)
        out["frequency_holdout"] = h_days.astype(np.float64)
        out["monetary_value_holdout"] = np.divide(
            h_total, h_days, out=np.zeros(n), where=h_days > 0
        )
        out["duration_holdout"] = (end - cal_end) / unit
    return out[present]


def _distinct_days(code: np.ndarray, day: np.ndarray, n: int) -> np.ndarray:
    """Number of distinct purchase days per customer code: one sort of code × span +
    day; a key that differs from its predecessor starts a new customer-day."""
    if len(code) == 0:
        return np.zeros(n, dtype=np.int64)
    low = int(day.min())
    span = int(day.max()) - low + 1
    key = np.sort(code * span + (day - low))
    new_day = np.r_[True, key[1:] != key[:-1]]
    return np.bincount(key[new_day] // span, minlength=n)
