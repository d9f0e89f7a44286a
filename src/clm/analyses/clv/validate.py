"""Holdout validation: does the model predict the purchases of a period it never saw?

Customers are grouped by their calibration frequency (0, 1, …, 7+ as in Fader, Hardie
& Lee 2005, Figure 4, "conditional expectations"); per group the mean predicted holdout
purchases E[Y(duration_holdout) | x, t_x, T] is set beside the mean actual
frequency_holdout. `holdout_chart_svg` draws the two lines as a self-contained SVG.
"""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

from clm.analyses.clv.clv import PurchaseModel

NEEDED = ("frequency", "recency", "T", "frequency_holdout", "duration_holdout")


def validate_holdout(
    model: PurchaseModel, summary: pd.DataFrame, *, max_frequency: int = 7
) -> pd.DataFrame:
    """Mean predicted against mean actual holdout purchases by calibration frequency.

    `summary` is the output of `summary(..., calibration_period_end=...)`. Returns
    one row per bucket "0" .. "<max_frequency>+" with customers, actual, predicted.
    """
    missing = [c for c in NEEDED if c not in summary.columns]
    if missing:
        raise ValueError(
            f"summary: missing column(s) {', '.join(missing)}; build it with "
            "summary(..., calibration_period_end=...) so it has a holdout period."
        )
    if max_frequency < 1:
        raise ValueError(f"max_frequency: {max_frequency!r} must be >= 1.")
    x = summary["frequency"].to_numpy(float)
    predicted = model.expected_purchases(
        summary["duration_holdout"].to_numpy(float),
        x,
        summary["recency"].to_numpy(float),
        summary["T"].to_numpy(float),
    )
    bucket = np.minimum(x, max_frequency).astype(int)
    labels = [str(i) for i in range(max_frequency)] + [f"{max_frequency}+"]
    frame = pd.DataFrame(
        {
            "bucket": pd.Categorical.from_codes(bucket, labels),
            "actual": summary["frequency_holdout"].to_numpy(float),
            "predicted": predicted,
        }
    )
    table = frame.groupby("bucket", observed=False).agg(
        customers=("actual", "size"),
        actual=("actual", "mean"),
        predicted=("predicted", "mean"),
    )
    return table.fillna(0.0)


def holdout_chart_svg(
    table: pd.DataFrame,
    *,
    title: str = "Holdout purchases by calibration frequency",
    width: int = 560,
    height: int = 320,
) -> str:
    """An inline SVG line chart of `validate_holdout`'s actual and predicted columns."""
    left, right, top, bottom = 48, 16, 36, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    labels = [str(i) for i in table.index]
    peak = float(max(table["actual"].max(), table["predicted"].max(), 1e-9))
    step = plot_w / max(len(labels) - 1, 1)

    def point(i: int, value: float) -> str:
        return f"{left + i * step:.1f},{top + plot_h * (1 - value / peak):.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
    ]
    # Axis ticks: every bucket below, four value steps at the left.
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{left + i * step:.1f}" y="{top + plot_h + 16}" font-size="11" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    for j in range(5):
        value = peak * j / 4
        y = top + plot_h * (1 - j / 4)
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end">{value:.2g}</text>'
        )
    for column, colour, dash in (
        ("actual", "#1f77b4", ""),
        ("predicted", "#d62728", ' stroke-dasharray="6 4"'),
    ):
        points = " ".join(point(i, float(v)) for i, v in enumerate(table[column]))
        parts.append(
            f'<polyline class="{column}" fill="none" stroke="{colour}" '
            f'stroke-width="2"{dash} points="{points}"/>'
        )
    parts.append(
        f'<text x="{left + plot_w}" y="20" font-size="11" text-anchor="end">'
        '<tspan fill="#1f77b4">— actual</tspan> '
        '<tspan fill="#d62728">- - predicted</tspan></text>'
    )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" '
        'text-anchor="middle">repeat purchases in the calibration period</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
