"""BG/NBD: the beta-geometric/negative-binomial model of repeat buying.

Fader, Hardie & Lee (2005), "'Counting Your Customers' the Easy Way: An Alternative to
the Pareto/NBD Model", Marketing Science 24(2), 275-284 (below: FHL). While alive a
customer buys at Poisson rate lambda ~ Gamma(r, alpha); after every purchase she drops
out with probability p ~ Beta(a, b). Inputs per customer are frequency x, recency t_x
and age T in one time unit; every function here is vectorised over customers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betaln, digamma, gammaln, hyp2f1

from clm.analyses.clv.fit import (
    FitResult,
    FloatArray,
    as_float_array,
    finite,
    maximize,
)

NAMES = ("r", "alpha", "a", "b")


def check_rft(frequency: object, recency: object, T: object) -> tuple[FloatArray, ...]:
    """Validated float arrays x, t_x, T: equal lengths, x whole, t_x <= T."""
    x = as_float_array(frequency, "frequency")
    t_x = as_float_array(recency, "recency")
    t = as_float_array(T, "T")
    if not len(x) == len(t_x) == len(t):
        raise ValueError(
            f"frequency, recency and T have different lengths ({len(x)}, {len(t_x)}, "
            f"{len(t)}); pass the columns of one summary frame."
        )
    if np.any(x != np.round(x)):
        odd = float(x[x != np.round(x)][0])
        raise ValueError(
            f"frequency: {odd:g} is not a whole number; frequency counts repeat "
            "purchase days."
        )
    late = t_x > t + 1e-9
    if late.any():
        raise ValueError(
            f"recency: {int(late.sum())} customer(s) have recency > T (first: "
            f"{float(t_x[late][0]):g} > {float(t[late][0]):g}); recency is measured "
            "from the first purchase and cannot exceed T. Rebuild the summary with "
            "summary()."
        )
    return x, t_x, t


def _log_terms(
    theta: FloatArray, x: FloatArray, t_x: FloatArray, t: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per-row log-likelihood and d, the log-odds of 'dropped out after t_x'."""
    r, alpha, a, b = np.exp(theta)
    # FHL eq. (6), rearranged: L = Gamma(r+x)/Gamma(r) alpha^r B(a, b+x)/B(a, b)
    # (alpha+T)^-(r+x) [1 + delta(x>0) a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)],
    # using B(a+1, b+x-1) / B(a, b+x) = a / (b+x-1). The bracket is added in log
    # space (logaddexp) so that large x and long gaps cannot overflow.
    log_at = np.log(alpha + t)
    repeat = x > 0
    d = np.full_like(x, -np.inf)
    d[repeat] = (
        np.log(a)
        - np.log(b + x[repeat] - 1)
        + (r + x[repeat]) * (log_at[repeat] - np.log(alpha + t_x[repeat]))
    )
    ll = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + betaln(a, b + x)
        - betaln(a, b)
        - (r + x) * log_at
        + np.logaddexp(0.0, d)
    )
    return ll, d


@dataclass(frozen=True)
class _Prepared:
    """Fit data factored for speed: the special functions of eq. (6) depend on x
    alone and the logs on T or t_x alone, so they are evaluated once per distinct
    value and only the cheap row terms run over every (compressed) row."""

    xs: FloatArray  # distinct frequencies
    w_x: FloatArray  # total weight per distinct frequency
    ts: FloatArray  # distinct T
    w_t: FloatArray  # total weight per distinct T
    wx_t: FloatArray  # total weight × x per distinct T
    # repeat rows (x > 0) only: the 'dropped out after t_x' branch
    x: FloatArray
    w: FloatArray
    t_code: npt.NDArray[np.intp]
    txs: FloatArray
    tx_code: npt.NDArray[np.intp]


def _dot(a: FloatArray, b: FloatArray) -> float:
    # einsum, not `@`: BLAS dot spawns threads that stall on a busy machine, and
    # these vectors are too short to gain from them.
    return float(np.einsum("i,i->", a, b))


