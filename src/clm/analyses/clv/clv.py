"""Customer lifetime value from a purchase model and a spend model.

The formula (a discrete-time version of the discounted expected residual transactions
of Fader, Hardie & Lee 2005, "RFM and CLV", J. Marketing Research 42(4), section
"Customer-level CLV"):

    CLV_i = margin × E[M_i] × Σ_{k=1..K} (E[Y_i(k L)] − E[Y_i((k−1) L)]) / (1 + d)^k

E[M_i] is the Gamma-Gamma expected spend per transaction, E[Y_i(t)] the purchase
model's expected purchases in the next t time units given the customer's history, L
the length of one discount period in the summary's time unit (a month is 365.25 / 12
days, or that divided by 7 in weeks), d the discount rate per period and K the number
of periods. Purchases within a period are discounted as if they happened at its end.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from clm.analyses.clv.fit import FloatArray
from clm.analyses.clv.gammagamma import GammaGamma

MONTH_IN_WEEKS = 365.25 / 12 / 7
MONTH_IN_DAYS = 365.25 / 12


class PurchaseModel(Protocol):
    """What CLV and validation need from BG/NBD or Pareto/NBD."""

    def expected_purchases(
        self, t: float | FloatArray, frequency: object, recency: object, T: object
    ) -> FloatArray: ...

    def p_alive(self, frequency: object, recency: object, T: object) -> FloatArray: ...


def clv(
    purchases: PurchaseModel,
    spend: GammaGamma,
    summary: pd.DataFrame,
    *,
    periods: int = 12,
    period_length: float = MONTH_IN_WEEKS,
    discount_rate: float = 0.01,
    margin: float = 1.0,
) -> pd.DataFrame:
    """Per-customer CLV over `periods` discount periods (see the module docstring).

    `summary` needs frequency, recency, T and monetary_value. Returns a frame on the
    summary's index with p_alive, expected_purchases, expected_spend and clv.
    """
    if periods < 1:
        raise ValueError(f"periods: {periods!r} must be a whole number >= 1.")
    if period_length <= 0:
        raise ValueError(
            f"period_length: {period_length!r} must be > 0 (in the summary's time "
            f"unit; a month is {MONTH_IN_WEEKS:.4f} weeks or {MONTH_IN_DAYS} days)."
        )
    if not 0 <= discount_rate < 1:
        raise ValueError(
            f"discount_rate: {discount_rate!r} is per period and must be in [0, 1); "
            "e.g. 0.01 for 1 % a month."
        )
    if not 0 <= margin <= 1:
        raise ValueError(
            f"margin: {margin!r} is the profit share of revenue and must be in [0, 1]."
        )
    x, t_x, age = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))

    # Incremental expected purchases per period, each discounted to today.
    value = np.zeros(len(summary))
    before = np.zeros(len(summary))
    for k in range(1, periods + 1):
        upto = purchases.expected_purchases(k * period_length, x, t_x, age)
        value += (upto - before) / (1.0 + discount_rate) ** k
        before = upto
    expected_spend = spend.expected_spend(x, summary["monetary_value"])
    return pd.DataFrame(
        {
            "p_alive": purchases.p_alive(x, t_x, age),
            "expected_purchases": before,
            "expected_spend": expected_spend,
            "clv": margin * expected_spend * value,
        },
        index=summary.index,
    )
