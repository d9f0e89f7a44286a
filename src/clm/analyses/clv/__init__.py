"""Predictive customer value: the RFM summary and the probability models over it.

Data flow: `summary()` turns transactions into per-customer frequency, recency, T and
monetary_value; a purchase model (BG/NBD, Pareto/NBD, or BG/BB for discrete
opportunities) gives P(alive) and expected purchases; Gamma-Gamma gives expected spend;
`clv()` combines them with a margin and a discount rate; `validate_holdout()` checks a
model against a holdout period. sBG covers contracts (renewal cohorts).
"""

from clm.analyses.clv.bgbb import BGBB, fit_bgbb
from clm.analyses.clv.bgnbd import BGNBD, fit_bgnbd
from clm.analyses.clv.clv import clv
from clm.analyses.clv.fit import FitResult
from clm.analyses.clv.gammagamma import GammaGamma, fit_gammagamma
from clm.analyses.clv.paretonbd import ParetoNBD, fit_paretonbd
from clm.analyses.clv.sbg import ShiftedBetaGeometric, fit_sbg
from clm.analyses.clv.summary import summary
from clm.analyses.clv.validate import holdout_chart_svg, validate_holdout

__all__ = [
    "BGBB",
    "BGNBD",
    "FitResult",
    "GammaGamma",
    "ParetoNBD",
    "ShiftedBetaGeometric",
    "clv",
    "fit_bgbb",
    "fit_bgnbd",
    "fit_gammagamma",
    "fit_paretonbd",
    "fit_sbg",
    "holdout_chart_svg",
    "summary",
    "validate_holdout",
]
