"""Degenerate data: a clear message or a documented fallback, never a silent NaN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clm.analyses.clv import (
    BGNBD,
    fit_bgbb,
    fit_bgnbd,
    fit_gammagamma,
    fit_paretonbd,
    fit_sbg,
    summary,
)
from clm.errors import ConvergenceError

FITTERS = [fit_bgnbd, fit_paretonbd]


@pytest.mark.parametrize("fit", FITTERS)
def test_nobody_repeats(fit) -> None:  # type: ignore[no-untyped-def]
    model = fit([0, 0, 0, 0], [0, 0, 0, 0], [5, 10, 20, 3])
    assert not model.result.converged
    assert "no customer made a repeat purchase" in model.result.message
    assert np.isfinite(model.result.log_likelihood)
    assert all(np.isfinite(v) for v in model.params.values())


@pytest.mark.parametrize("fit", FITTERS)
def test_one_customer(fit) -> None:  # type: ignore[no-untyped-def]
    model = fit([3], [5], [10])
    assert not model.result.converged
    assert "single customer" in model.result.message


@pytest.mark.parametrize("fit", FITTERS)
def test_everyone_buys_on_the_same_day(fit) -> None:  # type: ignore[no-untyped-def]
    tx = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 3],
            "timestamp": pd.to_datetime(
                ["2024-05-01 09:00"] * 3 + ["2024-05-01 17:00"]
            ),
            "amount": [5.0, 6.0, 7.0, 1.0],
        }
    )
    frame = summary(tx, observation_period_end="2024-05-01")
    assert frame["T"].eq(0).all() and frame["frequency"].eq(0).all()
    model = fit(frame["frequency"], frame["recency"], frame["T"])
    assert not model.result.converged
    assert "T is 0 for every customer" in model.result.message


def test_strict_raises_convergence_error_with_the_reason() -> None:
    with pytest.raises(ConvergenceError, match="no customer made a repeat purchase"):
        fit_bgnbd([0, 0], [0, 0], [4, 8], strict=True)


def test_unusable_parameters_refuse_to_predict_instead_of_nan() -> None:
    model = fit_bgnbd([3], [5], [10])  # one customer: parameters run off
    try:
        values = model.expected_purchases(10, [3], [5], [10])
    except ConvergenceError as exc:
        assert "not finite" in str(exc) and "r=" in str(exc)
    else:
        assert np.all(np.isfinite(values))


def test_a_equal_to_one_is_a_removable_singularity() -> None:
    at = BGNBD(0.5, 4.0, 1.0, 2.0).expected_purchases(10, [0, 3], [0, 5], [5, 10])
    near = BGNBD(0.5, 4.0, 1.0 + 1e-5, 2.0).expected_purchases(
        10, [0, 3], [0, 5], [5, 10]
    )
    np.testing.assert_allclose(at, near, rtol=1e-4)


@pytest.mark.parametrize(
    "args,match",
    [
        (([1, -1], [0, 0], [1, 1]), "frequency: 1 value"),
        (([1, 1], [0, np.nan], [1, 1]), "recency"),
        (([1, 1], [5, 0], [2, 1]), "recency > T"),
        (([1.5], [1], [2]), "not a whole number"),
        (([1, 2], [1], [2]), "different lengths"),
    ],
)
def test_invalid_inputs_name_the_field(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_bgnbd(*args)


def test_gamma_gamma_with_one_usable_customer_is_not_converged() -> None:
    model = fit_gammagamma([2, 0, 3], [10.0, 0.0, -1.0])
    assert model.result is not None and not model.result.converged
    assert "single customer" in model.result.message


def test_bgbb_without_repeat_and_sbg_without_churn_say_why() -> None:
    bgbb = fit_bgbb([0, 0], [0, 0], [6, 6])
    assert bgbb.result is not None and not bgbb.result.converged
    assert "nobody bought" in bgbb.result.message
    sbg = fit_sbg([3, 5], [False, False])
    assert sbg.result is not None and not sbg.result.converged
    assert "nobody churned" in sbg.result.message
    with pytest.raises(ValueError, match="periods: 0"):
        fit_sbg([0, 2], [True, False])
