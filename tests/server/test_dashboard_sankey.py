"""The Sankey's colours match every other chart: a stage's colour is its place in the
model; nodes that are no stage ("not yet a customer") are grey."""

from __future__ import annotations

import re

from clm.report.charts import colour
from clm.server.dashboard.charts import OUTSIDE, sankey


def test_sankey_colours_follow_the_model_order():
    flows = [
        {"from_stage": "(not yet)", "to_stage": "buyer", "customers": 3.0},
        {"from_stage": "buyer", "to_stage": "loyal", "customers": 2.0},
    ]
    svg = sankey(flows, ["loyal", "buyer"], lambda s, t: s, lambda v: f"{v:.0f}")
    # Each node is a rect followed by its label "name (count)".
    pairs = re.findall(
        r'<rect class="node"[^>]*fill="(#[0-9A-Fa-f]{6})"/><text[^>]*>(.+?) \(', svg
    )
    assert len(pairs) == 4  # left: not yet, buyer; right: buyer, loyal
    got = {label: fill for fill, label in pairs}
    assert got["(not yet)"] == OUTSIDE
    assert got["buyer"] == colour(1)
    assert got["loyal"] == colour(0)
