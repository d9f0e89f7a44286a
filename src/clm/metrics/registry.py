"""The metric registry: named KPIs that a stage model attaches to its stages.

A metric is a function of a `MetricContext` (per-period aggregates of one model's stage
history, computed once) and a stage, returning one value per period. Built-in metrics
register through `register` exactly as a user's own would:

    @register("vip_share", unit="ratio", help="share of revenue from orders over 500")
    def vip_share(ctx, stage): ...

A metric with arguments names them: `conversion_rate_to(retention)` is the metric
`conversion_rate_to` called with the stage `retention`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from clm.errors import MetricError, known

if TYPE_CHECKING:
    pass

Compute = Callable[..., pd.Series]
UNITS = ("count", "ratio", "currency", "days")


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Compute  # (ctx, stage, *args) -> Series indexed like ctx.periods
    unit: str = "count"
    params: tuple[str, ...] = ()  # names of the arguments, each a stage of the model
    help: str = ""
    higher_is_better: bool = True


_REGISTRY: dict[str, Metric] = {}


def register(
    name: str,
    *,
    unit: str = "count",
    params: tuple[str, ...] = (),
    help: str = "",
    higher_is_better: bool = True,
) -> Callable[[Compute], Compute]:
    """Decorator: add a metric to the registry under `name`."""
    if unit not in UNITS:
        raise MetricError(
            f"metric `{name}`: unit {unit!r}; expected one of {known(UNITS)}"
        )

    def add(fn: Compute) -> Compute:
        _REGISTRY[name] = Metric(
            name, fn, unit, params, help or (fn.__doc__ or "").strip(), higher_is_better
        )
        return fn

    return add


def get(name: str) -> Metric:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MetricError(
            f"unknown metric `{name}`; known: {known(_REGISTRY, limit=40)}"
        ) from None


def all_metrics() -> dict[str, Metric]:
    _load_builtins()
    return dict(_REGISTRY)


def check_call(
    name: str, args: tuple[str, ...], stages: list[str], where: str = ""
) -> Metric:
    """Check a model's metric call: known name, right number of stage arguments."""
    prefix = f"{where}: " if where else ""
    try:
        metric = get(name)
    except MetricError as exc:
        raise MetricError(f"{prefix}{exc}") from None
    if len(args) != len(metric.params):
        want = f"({', '.join(metric.params)})" if metric.params else "no arguments"
        raise MetricError(f"{prefix}metric `{name}` takes {want}, got {len(args)}")
    for arg in args:
        if arg not in stages:
            raise MetricError(
                f"{prefix}metric `{name}({arg})`: unknown stage `{arg}`; "
                f"known: {known(stages)}"
            )
    return metric


def _load_builtins() -> None:
    # Imported for its side effect: the built-ins call `register` like any plug-in.
    from clm.metrics import builtins  # noqa: F401
