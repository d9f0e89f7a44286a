"""Customer value in the warehouse: RFM, CLV fits and per-customer predictions.

This is the bridge between the modelling core (`clm.analyses.clv`, `clm.analyses.rfm`)
and the workspace. It reads the orders of resolved customers (`customer_events`,
`event = 'order_completed'`), builds the RFM summary in weeks, fits the models and
writes the results to two tables:

* `value_fits`: one row per fitted model (parameters, log-likelihood, converged,
  message), newest last; stage rules (`p_alive()`) read the latest converged BG/NBD.
* `customer_value`: one row per customer and purchase model with frequency, recency,
  T, monetary_value, P(alive), expected purchases over the horizon, expected spend,
  predicted CLV, the RFM scores and segment. A new prediction replaces the old rows.

Choices where the issue is silent (also in docs/clv.md):

* Days are local days of the workspace time zone; several orders of a customer on one
  day are one transaction (the CDNOW convention of the published summaries).
* Refunds (`order_refunded`) are not purchases: they neither add a purchase day nor
  change monetary_value. Orders with a NULL revenue count with amount 0.
* The observation end is the last order's day, or `as_of` (like `clm run --as-of`).
* Defaults: horizon 12 months, discount rate 1 % a month, margin 1.0 (the CLV is then
  revenue, not profit; give the margin to get profit).
* Spend fallback: when Gamma-Gamma cannot be used (no repeat buyer with a positive
  mean spend, a fit that did not converge, or q <= 1 so that the model mean is
  infinite), every customer's expected spend is the mean spend per purchase day over
  all customers; the fit row and the result say so in `notes`.
* A purchase-model fit that did not converge is stored (with converged = false) but
  never used: predictions refuse it with a `ConvergenceError`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

import ibis
import numpy as np
import pandas as pd

from clm.analyses.clv import (
    BGNBD,
    FitResult,
    GammaGamma,
    ParetoNBD,
    clv,
    fit_bgnbd,
    fit_gammagamma,
    fit_paretonbd,
    holdout_chart_svg,
    summary,
    validate_holdout,
)
from clm.analyses.clv.clv import MONTH_IN_WEEKS, PurchaseModel
from clm.analyses.rfm import DEFAULT_SEGMENTS, rfm_scores, rfm_segments
from clm.errors import ConfigError, ConvergenceError, NotFoundError, known
from clm.identity.resolve import customer_events
from clm.warehouse.engine import Warehouse, now_utc

log = logging.getLogger("clm.analyses")

PURCHASE_MODELS = ("bgnbd", "paretonbd")
MODEL_LABELS = {
    "bgnbd": "BG/NBD",
    "paretonbd": "Pareto/NBD",
    "gammagamma": "Gamma-Gamma",
}
TIME_UNIT: Literal["W"] = (
    "W"  # summaries and fits in weeks (days / 7), as in FHL (2005)
)
DEFAULT_HORIZON_MONTHS = 12
DEFAULT_DISCOUNT_RATE = 0.01  # per month
DEFAULT_MARGIN = 1.0


@dataclass
class ValueOptions:
    """How predictions are made; every field has a documented default."""

    model: str = "bgnbd"
    horizon_months: int = DEFAULT_HORIZON_MONTHS
    discount_rate: float = DEFAULT_DISCOUNT_RATE
    margin: float = DEFAULT_MARGIN

    def check(self) -> None:
        if self.model not in PURCHASE_MODELS:
            raise ConfigError(
                f"model: {self.model!r} is not a purchase model; valid: "
                f"{known(PURCHASE_MODELS)}. Use bgnbd unless you need Pareto/NBD."
            )
        if self.horizon_months < 1:
            raise ConfigError(
                f"horizon: {self.horizon_months!r} months; give a whole number >= 1."
            )
        if not 0 <= self.discount_rate < 1:
            raise ConfigError(
                f"discount rate: {self.discount_rate!r} is per month and must be in "
                "[0, 1), e.g. 0.01 for 1 % a month."
            )
        if not 0 <= self.margin <= 1:
            raise ConfigError(
                f"margin: {self.margin!r} is the profit share of revenue and must be "
                "in [0, 1]; 1 gives revenue CLV."
            )


@dataclass
class ValueFit:
    """Fitted purchase and spend models over one observation period."""

    observation_period_end: date
    summary: pd.DataFrame  # indexed by customer_id
    purchases: FitResult
    purchase_model: PurchaseModel
    spend: FitResult | None
    spend_model: GammaGamma | None
    fallback_spend: float  # mean spend per purchase day, for the fallback
    model: str = "bgnbd"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "observation_period_end": self.observation_period_end.isoformat(),
            "model": self.model,
            "customers": len(self.summary),
            "repeat_customers": int((self.summary["frequency"] > 0).sum()),
            "time_unit": "weeks",
            "purchases": self.purchases.to_dict(),
            "spend": None if self.spend is None else self.spend.to_dict(),
            "fallback_spend": self.fallback_spend,
            "notes": list(self.notes),
        }


# -- reading ---------------------------------------------------------------------------


def transactions(wh: Warehouse, tz: ZoneInfo) -> pd.DataFrame:
    """Orders of resolved customers: customer_id, timestamp (local), amount."""
    raw = wh.table("events")
    ev = customer_events(wh, raw.filter(raw.event == "order_completed"))
    frame = ev.select(
        "customer_id", "timestamp", amount=ev.revenue.fill_null(0.0)
    ).to_pandas()
    if frame.empty:
        raise NotFoundError(
            "no orders in the warehouse (no `order_completed` event with a customer); "
            "import them first with `clm import transactions FILE`."
        )
    # Stored timestamps are UTC; a purchase day is a day of the reporting zone.
    stamps = pd.to_datetime(frame["timestamp"])
    frame["timestamp"] = stamps.dt.tz_localize("UTC").dt.tz_convert(tz)
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    return frame


def observation_end(frame: pd.DataFrame, as_of: date | None) -> date:
    """`as_of`, else the local day of the last order."""
    first = pd.Timestamp(frame["timestamp"].min()).date()
    if as_of is None:
        return cast(date, pd.Timestamp(frame["timestamp"].max()).date())
    if as_of < first:
        raise ConfigError(
            f"--as-of: {as_of.isoformat()} is before the first order "
            f"({first.isoformat()}); give a later day."
        )
    return as_of


def rfm_summary(
    wh: Warehouse,
    tz: ZoneInfo,
    *,
    as_of: date | None = None,
    calibration_end: date | None = None,
) -> pd.DataFrame:
    """The RFM summary (weeks) of every customer with an order up to the end."""
    frame = transactions(wh, tz)
    end = observation_end(frame, as_of)
    if calibration_end is not None and calibration_end >= end:
        raise ConfigError(
            f"--calibration-end: {calibration_end.isoformat()} is not before the "
            f"observation end {end.isoformat()}; the holdout period would be empty. "
            "Give an earlier day."
        )
    out = summary(
        frame,
        observation_period_end=end,
        calibration_period_end=calibration_end,
        time_unit=TIME_UNIT,
    )
    out.attrs["observation_period_end"] = end
    out.attrs["spend_per_day"] = _spend_per_day(frame, end)
    return out


def _spend_per_day(frame: pd.DataFrame, end: date) -> float:
    """Mean spend per customer purchase day up to `end`: the spend fallback."""
    kept = frame[frame["timestamp"] < pd.Timestamp(end) + pd.Timedelta(days=1)]
    per_day = kept.groupby(["customer_id", kept["timestamp"].dt.date])["amount"].sum()
    return float(per_day.mean()) if len(per_day) else 0.0


# -- RFM -------------------------------------------------------------------------------


def rfm_table(summ: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-customer scores and segments, and the segment table.

    The segment table has one row per segment of the default table (in its order):
    customers, share, mean recency (weeks since the last purchase), frequency and
    monetary_value.
    """
    scores = rfm_scores(summ)
    scores["segment"] = rfm_segments(scores)
    joined = summ.join(scores)
    joined["weeks_since_last"] = joined["T"] - joined["recency"]
    grouped = joined.groupby("segment", observed=False)
    table = pd.DataFrame(
        {
            "customers": grouped.size(),
            "recency": grouped["weeks_since_last"].mean(),
            "frequency": grouped["frequency"].mean(),
            "monetary_value": grouped["monetary_value"].mean(),
        }
    )
    table.insert(1, "share", table["customers"] / max(len(joined), 1))
    order = list(dict.fromkeys(rule.name for rule in DEFAULT_SEGMENTS))
    table = table.reindex(order)
    table.index.name = "segment"
    return scores, table


