"""The built-in metrics; each registers through the public `register`, as users do.

Definitions (per stage S and period P; `metrics.context` has the shared conventions):
- population: customers in S at the end of P.
- entered / exited: customers who came into / left S during P.
- conversion_rate_to(T): moved S→T during P ÷ customers in S during P (in S at the end
  of the previous period, or entered during P).
- churn_rate: the same, with T = every stage the model marks `churned: true`.
- median_days_in_stage: median length in days of the stays in S that ended during P.
- revenue / orders: gross revenue and number of orders placed while in S, during P.
- net_revenue: revenue less refunds booked while in S.
- average_order_value: revenue ÷ orders.
- repeat_purchase_rate: of the customers in S who ordered during P, the share whose
  order was not their first.
- revenue_share: revenue of S ÷ revenue of all stages, during P.
- predicted_clv: mean predicted CLV of the customers in S at the end of P, from the
  latest `clm clv predict` (customers without a value row are left out).
- customer_equity: the sum of those predicted CLVs.
Ratios with an empty denominator are NaN (shown as "–"), never 0 or infinity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clm.metrics.context import MetricContext
from clm.metrics.registry import register


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den != 0, np.nan)).astype(float)


def _in_stage_during(ctx: MetricContext, stage: str) -> pd.Series:
    pop = ctx.col(ctx.population, stage)
    return pop.shift(1, fill_value=0.0) + ctx.col(ctx.entered, stage)


@register(
    "population", unit="count", help="customers in the stage at the end of the period"
)
def population(ctx: MetricContext, stage: str) -> pd.Series:
    return ctx.col(ctx.population, stage)


@register(
    "entered", unit="count", help="customers who entered the stage during the period"
)
def entered(ctx: MetricContext, stage: str) -> pd.Series:
    return ctx.col(ctx.entered, stage)


@register(
    "exited",
    unit="count",
    help="customers who left the stage during the period",
    higher_is_better=False,
)
def exited(ctx: MetricContext, stage: str) -> pd.Series:
    return ctx.col(ctx.exited, stage)


@register(
    "conversion_rate_to",
    unit="ratio",
    params=("stage",),
    help="share of the stage's customers who moved to the given stage",
)
def conversion_rate_to(ctx: MetricContext, stage: str, target: str) -> pd.Series:
    return _ratio(ctx.moved(stage, [target]), _in_stage_during(ctx, stage))


@register(
    "churn_rate",
    unit="ratio",
    higher_is_better=False,
    help="share of the stage's customers who moved to a churned stage",
)
def churn_rate(ctx: MetricContext, stage: str) -> pd.Series:
    churned = [s.name for s in ctx.model.stages if s.churned]
    if not churned:
        if ("no_churn_stage", {"model": ctx.model.name}) not in ctx.caveats:
            ctx.caveats.append(("no_churn_stage", {"model": ctx.model.name}))
        return pd.Series(np.nan, index=ctx.periods)
    return _ratio(ctx.moved(stage, churned), _in_stage_during(ctx, stage))


@register(
    "median_days_in_stage",
    unit="days",
    help="median length of the stays in the stage that ended in the period",
)
def median_days_in_stage(ctx: MetricContext, stage: str) -> pd.Series:
    s = ctx.stays[ctx.stays.stage == stage]
    return s.groupby("period").days.median().reindex(ctx.periods).astype(float)


@register(
    "revenue", unit="currency", help="gross revenue of orders placed while in the stage"
)
def revenue(ctx: MetricContext, stage: str) -> pd.Series:
    return ctx.order_col(stage, "revenue")


@register(
    "net_revenue", unit="currency", help="revenue less refunds, while in the stage"
)
def net_revenue(ctx: MetricContext, stage: str) -> pd.Series:
    return ctx.order_col(stage, "revenue") + ctx.order_col(stage, "refunds")


@register("orders", unit="count", help="orders placed while in the stage")
def orders(ctx: MetricContext, stage: str) -> pd.Series:
    return ctx.order_col(stage, "orders")


@register("average_order_value", unit="currency", help="revenue per order")
def average_order_value(ctx: MetricContext, stage: str) -> pd.Series:
    return _ratio(ctx.order_col(stage, "revenue"), ctx.order_col(stage, "orders"))


@register(
    "repeat_purchase_rate",
    unit="ratio",
    help="share of the stage's buyers whose order was not their first",
)
def repeat_purchase_rate(ctx: MetricContext, stage: str) -> pd.Series:
    return _ratio(ctx.order_col(stage, "repeat_buyers"), ctx.order_col(stage, "buyers"))


@register("revenue_share", unit="ratio", help="the stage's share of all revenue")
def revenue_share(ctx: MetricContext, stage: str) -> pd.Series:
    return _ratio(ctx.order_col(stage, "revenue"), ctx.order_col(None, "revenue"))


def _clv(ctx: MetricContext, stage: str) -> tuple[pd.Series, pd.Series]:
    if ctx.clv_count.empty or not ctx.clv_count.to_numpy().any():
        if ("no_customer_value", {}) not in ctx.caveats:
            ctx.caveats.append(("no_customer_value", {}))
        nothing = pd.Series(np.nan, index=ctx.periods)
        return nothing, nothing
    return ctx.col(ctx.clv_sum, stage), ctx.col(ctx.clv_count, stage)


@register(
    "predicted_clv",
    unit="currency",
    help="mean predicted CLV of the stage's customers at the end of the period",
)
def predicted_clv(ctx: MetricContext, stage: str) -> pd.Series:
    total, count = _clv(ctx, stage)
    return _ratio(total, count)


@register(
    "customer_equity",
    unit="currency",
    help="sum of the predicted CLV of the stage's customers at the end of the period",
)
def customer_equity(ctx: MetricContext, stage: str) -> pd.Series:
    return _clv(ctx, stage)[0]
