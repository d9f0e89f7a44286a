"""Charts for the report as inline SVG (and one HTML table), with no script and no font.

Each function is pure: data in, markup string out. Every SVG is a well-formed XML
document on its own (namespace, `<title>`, `<desc>`), carries `role="img"` and readable
text labels, and uses the page's own font stack, so the report opens offline and screen
readers can name what each chart shows. Axis labels are formatted by `clm.report.i18n`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import date
from html import escape

import pandas as pd

from clm.report import i18n

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart with every
# common colour-vision deficiency; black is left out (it reads as an axis) and three
# muted colours added for models with more than seven stages.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#7F7F7F",
    "#8C564B",
    "#17BECF",
)
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"


def _uid(prefix: str, *parts: object) -> str:
    """An element id derived from the content, so the same data renders the same
    bytes every time (reports can be diffed and cached)."""
    digest = hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:10]
    return f"{prefix}-{digest}"


def _attr(text: str) -> str:
    return escape(str(text), quote=True)


def _num(x: float) -> str:
    """Coordinates with one decimal: enough for a screen, short in the file."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if x == x else "0"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_ticks(top: float, target: int = 5, integer: bool = True) -> list[float]:
    """Round axis ticks from 0 to at least `top`: steps of 1, 2 or 5 times a power of
    ten (the usual "nice numbers" rule; Heckbert, Graphics Gems, 1990)."""
    if not top or top <= 0 or math.isnan(top):
        return [0.0, 1.0]
    raw = top / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(step, 1.0)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _label_every(n: int, room: int) -> list[int]:
    """Indices of the x labels to print so that at most `room` fit; the last period
    is always labelled, since it is the one readers look for."""
    if n <= room:
        return list(range(n))
    step = math.ceil(n / room)
    picked = list(range(n - 1, -1, -step))
    return sorted(picked)


