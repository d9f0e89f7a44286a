"""Inline SVG charts and the transition matrix: well-formed, labelled, right numbers."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import date
from html.parser import HTMLParser

import pandas as pd

from clm.report import charts

SVG = "{http://www.w3.org/2000/svg}"


def populations() -> pd.DataFrame:
    rows = []
    for i, start in enumerate(
        [date(2026, 11, 16), date(2026, 11, 23), date(2026, 11, 30)]
    ):
        rows += [
            (start, "reach", 9000 + 100 * i),
            (start, "conversion", 1200 + 10 * i),
            (start, "retention", 300),
        ]
    return pd.DataFrame(rows, columns=["period_start", "stage", "population"])


LABELS = {
    "reach": "Reichweite",
    "conversion": "Neukunden",
    "retention": "Bestandskunden",
}


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{SVG}text")]


def test_nice_ticks_by_hand() -> None:
    # 13,000 / 5 = 2,600 → next nice step is 5,000 → ticks up to 15,000.
    assert charts.nice_ticks(13_000) == [0, 5_000, 10_000, 15_000]
    # 7 / 5 = 1.4 → step 2 → 0, 2, 4, 6, 8.
    assert charts.nice_ticks(7) == [0, 2, 4, 6, 8]
    # Counts never get fractional ticks.
    assert charts.nice_ticks(2) == [0, 1, 2]
    assert charts.nice_ticks(0) == [0.0, 1.0]


def test_population_chart_is_well_formed_and_labelled_in_german() -> None:
    stages = ["reach", "conversion", "retention"]
    svg = charts.population_chart(populations(), stages, LABELS, "week", "de")
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None and "KW 47/2026" in (title.text or "")
    labels = texts(root)
    for name in LABELS.values():
        assert name in labels
    # 9,200 + 1,220 + 300 = 10,720 on top → ticks to 15,000, written the German way.
    assert "10.000" in labels and "15.000" in labels
    assert "KW 49/2026" in labels
    # One filled area per stage, each with a tooltip naming the stage.
    areas = root.findall(f"{SVG}path")
    assert len(areas) == 3
    assert [a.find(f"{SVG}title").text.split(":")[0] for a in areas] == [
        "Reichweite",
        "Neukunden",
        "Bestandskunden",
    ]


def test_stacked_areas_reach_the_sum_of_the_stages() -> None:
    stages = ["reach", "conversion", "retention"]
    svg = charts.population_chart(populations(), stages, LABELS, "week", "en")
    root = ET.fromstring(svg)
    # The y axis: find the pixel rows of the 0 and 5,000 tick labels.
    ticks = {
        el.text: float(el.get("y")) - 4
        for el in root.iter(f"{SVG}text")
        if el.text in {"0", "5,000"}
    }
    per_unit = (ticks["0"] - ticks["5,000"]) / 5000
    top_area = root.findall(f"{SVG}path")[-1].get("d")
    first_point = re.match(r"M([\d.]+),([\d.]+)", top_area)
    assert first_point is not None
    height = (ticks["0"] - float(first_point.group(2))) / per_unit
    # First period: 9,000 + 1,200 + 300 customers in all.
    assert abs(height - 10_500) < 10


def test_incomplete_last_period_is_labelled() -> None:
    stages = ["reach", "conversion", "retention"]
    plain = charts.population_chart(populations(), stages, LABELS, "week", "de")
    marked = charts.population_chart(
        populations(), stages, LABELS, "week", "de", last_incomplete=True
    )
    assert "unvollständig" not in texts(ET.fromstring(plain))
    assert "unvollständig" in texts(ET.fromstring(marked))


def test_line_mode_and_single_period() -> None:
    one = populations().head(3)
    svg = charts.population_chart(one, ["reach"], LABELS, "month", "en", stacked=False)
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}polyline")) == 3
    assert "Nov 2026" in texts(root)
    empty = populations().iloc[0:0]
    assert charts.population_chart(empty, [], {}, "week", "en") == ""


def test_sparkline_breaks_at_gaps() -> None:
    root = ET.fromstring(charts.sparkline([1, 2, math.nan, 4, 5], "Trend & more"))
    assert root.find(f"{SVG}title").text == "Trend & more"
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert len(root.findall(f"{SVG}circle")) == 1
    flat = ET.fromstring(charts.sparkline([3, 3, 3], "flat"))
    ys = {p.split(",")[1] for p in flat.find(f"{SVG}polyline").get("points").split()}
    assert len(ys) == 1
    nothing = ET.fromstring(charts.sparkline([None, math.nan], "none"))
    assert nothing.find(f"{SVG}polyline") is None


def test_heat_runs_from_light_to_dark() -> None:
    assert charts.heat(0.0) == ("#f7fbff", "#111111")
    assert charts.heat(1.0) == ("#08306b", "#ffffff")
    assert charts.heat(math.nan)[0] == "#f7fbff"


class Cells(HTMLParser):
    """Collect the title of every data cell and the text of every header cell."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self.heads: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "td" and dict(attrs).get("title"):
            self.titles.append(dict(attrs)["title"] or "")
        if tag == "th":
            self._in_th = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "th":
            self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._in_th and data.strip():
            self.heads.append(data.strip())


def test_transition_matrix_counts_and_row_shares() -> None:
    frame = pd.DataFrame(
        {
            "from_stage": [None, None, "reach", "reach", "conversion"],
            "to_stage": ["reach", "conversion", "reach", "conversion", "retention"],
            "customers": [30, 10, 80, 20, 5],
        }
    )
    html = charts.transition_matrix(
        frame,
        ["reach", "conversion", "retention"],
        LABELS,
        "en",
        none_from="Not yet a customer",
        none_to="Gone",
    )
    parser = Cells()
    parser.feed(html)
    # Row shares worked out with pandas, independently of the chart code.
    share = frame.groupby(frame["from_stage"].fillna("-"))["customers"].transform(
        lambda s: s / s.sum()
    )
    assert list(share.round(3)) == [0.75, 0.25, 0.8, 0.2, 1.0]
    assert "Not yet a customer → Reichweite: 30 customers (75.0%)" in parser.titles
    assert "Reichweite → Neukunden: 20 customers (20.0%)" in parser.titles
    assert "Neukunden → Bestandskunden: 5 customers (100.0%)" in parser.titles
    # Columns in stage order; rows: newcomers first, then the stage order.
    rows = [h for h in parser.heads if h in {"Not yet a customer", *LABELS.values()}]
    assert rows[:3] == ["Reichweite", "Neukunden", "Bestandskunden"]  # columns
    assert rows[3:] == ["Not yet a customer", "Reichweite", "Neukunden"]  # rows
    assert "Total" in parser.heads
    assert 'class="stay"' in html  # reach → reach is marked as staying
    empty = frame.assign(customers=0)
    assert charts.transition_matrix(empty, [], {}, "en") == ""
