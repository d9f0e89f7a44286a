"""What the HTML report shows: the input contract between the warehouse and the report.

Whoever builds a report (the CLI, the dashboard, a notebook) fills one `ReportData`
and passes it to `clm.report.html.render_report`. The report reads nothing else, so it
can be tested with frames written by hand. Frames are checked and normalised on
construction: missing columns are named in the error, `period_start` and dates become
`datetime.date`, and a frame with no rows (or a bare `pd.DataFrame()`) means "no data"
for its section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from clm.errors import ConfigError, known

GRAINS = ("day", "week", "month", "quarter")

POPULATION_COLUMNS = ("period_start", "stage", "population")
KPI_COLUMNS = ("stage", "metric", "period_start", "value", "previous", "change")
TRANSITION_COLUMNS = ("from_stage", "to_stage", "customers")

# Caveat codes the catalogue translates, with the parameters each text needs.
# Other codes are still shown (with their parameters), never dropped.
CAVEAT_PARAMS: dict[str, tuple[str, ...]] = {
    "last_period_incomplete": ("period_end",),
    "no_churn_stage": (),
    "few_customers": ("count",),
    "history_truncated": ("first_date",),
}


@dataclass(frozen=True)
class Caveat:
    """Something the reader must know to read the figures right (STYLE.md point 10).

    `code` selects the text (`caveat.<code>` in `clm.report.i18n`); `params` fill it
    in and are formatted per language (pass dates and numbers, not strings).
    """

    code: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything one report shows. See the module docstring for the frame shapes.

    - populations: period_start (date), stage (str), population (int): customers in
      the stage at the end of each period.
    - kpis: stage, metric (a key such as `conversion_rate_to(retention)`),
      period_start, value, previous (the value one period earlier), change (relative,
      (value - previous) / previous; NaN where undefined).
    - transitions: from_stage (None = not yet a customer), to_stage, customers: how
      many customers were in from_stage on `transitions_from` and in to_stage on
      `transitions_to`.
    - extra_sections: (title, html) pairs appended after the standard sections; the
      html is inserted as it is, so it must come from trusted code (RFM grid…).
    - churn_stages: stages counted as churned; a rise in their population is
      coloured as bad news.
    """

    title: str
    model_name: str
    model_version: int | str
    stage_order: list[str]
    grain: str
    timezone: str
    currency: str
    generated_at: datetime
    data_from: date | None
    data_to: date | None
    populations: pd.DataFrame
    kpis: pd.DataFrame
    transitions: pd.DataFrame
    transitions_from: date | None = None
    transitions_to: date | None = None
    stage_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    caveats: list[Caveat] = field(default_factory=list)
    extra_sections: list[tuple[str, str]] = field(default_factory=list)
    churn_stages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.grain not in GRAINS:
            raise ConfigError(
                f"report grain {self.grain!r} is not known; valid: {known(GRAINS)}. "
                "Use the grain of the stage model."
            )
        self.stage_order = [str(s) for s in self.stage_order]
        self.populations = _normalise(
            self.populations, POPULATION_COLUMNS, "populations", dates=("period_start",)
        )
        self.kpis = _normalise(self.kpis, KPI_COLUMNS, "kpis", dates=("period_start",))
        self.transitions = _normalise(
            self.transitions, TRANSITION_COLUMNS, "transitions", dates=()
        )
        self.populations["population"] = pd.to_numeric(
            self.populations["population"], errors="coerce"
        )
        for column in ("value", "previous", "change"):
            self.kpis[column] = pd.to_numeric(self.kpis[column], errors="coerce")
        self.transitions["customers"] = pd.to_numeric(
            self.transitions["customers"], errors="coerce"
        ).fillna(0)
        # pandas writes a missing stage as NaN or None depending on the dtype; the
        # report treats both as "not yet a customer", so make it one thing.
        for column in ("from_stage", "to_stage"):
            # dtype=object keeps None as None; pandas 3 would infer its string
            # dtype and turn None into NaN.
            self.transitions[column] = pd.Series(
                [None if _is_null(v) else str(v) for v in self.transitions[column]],
                dtype="object",
            )
        self.data_from = _as_date(self.data_from)
        self.data_to = _as_date(self.data_to)
        self.transitions_from = _as_date(self.transitions_from)
        self.transitions_to = _as_date(self.transitions_to)

    @property
    def stages(self) -> list[str]:
        """Every stage to show: the model's order first, then any stage that appears
        only in the data (sorted), so no row is silently left out."""
        seen = list(self.stage_order)
        extra: set[str] = set()
        for frame, columns in (
            (self.populations, ("stage",)),
            (self.kpis, ("stage",)),
            (self.transitions, ("from_stage", "to_stage")),
        ):
            for column in columns:
                extra.update(str(v) for v in frame[column] if not _is_null(v))
        return seen + sorted(extra - set(seen))

    @property
    def periods(self) -> list[date]:
        """The period starts present in `populations` or `kpis`, ascending."""
        values = set(self.populations["period_start"]) | set(self.kpis["period_start"])
        return sorted(v for v in values if v is not None and not _is_null(v))


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _as_date(value: Any) -> date | None:
    if _is_null(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return pd.Timestamp(value).date()
    except (TypeError, ValueError):
        raise ConfigError(
            f"report date {value!r} is not a date; pass a datetime.date or an ISO "
            "string such as '2026-12-04'."
        ) from None


def _normalise(
    frame: pd.DataFrame | None,
    columns: tuple[str, ...],
    name: str,
    *,
    dates: tuple[str, ...],
) -> pd.DataFrame:
    """A copy of `frame` with exactly `columns`; no rows at all is allowed."""
    if frame is None or (len(frame) == 0 and len(frame.columns) == 0):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"report frame `{name}` lacks column(s) {', '.join(missing)}; it has "
            f"{known(map(str, frame.columns))}; needed: {', '.join(columns)}."
        )
    out = frame.loc[:, list(columns)].copy().reset_index(drop=True)
    for column in dates:
        out[column] = pd.Series([_as_date(v) for v in out[column]], dtype="object")
    return out
