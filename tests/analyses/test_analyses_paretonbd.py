"""Pareto/NBD against the published CDNOW values (BTYD; Fader & Hardie 2005 note)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.special import gamma as gamma_fn

from clm.analyses.clv import ParetoNBD, fit_paretonbd

PUBLISHED = ParetoNBD(r=0.553, alpha=10.58, s=0.606, beta=11.67)


@pytest.fixture(scope="module")
def published_summary(shared_data: Path) -> pd.DataFrame:
    path = shared_data / "cdnow" / "cdnow_customers_summary_with_transactions.csv"
    return pd.read_csv(path, index_col="ID")


def test_fit_reproduces_the_published_parameters(
    published_summary: pd.DataFrame,
) -> None:
    s = published_summary
    model = fit_paretonbd(s["x"], s["t_x"], s["T"])
    assert model.result is not None and model.result.converged
    assert round(model.r, 3) == 0.553
    assert round(model.alpha, 2) == 10.58
    assert round(model.s, 3) == 0.606
    assert round(model.beta, 2) == 11.67
    assert round(model.result.log_likelihood, 1) == -9595.0


def test_customer_1516() -> None:
    # x = 26, t_x = 216 days / 7, T = 217 days / 7 from the raw sample.
    alive = PUBLISHED.p_alive([26], [216 / 7], [31])
    expected = PUBLISHED.expected_purchases(52, [26], [216 / 7], [31])
    assert round(float(alive[0]), 4) == 0.9979
    assert round(float(expected[0]), 2) == 25.46


@pytest.mark.parametrize("alpha,beta", [(10.58, 11.67), (11.67, 10.58)])
def test_likelihood_matches_numerical_integration_over_the_death_time(
    alpha: float, beta: float
) -> None:
    # Schmittlein et al. (1987): integrating the rates out of lambda^x e^(-lambda T)
    # (alive at T) and lambda^x mu e^(-(lambda+mu) tau) (died at tau in (t_x, T])
    # leaves one integral over tau, done here numerically. It checks both branches
    # (alpha >= beta and alpha < beta) of the hypergeometric closed form.
    r, s = 0.553, 0.606
    x, t_x, t = 3, 10.0, 30.0
    died, _ = integrate.quad(
        lambda tau: (alpha + tau) ** -(r + x) * (beta + tau) ** -(s + 1),
        t_x,
        t,
        epsabs=0,
        epsrel=1e-12,
    )
    alive = (alpha + t) ** -(r + x) * (beta + t) ** -s
    head = gamma_fn(r + x) / gamma_fn(r) * alpha**r * beta**s
    model = ParetoNBD(r, alpha, s, beta)
    expected = np.log(head * (alive + s * died))
    assert model.log_likelihood([x], [t_x], [t]) == pytest.approx(expected, rel=1e-9)


def test_expected_purchases_is_continuous_through_s_equal_one() -> None:
    near = [
        ParetoNBD(0.5, 10, s, 12).expected_purchases(20, [2], [5], [30])
        for s in (1 - 1e-6, 1.0, 1 + 1e-6)
    ]
    assert near[0][0] == pytest.approx(near[1][0], rel=1e-5)
    assert near[2][0] == pytest.approx(near[1][0], rel=1e-5)
