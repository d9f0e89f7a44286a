"""Fill a `ReportData` from a workspace: the bridge between the warehouse and the
report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import ibis
import pandas as pd

from clm.lifecycle import queries
from clm.lifecycle.spec import StageModel
from clm.metrics.compute import compute_metrics
from clm.report import i18n
from clm.report.data import Caveat, ReportData

if TYPE_CHECKING:
    from clm.workspace import Operations

# Populations of fewer customers than this make percentages jumpy; the report says so.
FEW_CUSTOMERS = 30


def build_report_data(
    ws: Operations, model: StageModel, *, grain: str, lang: str | None = None
) -> ReportData:
    wh, tz = ws.warehouse, ws.timezone
    result = compute_metrics(wh, model, grain=grain, timezone=tz)
    ctx = result.context
    assert ctx is not None
    pop = ctx.population.reindex(columns=model.stage_names, fill_value=0)
    populations = (
        pop.rename_axis("period_start")
        .reset_index()
        .melt(id_vars="period_start", var_name="stage", value_name="population")
    )
    last = queries.last_day(wh, model, tz)
    # The matrix compares the last day with the same day one period before.
    first_day = ctx.calendar.starts[0]
    span = {"day": 1, "week": 7, "month": 30, "quarter": 91}[grain]
    start = max(first_day, last - timedelta(days=span))
    matrix = queries.transition_matrix(wh, model, start, last, tz)
    trans = (
        matrix.rename_axis(index="from_stage", columns="to_stage")
        .stack()
        .rename("customers")
        .reset_index()
    )
    trans["from_stage"] = trans.from_stage.where(trans.from_stage != queries.NEW, None)
    trans = trans[trans.to_stage != queries.NEW]

    caveats = [Caveat(code, dict(params)) for code, params in result.caveats]
    for c in caveats:
        if c.code == "last_period_incomplete":
            c.params["period_end"] = last
    total = int(pop.iloc[-1].sum()) if len(pop) else 0
    if total < FEW_CUSTOMERS:
        caveats.append(Caveat("few_customers", {"count": total}))
    return ReportData(
        title=i18n.translate("ui.report_title", lang or "en", model=model.name),
        model_name=model.name,
        model_version=model.version,
        stage_order=model.stage_names,
        grain=grain,
        timezone=str(tz.key),
        currency=ws.currency,
        generated_at=datetime.now(tz),
        data_from=first_day,
        data_to=last,
        populations=populations,
        kpis=result.values[
            ["stage", "metric", "period_start", "value", "previous", "change"]
        ],
        transitions=trans,
        transitions_from=start,
        transitions_to=last,
        stage_labels={s.name: dict(s.labels) for s in model.stages if s.labels},
        caveats=caveats,
        churn_stages=[s.name for s in model.stages if s.churned],
        extra_sections=value_sections(ws, lang or ws.config["language"]),
    )


def value_sections(ws: Operations, lang: str) -> list[tuple[str, str]]:
    """The RFM grid (from customer_value) and the holdout chart (from the latest
    `clm clv validate`), when they exist; see docs/clv.md."""
    from html import escape

    from clm.analyses.clv import holdout_chart_svg, validate_holdout
    from clm.analyses.value import fit_value, rfm_summary

    wh = ws.warehouse
    out: list[tuple[str, str]] = []
    cv = wh.table("customer_value")
    rows = cv.filter(cv.computed_at == cv.computed_at.max()).to_pandas()
    if len(rows):
        fm = (rows.f + rows.m + 1) // 2
        grid = rows.assign(fm=fm).groupby(["r", "fm"])
        counts, names = grid.size(), grid.rfm_segment.first()
        head = "".join(f"<th>FM {c}</th>" for c in range(1, 6))
        body = []
        for r in range(5, 0, -1):
            cells = []
            for c in range(1, 6):
                n = int(counts.get((r, c), 0))
                alpha = 0.1 + 0.8 * n / len(rows)
                name = names.get((r, c), "")
                label = i18n.translate(f"rfm.{_slug(name)}", lang) if name else ""
                cells.append(
                    f'<td style="background: rgba(31,119,180,{alpha:.2f})">'
                    f"{escape(i18n.format_number(n, lang))}<br><small>"
                    f"{escape(label)}</small></td>"
                )
            body.append(f"<tr><th>R {r}</th>{''.join(cells)}</tr>")
        desc = i18n.translate(
            "ui.rfm_grid_desc",
            lang,
            date=i18n.format_date(rows.observation_period_end.iloc[0], lang),
        )
        out.append(
            (
                i18n.translate("ui.rfm_grid", lang),
                f"<p>{escape(desc)}</p><table class='rfm'><tr><th></th>{head}</tr>"
                + "".join(body)
                + "</table>",
            )
        )
    fits = wh.table("value_fits")
    cal = (
        fits.filter(fits.calibration_period_end.notnull() & (fits.model == "bgnbd"))
        .order_by(ibis.desc("computed_at"))
        .limit(1)
        .to_pandas()
    )
    if len(cal):
        end = pd.Timestamp(cal.calibration_period_end.iloc[0]).date()
        summ = rfm_summary(wh, ws.timezone, calibration_end=end)
        fit = fit_value(summ)
        if fit.purchases.converged:
            table = validate_holdout(fit.purchase_model, summ)
            title = i18n.translate("ui.holdout_chart", lang)
            out.append((title, holdout_chart_svg(table, title=title)))
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