def population_chart(
    populations: pd.DataFrame,
    stages: Sequence[str],
    labels: Mapping[str, str],
    grain: str,
    lang: str,
    *,
    stacked: bool = True,
    width: int = 880,
    height: int = 320,
    element_id: str = "",
    last_incomplete: bool = False,
) -> str:
    """Customers per stage over time: a stacked area chart (or one line per stage).

    With `last_incomplete` the stretch to the last period is greyed and labelled, so a
    dip that only means "the week is not over" is not read as a fall.

    `populations` has period_start, stage, population; `stages` gives the order
    (bottom of the stack first) and `labels` the display name of each stage.
    Returns "" when there is nothing to draw; the caller shows a "no data" note.
    """
    frame = populations.dropna(subset=["period_start", "stage"])
    if frame.empty:
        return ""
    wide = (
        frame.pivot_table(
            index="period_start", columns="stage", values="population", aggfunc="sum"
        )
        .sort_index()
        .fillna(0)
    )
    shown = [s for s in stages if s in wide.columns]
    shown += sorted(set(wide.columns) - set(shown))
    wide = wide[shown]
    periods: list[date] = list(wide.index)
    n = len(periods)

    # Layout: plot area, then a legend below it in as many rows as it needs.
    left, right, top = 72, 40, 16
    plot_h = height - 60
    legend_rows = _legend_rows([labels.get(s, s) for s in shown], width - left - right)
    total_h = top + plot_h + 44 + 22 * len(legend_rows)
    plot_w = width - left - right
    bottom = top + plot_h

    peak = float(wide.sum(axis=1).max() if stacked else wide.max().max())
    ticks = nice_ticks(peak)
    y_max = ticks[-1] or 1.0

    def x_at(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y_at(v: float) -> float:
        return bottom - plot_h * v / y_max

    uid = element_id or _uid("clm-pop", shown, periods, wide.to_numpy().tolist(), lang)
    title = i18n.translate("ui.populations_chart_title", lang)
    first_p = i18n.format_period(periods[0], grain, lang)
    last_p = i18n.format_period(periods[-1], grain, lang)
    desc = "; ".join(
        f"{labels.get(s, s)}: {i18n.format_number(wide[s].iloc[-1], lang, 0)}"
        for s in shown
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {total_h}" '
        f'width="100%" role="img" aria-labelledby="{uid}-t {uid}-d" '
        f'font-family="{_attr(FONT)}" font-size="12" class="clm-chart">',
        f'<title id="{uid}-t">{escape(title)} ({escape(first_p)} – '
        f"{escape(last_p)})</title>",
        f'<desc id="{uid}-d">{escape(last_p)}: {escape(desc)}</desc>',
    ]

    # Grid and y axis: horizontal rules at each tick, labelled in the reader's format.
    for t in ticks:
        y = y_at(t)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(y)}" y2="{_num(y)}" '
            f'stroke="#d9d9d9" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left - 8}" y="{_num(y + 4)}" text-anchor="end" '
            f'fill="#444">{escape(i18n.format_number(t, lang, 0))}</text>'
        )
    out.append(
        f'<text transform="translate(14 {_num(top + plot_h / 2)}) rotate(-90)" '
        f'text-anchor="middle" fill="#444">'
        f"{escape(i18n.translate('ui.customers', lang))}</text>"
    )

    # One area (or line) per stage; stacked areas are drawn from a running baseline.
    base = [0.0] * n
    for index, stage in enumerate(shown):
        values = [float(v) for v in wide[stage]]
        tops = [b + v for b, v in zip(base, values, strict=True)] if stacked else values
        xs = [x_at(i) for i in range(n)]
        if n == 1:  # one period: a band a little wide, so it is seen at all
            xs, tops_, base_ = [xs[0] - 24, xs[0] + 24], tops * 2, base * 2
        else:
            tops_, base_ = tops, base
        label = labels.get(stage, stage)
        tip = f"{label}: {i18n.format_number(values[-1], lang, 0)} ({last_p})"
        if stacked:
            upper = [
                f"{_num(x)},{_num(y_at(v))}" for x, v in zip(xs, tops_, strict=True)
            ]
            lower = [
                f"{_num(x)},{_num(y_at(v))}"
                for x, v in reversed(list(zip(xs, base_, strict=True)))
            ]
            out.append(
                f'<path d="M{" L".join(upper + lower)} Z" fill="{colour(index)}" '
                f'fill-opacity="0.85" stroke="#fff" stroke-width="0.5">'
                f"<title>{escape(tip)}</title></path>"
            )
        else:
            points = " ".join(
                f"{_num(x)},{_num(y_at(v))}" for x, v in zip(xs, tops_, strict=True)
            )
            out.append(
                f'<polyline points="{points}" fill="none" stroke="{colour(index)}" '
                f'stroke-width="2"><title>{escape(tip)}</title></polyline>'
            )
        base = tops if stacked else base

    if last_incomplete and n > 1:
        x0, x1 = x_at(n - 2), x_at(n - 1)
        out.append(
            f'<rect x="{_num(x0)}" y="{top}" width="{_num(x1 - x0)}" '
            f'height="{plot_h}" fill="#ffffff" fill-opacity="0.55"/>'
            f'<text x="{_num(x1 - 4)}" y="{top + 12}" text-anchor="end" '
            f'fill="#444" font-style="italic">'
            f"{escape(i18n.translate('ui.incomplete', lang))}</text>"
        )

    # X axis: the period labels that fit (about 80 px each), the last one always.
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{bottom}" y2="{bottom}" '
        f'stroke="#444" stroke-width="1"/>'
    )
    # Labels are centred on their tick (the right margin leaves room for the last),
    # so neighbours never overlap at the ends.
    for i in _label_every(n, max(1, plot_w // 84)):
        x = x_at(i)
        anchor = "middle"
        out.append(
            f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{bottom}" y2="{bottom + 4}" '
            f'stroke="#444"/>'
            f'<text x="{_num(x)}" y="{bottom + 18}" text-anchor="{anchor}" '
            f'fill="#444">{escape(i18n.format_period(periods[i], grain, lang))}</text>'
        )

    # Legend: a swatch and the stage's name, in stacking order.
    y = bottom + 44
    index = 0
    for row in legend_rows:
        x = float(left)
        for text, w in row:
            out.append(
                f'<rect x="{_num(x)}" y="{y - 10}" width="12" height="12" '
                f'fill="{colour(index)}"/>'
                f'<text x="{_num(x + 18)}" y="{y}" fill="#222">{escape(text)}</text>'
            )
            x += w
            index += 1
        y += 22
    out.append("</svg>")
    return "".join(out)


def _text_width(text: str, size: float = 12) -> float:
    """A rough width for layout only: about 0.6 em per character in a sans font."""
    return len(text) * size * 0.6


def _legend_rows(texts: Sequence[str], room: float) -> list[list[tuple[str, float]]]:
    rows: list[list[tuple[str, float]]] = [[]]
    used = 0.0
    for text in texts:
        w = 18 + _text_width(text) + 24
        if rows[-1] and used + w > room:
            rows.append([])
            used = 0.0
        rows[-1].append((text, w))
        used += w
    return rows


def sparkline(
    values: Sequence[float | None],
    title: str,
    *,
    width: int = 110,
    height: int = 28,
    stroke: str = "#0072B2",
    element_id: str = "",
) -> str:
    """A small trend line of one KPI over the periods, oldest first.

    Missing values (None, NaN) break the line rather than being drawn as zero.
    """
    uid = element_id or _uid("clm-spark", list(values), title)
    points = [
        (i, float(v))
        for i, v in enumerate(values)
        if v is not None and not math.isnan(float(v))
    ]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{uid}" '
        f'class="clm-spark"><title id="{uid}">{escape(title)}</title>'
    ]
    if points:
        n = max(len(values), 2)
        low = min(v for _, v in points)
        high = max(v for _, v in points)
        span = high - low

        def xy(i: int, v: float) -> tuple[float, float]:
            x = 3 + (width - 6) * i / (n - 1)
            y = (
                height / 2
                if span == 0
                else height - 3 - (height - 6) * (v - low) / span
            )
            return x, y

        # Split the series at gaps so that a missing period is visible as one.
        runs: list[list[tuple[float, float]]] = [[]]
        last_i = None
        for i, v in points:
            if last_i is not None and i != last_i + 1:
                runs.append([])
            runs[-1].append(xy(i, v))
            last_i = i
        for run in runs:
            if len(run) > 1:
                coords = " ".join(f"{_num(x)},{_num(y)}" for x, y in run)
                out.append(
                    f'<polyline points="{coords}" fill="none" stroke="{stroke}" '
                    f'stroke-width="1.5" stroke-linejoin="round"/>'
                )
        x, y = xy(*points[-1])
        out.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="2.5" fill="{stroke}"/>')
    out.append("</svg>")
    return "".join(out)


def heat(share: float) -> tuple[str, str]:
    """Background and text colour for a share in [0, 1]: white to dark blue, with
    white text once the cell is dark enough (WCAG contrast above 4.5:1)."""
    share = 0.0 if share != share else min(max(share, 0.0), 1.0)
    light, dark = (247, 251, 255), (8, 48, 107)
    # A square root lifts small shares, so 5 % is visible next to 90 %.
    t = math.sqrt(share)
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(light, dark, strict=True))
    text = "#ffffff" if t > 0.55 else "#111111"
    return "#{:02x}{:02x}{:02x}".format(*rgb), text


