"""Compute the metrics a model attaches to its stages, per period, with the change
against the previous period, and store them in `metric_values`."""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from clm.lifecycle.spec import MetricCall, StageModel
from clm.metrics.context import MetricContext, build_context
from clm.metrics.registry import check_call
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse

GRAINS = ("day", "week", "month", "quarter")


@dataclass
class MetricsResult:
    values: pd.DataFrame  # stage, metric, unit, period_start, value, previous, change
    caveats: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    context: MetricContext | None = None
    receipt: Receipt | None = None


def attached(model: StageModel) -> list[tuple[str, MetricCall]]:
    """(stage, metric call) pairs in model order; `population` for stages with none."""
    out = []
    for stage in model.stages:
        calls = model.metrics.get(stage.name) or (MetricCall("population"),)
        out += [(stage.name, c) for c in calls]
    return out


def check_model_metrics(model: StageModel) -> None:
    """Every metric the model attaches exists and gets the right stage arguments;
    the error names the model file, the line and the stage."""
    for stage in model.stages:
        for call in model.metrics.get(stage.name, ()):
            where = f"{model.source}:{call.line}" if call.line else model.source
            check_call(
                call.name, call.args, model.stage_names,
                where=f"{where}, stage `{stage.name}`",
            )  # fmt: skip


def compute_metrics(
    wh: Warehouse,
    model: StageModel,
    *,
    grain: str = "month",
    timezone: ZoneInfo,
    stage: str | None = None,
    store: bool = True,
) -> MetricsResult:
    receipt = Receipt("metrics", source=f"{model.name} v{model.version} {grain}")
    if stage is not None:
        model.stage(stage)  # NotFoundError listing the stages
    with receipt.timed("aggregate"):
        ctx = build_context(wh, model, grain, timezone)
    rows = []
    with receipt.timed("metrics"):
        for stage_name, call in attached(model):
            if stage is not None and stage_name != stage:
                continue
            metric = check_call(
                call.name,
                call.args,
                model.stage_names,
                where=f"{model.source}, stage `{stage_name}`",
            )
            series = metric.compute(ctx, stage_name, *call.args).reindex(ctx.periods)
            prev = series.shift(1)
            change = (series - prev) / prev.abs().where(prev != 0, np.nan)
            rows.append(
                pd.DataFrame(
                    {
                        "stage": stage_name,
                        "metric": call.key,
                        "unit": metric.unit,
                        "period_start": ctx.periods,
                        "value": series.to_numpy(dtype=float),
                        "previous": prev.to_numpy(dtype=float),
                        "change": change.to_numpy(dtype=float),
                    }
                )
            )
    values = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(
            columns=[
                "stage",
                "metric",
                "unit",
                "period_start",
                "value",
                "previous",
                "change",
            ]
        )
    )
    if store and stage is None:
        with receipt.timed("store"):
            _store(wh, model, grain, values, receipt.receipt_id)
    receipt.counts.update(values=len(values), periods=len(ctx.periods))
    return MetricsResult(values, ctx.caveats, ctx, receipt)


def _store(
    wh: Warehouse, model: StageModel, grain: str, values: pd.DataFrame, run_id: str
) -> None:
    t = wh.table("metric_values")
    same = (
        (t.model == model.name)
        & (t.model_version == model.version)
        & (t.grain == grain)
    )
    out = pd.DataFrame(
        {
            "metric": values.metric.astype(str),
            "model": model.name,
            "model_version": model.version,
            "stage": values.stage.astype(str),
            "period_start": pd.to_datetime(values.period_start).dt.date,
            "grain": grain,
            "segment": "",
            "value": values.value.astype(float),
            "run_id": run_id,
        }
    )
    wh.replace_rows("metric_values", same, out)