def _f64(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _prepare(x: FloatArray, t_x: FloatArray, t: FloatArray, w: FloatArray) -> _Prepared:
    xs, x_code = np.unique(x, return_inverse=True)
    ts, t_code = np.unique(t, return_inverse=True)
    repeat = x > 0
    txs, tx_code = np.unique(t_x[repeat], return_inverse=True)

    # Identical repeat rows (x, t_x, T) fold into one row with their summed weight;
    # rows without a repeat need no row term at all (their T sums carry them).
    r_x, r_w, r_t = x[repeat], w[repeat], t_code[repeat]
    if len(xs) * len(ts) * max(len(txs), 1) < 2**62:
        key = (x_code[repeat] * len(ts) + r_t) * max(len(txs), 1) + tx_code
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        r_w = _f64(np.bincount(inverse.reshape(-1), weights=r_w, minlength=len(first)))
        r_x, r_t, tx_code = r_x[first], r_t[first], tx_code[first]
    return _Prepared(
        xs=xs,
        w_x=_f64(np.bincount(x_code, weights=w, minlength=len(xs))),
        ts=ts,
        w_t=_f64(np.bincount(t_code, weights=w, minlength=len(ts))),
        wx_t=_f64(np.bincount(t_code, weights=w * x, minlength=len(ts))),
        x=r_x,
        w=r_w,
        t_code=r_t,
        txs=txs,
        tx_code=tx_code,
    )


def _negative_ll(theta: FloatArray, data: _Prepared) -> tuple[float, FloatArray]:
    """Weighted negative log-likelihood (FHL eq. 6, as rearranged in `_log_terms`)
    and its analytic gradient in log-parameters, on factored data."""
    r, alpha, a, b = np.exp(theta)
    xs, w_x = data.xs, data.w_x
    log_at = np.log(alpha + data.ts)
    n = w_x.sum()

    # Terms of x alone, then of T alone, weighted by their totals.
    ll = _dot(w_x, (gammaln(r + xs) + betaln(a, b + xs)))
    ll += n * (r * np.log(alpha) - gammaln(r) - betaln(a, b))
    ll -= r * _dot(data.w_t, log_at) + _dot(data.wx_t, log_at)

    # The drop-out branch of repeat buyers, row by row: d is its log-odds.
    x, w = data.x, data.w
    at_rows = log_at[data.t_code]
    log_ratio = at_rows - np.log(alpha + data.txs)[data.tx_code]
    d = np.log(a) - np.log(b + x - 1) + (r + x) * log_ratio
    ll += _dot(w, np.maximum(d, 0.0) + np.log1p(np.exp(-np.abs(d))))  # log(1+e^d)
    share = w * (0.5 * (1.0 + np.tanh(0.5 * d)))  # weight × logistic(d)

    # Derivatives, term by term.
    d_r = _dot(w_x, digamma(r + xs)) + n * (np.log(alpha) - digamma(r))
    d_r += -_dot(data.w_t, log_at) + _dot(share, log_ratio)
    inv_at = 1.0 / (alpha + data.ts)
    d_alpha = n * r / alpha - (r * _dot(data.w_t, inv_at) + _dot(data.wx_t, inv_at))
    inv_tx = 1.0 / (alpha + data.txs)[data.tx_code]
    d_alpha += _dot(share, ((r + x) * (inv_at[data.t_code] - inv_tx)))
    d_a = _dot(w_x, (digamma(a + b) - digamma(a + b + xs))) + share.sum() / a
    d_b = _dot(w_x, (digamma(b + xs) - digamma(a + b + xs)))
    d_b += n * (digamma(a + b) - digamma(b)) - _dot(share, (1.0 / (b + x - 1)))
    grad = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return -float(ll), -grad


@dataclass(frozen=True)
class BGNBD:
    """A fitted (or given) BG/NBD model."""

    r: float
    alpha: float
    a: float
    b: float
    result: FitResult | None = None

    @property
    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def log_likelihood(self, frequency: object, recency: object, T: object) -> float:
        """Total log-likelihood of customers under these parameters (FHL eq. 6)."""
        x, t_x, t = check_rft(frequency, recency, T)
        theta = np.log([self.r, self.alpha, self.a, self.b])
        return float(_log_terms(theta, x, t_x, t)[0].sum())

    def p_alive(self, frequency: object, recency: object, T: object) -> FloatArray:
        """P(alive at T | x, t_x, T) (Fader, Hardie & Lee 2008 note, eq. 6): 1 for
        customers without a repeat purchase, who by the model cannot have left."""
        x, t_x, t = check_rft(frequency, recency, T)
        theta = np.log([self.r, self.alpha, self.a, self.b])
        d = _log_terms(theta, x, t_x, t)[1]
        return 0.5 * (1.0 - np.tanh(0.5 * d))

    def expected_purchases(
        self, t: float | FloatArray, frequency: object, recency: object, T: object
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next t time units.

        FHL eq. (10).
        """
        x, t_x, age = check_rft(frequency, recency, T)
        r, alpha, a, b = self.r, self.alpha, _off_one(self.a), self.b
        horizon = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape)
        z = horizon / (alpha + age + horizon)
        decay = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + horizon)))
        lead = (a + b + x - 1) / (a - 1)
        numerator = lead * (1.0 - decay * hyp2f1(r + x, b + x, a + b + x - 1, z))
        expected = numerator * self.p_alive(x, t_x, age)
        return finite(expected, "expected purchases", "BG/NBD", self.params)

    def expected_purchases_new(self, t: float | FloatArray) -> FloatArray:
        """E[X(t)] for a customer just acquired (FHL eq. 7)."""
        r, alpha, a, b = self.r, self.alpha, _off_one(self.a), self.b
        horizon = np.asarray(t, dtype=np.float64)
        decay = (alpha / (alpha + horizon)) ** r
        z = horizon / (alpha + horizon)
        expected = (a + b - 1) / (a - 1) * (1.0 - decay * hyp2f1(r, b, a + b - 1, z))
        return finite(np.asarray(expected), "expected purchases", "BG/NBD", self.params)


def _off_one(a: float) -> float:
    # Eqs. (7) and (10) divide by a - 1; at a = 1 the singularity is removable (the
    # bracket vanishes too), so a step of 1e-7 off it changes the result by ~1e-7.
    return a if abs(a - 1.0) > 1e-7 else 1.0 + 1e-7


def fit_bgnbd(
    frequency: object,
    recency: object,
    T: object,
    *,
    weights: object | None = None,
    strict: bool = False,
    start: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> BGNBD:
    """Fit BG/NBD by maximum likelihood (FHL eq. 6 summed over customers).

    Identical (x, t_x, T) rows are folded into weights first. The result says whether
    the fit converged; with `strict` a failed fit raises `ConvergenceError`.
    """
    x, t_x, t = check_rft(frequency, recency, T)
    w = np.ones(len(x)) if weights is None else as_float_array(weights, "weights")
    if len(w) != len(x):
        raise ValueError(f"weights: {len(w)} values for {len(x)} customers.")
    notes = degenerate_notes(x, t, w)
    if t.size == 0:
        raise ValueError("frequency: no customers to fit; the summary is empty.")
    # Scale time so that alpha starts near the data's order of magnitude.
    alpha0 = max(float(np.average(t, weights=w)), 1e-3)
    data = _prepare(x, t_x, t, w)
    found = maximize(
        lambda theta: _negative_ll(theta, data),
        (start[0], alpha0 * start[1], start[2], start[3]),
        NAMES,
        model="BG/NBD",
        n_customers=float(w.sum()),
        gradient=True,
        strict=strict,
        problems=notes,
    )
    return BGNBD(**found.params, result=found)


def degenerate_notes(x: FloatArray, t: FloatArray, w: FloatArray) -> list[str]:
    """Plain-language reasons why a repeat-buying fit cannot be identified."""
    notes = []
    if not np.any(x > 0):
        notes.append(
            "no customer made a repeat purchase, so the purchase rate and the "
            "drop-out cannot be told apart"
        )
    if not np.any(t > 0):
        notes.append("T is 0 for every customer (all first purchases on the last day)")
    if w.sum() < 2:
        notes.append("a single customer cannot identify a population model")
    return notes
