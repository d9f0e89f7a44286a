"""Maximum-likelihood fitting shared by every CLV model.

Each model hands `maximize` its negative log-likelihood over *log* parameters (so the
positivity constraints vanish) and, where it has one, the analytic gradient. The result
is a `FitResult` that always says whether the optimiser converged; nothing here returns
NaN or infinity silently. `compress` folds identical input rows into one row with a
weight, which is what makes fits on 100,000 customers fast: the likelihood is a sum over
customers, so identical (x, t_x, T) rows contribute `weight × the same term`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize

from clm.errors import ConvergenceError

log = logging.getLogger("clm.analyses")

FloatArray = npt.NDArray[np.float64]
Objective = Callable[[FloatArray], "float | tuple[float, FloatArray]"]

# Log-parameters are kept inside [-LOG_BOUND, LOG_BOUND] (about 1e-9 .. 1e9). A
# parameter that ends on this bound has run away: the data do not identify it.
LOG_BOUND = 20.0


@dataclass(frozen=True)
class FitResult:
    """What a maximum-likelihood fit found, and whether it can be trusted."""

    model: str
    params: dict[str, float]
    log_likelihood: float
    converged: bool
    iterations: int
    message: str
    n_customers: float
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params": dict(self.params),
            "log_likelihood": self.log_likelihood,
            "converged": self.converged,
            "iterations": self.iterations,
            "message": self.message,
            "n_customers": self.n_customers,
            "notes": list(self.notes),
        }


def as_float_array(values: object, name: str) -> FloatArray:
    """A 1-d float array, refusing NaN, infinity and negative values by name."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        first = array[bad][0]
        raise ValueError(
            f"{name}: {int(bad.sum())} value(s) are negative, NaN or infinite "
            f"(first: {float(first):g}); {name} must be a finite number >= 0. Drop or "
            "repair those customers before fitting."
        )
    return array


def finite(
    values: FloatArray, what: str, model: str, params: dict[str, float]
) -> FloatArray:
    """`values` unchanged if all are finite; else a `ConvergenceError` saying why."""
    bad = ~np.isfinite(values)
    if bad.any():
        shown = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        raise ConvergenceError(
            f"{model} {what}: {int(bad.sum())} of {bad.size} value(s) are not finite "
            f"with parameters {shown}; such parameters come from a fit that did not "
            "converge or from extreme inputs. Refit on more customers (check "
            "result.converged and result.message)."
        )
    return values


def compress(
    *columns: FloatArray, weights: FloatArray | None = None
) -> list[FloatArray]:
    """Fold identical rows of `columns` into unique rows plus a summed weight column.

    Returns the unique columns followed by the weights, all of equal length.
    """
    # Each column becomes small integer codes; the codes combine into one int64
    # key, and one 1-d unique on it is far quicker than a row-wise unique.
    key = np.zeros(len(columns[0]), dtype=np.int64)
    values = []
    room = 1
    for column in columns:
        uniq, code = np.unique(column, return_inverse=True)
        room *= max(len(uniq), 1)
        key = key * len(uniq) + code.reshape(-1)
        values.append((uniq, code.reshape(-1)))
    if room >= 2**62:  # the combined key would overflow: unique the rows instead
        stacked = np.column_stack([code for _, code in values])
        _, key = np.unique(stacked, axis=0, return_inverse=True)
        key = key.reshape(-1)
    rows, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    base = np.ones(len(key)) if weights is None else weights
    summed = np.bincount(inverse.reshape(-1), weights=base, minlength=len(rows))
    out = [uniq[code[first]].astype(np.float64) for uniq, code in values]
    return [*out, summed.astype(np.float64)]


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional at run time: fits are correct, only slower
        return None
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Hold BLAS to one thread while L-BFGS-B runs.

    Its tiny vector operations gain nothing from threads, and on a machine whose
    cores are busy OpenBLAS's idle threads made the BG/NBD fit on 100,000
    customers take 0.2-0.8 s instead of 0.05 s (measured; see bench/bench_clv.py).
    """
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")  # type: ignore[no-any-return]


def maximize(
    objective: Objective,
    start: Sequence[float],
    names: Sequence[str],
    *,
    model: str,
    n_customers: float,
    gradient: bool,
    strict: bool = False,
    problems: Sequence[str] = (),
    notes: Sequence[str] = (),
    max_iterations: int = 1000,
) -> FitResult:
    """Minimise `objective` (a negative log-likelihood over log-parameters).

    `start` is in natural units. `problems` are reasons found in the data why the
    model is not identified: the optimiser still runs (its last iterate is a finite
    fallback) but the fit is reported as not converged. `notes` are kept as caveats.
    With `strict`, a fit that does not converge raises `ConvergenceError`; otherwise
    it comes back with `converged=False` and a message.
    """
    theta0 = np.log(np.asarray(start, dtype=np.float64))
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(theta0)

    # The optimiser sees the *mean* negative log-likelihood per customer: its first
    # step is as long as the gradient, and per-customer gradients are O(1) where
    # totals over 100,000 customers would throw it to the bounds.
    per = 1.0 / max(float(n_customers), 1.0)

    def guarded(theta: FloatArray) -> Any:
        # L-BFGS-B cannot step back from NaN; a huge finite value makes the line
        # search shrink its step instead.
        out = objective(theta)
        if gradient:
            value, grad = out  # type: ignore[misc]
            if not np.isfinite(value) or not np.all(np.isfinite(grad)):
                return 1e300, np.zeros_like(theta)
            return value * per, grad * per
        value = float(out)  # type: ignore[arg-type]
        return value * per if np.isfinite(value) else 1e300

    with _one_blas_thread():
        found = optimize.minimize(
            guarded,
            theta0,
            jac=gradient,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-6},
        )
    params = {n: float(v) for n, v in zip(names, np.exp(found.x), strict=True)}
    log_likelihood = -float(found.fun) / per
    converged = bool(found.success)
    message = str(found.message)

    # A parameter on its bound, or an objective that never became finite, is not an
    # optimum even when the optimiser reports success.
    at_bound = [
        n for n, t in zip(names, found.x, strict=True) if abs(t) >= LOG_BOUND - 1e-6
    ]
    if at_bound:
        converged = False
        message = (
            f"parameter(s) {', '.join(at_bound)} ran to the edge of the search range "
            f"(1e-9 .. 1e9): the data do not identify them. {message}"
        )
    if not np.isfinite(log_likelihood) or found.fun >= 1e299:
        converged, log_likelihood = False, float("-inf")
        message = f"the log-likelihood is not finite at any point tried. {message}"
    if problems:
        converged = False
        message = (
            f"the data cannot identify the model: {'; '.join(problems)}. {message}"
        )
    if notes:
        message = f"{message} (note: {'; '.join(notes)})"

    result = FitResult(
        model=model,
        params=params,
        log_likelihood=log_likelihood,
        converged=converged,
        iterations=int(found.nit),
        message=message,
        n_customers=float(n_customers),
        notes=(*problems, *notes),
    )
    if not converged:
        log.warning("%s fit did not converge: %s", model, message)
        if strict:
            raise ConvergenceError(
                f"{model} fit did not converge after {result.iterations} iterations: "
                f"{message}. Check the summary for degenerate data (no repeat "
                "purchases, a single customer, T = 0) or fit with strict=False to get "
                "the last iterate."
            )
    return result
