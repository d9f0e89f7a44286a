"""Fill a `ReportData` from a workspace: the bridge between the warehouse and the
report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from clm.lifecycle import queries
from clm.lifecycle.spec import StageModel
from clm.metrics.compute import compute_metrics
from clm.report.data import Caveat, ReportData

if TYPE_CHECKING:
    from clm.workspace import Operations

# Populations of fewer customers than this make percentages jumpy; the report says so.
FEW_CUSTOMERS = 30


def build_report_data(ws: Operations, model: StageModel, *, grain: str) -> ReportData:
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
        title=f"{model.name} — customer lifecycle",
        model_name=model.name,
        model_version=model.version,
        stage_order=model.stage_names,
        grain=grain,
        timezone=str(tz.key),
        currency=ws.currency,
        generated_at=datetime.now(),
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
    )