def _stage_or_none(value: object) -> str | None:
    """A stage name, or None for a missing one (pandas may hold it as NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def transition_matrix(
    transitions: pd.DataFrame,
    stages: Sequence[str],
    labels: Mapping[str, str],
    lang: str,
    *,
    caption: str = "",
    none_from: str = "",
    none_to: str = "",
) -> str:
    """The transition matrix as an HTML table: rows are where customers were, columns
    where they are now; each cell shows the count and the row share, heat-coloured
    by that share. `none_from`/`none_to` name a missing stage (not yet a customer /
    no longer in the model). Returns "" when there are no transitions."""
    frame = transitions[transitions["customers"] > 0]
    if frame.empty:
        return ""
    counts: dict[tuple[str | None, str | None], float] = {}
    for row in frame.itertuples(index=False):
        key = (_stage_or_none(row.from_stage), _stage_or_none(row.to_stage))
        counts[key] = counts.get(key, 0.0) + float(row.customers)

    present_from = {k[0] for k in counts}
    present_to = {k[1] for k in counts}
    ordered = list(stages) + sorted(
        {s for s in present_from | present_to if s is not None} - set(stages)
    )
    rows: list[str | None] = ([None] if None in present_from else []) + [
        s for s in ordered if s in present_from
    ]
    cols: list[str | None] = [s for s in ordered if s in present_to] + (
        [None] if None in present_to else []
    )

    def name(stage: str | None, target: bool) -> str:
        if stage is None:
            return none_to if target else none_from
        return labels.get(stage, stage)

    total_word = i18n.translate("ui.total", lang)
    out = ['<table class="clm-matrix">']
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append(
        f'<thead><tr><th scope="col" class="corner">'
        f"{escape(i18n.translate('ui.transitions_corner', lang))}</th>"
    )
    # Column heads are set vertically (CSS), so long German names keep columns narrow.
    out += [
        f'<th scope="col" class="to"><span>{escape(name(c, True))}</span></th>'
        for c in cols
    ]
    out.append(f'<th scope="col" class="total">{escape(total_word)}</th></tr></thead>')
    out.append("<tbody>")
    for r in rows:
        row_total = sum(counts.get((r, c), 0.0) for c in cols)
        out.append(f'<tr><th scope="row">{escape(name(r, False))}</th>')
        for c in cols:
            value = counts.get((r, c), 0.0)
            share = value / row_total if row_total else 0.0
            bg, fg = heat(share)
            tip = i18n.translate(
                "ui.transitions_cell",
                lang,
                from_stage=name(r, False),
                to_stage=name(c, True),
                customers=int(value),
                share=i18n.format_percent(share, lang),
            )
            kept = ' class="stay"' if r is not None and r == c else ""
            if value:
                body = (
                    f"{escape(i18n.format_number(value, lang, 0))}"
                    f'<span class="share">'
                    f"{escape(i18n.format_percent(share, lang))}</span>"
                )
            else:
                body = '<span class="zero">·</span>'
            out.append(
                f'<td{kept} style="background:{bg};color:{fg}" '
                f'title="{_attr(tip)}">{body}</td>'
            )
        out.append(
            f'<td class="total">{escape(i18n.format_number(row_total, lang, 0))}</td>'
            "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)
