"""BG/BB (Fader, Hardie & Shang 2010) and sBG (Fader & Hardie 2007) on their data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import beta as beta_fn

from clm.analyses.clv import BGBB, fit_bgbb, fit_sbg


def test_bgbb_fit_on_the_donations(shared_data: Path) -> None:
    d = pd.read_csv(shared_data / "donations_bgbb" / "donations.csv")
    model = fit_bgbb(d["frequency"], d["recency"], d["periods"], weights=d["weights"])
    assert model.result is not None and model.result.converged
    assert model.result.n_customers == 11104
    assert round(model.alpha, 3) == 1.204
    assert round(model.beta, 3) == 0.750
    assert round(model.gamma, 3) == 0.657
    assert round(model.delta, 3) == 2.783
    assert round(model.result.log_likelihood, 1) == -33225.6


def test_bgbb_individual_rows_give_the_same_likelihood(shared_data: Path) -> None:
    rows = pd.read_csv(shared_data / "donations_bgbb" / "bgbb_donations.csv")
    model = BGBB(1.204, 0.750, 0.657, 2.783)
    d = pd.read_csv(shared_data / "donations_bgbb" / "donations.csv")
    weighted = sum(
        w * model.log_likelihood([x], [t], [n])
        for x, t, n, w in d[["frequency", "recency", "periods", "weights"]].to_numpy()
    )
    assert model.log_likelihood(rows["frequency"], rows["recency"], rows["T"]) == (
        pytest.approx(weighted, rel=1e-12)
    )


def test_bgbb_likelihood_and_p_alive_by_hand() -> None:
    # FHS eq. (5) and (11) for x = 2, t_x = 3, n = 5 with plain beta functions.
    al, be, ga, de = 1.2, 0.75, 0.66, 2.8
    x, t_x, n = 2, 3, 5
    alive = (
        beta_fn(al + x, be + n - x)
        / beta_fn(al, be)
        * beta_fn(ga, de + n)
        / (beta_fn(ga, de))
    )
    died = sum(
        beta_fn(al + x, be + t_x - x + i)
        / beta_fn(al, be)
        * beta_fn(ga + 1, de + t_x + i)
        / beta_fn(ga, de)
        for i in range(n - t_x)
    )
    model = BGBB(al, be, ga, de)
    assert model.log_likelihood([x], [t_x], [n]) == pytest.approx(np.log(alive + died))
    next_alive = (
        beta_fn(al + x, be + n - x)
        / beta_fn(al, be)
        * beta_fn(ga, de + n + 1)
        / beta_fn(ga, de)
    )
    assert model.p_alive([x], [t_x], [n])[0] == pytest.approx(
        next_alive / (alive + died)
    )


def test_bgbb_forecast_equals_the_sum_of_one_step_forecasts() -> None:
    # E[X(n, n+2)] = P(buy at n+1) + P(buy at n+2); each term by FHS eq. (13) with
    # n* = 1 shifted, so the two-step forecast must be the sum computed directly:
    # E[purchase at n+k] = B(al+x+1, be+n-x)/B(al,be) * B(ga, de+n+k)/B(ga,de) / L.
    al, be, ga, de = 1.2, 0.75, 0.66, 2.8
    x, t_x, n = 2, 3, 5
    model = BGBB(al, be, ga, de)
    like = np.exp(model.log_likelihood([x], [t_x], [n]))
    direct = sum(
        beta_fn(al + x + 1, be + n - x)
        / beta_fn(al, be)
        * beta_fn(ga, de + n + k)
        / beta_fn(ga, de)
        / like
        for k in (1, 2)
    )
    assert model.expected_purchases(2, [x], [t_x], [n])[0] == pytest.approx(direct)


@pytest.mark.parametrize(
    "cohort,alpha,beta", [("regular", 0.704, 1.182), ("highend", 0.668, 3.806)]
)
def test_sbg_fit_on_the_renewal_cohorts(
    shared_data: Path, cohort: str, alpha: float, beta: float
) -> None:
    data = pd.read_csv(shared_data / "sbg_retention" / "sbg_cohorts.csv")
    one = data[data["cohort"] == cohort]
    churned = one["recency"] < one["T"]
    # recency = the year of churn, 8 = still active after year 7 (README).
    periods = one["recency"].where(churned, one["T"] - 1)
    model = fit_sbg(periods, churned)
    assert model.result is not None and model.result.converged
    assert (round(model.alpha, 3), round(model.beta, 3)) == (alpha, beta)


def test_sbg_survival_and_retention_agree() -> None:
    from clm.analyses.clv import ShiftedBetaGeometric

    model = ShiftedBetaGeometric(0.704, 1.182)
    survival = model.survival(np.arange(0, 8))
    # FH07 eq. (9): r_t = (beta + t - 1) / (alpha + beta + t - 1) = S(t) / S(t-1).
    ratios = survival[1:] / survival[:-1]
    by_hand = [(1.182 + t - 1) / (0.704 + 1.182 + t - 1) for t in range(1, 8)]
    np.testing.assert_allclose(ratios, by_hand, rtol=1e-12)
    np.testing.assert_allclose(model.retention_rate(np.arange(1, 8)), by_hand)


def test_sbg_derl_is_the_discounted_sum_of_survival() -> None:
    from clm.analyses.clv import ShiftedBetaGeometric

    model = ShiftedBetaGeometric(0.704, 1.182)
    d, n = 0.1, 2
    # Given n renewals, DERL = sum_{t>n} S(t)/S(n) / (1+d)^(t-n-1) ... counted from
    # the next period on: sum_{k>=1} S(n+k)/S(n) / (1+d)^(k-1).
    k = np.arange(1, 4000)
    by_hand = np.sum(
        model.survival(n + k) / model.survival([n])[0] / (1 + d) ** (k - 1)
    )
    got = model.discounted_expected_residual_lifetime([n], d)[0]
    assert got == pytest.approx(by_hand, rel=1e-6)
