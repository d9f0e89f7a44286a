"""Render a `ReportData` as one self-contained HTML file, in English or German.

The page needs no network: styles are inline, charts are inline SVG, fonts are the
reader's own. This module turns the data into plain values for the template
(`templates/report.html.j2`): every word comes from `clm.report.i18n`, every number is
formatted there, and the template only lays them out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from clm.errors import ConfigError
from clm.report import charts, i18n
from clm.report.data import ReportData

log = logging.getLogger("clm.report")

# Stages where more customers is bad news, when the model does not say (the
# ecommerce and activity templates, PRODUCT.md §4).
_ADVERSE_STAGES = frozenset({"at_risk", "lapsed", "dormant"})
_ADVERSE_WHEN_HIGHER = frozenset({"population", "entered"})


@dataclass
class KpiRow:
    label: str
    value: str
    previous: str
    change: str
    arrow: str  # ▲, ▼ or ""
    tone: str  # good, bad or flat: the colour of the change
    direction: str  # rising/falling/unchanged, for screen readers
    spark: Markup


@dataclass
class StageSection:
    anchor: str
    name: str
    label: str
    colour: str
    period: str
    rows: list[KpiRow] = field(default_factory=list)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("clm.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _is_nan(x: Any) -> bool:
    try:
        return x is None or math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _tone(metric: str, stage: str, change: float, data: ReportData) -> str:
    """Whether a change is good news: most KPIs are better higher, a few lower,
    and a growing churned or at-risk stage is bad whatever the metric name says."""
    if change == 0:
        return "flat"
    name, args = i18n.split_metric(metric)
    lower_better = name in i18n.LOWER_IS_BETTER
    adverse = set(data.churn_stages) | _ADVERSE_STAGES
    if stage in adverse and name in _ADVERSE_WHEN_HIGHER:
        lower_better = True
    # More customers converting *to* a churned or at-risk stage is bad news.
    if name == "conversion_rate_to" and any(a in adverse for a in args):
        lower_better = True
    rising = change > 0
    return "good" if rising != lower_better else "bad"


def _last_incomplete(data: ReportData) -> bool:
    return any(c.code == "last_period_incomplete" for c in data.caveats)


def _stage_sections(data: ReportData, lang: str) -> list[StageSection]:
    periods = data.periods
    sections = []
    for index, stage in enumerate(data.stages):
        label = i18n.stage_label(stage, lang, data.stage_labels)
        section = StageSection(
            anchor=f"stage-{index}",
            name=stage,
            label=label,
            colour=charts.colour(index),
            period="",
        )
        sections.append(section)
        rows = data.kpis[data.kpis["stage"] == stage]
        dated = [p for p in rows["period_start"] if p is not None]
        if not dated:
            continue

        # The table shows the stage's latest period; the sparkline all of them.
        latest = max(dated)
        earlier = [p for p in periods if p < latest]
        latest_text = i18n.format_period(latest, data.grain, lang)
        if _last_incomplete(data) and periods and latest == periods[-1]:
            latest_text = i18n.translate(
                "ui.period_incomplete", lang, period=latest_text
            )
        section.period = (
            i18n.translate(
                "ui.kpis_latest",
                lang,
                period=latest_text,
                previous=i18n.format_period(earlier[-1], data.grain, lang),
            )
            if earlier
            else i18n.translate("ui.kpis_latest_only", lang, period=latest_text)
        )
        for number, metric in enumerate(dict.fromkeys(rows["metric"])):
            row = _kpi_row(
                data,
                lang,
                stage,
                str(metric),
                rows,
                latest,
                periods,
                element_id=f"spark-{index}-{number}",
            )
            section.rows.append(row)
    return sections


def _kpi_row(
    data: ReportData,
    lang: str,
    stage: str,
    metric: str,
    rows: pd.DataFrame,
    latest: date,
    periods: list[date],
    element_id: str,
) -> KpiRow:
    own = rows[rows["metric"] == metric]
    label = i18n.metric_label(metric, lang, data.stage_labels)
    now = own[own["period_start"] == latest]
    value = previous = change = math.nan
    if not now.empty:
        value, previous, change = (
            float(now.iloc[-1][c]) for c in ("value", "previous", "change")
        )

    def fmt(x: float) -> str:
        return i18n.format_metric(metric, x, lang, data.currency)

    if _is_nan(change):
        arrow, tone, direction, change_text = "", "flat", "", i18n.MISSING
    else:
        arrow = "▲" if change > 0 else "▼" if change < 0 else ""
        tone = _tone(metric, stage, change, data)
        direction = i18n.translate(
            "ui.rising"
            if change > 0
            else "ui.falling"
            if change < 0
            else "ui.unchanged",
            lang,
        )
        change_text = i18n.format_percent(change, lang, signed=True)

    by_period = dict(zip(own["period_start"], own["value"], strict=True))
    series = [by_period.get(p, math.nan) for p in periods]
    valid = [(p, v) for p, v in zip(periods, series, strict=True) if not _is_nan(v)]
    if valid:
        title = i18n.translate(
            "ui.sparkline_title",
            lang,
            metric=label,
            first_period=i18n.format_period(valid[0][0], data.grain, lang),
            first_value=fmt(valid[0][1]),
            last_period=i18n.format_period(valid[-1][0], data.grain, lang),
            last_value=fmt(valid[-1][1]),
        )
    else:
        title = label
    spark = (
        Markup(charts.sparkline(series, title, element_id=element_id))
        if len(valid) > 1
        else Markup("")
    )
    return KpiRow(
        label=label,
        value=fmt(value),
        previous=fmt(previous),
        change=change_text,
        arrow=arrow,
        tone=tone,
        direction=direction,
        spark=spark,
    )


def render_report(data: ReportData, lang: str = "en") -> str:
    """The whole report as one HTML string in `lang` ('en' or 'de')."""
    base = i18n.resolve_lang(lang)

    def t(key: str, **params: Any) -> str:
        return i18n.translate(key, lang, **params)

    stages = data.stages
    labels = {s: i18n.stage_label(s, lang, data.stage_labels) for s in stages}
    chart = charts.population_chart(
        data.populations,
        stages,
        labels,
        data.grain,
        lang,
        element_id="clm-populations",
        last_incomplete=_last_incomplete(data),
    )
    matrix = charts.transition_matrix(
        data.transitions,
        stages,
        labels,
        lang,
        none_from=i18n.stage_label(None, lang),
        none_to=i18n.stage_label(None, lang, as_target=True),
    )

    data_period = (
        t(
            "ui.data_period_value",
            first=i18n.format_date(data.data_from, lang),
            last=i18n.format_date(data.data_to, lang),
        )
        if data.data_from or data.data_to
        else t("ui.no_events")
    )
    context = {
        "lang": base,
        "t": t,
        "title": data.title or t("ui.report"),
        "model": f"{data.model_name}, {t('ui.version', version=data.model_version)}",
        "data_period": data_period,
        "grain": t(f"grain.{data.grain}"),
        "timezone": data.timezone,
        "generated": i18n.format_datetime(data.generated_at, lang),
        "caveats": [caveat_text(c.code, c.params, lang) for c in data.caveats],
        "population_chart": Markup(chart),
        "populations_desc": t(
            "ui.stage_populations_desc", grain_noun=t(f"grain_noun.{data.grain}")
        ),
        "sections": _stage_sections(data, lang),
        "matrix": Markup(matrix),
        "transitions_desc": t(
            "ui.transitions_desc",
            from_date=i18n.format_date(data.transitions_from, lang),
            to_date=i18n.format_date(data.transitions_to, lang),
        ),
        "extra_sections": [
            (title, Markup(html)) for title, html in data.extra_sections
        ],
    }
    return _environment().get_template("report.html.j2").render(**context)


def caveat_text(code: str, params: dict[str, Any], lang: str) -> str:
    """A caveat in `lang`. A code or parameter the catalogue does not know still
    yields a sentence, so a caveat is never lost from a report."""
    key = f"caveat.{code}"
    if i18n.has_key(key) and code != "unknown":
        try:
            return i18n.translate(key, lang, **params)
        except ConfigError:
            log.warning("caveat %s lacks parameters; has %s", code, sorted(params))
    details = ", ".join(
        f"{name} = {i18n.format_param(value, lang)}" for name, value in params.items()
    )
    return i18n.translate("caveat.unknown", lang, code=code, details=details or "–")


def write_report(data: ReportData, path: str | Path, lang: str = "en") -> Path:
    """Write the report to `path` (UTF-8) and return the path written."""
    target = Path(path)
    html = render_report(data, lang)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html, encoding="utf-8")
    log.info("report written to %s (%s, %d bytes)", target, lang, len(html))
    return target
