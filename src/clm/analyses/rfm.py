"""RFM scores (quintiles 1..5) and named customer segments.

Scores are read off the CLV summary (`clm.analyses.clv.summary`):

* R from the time since the last purchase, T − recency: the more recent, the higher;
* F from frequency (repeat purchase days);
* M from monetary_value (mean repeat spend).

Quintiles with deterministic ties: a customer's score is 1 + floor(5 × (k − 1) / n),
where n is the number of customers and k the 1-based rank of the value with ties
given the *lowest* rank (pandas `rank(method="min")`). Equal values always get equal
scores, higher values never get lower scores, and the result does not depend on row
order. With many ties a score can be skipped (if 60 % of customers never repeated,
they all share F = 1 and the next F is 4): that is the honest quintile of the data.

Segments come from R and FM = ceil((F + M) / 2) through a mapping table of
`SegmentRule`s, each a named rectangle of (R, FM) cells. The default table
(`DEFAULT_SEGMENTS`) in the grid R (rows) × FM (columns):

    R=5  New           Potential loyalist ×2   Champions ×2
    R=4  Promising     Potential loyalist ×2   Loyal ×2
    R=3  About to sleep ×2   Need attention    Loyal ×2
    R=2  Hibernating ×2      At risk ×2        Can't lose
    R=1  Lost ×2             At risk ×2        Can't lose

Pass your own table to `rfm_segments`; it must cover each of the 25 cells exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clm.errors import ConfigError

SCORES = 5


@dataclass(frozen=True)
class SegmentRule:
    """Customers with r_min <= R <= r_max and fm_min <= FM <= fm_max get `name`."""

    name: str
    r_min: int
    r_max: int
    fm_min: int
    fm_max: int


DEFAULT_SEGMENTS: tuple[SegmentRule, ...] = (
    SegmentRule("Champions", 5, 5, 4, 5),
    SegmentRule("Loyal", 3, 4, 4, 5),
    SegmentRule("Potential loyalist", 4, 5, 2, 3),
    SegmentRule("New", 5, 5, 1, 1),
    SegmentRule("Promising", 4, 4, 1, 1),
    SegmentRule("Need attention", 3, 3, 3, 3),
    SegmentRule("About to sleep", 3, 3, 1, 2),
    SegmentRule("At risk", 1, 2, 3, 4),
    SegmentRule("Can't lose", 1, 2, 5, 5),
    SegmentRule("Hibernating", 2, 2, 1, 2),
    SegmentRule("Lost", 1, 1, 1, 2),
)


def quintile_scores(values: pd.Series) -> pd.Series:
    """Scores 1..5 with ties by minimum rank (see the module docstring)."""
    if values.isna().any():
        raise ValueError(
            f"{values.name}: {int(values.isna().sum())} missing value(s); RFM scores "
            "need a value for every customer."
        )
    n = len(values)
    if n == 0:
        return pd.Series([], index=values.index, dtype=np.int64, name=values.name)
    rank = values.rank(method="min").to_numpy()
    score = 1 + np.floor(SCORES * (rank - 1) / n).astype(np.int64)
    return pd.Series(score, index=values.index, name=values.name)


def rfm_scores(summary: pd.DataFrame) -> pd.DataFrame:
    """R, F and M scores (1..5), FM and the RFM code ("545") per customer."""
    missing = [
        c for c in ("frequency", "recency", "T", "monetary_value") if c not in summary
    ]
    if missing:
        raise ValueError(
            f"summary: missing column(s) {', '.join(missing)}; pass the output of "
            "clm.analyses.clv.summary()."
        )
    # Recent is good: score the negated time since the last purchase.
    since_last = summary["T"] - summary["recency"]
    r = quintile_scores((-since_last).rename("R"))
    f = quintile_scores(summary["frequency"].rename("F"))
    m = quintile_scores(summary["monetary_value"].rename("M"))
    fm = (f + m + 1) // 2  # ceil of the mean: a half rounds up
    return pd.DataFrame(
        {
            "R": r,
            "F": f,
            "M": m,
            "FM": fm,
            "rfm": r.astype(str) + f.astype(str) + m.astype(str),
        },
        index=summary.index,
    )


def check_segments(rules: Sequence[SegmentRule]) -> np.ndarray:
    """The 5×5 (R, FM) grid of rule indices; every cell must be covered once."""
    grid = np.full((SCORES, SCORES), -1, dtype=np.int64)
    for i, rule in enumerate(rules):
        bounds = (rule.r_min, rule.r_max, rule.fm_min, rule.fm_max)
        if not all(1 <= v <= SCORES for v in bounds) or (
            rule.r_min > rule.r_max or rule.fm_min > rule.fm_max
        ):
            raise ConfigError(
                f"segment {rule.name!r}: bounds {bounds} must satisfy 1 <= min <= max "
                "<= 5 for both R and FM."
            )
        cells = grid[rule.r_min - 1 : rule.r_max, rule.fm_min - 1 : rule.fm_max]
        if (cells >= 0).any():
            other = rules[int(cells[cells >= 0][0])].name
            raise ConfigError(
                f"segment {rule.name!r} overlaps segment {other!r}; every (R, FM) cell "
                "may belong to one segment only. Narrow one of the two."
            )
        cells[...] = i
    holes = [
        f"R={r + 1} FM={c + 1}" for r, c in zip(*np.nonzero(grid < 0), strict=True)
    ]
    if holes:
        raise ConfigError(
            f"segments leave {len(holes)} cell(s) without a segment: "
            f"{', '.join(holes[:6])}{' …' if len(holes) > 6 else ''}; add rules that "
            "cover them."
        )
    return grid


def rfm_segments(
    scores: pd.DataFrame, rules: Sequence[SegmentRule] = DEFAULT_SEGMENTS
) -> pd.Series:
    """The segment name of each customer, from R and FM of `rfm_scores`."""
    grid = check_segments(rules)
    names = np.array([rule.name for rule in rules], dtype=object)
    index = grid[scores["R"].to_numpy() - 1, scores["FM"].to_numpy() - 1]
    order = list(dict.fromkeys(rule.name for rule in rules))
    return pd.Series(
        pd.Categorical(names[index], categories=order),
        index=scores.index,
        name="segment",
    )
