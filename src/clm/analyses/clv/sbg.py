"""Shifted-beta-geometric (sBG): how long contract customers keep renewing.

Fader & Hardie (2007), "How to Project Customer Retention", Journal of Interactive
Marketing 21(1), 76-90 (below: FH07). Each customer churns at the end of a period with
probability theta ~ Beta(alpha, beta), the same theta every period. Input per customer:
the number of periods observed and whether the customer churned at the end of the last
one (else still active: censored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, hyp2f1

from clm.analyses.clv.fit import (
    FitResult,
    FloatArray,
    as_float_array,
    compress,
    maximize,
)

NAMES = ("alpha", "beta")


def _log_likelihood(
    params: FloatArray, periods: FloatArray, churned: FloatArray
) -> FloatArray:
    """Per-customer log-likelihood: churn in period t (FH07 eq. 7) or survive it."""
    al, be = params
    # P(T = t) = B(alpha+1, beta+t-1) / B(alpha, beta)  (FH07 eq. 7)
    # S(t)     = B(alpha, beta+t) / B(alpha, beta)      (FH07 eq. 8)
    lost = betaln(al + 1, be + periods - 1) - betaln(al, be)
    kept = betaln(al, be + periods) - betaln(al, be)
    return np.where(churned > 0, lost, kept)


@dataclass(frozen=True)
class ShiftedBetaGeometric:
    """A fitted (or given) sBG model."""

    alpha: float
    beta: float
    result: FitResult | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}

    def survival(self, t: object) -> FloatArray:
        """S(t): the share of a cohort still active after t periods (FH07 eq. 8)."""
        periods = as_float_array(t, "t")
        return np.exp(
            betaln(self.alpha, self.beta + periods) - betaln(self.alpha, self.beta)
        )

    def retention_rate(self, t: object) -> FloatArray:
        """r_t = S(t) / S(t-1) = (beta+t-1) / (alpha+beta+t-1) (FH07 eq. 9), t >= 1."""
        periods = as_float_array(t, "t")
        return (self.beta + periods - 1) / (self.alpha + self.beta + periods - 1)

    def discounted_expected_residual_lifetime(
        self, renewals: object, discount_rate: float
    ) -> FloatArray:
        """DERL: expected discounted further periods of a customer who has renewed
        n times, at a discount rate d per period.

        The discounted expected residual lifetime of Fader & Hardie (2010),
        "Customer-Base Valuation in a Contractual Setting: The Perils of Ignoring
        Heterogeneity", Marketing Science 29(1): sum over k >= 1 of
        S(n+k) / S(n) / (1+d)^(k-1), which sums in closed form to
        (beta+n)/(alpha+beta+n) 2F1(1, beta+n+1; alpha+beta+n+1; 1/(1+d)).
        The first further period is undiscounted (paid at its start).
        """
        if discount_rate <= 0:
            raise ValueError(
                f"discount_rate: {discount_rate!r} must be > 0 (e.g. 0.1 for 10 % a "
                "period); with no discount the expected lifetime can be infinite."
            )
        n = as_float_array(renewals, "renewals")
        al, be = self.alpha, self.beta
        keep = (be + n) / (al + be + n)
        return np.asarray(
            keep * hyp2f1(1.0, be + n + 1, al + be + n + 1, 1 / (1 + discount_rate))
        )


def fit_sbg(
    periods: object,
    churned: object,
    *,
    weights: object | None = None,
    strict: bool = False,
) -> ShiftedBetaGeometric:
    """Fit sBG by maximum likelihood (FH07 eq. 10 generalised to any censoring).

    `periods[i]` is how many periods customer i was observed (>= 1); `churned[i]` is
    true when the customer left at the end of that period, false when still active.
    """
    t = as_float_array(periods, "periods")
    lost = np.asarray(churned, dtype=bool).reshape(-1).astype(np.float64)
    if len(t) != len(lost):
        raise ValueError("periods and churned have different lengths.")
    if np.any(t < 1) or np.any(t != np.round(t)):
        bad = t[(t < 1) | (t != np.round(t))][0]
        raise ValueError(
            f"periods: {float(bad):g} is not a whole number >= 1; a customer is "
            "observed for at least the first period."
        )
    w = None if weights is None else as_float_array(weights, "weights")
    t, lost, w = compress(t, lost, weights=w)
    notes = []
    if not np.any(lost > 0):
        notes.append("nobody churned, so the churn probabilities are not identified")
    if np.all(lost > 0) and np.all(t == 1):
        notes.append("everybody churned after the first period")

    def objective(theta: FloatArray) -> float:
        return -float(w @ _log_likelihood(np.exp(theta), t, lost))

    found = maximize(
        objective,
        (1.0, 1.0),
        NAMES,
        model="sBG",
        n_customers=float(w.sum()),
        gradient=False,
        strict=strict,
        problems=notes,
    )
    return ShiftedBetaGeometric(**found.params, result=found)
