"""The whole HTML report: both languages, every stage and KPI, caveats, offline-safe."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from clm.errors import ConfigError
from clm.report import Caveat, ReportData, render_report, write_report

STAGES = ["acquisition", "conversion", "retention"]
MONTHS = [date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)]


def kpi_rows() -> pd.DataFrame:
    series = {
        ("acquisition", "population"): [1000, 1100, 1234],
        ("acquisition", "conversion_rate_to(conversion)"): [0.10, 0.12, 0.09],
        ("conversion", "population"): [400, 420, 410],
        ("conversion", "average_order_value"): [50.0, 52.0, 1234.5],
        ("retention", "population"): [200, 210, 220],
        ("retention", "churn_rate"): [0.04, 0.05, 0.06],
    }
    rows = []
    for (stage, metric), values in series.items():
        previous = math.nan
        for start, value in zip(MONTHS, values, strict=True):
            change = (value - previous) / previous if previous == previous else math.nan
            rows.append((stage, metric, start, float(value), previous, change))
            previous = float(value)
    return pd.DataFrame(
        rows, columns=["stage", "metric", "period_start", "value", "previous", "change"]
    )


def sample(**changes: object) -> ReportData:
    populations = pd.DataFrame(
        [
            (start, stage, n)
            for start, counts in zip(
                MONTHS,
                [(1000, 400, 200), (1100, 420, 210), (1234, 410, 220)],
                strict=True,
            )
            for stage, n in zip(STAGES, counts, strict=True)
        ],
        columns=["period_start", "stage", "population"],
    )
    transitions = pd.DataFrame(
        {
            "from_stage": [None, "acquisition", "conversion", "retention"],
            "to_stage": ["acquisition", "conversion", "retention", "retention"],
            "customers": [500, 120, 60, 190],
        }
    )
    fields: dict[str, object] = dict(
        title="Shop report",
        model_name="ecommerce",
        model_version=3,
        stage_order=STAGES,
        grain="month",
        timezone="Europe/Berlin",
        currency="EUR",
        generated_at=datetime(2026, 12, 4, 13, 5, tzinfo=UTC),
        data_from=date(2025, 1, 3),
        data_to=date(2026, 12, 4),
        populations=populations,
        kpis=kpi_rows(),
        transitions=transitions,
        transitions_from=date(2026, 11, 1),
        transitions_to=date(2026, 12, 4),
        caveats=[Caveat("last_period_incomplete", {"period_end": date(2026, 12, 4)})],
        churn_stages=[],
    )
    fields.update(changes)
    return ReportData(**fields)  # type: ignore[arg-type]


def text_of(html: str) -> str:
    """The visible text, tags dropped and no-break spaces made plain."""
    body = re.sub(r"<style.*?</style>", "", html, flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", body.replace("\xa0", " ").replace("\u202f", " "))


@pytest.fixture(scope="module")
def english() -> str:
    return render_report(sample(), "en")


@pytest.fixture(scope="module")
def german() -> str:
    return render_report(sample(), "de")


def test_labels_and_formats_follow_the_language(english: str, german: str) -> None:
    en, de = text_of(english), text_of(german)
    assert '<html lang="en">' in english and '<html lang="de">' in german
    assert "Customers per stage" in en and "Kunden je Phase" in de
    # 1,234 customers in acquisition in December; an order value of 1,234.50 €.
    assert "1,234" in en and "1.234" in de
    assert "€1,234.50" in en and "1.234,50 €" in de
    assert "Jan 3, 2025 to Dec 4, 2026" in en
    assert "03.01.2025 bis 04.12.2026" in de
    # The sample's last month is marked incomplete by its caveat.
    assert "Dec 2026 (incomplete), compared with Nov 2026" in en
    assert "Dez. 2026 (unvollständig), verglichen mit Nov. 2026" in de
    assert "Europe/Berlin" in en and "ecommerce, Version 3" in de


def test_every_stage_and_kpi_appears(english: str, german: str) -> None:
    en, de = text_of(english), text_of(german)
    for label in (
        "Acquisition",
        "Conversion",
        "Retention",
        "Conversion rate → Conversion",
        "Average order value",
        "Churn rate",
    ):
        assert label in en, label
    for label in (
        "Interessenten",
        "Neukunden",
        "Wiederkäufer",
        "Konversionsrate → Neukunden",
        "Durchschnittlicher Warenkorbwert",
        "Abwanderungsrate",
    ):
        assert label in de, label


def test_model_labels_win_over_template_names() -> None:
    labels = {"acquisition": {"en": "Prospects", "de": "Akquise"}}
    de = text_of(render_report(sample(stage_labels=labels), "de"))
    assert "Akquise" in de and "Interessenten" not in de
    en = text_of(render_report(sample(stage_labels=labels), "en"))
    assert "Prospects" in en and "Acquisition" not in en


def test_kpi_values_changes_and_their_colour(english: str) -> None:
    en = text_of(english)
    # Conversion to conversion: 9.0 % now, 12.0 % before, (0.09 - 0.12) / 0.12 = -25 %.
    assert "9.0% 12.0% ▼ -25.0%" in en
    # Churn 6 % after 5 %: +20 %, and a rising churn rate is bad news (red).
    assert "6.0% 5.0% ▲ +20.0%" in en
    churn_row = re.search(r"Churn rate</th>.*?</tr>", english, flags=re.S)
    assert churn_row is not None and 'class="change bad"' in churn_row.group(0)
    population_row = re.search(r"Customers</th>.*?</tr>", english, flags=re.S)
    assert population_row is not None
    assert 'class="change good"' in population_row.group(0)


def test_caveats_in_the_right_language(english: str, german: str) -> None:
    assert "The last period is incomplete: the data end on Dec 4, 2026." in text_of(
        english
    )
    assert (
        "Der letzte Zeitraum ist unvollständig: Die Daten reichen bis 04.12.2026."
        in (text_of(german))
    )
    odd = sample(caveats=[Caveat("engine_approximate", {"share": 0.5})])
    assert "Hinweis (engine_approximate): share = 0,5" in text_of(
        render_report(odd, "de")
    )
    none = text_of(render_report(sample(caveats=[]), "en"))
    assert "No caveats apply to these figures." in none


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in {"src", "href", "srcset", "action", "poster", "data"}:
                self.refs.append((tag, name, value or ""))


@pytest.mark.parametrize("lang", ["en", "de"])
def test_no_external_resources(lang: str) -> None:
    html = render_report(sample(), lang)
    parser = Links()
    parser.feed(html)
    assert parser.refs, "the table of contents links should have been found"
    for tag, name, value in parser.refs:
        assert value.startswith("#"), f"<{tag} {name}={value!r}> leaves the page"
    assert "script" not in parser.tags and "link" not in parser.tags
    css = " ".join(re.findall(r"<style>(.*?)</style>", html, flags=re.S))
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    # The only absolute URL is the SVG namespace name, which is never fetched.
    assert set(re.findall(r"https?://[^\"'\s]+", html)) == {
        "http://www.w3.org/2000/svg"
    }


def test_every_svg_is_well_formed_xml(english: str) -> None:
    svgs = re.findall(r"<svg\b.*?</svg>", english, flags=re.S)
    # One population chart and one sparkline per KPI (6 KPIs with three months each).
    assert len(svgs) == 1 + 6
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.find("{http://www.w3.org/2000/svg}title") is not None
    ids = re.findall(r'\sid="([^"]+)"', english)
    assert len(ids) == len(set(ids)), "element ids must be unique in the page"


@pytest.mark.parametrize("lang", ["en", "de"])
def test_empty_data_says_so(lang: str) -> None:
    empty = sample(
        populations=pd.DataFrame(),
        kpis=pd.DataFrame(),
        transitions=pd.DataFrame(),
        stage_order=[],
        data_from=None,
        data_to=None,
        caveats=[],
    )
    text = text_of(render_report(empty, lang))
    expected = {
        "en": [
            "No stage populations yet",
            "No movements between stages",
            "No data for this section yet.",
        ],
        "de": [
            "Noch keine Phasenbelegung",
            "keine Wechsel zwischen Phasen",
            "Für diesen Abschnitt liegen noch keine Daten vor.",
        ],
    }[lang]
    for phrase in expected:
        assert phrase in text
    # Stages known but without any KPI rows: each stage says it has none.
    no_kpis = sample(kpis=kpi_rows().iloc[0:0])
    assert text_of(render_report(no_kpis, "en")).count(
        "No key figures for this stage yet."
    ) == len(STAGES)


def test_bad_input_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        sample(kpis=kpi_rows().drop(columns=["previous"]))
    assert "`kpis`" in str(info.value) and "previous" in str(info.value)
    with pytest.raises(ConfigError, match="'fortnight'"):
        sample(grain="fortnight")
    with pytest.raises(ConfigError, match="'fr'"):
        render_report(sample(), "fr")


def test_text_is_escaped() -> None:
    labels = {"retention": {"en": "<script>alert(1)</script>"}}
    html = render_report(sample(stage_labels=labels, title="A & B"), "en")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html and "A &amp; B" in html


def test_extra_sections_are_appended() -> None:
    extra = [("RFM grid", "<table><tr><td>R5F5</td></tr></table>")]
    html = render_report(sample(extra_sections=extra), "en")
    assert "<h2>RFM grid</h2>" in html and "<td>R5F5</td>" in html
    assert html.index("RFM grid</h2>") > html.index('id="transitions"')


def test_write_report(tmp_path: Path) -> None:
    data = sample()
    path = write_report(data, tmp_path / "out" / "report.html", "de")
    assert path == tmp_path / "out" / "report.html"
    assert path.read_text(encoding="utf-8") == render_report(data, "de")


def test_rows_without_a_period_do_not_break_the_report() -> None:
    kpis = kpi_rows()
    kpis["period_start"] = kpis["period_start"].astype(object)
    kpis.loc[kpis["stage"] == "retention", "period_start"] = None
    text = text_of(render_report(sample(kpis=kpis), "en"))
    assert text.count("No key figures for this stage yet.") == 1


def test_without_the_caveat_the_last_period_is_not_called_incomplete() -> None:
    text = text_of(render_report(sample(caveats=[]), "en"))
    assert "Dec 2026, compared with Nov 2026" in text
    assert "incomplete" not in text


def test_more_conversion_into_a_churned_stage_is_bad_news():
    from clm.report.html import _tone

    data = type("D", (), {"churn_stages": ["lapsed"]})()
    assert _tone("conversion_rate_to(lapsed)", "at_risk", 0.14, data) == "bad"
    assert _tone("conversion_rate_to(retention)", "at_risk", 0.14, data) == "good"
