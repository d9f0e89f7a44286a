"""RFM quintile scores with deterministic ties, and the segment mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clm.analyses.rfm import (
    DEFAULT_SEGMENTS,
    SegmentRule,
    check_segments,
    quintile_scores,
    rfm_scores,
    rfm_segments,
)
from clm.errors import ConfigError


def test_quintiles_of_ten_distinct_values() -> None:
    scores = quintile_scores(pd.Series([7, 1, 9, 3, 5, 2, 10, 4, 8, 6], name="x"))
    # Sorted 1..10 -> two values per quintile.
    expected = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 4, 8: 4, 9: 5, 10: 5}
    values = [7, 1, 9, 3, 5, 2, 10, 4, 8, 6]
    assert scores.tolist() == [expected[v] for v in values]


def test_ties_take_the_lowest_rank() -> None:
    # Ranks (min): 1 -> 1, the three 5s -> 2: scores 1 + floor(5 * (k - 1) / 4).
    assert quintile_scores(pd.Series([5, 5, 1, 5], name="x")).tolist() == [2, 2, 1, 2]


@given(st.lists(st.integers(0, 6), min_size=1, max_size=60))
def test_equal_values_equal_scores_and_order_does_not_matter(
    values: list[int],
) -> None:
    series = pd.Series(values, name="v")
    scores = quintile_scores(series)
    for value in set(values):
        assert scores[series == value].nunique() == 1
    assert scores.between(1, 5).all()
    # Monotone, and the same scores whatever the row order.
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(scores.to_numpy()[order]) >= 0)
    shuffled = series.sample(frac=1, random_state=len(values))
    assert quintile_scores(shuffled).sort_index().equals(scores)


def test_scores_and_segments_from_a_summary() -> None:
    summary = pd.DataFrame(
        {
            "frequency": [10, 0, 3, 0, 8],
            "recency": [30, 0, 10, 0, 5],
            "T": [31, 40, 40, 2, 50],
            "monetary_value": [50, 0, 20, 0, 80],
        },
        index=["champ", "gone", "mid", "new", "old_big"],
    )
    scores = rfm_scores(summary)
    # Time since last purchase: 1, 40, 30, 2, 45 -> R (recent = high): 5, 2, 3, 4, 1.
    assert scores["R"].tolist() == [5, 2, 3, 4, 1]
    assert scores["F"].tolist() == [5, 1, 3, 1, 4]
    assert scores["M"].tolist() == [4, 1, 3, 1, 5]
    assert scores.loc["champ", "rfm"] == "554"
    assert scores["FM"].tolist() == [5, 1, 3, 1, 5]  # ceil((F + M) / 2)
    segments = rfm_segments(scores)
    assert segments.tolist() == [
        "Champions",
        "Hibernating",
        "Need attention",
        "Promising",
        "Can't lose",
    ]


def test_default_mapping_covers_every_cell_once_with_eleven_names() -> None:
    grid = check_segments(DEFAULT_SEGMENTS)
    assert grid.shape == (5, 5) and (grid >= 0).all()
    assert len({rule.name for rule in DEFAULT_SEGMENTS}) == 11


def test_a_mapping_with_a_hole_or_an_overlap_is_refused() -> None:
    with pytest.raises(ConfigError, match="R=1 FM=1"):
        check_segments(DEFAULT_SEGMENTS[:-1])  # without Lost
    overlapping = (*DEFAULT_SEGMENTS, SegmentRule("Everyone", 1, 5, 1, 5))
    with pytest.raises(ConfigError, match="'Everyone' overlaps"):
        check_segments(overlapping)
    with pytest.raises(ConfigError, match="1 <= min <= max <= 5"):
        check_segments([SegmentRule("Bad", 0, 5, 1, 5)])


def test_a_custom_two_segment_mapping() -> None:
    rules = [SegmentRule("Active", 3, 5, 1, 5), SegmentRule("Dormant", 1, 2, 1, 5)]
    scores = pd.DataFrame({"R": [1, 3, 5], "FM": [5, 1, 3]})
    assert rfm_segments(scores, rules).tolist() == ["Dormant", "Active", "Active"]
