"""Questions asked of stored stage history: populations as of a date, transition
matrices.

"As of day D" never looks past the end of D: it is the stage decided at the latest
evaluation instant on or before the end of D, i.e. at the end of the last complete
period, or at the observation end when D is its last day (a period's stage is
evaluated at its end; see `lifecycle.history`). For a weekly model, as of a Thursday
is as of the Sunday before; before the first period ends, nobody has a stage yet."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import pandas as pd

from clm.errors import NotFoundError
from clm.lifecycle.calendar import build_calendar, local_date, local_midnight_utc
from clm.lifecycle.spec import StageModel
from clm.warehouse.engine import Warehouse

NEW = "(not yet)"  # row/column label for customers without a stage at a date


def history(wh: Warehouse, model: StageModel) -> ir.Table:
    h = wh.table("stage_history")
    return h.filter((h.model == model.name) & (h.model_version == model.version))


def last_day(wh: Warehouse, model: StageModel, tz: ZoneInfo) -> date:
    """The last day the model's latest run observed."""
    end = datetime.fromisoformat(run_info(wh, model)["observation_end"])
    return local_date(end - timedelta(seconds=1), tz)


def run_info(wh: Warehouse, model: StageModel) -> dict[str, str]:
    """What the model's latest run recorded: first event, observation end, run id."""
    raw = wh.meta(f"run:{model.name}:{model.version}")
    if raw is None:
        raise NotFoundError(
            f"model `{model.name}` v{model.version} has not been run yet; "
            "run `clm run` first"
        )
    info: dict[str, str] = json.loads(raw)
    return info


def decided_period_start(
    wh: Warehouse, model: StageModel, day: date, tz: ZoneInfo
) -> datetime | None:
    """Start of the latest period whose stage was decided by the end of `day`."""
    info = run_info(wh, model)
    cal = build_calendar(
        model.grain,
        tz,
        datetime.fromisoformat(info["first_event"]),
        datetime.fromisoformat(info["observation_end"]),
    )
    cutoff = local_midnight_utc(day + timedelta(days=1), tz)
    decided = [k for k in range(cal.n) if cal.eval_at(k) <= cutoff]
    return cal.bounds[decided[-1]] if decided else None


def stages_as_of(wh: Warehouse, model: StageModel, day: date, tz: ZoneInfo) -> ir.Table:
    """customer_id, stage as of local day `day` (see the module docstring)."""
    h = history(wh, model)
    start = decided_period_start(wh, model, day, tz)
    if start is None:
        return h.filter(ibis.literal(False)).select("customer_id", "stage")
    at = ibis.literal(start)
    return h.filter(
        (h.valid_from <= at) & (h.valid_to.isnull() | (at < h.valid_to))
    ).select("customer_id", "stage")


def populations(
    wh: Warehouse, model: StageModel, day: date, tz: ZoneInfo
) -> pd.DataFrame:
    """Customers per stage as of `day`, in the model's stage order, with shares."""
    t = stages_as_of(wh, model, day, tz)
    counts = t.group_by("stage").aggregate(customers=t.count()).to_pandas()
    by = dict(zip(counts.stage, counts.customers, strict=True))
    rows = [(s, int(by.get(s, 0))) for s in model.stage_names]
    df = pd.DataFrame(rows, columns=["stage", "customers"])
    total = df.customers.sum()
    df["share"] = df.customers / total if total else 0.0
    return df


def transition_matrix(
    wh: Warehouse, model: StageModel, start: date, end: date, tz: ZoneInfo
) -> pd.DataFrame:
    """Customers by (stage as of `start`) × (stage as of `end`); NEW for none yet."""
    a = stages_as_of(wh, model, start, tz).rename(from_stage="stage", c1="customer_id")
    b = stages_as_of(wh, model, end, tz).rename(to_stage="stage", c2="customer_id")
    j = a.outer_join(b, a.c1 == b.c2)
    j = j.mutate(
        from_stage=j.from_stage.fill_null(NEW), to_stage=j.to_stage.fill_null(NEW)
    )
    counts = (
        j.group_by(["from_stage", "to_stage"])
        .aggregate(customers=j.count())
        .to_pandas()
    )
    order = [NEW, *model.stage_names]
    m = counts.pivot_table(
        index="from_stage",
        columns="to_stage",
        values="customers",
        aggfunc="sum",
        fill_value=0,
    )
    m = m.reindex(
        index=[s for s in order if s in m.index or s != NEW],
        columns=[s for s in order if s != NEW or s in m.columns],
        fill_value=0,
    )
    return m.astype(int)


def population_series(
    wh: Warehouse, model: StageModel, days: list[date], tz: ZoneInfo
) -> pd.DataFrame:
    """period_start, stage, population for each day in `days` (period starts)."""
    frames = []
    for d in days:
        p = populations(wh, model, d, tz)
        p["period_start"] = d
        frames.append(p[["period_start", "stage", "customers"]])
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return out.rename(columns={"customers": "population"})
