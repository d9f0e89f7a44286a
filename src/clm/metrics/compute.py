"""Compute the metrics a model attaches to its stages, per period, with the change
against the previous period, and store them in `metric_values`.

Stored values are reused (`stored_metrics`) instead of computed again when they answer
the same question on the same data. The rule: a stored set of one model, version and
grain is used only when
- it was stored by a full computation (every stage, `store=True`) in the same time
  zone, with the same (stage, metric call) list as the model has now;
- the data it was computed from is unchanged: the same latest run of the model (its
  `run:` record in `clm_meta`, which carries the run id), the same receipts (latest
  start and number: any import, run, erasure or split adds one), the same number of
  events (the collector adds events without a receipt) and the same `customer_value`
  rows (`clm clv predict` writes no receipt);
- the warehouse is DuckDB (elsewhere everything is computed, as before).
Anything else (another grain, time zone or model, an option such as `stage` that only
selects rows is fine) computes afresh. The reused values are the stored floats, and
`previous` and `change` are worked out from them by the same arithmetic as a fresh
computation, so the numbers are identical; the result has no `context` then.
"""

from __future__ import annotations

import json
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
    # Read before computing: the data the stored values will say they came from.
    basis = data_basis(wh, model) if store and stage is None else None
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
            rows.append(_rows(stage_name, call.key, metric.unit, ctx.periods, series))
    values = _frame(rows)
    if store and stage is None:
        with receipt.timed("store"):
            _store(wh, model, grain, values, receipt.receipt_id)
            if basis is not None:
                stored = {
                    "basis": basis,
                    "timezone": timezone.key,
                    "run_id": receipt.receipt_id,
                    "calls": _calls(model),
                    "periods": len(ctx.periods),
                    "caveats": ctx.caveats,
                }
                wh.set_meta(_meta_key(model, grain), json.dumps(stored))
    receipt.counts.update(values=len(values), periods=len(ctx.periods))
    return MetricsResult(values, ctx.caveats, ctx, receipt)


COLUMNS = ["stage", "metric", "unit", "period_start", "value", "previous", "change"]


def _rows(
    stage: str, key: str, unit: str, periods: pd.Index, series: pd.Series
) -> pd.DataFrame:
    """One metric's rows: value, previous period's value, relative change."""
    prev = series.shift(1)
    change = (series - prev) / prev.abs().where(prev != 0, np.nan)
    return pd.DataFrame(
        {
            "stage": stage,
            "metric": key,
            "unit": unit,
            "period_start": periods,
            "value": series.to_numpy(dtype=float),
            "previous": prev.to_numpy(dtype=float),
            "change": change.to_numpy(dtype=float),
        }
    )


def _frame(rows: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)


def _meta_key(model: StageModel, grain: str) -> str:
    return f"metrics:{model.name}:{model.version}:{grain}"


def _calls(model: StageModel) -> list[list[str]]:
    return [[stage, call.key] for stage, call in attached(model)]


def data_basis(wh: Warehouse, model: StageModel) -> str | None:
    """A text that changes whenever the data under the model's metrics changes (see
    the module docstring); None where stored values are never reused."""
    if wh.con.name != "duckdb":
        return None
    con = wh.con.con
    value = (
        "(SELECT count(*) || '|' || coalesce(max(computed_at)::VARCHAR, '') "
        "FROM customer_value)"
        if wh.has_table("customer_value")
        else "''"
    )
    row = con.execute(
        "SELECT (SELECT max(started_at)::VARCHAR || '|' || count(*) FROM receipts), "
        "(SELECT count(*) FROM events), "
        f"{value}, "
        "(SELECT max(value) FROM clm_meta WHERE key = ?)",
        [f"run:{model.name}:{model.version}"],
    ).fetchone()
    return json.dumps(list(row), default=str) if row else None


def stored_metrics(
    wh: Warehouse,
    model: StageModel,
    *,
    grain: str,
    timezone: ZoneInfo,
    stage: str | None = None,
) -> MetricsResult | None:
    """The metric values stored for exactly this question on the current data, with
    `previous` and `change` worked out as `compute_metrics` does; None when the rule
    of the module docstring says compute afresh."""
    if stage is not None:
        model.stage(stage)  # NotFoundError listing the stages
    basis = data_basis(wh, model)
    if basis is None:
        return None
    row = wh.con.con.execute(
        "SELECT max(value) FROM clm_meta WHERE key = ?", [_meta_key(model, grain)]
    ).fetchone()
    if not row or row[0] is None:
        return None
    stored = json.loads(row[0])
    if (
        stored["basis"] != basis
        or stored["timezone"] != timezone.key
        or stored["calls"] != _calls(model)
    ):
        return None
    receipt = Receipt("metrics", source=f"{model.name} v{model.version} {grain}")
    with receipt.timed("stored"):
        df = wh.con.con.execute(
            "SELECT stage, metric, period_start, value FROM metric_values "
            "WHERE model = ? AND model_version = ? AND grain = ? AND segment = '' "
            "AND run_id = ? ORDER BY stage, metric, period_start",
            [model.name, model.version, grain, stored["run_id"]],
        ).df()
        n = int(stored["periods"])
        # One frame for all metrics (39 small frames cost 0.2 s of pandas): the
        # stored rows in model order, then `previous` and `change` by the same
        # element-wise arithmetic as `_rows`.
        groups = dict(iter(df.groupby(["stage", "metric"], sort=False)))
        parts, stages, keys, units = [], [], [], []
        for stage_name, call in attached(model):
            if stage is not None and stage_name != stage:
                continue
            part = groups.get((stage_name, call.key))
            if part is None or len(part) != n:
                return None  # not what was stored: compute afresh
            parts.append(part.value.to_numpy(dtype=float))
            stages.append(stage_name)
            keys.append(call.key)
            units.append(check_call(call.name, call.args, model.stage_names).unit)
        if not parts:
            values = _frame([])
        else:
            # Local dates, as the calendar gives them to a fresh computation.
            days = pd.to_datetime(groups[(stages[0], keys[0])].period_start).dt.date
            value = np.concatenate(parts)
            prev = np.concatenate([np.r_[np.nan, p[:-1]] for p in parts])
            with np.errstate(divide="ignore", invalid="ignore"):
                change = (value - prev) / np.where(prev != 0, np.abs(prev), np.nan)
            values = pd.DataFrame(
                {
                    "stage": np.repeat(np.array(stages, dtype=object), n),
                    "metric": np.repeat(np.array(keys, dtype=object), n),
                    "unit": np.repeat(np.array(units, dtype=object), n),
                    "period_start": np.tile(
                        np.array(days.to_list(), dtype=object), len(parts)
                    ),
                    "value": value,
                    "previous": prev,
                    "change": change,
                }
            )
    caveats = [(str(code), dict(params)) for code, params in stored["caveats"]]
    receipt.counts.update(values=len(values), periods=n, stored=1)
    return MetricsResult(values, caveats, None, receipt)


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
