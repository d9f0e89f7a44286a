"""BG/BB: repeat buying when customers can only buy at discrete opportunities.

Fader, Hardie & Shang (2010), "Customer-Base Analysis in a Discrete-Time Noncontractual
Setting", Marketing Science 29(6), 1086-1108 (below: FHS). While alive a customer buys
at each opportunity with probability p ~ Beta(alpha, beta) and dies before each
following opportunity with probability theta ~ Beta(gamma, delta). Per customer: x
purchases in n opportunities, the last at opportunity t_x (0 when x = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, gammaln, logsumexp

from clm.analyses.clv.fit import (
    FitResult,
    FloatArray,
    as_float_array,
    compress,
    finite,
    maximize,
)

NAMES = ("alpha", "beta", "gamma", "delta")


def check_xtn(
    frequency: object, recency: object, n: object
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validated whole-number arrays x, t_x, n with x <= t_x <= n."""
    x = as_float_array(frequency, "frequency")
    t_x = as_float_array(recency, "recency")
    periods = as_float_array(n, "n")
    if not len(x) == len(t_x) == len(periods):
        raise ValueError("frequency, recency and n have different lengths.")
    for name, values in (("frequency", x), ("recency", t_x), ("n", periods)):
        if np.any(values != np.round(values)):
            odd = float(values[values != np.round(values)][0])
            raise ValueError(
                f"{name}: {odd:g} is not a whole number; BG/BB counts discrete "
                "opportunities."
            )
    bad = (x > t_x) | (t_x > periods)
    if bad.any():
        first = (float(x[bad][0]), float(t_x[bad][0]), float(periods[bad][0]))
        raise ValueError(
            f"{int(bad.sum())} row(s) break frequency <= recency <= n (first: "
            "x={:g}, t_x={:g}, n={:g}); recency is the opportunity of the last "
            "purchase.".format(*first)
        )
    return x, t_x, periods


def _log_likelihood(
    params: FloatArray, x: FloatArray, t_x: FloatArray, n: FloatArray
) -> FloatArray:
    """Per-row log L of FHS eq. (5), the sum over i taken with logsumexp."""
    al, be, ga, de = params
    buy_norm, die_norm = betaln(al, be), betaln(ga, de)
    # Alive through all n opportunities.
    alive = betaln(al + x, be + n - x) - buy_norm + betaln(ga, de + n) - die_norm
    # Died right after opportunity t_x + i, i = 0 .. n - t_x - 1.
    width = int((n - t_x).max()) if len(n) else 0
    i = np.arange(width)[None, :]
    valid = i < (n - t_x)[:, None]
    died = (
        betaln(al + x[:, None], be + t_x[:, None] - x[:, None] + i)
        - buy_norm
        + betaln(ga + 1, de + t_x[:, None] + i)
        - die_norm
    )
    died = np.where(valid, died, -np.inf)
    return np.asarray(logsumexp(np.column_stack([alive, died]), axis=1))


@dataclass(frozen=True)
class BGBB:
    """A fitted (or given) BG/BB model."""

    alpha: float
    beta: float
    gamma: float
    delta: float
    result: FitResult | None = None

    @property
    def params(self) -> dict[str, float]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "delta": self.delta,
        }

    def _vector(self) -> FloatArray:
        return np.array([self.alpha, self.beta, self.gamma, self.delta])

    def log_likelihood(self, frequency: object, recency: object, n: object) -> float:
        x, t_x, periods = check_xtn(frequency, recency, n)
        return float(_log_likelihood(self._vector(), x, t_x, periods).sum())

    def p_alive(self, frequency: object, recency: object, n: object) -> FloatArray:
        """P(alive at opportunity n+1 | x, t_x, n) (FHS eq. 11)."""
        x, t_x, periods = check_xtn(frequency, recency, n)
        al, be, ga, de = self._vector()
        alive_next = (
            betaln(al + x, be + periods - x)
            - betaln(al, be)
            + betaln(ga, de + periods + 1)
            - betaln(ga, de)
        )
        return np.exp(alive_next - _log_likelihood(self._vector(), x, t_x, periods))

    def expected_purchases(
        self, n_star: float, frequency: object, recency: object, n: object
    ) -> FloatArray:
        """E[X(n, n + n*) | x, t_x, n]: expected purchases in the next n* opportunities
        (FHS eq. 13)."""
        x, t_x, periods = check_xtn(frequency, recency, n)
        al, be, ga, de = self._vector()
        log_l = _log_likelihood(self._vector(), x, t_x, periods)
        head = betaln(al + x + 1, be + periods - x) - betaln(al, be) - log_l
        # delta/(gamma-1) Gamma(gamma+delta)/Gamma(1+delta) [Gamma(1+delta+n) /
        # Gamma(gamma+delta+n) - Gamma(1+delta+n+n*) / Gamma(gamma+delta+n+n*)]; the
        # bracket and gamma - 1 share their sign, so the product is positive.
        if abs(ga - 1.0) < 1e-8:
            ga = 1.0 + 1e-8  # the limit gamma -> 1 is continuous; step off it
        front = np.log(de) - np.log(abs(ga - 1)) + gammaln(ga + de) - gammaln(1 + de)
        now = gammaln(1 + de + periods) - gammaln(ga + de + periods)
        later = gammaln(1 + de + periods + n_star) - gammaln(ga + de + periods + n_star)
        bracket = np.abs(-np.expm1(later - now)) * np.exp(now)
        expected = np.exp(head + front) * bracket
        return finite(expected, "expected purchases", "BG/BB", self.params)


def fit_bgbb(
    frequency: object,
    recency: object,
    n: object,
    *,
    weights: object | None = None,
    strict: bool = False,
    start: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> BGBB:
    """Fit BG/BB by maximum likelihood (FHS eq. 5 summed, weighted, over patterns)."""
    x, t_x, periods = check_xtn(frequency, recency, n)
    w = None if weights is None else as_float_array(weights, "weights")
    x, t_x, periods, w = compress(x, t_x, periods, weights=w)
    if periods.size == 0:
        raise ValueError("frequency: no customers to fit; the data are empty.")
    notes = []
    if not np.any(x > 0):
        notes.append("nobody bought at any opportunity after the first")
    if not np.any(periods > 0):
        notes.append("n is 0 for every customer: no opportunities observed")

    def objective(theta: FloatArray) -> float:
        with np.errstate(all="ignore"):
            return -float(w @ _log_likelihood(np.exp(theta), x, t_x, periods))

    found = maximize(
        objective,
        start,
        NAMES,
        model="BG/BB",
        n_customers=float(w.sum()),
        gradient=False,
        strict=strict,
        problems=notes,
    )
    return BGBB(**found.params, result=found)
