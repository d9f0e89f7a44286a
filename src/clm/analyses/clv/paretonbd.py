"""Pareto/NBD: Poisson purchasing with an exponential lifetime.

Schmittlein, Morrison & Colombo (1987), "Counting Your Customers: Who Are They and What
Will They Do Next?", Management Science 33(1); the expressions follow Fader & Hardie
(2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions" (below: FH
note). Purchase rate lambda ~ Gamma(r, alpha), drop-out rate mu ~ Gamma(s, beta).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, hyp2f1

from clm.analyses.clv.bgnbd import check_rft, degenerate_notes
from clm.analyses.clv.fit import (
    FitResult,
    FloatArray,
    as_float_array,
    compress,
    finite,
    maximize,
)

NAMES = ("r", "alpha", "s", "beta")


def _log_a0(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    x: FloatArray,
    t_x: FloatArray,
    t: FloatArray,
) -> FloatArray:
    """log A0 of FH note eq. (19): the 'died between t_x and T' integral.

    Uses the branch whose hypergeometric argument lies in [0, 1) (eqs. 20-21): for
    alpha >= beta the series in (alpha-beta)/(alpha+t), else in (beta-alpha)/(beta+t).
    The difference of the two terms is taken in log space (log1p of -exp), so it
    keeps its relative precision when t_x is close to T.
    """
    total = r + s + x
    second: float | FloatArray
    if alpha >= beta:
        big, second, gap = alpha, s + 1.0, alpha - beta
    else:
        big, second, gap = beta, r + x, beta - alpha
    upper = np.log(hyp2f1(total, second, total + 1, gap / (big + t_x)))
    upper -= total * np.log(big + t_x)
    lower = np.log(hyp2f1(total, second, total + 1, gap / (big + t)))
    lower -= total * np.log(big + t)
    with np.errstate(divide="ignore"):
        return upper + np.log(-np.expm1(np.minimum(lower - upper, 0.0)))


def _log_parts(
    params: FloatArray, x: FloatArray, t_x: FloatArray, t: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per-row log-likelihood and the log-odds of 'died before T' versus alive."""
    r, alpha, s, beta = params
    # FH note eq. (22): L = Gamma(r+x) alpha^r beta^s / Gamma(r) *
    #   [ (alpha+T)^-(r+x) (beta+T)^-s + s/(r+s+x) A0 ].
    alive = -(r + x) * np.log(alpha + t) - s * np.log(beta + t)
    died = np.log(s / (r + s + x)) + _log_a0(r, alpha, s, beta, x, t_x, t)
    head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    return head + np.logaddexp(alive, died), died - alive


@dataclass(frozen=True)
class ParetoNBD:
    """A fitted (or given) Pareto/NBD model."""

    r: float
    alpha: float
    s: float
    beta: float
    result: FitResult | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "s": self.s, "beta": self.beta}

    def _vector(self) -> FloatArray:
        return np.array([self.r, self.alpha, self.s, self.beta])

    def log_likelihood(self, frequency: object, recency: object, T: object) -> float:
        x, t_x, t = check_rft(frequency, recency, T)
        return float(_log_parts(self._vector(), x, t_x, t)[0].sum())

    def p_alive(self, frequency: object, recency: object, T: object) -> FloatArray:
        """P(alive at T | x, t_x, T) (FH note eq. 18): the 'still alive' share of L."""
        x, t_x, t = check_rft(frequency, recency, T)
        odds = _log_parts(self._vector(), x, t_x, t)[1]
        alive = 0.5 * (1.0 - np.tanh(0.5 * odds))
        return finite(alive, "P(alive)", "Pareto/NBD", self.params)

    def expected_purchases(
        self, t: float | FloatArray, frequency: object, recency: object, T: object
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T] (FH note eq. 27): expected purchases in (T, T+t]."""
        x, t_x, age = check_rft(frequency, recency, T)
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        horizon = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape)
        # (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))^(s-1)]; the
        # bracket over (s-1) is written with expm1 so that s near 1 stays exact
        # (its limit at s = 1 is log((beta+T+t)/(beta+T))).
        log_ratio = np.log(beta + age + horizon) - np.log(beta + age)
        if abs(s - 1.0) < 1e-10:
            growth: FloatArray = log_ratio
        else:
            growth = -np.expm1(-(s - 1.0) * log_ratio) / (s - 1.0)
        rate = (r + x) / (alpha + age) * (beta + age)
        expected = rate * growth * self.p_alive(x, t_x, age)
        return finite(expected, "expected purchases", "Pareto/NBD", self.params)


def fit_paretonbd(
    frequency: object,
    recency: object,
    T: object,
    *,
    weights: object | None = None,
    strict: bool = False,
    start: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> ParetoNBD:
    """Fit Pareto/NBD by maximum likelihood (FH note eq. 22 summed over customers).

    The gradient is numerical (the hypergeometric terms have no cheap derivative);
    identical rows are folded into weights first.
    """
    x, t_x, t = check_rft(frequency, recency, T)
    w = None if weights is None else as_float_array(weights, "weights")
    x, t_x, t, w = compress(x, t_x, t, weights=w)
    if t.size == 0:
        raise ValueError("frequency: no customers to fit; the summary is empty.")
    notes = degenerate_notes(x, t, w)
    scale = max(float(np.average(t, weights=w)), 1e-3)

    def objective(theta: FloatArray) -> float:
        with np.errstate(all="ignore"):
            return -float(w @ _log_parts(np.exp(theta), x, t_x, t)[0])

    found = maximize(
        objective,
        (start[0], scale * start[1], start[2], scale * start[3]),
        NAMES,
        model="Pareto/NBD",
        n_customers=float(w.sum()),
        gradient=False,
        strict=strict,
        problems=notes,
    )
    return ParetoNBD(**found.params, result=found)
