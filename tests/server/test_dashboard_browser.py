"""The dashboard in a real headless Chromium (Debian's package; Playwright drives it
and downloads nothing): every page loads without console errors, charts have data,
the language switch works, search → customer → timeline, and an invalid model draft
shows its error inline. Only pages served on 127.0.0.1 are loaded."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_support import TOKEN, Served, serve_demo

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_demo(tmp_path_factory.mktemp("dash")) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Served) -> Iterator[Any]:
    ctx = browser.new_context(locale="en-US")
    ctx.add_cookies([{"name": "clm_token", "value": TOKEN, "url": server.url}])
    # Anything not on our loopback server is refused, so nothing leaves the machine.
    ctx.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(server.url)
            else route.abort()
        ),
    )
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


PAGES = [
    ("/", "#populations-chart svg path"),
    ("/stages/reach", "#channels-chart svg rect.bar"),
    ("/transitions?start=2025-06-01", "#sankey svg path.flow"),
    ("/cohorts", "#heatmap svg rect.cell"),
    ("/models", "#model-yaml"),
]


@pytest.mark.parametrize(("path", "chart"), PAGES)
def test_page_loads_with_chart(
    page: Any, server: Served, path: str, chart: str
) -> None:
    resp = page.goto(server.url + path)
    assert resp.status == 200
    assert page.locator(chart).count() > 0
    assert page.errors == []


def test_language_switch_and_german_formats(page: Any, server: Served) -> None:
    page.goto(server.url + "/")
    assert page.locator("nav a").first.inner_text() == "Overview"
    page.click("#lang-de")
    assert page.locator("nav a").first.inner_text() == "Überblick"
    total = sum(server.truth["populations"].values())
    # German groups thousands with a dot and writes dates as DD.MM.YYYY.
    meta = page.locator("p.meta").first.inner_text()
    assert f"{total:,}".replace(",", ".") in meta
    y, m, d = server.truth["as_of"].split("-")
    assert f"{d}.{m}.{y}" in meta
    assert page.errors == []


def test_browser_language_is_the_default(browser: Any, server: Served) -> None:
    ctx = browser.new_context(locale="de-DE")
    ctx.add_cookies([{"name": "clm_token", "value": TOKEN, "url": server.url}])
    pg = ctx.new_page()
    pg.goto(server.url + "/cohorts")
    assert pg.locator("h1").inner_text() == "Kohorten"
    ctx.close()


def test_search_customer_timeline(page: Any, server: Served) -> None:
    cid = server.truth["customer"]
    page.goto(server.url + "/customers")
    page.fill("#q", cid)
    page.click("#search")
    page.locator("a.customer").first.click()
    page.wait_for_selector("#timeline")
    assert cid in page.locator("h1").inner_text()
    assert page.locator("#timeline svg rect.span").count() >= 1
    assert page.locator("tr.event").count() == min(50, server.truth["customer_events"])
    assert page.errors == []


def test_invalid_draft_shows_inline_error(page: Any, server: Served) -> None:
    page.goto(server.url + "/models")
    area = page.locator("#model-yaml")
    text = area.input_value()
    area.fill(text.replace("orders_365d >=", "orders_366d >=", 1))
    page.wait_for_selector("#validation.error")
    message = page.locator("#validation").inner_text()
    assert "orders_366d" in message and "line" in message
    area.fill(text)
    page.wait_for_selector("#validation.ok")
    page.click("#preview-button")
    page.wait_for_selector("#preview tbody tr")
    model = httpx.get(
        server.url + "/api/v1/models/ecommerce",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    # The preview lists every stage of the model, empty ones too.
    assert page.locator("#preview tbody tr").count() == len(model["stages"])
    # The saved model's text: the stored populations, said so, without margins.
    assert "saved model" in page.locator("#preview-note").inner_text()
    assert page.locator("#preview tbody td").nth(2).inner_text() == ""
    # An edited draft (a new version): the note names the method and the sample.
    area.fill(text.replace("version: 1", "version: 3", 1))
    page.wait_for_selector("#validation.ok")
    page.click("#preview-button")
    page.wait_for_function(
        "document.getElementById('preview-note').textContent.includes('customers')"
        " && !document.getElementById('preview-note').textContent.includes('saved')"
    )
    note = page.locator("#preview-note").inner_text()
    # 2,000 demo customers fit the sample: every one is replayed, exactly.
    assert "all" in note and "2,000" in note.replace("\u202f", ",")
    assert page.errors == []


def test_preview_note_in_german(browser: Any, server: Served) -> None:
    ctx = browser.new_context(locale="de-DE")
    ctx.add_cookies([{"name": "clm_token", "value": TOKEN, "url": server.url}])
    pg = ctx.new_page()
    pg.goto(server.url + "/models")
    pg.click("#preview-button")
    pg.wait_for_selector("#preview tbody tr")
    note = pg.locator("#preview-note").inner_text()
    assert "gespeicherte Modell" in note
    # A German date: day.month.year.
    assert re.search(r"\d{2}\.\d{2}\.\d{4}", note), note
    pg.goto(server.url + "/customers?q=user-")
    assert "Anfang" in pg.locator("#search-rule").inner_text()
    ctx.close()