# -- fitting ---------------------------------------------------------------------------


def fit_value(summ: pd.DataFrame, model: str = "bgnbd") -> ValueFit:
    """Fit the purchase model and Gamma-Gamma on a summary from `rfm_summary`."""
    ValueOptions(model=model).check()
    x, t_x, t = (summ[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    purchase_model: BGNBD | ParetoNBD
    if model == "bgnbd":
        purchase_model = fit_bgnbd(x, t_x, t)
    else:
        purchase_model = fit_paretonbd(x, t_x, t)
    assert purchase_model.result is not None
    notes: list[str] = []

    spend_model: GammaGamma | None = None
    spend_result: FitResult | None = None
    try:
        spend_model = fit_gammagamma(x, summ["monetary_value"].to_numpy(float))
        spend_result = spend_model.result
        if not spend_model.result or not spend_model.result.converged:
            notes.append("Gamma-Gamma did not converge: spend fallback used")
            spend_model = None
        elif spend_model.q <= 1:
            notes.append(
                f"Gamma-Gamma q = {spend_model.q:.4g} <= 1 (infinite model mean): "
                "spend fallback used"
            )
            spend_model = None
    except ValueError as exc:
        notes.append(f"Gamma-Gamma not fitted ({exc}): spend fallback used")
    if spend_model is None:
        notes.append(
            "expected spend = mean spend per purchase day over all customers "
            f"({float(summ.attrs.get('spend_per_day', 0.0)):.2f})"
        )
    return ValueFit(
        observation_period_end=summ.attrs["observation_period_end"],
        summary=summ,
        purchases=purchase_model.result,
        purchase_model=purchase_model,
        spend=spend_result,
        spend_model=spend_model,
        fallback_spend=float(summ.attrs.get("spend_per_day", 0.0)),
        model=model,
        notes=notes,
    )


def store_fit(
    wh: Warehouse,
    fit: ValueFit,
    options: ValueOptions | None = None,
    calibration_end: date | None = None,
) -> None:
    """Append the fit's models to `value_fits`."""
    now = now_utc()
    opts = json.dumps(
        {**(options.__dict__ if options else {}), "notes": fit.notes}, default=str
    )
    rows = []
    results = [(fit.model, fit.purchases)]
    if fit.spend is not None:
        results.append(("gammagamma", fit.spend))
    for name, result in results:
        rows.append(
            {
                "fit_id": uuid.uuid4().hex,
                "computed_at": now,
                "observation_period_end": fit.observation_period_end,
                "calibration_period_end": calibration_end,
                "model": name,
                "time_unit": TIME_UNIT,
                "params": json.dumps(result.params),
                "log_likelihood": result.log_likelihood,
                "converged": result.converged,
                "iterations": result.iterations,
                "message": result.message,
                "n_customers": result.n_customers,
                "options": opts,
            }
        )
    frame = pd.DataFrame(rows)
    frame["observation_period_end"] = pd.to_datetime(frame["observation_period_end"])
    frame["calibration_period_end"] = pd.to_datetime(frame["calibration_period_end"])
    wh.append("value_fits", frame)


def latest_fit(wh: Warehouse, model: str = "bgnbd") -> dict[str, Any] | None:
    """The newest full-period fit of `model` in `value_fits`, as a dict, or None."""
    t = wh.table("value_fits")
    rows = (
        t.filter((t.model == model) & t.calibration_period_end.isnull())
        .order_by(ibis.desc("computed_at"))
        .limit(1)
        .to_pandas()
    )
    if rows.empty:
        return None
    row = rows.iloc[0].to_dict()
    row["params"] = json.loads(row["params"])
    return row


# -- predicting ------------------------------------------------------------------------


def predict(fit: ValueFit, options: ValueOptions | None = None) -> pd.DataFrame:
    """Per-customer value (the `customer_value` columns) from a converged fit."""
    opts = options or ValueOptions(model=fit.model)
    opts.check()
    if not fit.purchases.converged:
        raise ConvergenceError(
            f"the {MODEL_LABELS[fit.model]} fit did not converge "
            f"({fit.purchases.message}); predictions from it would be arbitrary. "
            "Check `clm clv fit` (more customers, repeat purchases, a later --as-of)."
        )
    summ = fit.summary
    spend: GammaGamma | _FlatSpend = fit.spend_model or _FlatSpend(fit.fallback_spend)
    values = clv(
        fit.purchase_model,
        cast(GammaGamma, spend),  # only expected_spend() is used
        summ,
        periods=opts.horizon_months,
        period_length=MONTH_IN_WEEKS,
        discount_rate=opts.discount_rate,
        margin=opts.margin,
    )
    scores, _ = rfm_table(summ)
    out = pd.DataFrame(
        {
            "customer_id": summ.index.astype(str),
            "observation_period_end": fit.observation_period_end,
            "model": fit.model,
            "frequency": summ["frequency"].to_numpy(),
            "recency": summ["recency"].to_numpy(),
            "T": summ["T"].to_numpy(),
            "monetary_value": summ["monetary_value"].to_numpy(),
            "p_alive": values["p_alive"].to_numpy(),
            "expected_purchases": values["expected_purchases"].to_numpy(),
            "expected_spend": values["expected_spend"].to_numpy(),
            "predicted_clv": values["clv"].to_numpy(),
            "r": scores["R"].to_numpy(),
            "f": scores["F"].to_numpy(),
            "m": scores["M"].to_numpy(),
            "rfm_segment": scores["segment"].astype(str).to_numpy(),
        }
    )
    numeric = out[["p_alive", "expected_purchases", "expected_spend", "predicted_clv"]]
    if not np.isfinite(numeric.to_numpy(float)).all():
        raise ConvergenceError(
            "some predictions are not finite; the fitted parameters are extreme. "
            "Refit with more customers (`clm clv fit`) and check `converged`."
        )
    return out


class _FlatSpend:
    """The spend fallback: one expected spend for every customer."""

    def __init__(self, value: float) -> None:
        self.value = value

    def expected_spend(self, frequency: object, monetary_value: object) -> np.ndarray:
        n = len(np.asarray(frequency, dtype=float).reshape(-1))
        return np.full(n, self.value)


def store_values(wh: Warehouse, values: pd.DataFrame) -> int:
    """Replace the `customer_value` rows of the purchase model with `values`."""
    frame = values.copy()
    frame["computed_at"] = now_utc()
    frame["observation_period_end"] = pd.to_datetime(frame["observation_period_end"])
    model = str(frame["model"].iloc[0]) if len(frame) else "bgnbd"
    t = wh.table("customer_value")
    wh.replace_rows("customer_value", t.model == model, frame)
    return len(frame)


# -- holdout validation ---------------------------------------------------------------


def validate(
    wh: Warehouse,
    tz: ZoneInfo,
    calibration_end: date,
    *,
    as_of: date | None = None,
    model: str = "bgnbd",
) -> tuple[ValueFit, pd.DataFrame, str]:
    """Fit on the calibration period; the holdout table and its SVG chart."""
    summ = rfm_summary(wh, tz, as_of=as_of, calibration_end=calibration_end)
    fit = fit_value(summ, model)
    if not fit.purchases.converged:
        raise ConvergenceError(
            f"the {MODEL_LABELS[model]} fit on the calibration period did not "
            f"converge ({fit.purchases.message}); choose a later --calibration-end."
        )
    table = validate_holdout(fit.purchase_model, summ)
    store_fit(wh, fit, calibration_end=calibration_end)
    return fit, table, holdout_chart_svg(table)


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()  # type: ignore[arg-type]


def fit_summary_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored fit row in plain JSON-able values."""
    out = dict(row)
    for key in ("observation_period_end", "calibration_period_end"):
        value = out.get(key)
        out[key] = None if value is None or pd.isna(value) else _as_date(value)
    return out
