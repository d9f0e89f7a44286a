"""Gamma-Gamma: the spend per transaction, independent of how often a customer buys.

Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base
Analysis", Journal of Marketing Research 42(4), 415-430, with the details of Fader &
Hardie's note "The Gamma-Gamma Model of Monetary Value" (2013). A transaction's value is
Gamma(p, nu) around the customer's mean; nu ~ Gamma(q, gamma) across customers. The
model is fitted on customers with at least one repeat purchase (x > 0) and a positive
mean spend zbar; see `fit_gammagamma` for what happens to the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from clm.analyses.clv.fit import (
    FitResult,
    FloatArray,
    as_float_array,
    compress,
    maximize,
)

NAMES = ("p", "q", "gamma")


def _terms(
    theta: FloatArray, x: FloatArray, z: FloatArray, w: FloatArray
) -> tuple[float, FloatArray]:
    """Weighted negative log-likelihood and gradient in log-parameters."""
    p, q, g = np.exp(theta)
    px = p * x
    # Note eq. (3): f(zbar | p, q, gamma; x) = Gamma(px+q) / (Gamma(px) Gamma(q))
    #   gamma^q zbar^(px-1) x^px / (gamma + x zbar)^(px+q).
    spread = np.log(g + x * z)
    ll = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(g)
        + (px - 1) * np.log(z)
        + px * np.log(x)
        - (px + q) * spread
    )
    d_p = x * (digamma(px + q) - digamma(px) + np.log(z) + np.log(x) - spread)
    d_q = digamma(px + q) - digamma(q) + np.log(g) - spread
    d_g = q / g - (px + q) / (g + x * z)
    grad = np.array([w @ d_p * p, w @ d_q * q, w @ d_g * g])
    return -float(w @ ll), -grad


@dataclass(frozen=True)
class GammaGamma:
    """A fitted (or given) Gamma-Gamma spend model."""

    p: float
    q: float
    gamma: float
    result: FitResult | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "gamma": self.gamma}

    @property
    def population_mean(self) -> float:
        """E[Z] = p gamma / (q - 1), the mean spend of a customer we know nothing of.

        Infinite in the model when q <= 1; then the mean observed spend should be
        used instead, and this raises to say so.
        """
        if self.q <= 1:
            raise ValueError(
                f"q: {self.q!r} <= 1, so the Gamma-Gamma mean spend is infinite; fit "
                "on more repeat customers or use the observed mean spend."
            )
        return self.p * self.gamma / (self.q - 1)

    def expected_spend(self, frequency: object, monetary_value: object) -> FloatArray:
        """E[M | p, q, gamma, x, zbar] (FHL 2005 "RFM and CLV", eq. 5).

        A weighted mean of the population mean and the customer's own zbar,
        (q-1)/(px+q-1) and px/(px+q-1). Customers with x = 0 get the population mean.
        A repeat customer whose zbar is <= 0 (returns exceeding purchases) is taken
        as zbar = 0, so the estimate shrinks toward 0 instead of going negative.
        """
        x = as_float_array(frequency, "frequency")
        z = np.asarray(monetary_value, dtype=np.float64).reshape(-1)
        if len(x) != len(z):
            raise ValueError("frequency and monetary_value have different lengths.")
        own = np.where(x > 0, np.maximum(z, 0.0), 0.0)
        px = self.p * x
        return (self.q - 1) / (px + self.q - 1) * self.population_mean + px / (
            px + self.q - 1
        ) * own


def fit_gammagamma(
    frequency: object,
    monetary_value: object,
    *,
    weights: object | None = None,
    strict: bool = False,
    start: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> GammaGamma:
    """Fit Gamma-Gamma by maximum likelihood on the repeat customers.

    Customers with frequency 0 carry no repeat spend and are left out by definition.
    Repeat customers with a mean spend <= 0 (refunds, free orders) cannot come from a
    gamma distribution: they are left out too and counted in the result's notes.
    """
    x = as_float_array(frequency, "frequency")
    z = np.asarray(monetary_value, dtype=np.float64).reshape(-1)
    if len(x) != len(z) or not np.all(np.isfinite(z)):
        raise ValueError(
            "monetary_value: must be finite and as long as frequency; pass the "
            "columns of one summary frame."
        )
    base = np.ones(len(x)) if weights is None else as_float_array(weights, "weights")
    repeat = x > 0
    usable = repeat & (z > 0)
    notes = []
    if (repeat & ~usable).any():
        notes.append(
            f"{int((repeat & ~usable).sum())} repeat customer(s) with monetary_value "
            "<= 0 were left out of the fit"
        )
    if not usable.any():
        raise ValueError(
            "monetary_value: no customer has a repeat purchase with a positive mean "
            "spend, so Gamma-Gamma has nothing to fit; use the mean observed spend."
        )
    xs, zs, ws = compress(x[usable], z[usable], weights=base[usable])
    problems = []
    if ws.sum() < 2:
        problems.append("a single customer cannot identify a population model")
    scale = float(np.average(zs, weights=ws))
    found = maximize(
        lambda theta: _terms(theta, xs, zs, ws),
        (start[0], start[1], scale * start[2]),
        NAMES,
        model="Gamma-Gamma",
        n_customers=float(ws.sum()),
        gradient=True,
        strict=strict,
        problems=problems,
        notes=notes,
    )
    return GammaGamma(**found.params, result=found)
