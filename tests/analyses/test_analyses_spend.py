"""Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV") and the CLV formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.analyses.clv import GammaGamma, clv, fit_gammagamma, summary
from clm.analyses.clv.fit import FloatArray


@pytest.fixture(scope="module")
def cdnow(shared_data: Path) -> pd.DataFrame:
    raw = pd.read_csv(
        shared_data / "cdnow" / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "cds", "amount"],
    )
    tx = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
            "amount": raw["amount"],
        }
    )
    return summary(tx, observation_period_end="1997-09-30")


def test_fit_on_the_946_repeat_customers(cdnow: pd.DataFrame) -> None:
    model = fit_gammagamma(cdnow["frequency"], cdnow["monetary_value"])
    assert model.result is not None and model.result.converged
    assert model.result.n_customers == 946
    assert round(model.p, 2) == 6.25
    assert round(model.q, 2) == 3.74
    assert round(model.gamma, 2) == 15.44


def test_expected_spend_is_the_papers_weighted_mean() -> None:
    model = GammaGamma(p=6.25, q=3.74, gamma=15.44)
    # Eq. (5) by hand: (gamma + x zbar) p / (p x + q - 1).
    x, zbar = 2.0, 22.35
    by_hand = (15.44 + x * zbar) * 6.25 / (6.25 * x + 3.74 - 1)
    got = model.expected_spend([x, 0.0], [zbar, 0.0])
    assert got[0] == pytest.approx(by_hand, rel=1e-12)
    assert got[1] == pytest.approx(
        6.25 * 15.44 / 2.74, rel=1e-12
    )  # E[Z] = p gamma / (q-1)


def test_q_at_most_one_refuses_a_population_mean() -> None:
    with pytest.raises(ValueError, match=r"q: 0\.9"):
        _ = GammaGamma(p=1.0, q=0.9, gamma=1.0).population_mean


def test_non_positive_spend_is_left_out_and_said() -> None:
    x = [1, 2, 3, 0, 4, 2, 5]
    zbar = [10.0, -3.0, 12.0, 0.0, 0.0, 9.0, 14.0]
    model = fit_gammagamma(x, zbar)
    assert model.result is not None
    assert model.result.n_customers == 4  # x > 0 and zbar > 0
    assert "2 repeat customer(s) with monetary_value <= 0" in model.result.message
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_gammagamma([0, 1], [5.0, -1.0])


class LinearPurchases:
    """A stand-in purchase model: `rate` purchases per time unit, P(alive) 1."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def expected_purchases(
        self, t: float | FloatArray, frequency: object, recency: object, T: object
    ) -> FloatArray:
        return np.full(len(np.asarray(frequency)), self.rate * float(t))  # type: ignore[arg-type]

    def p_alive(self, frequency: object, recency: object, T: object) -> FloatArray:
        return np.ones(len(np.asarray(frequency)))


def test_clv_discounts_each_period_and_applies_the_margin() -> None:
    frame = pd.DataFrame(
        {"frequency": [2.0], "recency": [5.0], "T": [10.0], "monetary_value": [20.0]},
        index=["c1"],
    )
    spend = GammaGamma(p=6.25, q=3.74, gamma=15.44)
    got = clv(
        LinearPurchases(0.5),
        spend,
        frame,
        periods=3,
        period_length=4.0,
        discount_rate=0.1,
        margin=0.3,
    )
    per_period = 0.5 * 4.0  # two purchases in every period
    by_hand = (
        0.3
        * spend.expected_spend([2.0], [20.0])[0]
        * sum(per_period / 1.1**k for k in (1, 2, 3))
    )
    assert got.loc["c1", "clv"] == pytest.approx(by_hand, rel=1e-12)
    assert got.loc["c1", "expected_purchases"] == pytest.approx(6.0)


@pytest.mark.parametrize(
    "arg,value",
    [("discount_rate", 1.5), ("margin", 2.0), ("periods", 0), ("period_length", 0)],
)
def test_clv_refuses_bad_arguments_by_name(arg: str, value: float) -> None:
    frame = pd.DataFrame(
        {"frequency": [1.0], "recency": [1.0], "T": [2.0], "monetary_value": [5.0]}
    )
    with pytest.raises(ValueError, match=arg):
        clv(LinearPurchases(1), GammaGamma(2, 3, 4), frame, **{arg: value})  # type: ignore[arg-type]
