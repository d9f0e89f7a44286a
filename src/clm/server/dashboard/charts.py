"""Server-side SVG charts the report does not have: a Sankey of stage flows, the cohort
retention heatmap, horizontal bars and a customer's stage timeline.

Drawn as plain SVG strings so the dashboard needs no JavaScript chart library and works
offline; colours come from `clm.report.charts` so both front ends look alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from clm.report.charts import FONT, colour, heat

OUTSIDE = "#9e9e9e"  # nodes that are no stage of the model ("not yet a customer")


def _n(x: float) -> str:
    return f"{x:.1f}"


def sankey(
    flows: Sequence[dict[str, Any]],
    order: Sequence[str],
    label: Callable[[str, bool], str],
    fmt: Callable[[float], str],
    *,
    width: int = 880,
    height: int = 420,
) -> str:
    """Two columns of nodes (stage at the start day, stage at the end day) joined by
    bands as wide as the customers who moved. Node order follows `order`."""
    flows = [f for f in flows if f["customers"] > 0]
    if not flows:
        return ""
    left_tot: dict[str, float] = {}
    right_tot: dict[str, float] = {}
    for f in flows:
        left_tot[f["from_stage"]] = left_tot.get(f["from_stage"], 0) + f["customers"]
        right_tot[f["to_stage"]] = right_tot.get(f["to_stage"], 0) + f["customers"]
    # Stages keep the colour they have everywhere else (their place in `order`);
    # anything else, such as "not yet a customer", comes first and in grey.
    rank = {s: i for i, s in enumerate(order)}
    lefts = sorted(left_tot, key=lambda s: rank.get(s, -1))
    rights = sorted(right_tot, key=lambda s: rank.get(s, -1))

    def paint(stage: str) -> str:
        return colour(rank[stage]) if stage in rank else OUTSIDE

    total = sum(left_tot.values())
    gap, top, node_w, x0, x1 = 6.0, 10.0, 14.0, 170.0, width - 184.0
    room = height - 2 * top - gap * max(len(lefts), len(rights))
    scale = room / total if total else 0.0

    def place(names: list[str], tot: dict[str, float]) -> dict[str, list[float]]:
        y, out = top, {}
        for s in names:
            h = max(tot[s] * scale, 1.0)
            out[s] = [y, y + h, y]  # top, bottom, cursor for the next band
            y += h + gap
        return out

    lp, rp = place(lefts, left_tot), place(rights, right_tot)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" class="clm-sankey" font-family="{FONT}" '
        'font-size="12"><title>Sankey</title>'
    ]
    ordered = sorted(
        flows,
        key=lambda f: (rank.get(f["from_stage"], -1), rank.get(f["to_stage"], -1)),
    )
    for f in ordered:
        h = max(f["customers"] * scale, 0.5)
        a, b = lp[f["from_stage"]], rp[f["to_stage"]]
        ya, yb = a[2], b[2]
        a[2] += h
        b[2] += h
        xa, xb, mid = x0 + node_w, x1, (x0 + node_w + x1) / 2
        c = paint(f["from_stage"])
        title = (
            f"{label(f['from_stage'], False)} → {label(f['to_stage'], True)}: "
            f"{fmt(f['customers'])}"
        )
        parts.append(
            f'<path class="flow" d="M{_n(xa)},{_n(ya)} C{_n(mid)},{_n(ya)} '
            f"{_n(mid)},{_n(yb)} {_n(xb)},{_n(yb)} L{_n(xb)},{_n(yb + h)} "
            f'C{_n(mid)},{_n(yb + h)} {_n(mid)},{_n(ya + h)} {_n(xa)},{_n(ya + h)} Z" '
            f'fill="{c}" fill-opacity="0.35"><title>{escape(title)}</title></path>'
        )
    for names, pos, x, right in ((lefts, lp, x0, False), (rights, rp, x1, True)):
        for s in names:
            y0, y1, _ = pos[s]
            c = paint(s)
            tot = (right_tot if right else left_tot)[s]
            parts.append(
                f'<rect class="node" x="{_n(x)}" y="{_n(y0)}" width="{node_w}" '
                f'height="{_n(y1 - y0)}" fill="{c}"/>'
            )
            tx = x + node_w + 6 if right else x - 6
            anchor = "start" if right else "end"
            parts.append(
                f'<text x="{_n(tx)}" y="{_n((y0 + y1) / 2 + 4)}" '
                f'text-anchor="{anchor}">'
                f"{escape(label(s, right))} ({escape(fmt(tot))})</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def cohort_heatmap(
    rows: Sequence[dict[str, Any]],
    months: int,
    cohort_label: Callable[[str], str],
    pct: Callable[[float], str],
    *,
    cell: int = 44,
) -> str:
    """One row per first-order month, one column per month since: the share of the
    cohort that ordered in that month, white (0) to dark blue (1)."""
    if not rows:
        return ""
    left, top = 120, 26
    width = left + cell * (months + 1) + 10
    height = top + 22 * len(rows) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" class="clm-heatmap" font-family="{FONT}" '
        'font-size="11"><title>Cohorts</title>'
    ]
    for k in range(months + 1):
        parts.append(
            f'<text x="{left + k * cell + cell / 2}" y="16" text-anchor="middle">'
            f"{k}</text>"
        )
    for i, row in enumerate(rows):
        y = top + 22 * i
        parts.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">'
            f"{escape(cohort_label(row['cohort']))} ({row['customers']})</text>"
        )
        for k, share in enumerate(row["retention"]):
            if share is None:
                continue
            bg, fg = heat(share)
            x = left + k * cell
            parts.append(
                f'<rect class="cell" x="{x}" y="{y}" width="{cell - 2}" height="20" '
                f'fill="{bg}"><title>{escape(pct(share))}</title></rect>'
                f'<text x="{x + cell / 2 - 1}" y="{y + 14}" fill="{fg}" '
                f'text-anchor="middle">{escape(pct(share))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def bars(
    items: Sequence[tuple[str, float]],
    fmt: Callable[[float], str],
    *,
    width: int = 520,
) -> str:
    """Horizontal bars with their labels and values, longest first as given."""
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    left, h = 150, 22
    height = h * len(items) + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" class="clm-bars" font-family="{FONT}" '
        'font-size="12"><title>Bars</title>'
    ]
    for i, (name, v) in enumerate(items):
        y = 3 + i * h
        w = (width - left - 80) * v / top
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(name)}</text>'
            f'<rect class="bar" x="{left}" y="{y}" width="{_n(max(w, 1))}" '
            f'height="{h - 6}" fill="{colour(i)}"/>'
            f'<text x="{_n(left + w + 6)}" y="{y + 14}">{escape(fmt(v))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def timeline(
    spans: Sequence[dict[str, Any]],
    order: Sequence[str],
    label: Callable[[str], str],
    day: Callable[[datetime], str],
    *,
    until: datetime | None = None,
    width: int = 880,
) -> str:
    """A customer's stages as consecutive coloured spans on one time axis.

    A stage that still holds runs to `until` (the end of the observed data), so the
    current stage is drawn as long as it has lasted, not as a sliver."""
    if not spans:
        return ""
    parse = datetime.fromisoformat
    starts = [parse(s["valid_from"]) for s in spans]
    ends = [parse(s["valid_to"]) if s["valid_to"] else None for s in spans]
    lo = min(starts)
    hi = max([e for e in ends if e] + starts)
    if until is not None and any(e is None for e in ends):
        hi = max(hi, until)
    if hi == lo:
        hi = lo.replace(year=lo.year + 1)
    span = (hi - lo).total_seconds()
    left, right = 10, 10
    plot = width - left - right
    rank = {s: i for i, s in enumerate(order)}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 64" '
        f'width="100%" role="img" class="clm-timeline" font-family="{FONT}" '
        'font-size="11"><title>Timeline</title>'
    ]
    for s, a, b in zip(spans, starts, ends, strict=True):
        x = left + plot * (a - lo).total_seconds() / span
        x2 = left + plot * ((b or hi) - lo).total_seconds() / span
        name = label(s["stage"])
        tip = f"{name}: {day(a)} – {day(b) if b else '…'}"
        parts.append(
            f'<rect class="span" x="{_n(x)}" y="8" width="{_n(max(x2 - x, 2))}" '
            f'height="26" fill="{colour(rank.get(s["stage"], 0))}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if x2 - x > 60:
            parts.append(
                f'<text x="{_n(x + 4)}" y="25" fill="#fff">{escape(name)}</text>'
            )
    parts.append(
        f'<text x="{left}" y="52">{escape(day(lo))}</text>'
        f'<text x="{width - right}" y="52" text-anchor="end">{escape(day(hi))}</text>'
        "</svg>"
    )
    return "".join(parts)
