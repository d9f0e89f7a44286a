"""What a loaded stage model is: plain value objects, no I/O and no engine.

`lifecycle.model` builds these from YAML and checks them; `lifecycle.history` computes
stage history from them; `metrics` reads `StageModel.metrics`. See PRODUCT.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clm.lifecycle.rules.ast import Node

FEATURE_KINDS = (
    "count",  # count(filter…, within=…)
    "count_distinct",  # count_distinct(column, filter…, within=…)
    "sum",  # sum(column, filter…, within=…)
    "min",
    "max",
    "first",  # first(column, filter…): value at the first matching event
    "last",  # last(column, filter…, within=…): value at the latest matching event
    "days_since",  # days_since(filter…): whole days from the latest matching event
    "days_since_first",  # days_since_first(filter…): whole days from the first one
    "p_alive",  # p_alive(): BG/NBD P(alive) at the period end (see value_features)
)
# Kinds whose first positional argument is the event column they read.
KINDS_WITH_COLUMN = frozenset({"count_distinct", "sum", "min", "max", "first", "last"})
GRAINS = ("day", "week", "month", "quarter")
PROGRESSIONS = ("dynamic", "forward_only")


@dataclass(frozen=True)
class FeatureSpec:
    """A named per-customer measure, evaluated as of the end of each period."""

    name: str
    kind: str  # one of FEATURE_KINDS
    column: str | None = None  # event column read, for KINDS_WITH_COLUMN
    filter: Node | None = None  # predicate over event columns; None = every event
    within_days: float | None = None  # sliding window in days, or
    within_periods: int | None = None  # calendar window in model periods
    text: str = ""  # the source text, for messages
    line: int | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    when: Node  # inline feature calls already hoisted into features
    text: str  # the rule as written
    line: int | None = None
    churned: bool = False  # counts as churn for churn_rate
    labels: dict[str, str] = field(default_factory=dict)  # {"en": …, "de": …}

    def label(self, lang: str = "en") -> str:
        return self.labels.get(lang) or self.labels.get("en") or self.name


@dataclass(frozen=True)
class MetricCall:
    """A metric attached to a stage: `conversion_rate_to(retention)` → name + args."""

    name: str
    args: tuple[str, ...] = ()
    line: int | None = None

    @property
    def key(self) -> str:
        return f"{self.name}({', '.join(self.args)})" if self.args else self.name


@dataclass(frozen=True)
class StageModel:
    name: str
    version: int
    grain: str  # one of GRAINS
    progression: str  # one of PROGRESSIONS
    features: dict[str, FeatureSpec]
    stages: tuple[Stage, ...]  # first match wins; in forward_only, first = furthest on
    metrics: dict[str, tuple[MetricCall, ...]]  # stage name -> metrics
    description: str = ""
    source: str = ""  # file path or template name
    text: str = ""  # the YAML as loaded

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        from clm.errors import NotFoundError, known

        raise NotFoundError(
            f"model `{self.name}` has no stage `{name}`; "
            f"known: {known(s.name for s in self.stages)}"
        )

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]
