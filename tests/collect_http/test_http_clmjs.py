"""/clm.js in a real headless Chromium (Debian's package, driven by Playwright) on a
page served from localhost: page views, events, identify, consent, cookie and
cookieless modes, and sendBeacon when the page is hidden."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from collect_http_support import KEY, Server, free_port, make_workspace, table

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
DESKTOP_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing; CI must install Debian's chromium package")
    pytest.skip(
        f"{CHROMIUM} not installed (apt-get install chromium); the tracker "
        "test needs a real browser",
        allow_module_level=True,
    )

PAGE = """<!doctype html><html><head><title>Shop home</title>
<script>
  window.clm = window.clm || {q: []};
  ["init", "page", "track", "identify", "consent", "flush"].forEach(function (m) {
    clm[m] = clm[m] || function () { clm.q.push([m, [].slice.call(arguments)]); };
  });
  clm.init({host: "COLLECTOR", writeKey: "KEY", cookieless: COOKIELESS,
            requireConsent: true, flushMs: 200});
  clm.page();
  clm.track("Added to Cart", {sku: "S-1", price: 9.5});
</script>
<script async src="COLLECTOR/clm.js"></script></head><body>hi</body></html>"""


def _page_server(collector: str) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            cookieless = "true" if "cookieless" in self.path else "false"
            body = (
                PAGE.replace("COLLECTOR", collector)
                .replace("KEY", KEY)
                .replace("COOKIELESS", cookieless)
                .encode()
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def _wait_accepted(url: str, n: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = httpx.get(url + "/v1/health").json()["accepted"]
        if got >= n:
            return got
        time.sleep(0.1)
    return got


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from playwright.sync_api import sync_playwright

    ws = make_workspace(tmp_path_factory.mktemp("js") / "ws")
    with Server(ws) as srv:
        httpd, site = _page_server(srv.url)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                ctx = browser.new_context(user_agent=DESKTOP_UA)
                page = ctx.new_page()
                page.goto(site + "/?utm_source=nl&utm_medium=email&utm_campaign=may")
                page.wait_for_function("window.clm && window.clm.version")
                page.wait_for_timeout(400)
                held = _wait_accepted(srv.url, 1, timeout=0.5)  # consent not given yet
                page.evaluate("clm.consent('granted')")
                page.evaluate("clm.identify('user-9', {plan: 'pro'})")
                page.evaluate("clm.track('Beacon Sent', {n: 1})")  # left queued
                page.goto("about:blank")  # pagehide: sendBeacon delivers the queue
                _wait_accepted(srv.url, 4)
                page2 = ctx.new_page()
                page2.goto(site + "/second")
                page2.wait_for_function("window.clm && window.clm.version")
                page2.evaluate("clm.consent('granted'); clm.flush()")
                _wait_accepted(srv.url, 6)
                cookies = {c["name"]: c["value"] for c in ctx.cookies()}
                ctx.close()
                # Cookieless, with the browser's own (headless) user agent; consent
                # denied first on one page: nothing of it may arrive.
                ctx2 = browser.new_context()
                p3 = ctx2.new_page()
                p3.goto(site + "/denied?cookieless")
                p3.wait_for_function("window.clm && window.clm.version")
                p3.evaluate("clm.consent('denied'); clm.track('Never'); clm.flush()")
                p4 = ctx2.new_page()
                p4.goto(site + "/cookieless?cookieless")
                p4.wait_for_function("window.clm && window.clm.version")
                p4.evaluate("clm.consent('granted'); clm.flush()")
                _wait_accepted(srv.url, 8)
                cookies2 = ctx2.cookies()
                ctx2.close()
                browser.close()
        finally:
            httpd.shutdown()
        srv.stop()
    return {
        "events": table(ws, "events"),
        "held": held,
        "cookies": cookies,
        "cookies2": cookies2,
    }


def test_consent_holds_events(run: dict) -> None:
    assert run["held"] == 0
    assert "Never" not in set(run["events"].event.dropna())


def test_first_page_events(run: dict) -> None:
    ev = run["events"][run["events"].url.str.contains("utm_source=nl", na=False)]
    by = {(r.type, r.event): r for r in ev.itertuples()}
    page = by[("page", "Shop home")]
    assert page.channel == "email"
    assert (page.utm_source, page.utm_medium, page.utm_campaign) == (
        "nl",
        "email",
        "may",
    )
    cart = by[("track", "Added to Cart")]
    assert json.loads(cart.properties) == {"sku": "S-1", "price": 9.5}
    ctx = json.loads(cart.context)
    assert ctx["consent"] == "granted" and ctx["library"]["name"] == "clm.js"
    assert ctx["clm"]["browser"] == "Chrome" and ctx["clm"]["bot"] is False
    ident = ev[ev.type == "identify"]
    assert list(ident.user_id) == ["user-9"]
    assert json.loads(ident.properties.iloc[0]) == {"plan": "pro"}
    beacon = by[("track", "Beacon Sent")]
    assert beacon.user_id == "user-9"
    assert page.session_id == cart.session_id == beacon.session_id


def test_cookie_keeps_visitor(run: dict) -> None:
    ev = run["events"]
    aid = run["cookies"]["clm_aid"]
    first = ev[ev.url.str.contains("utm_source=nl", na=False)]
    second = ev[ev.url.str.endswith("/second", na=False)]
    assert set(first.anonymous_id) == {aid} == set(second.anonymous_id)


def test_cookieless(run: dict) -> None:
    ev = run["events"]
    cl = ev[ev.url.str.contains("/cookieless", na=False)]
    assert len(cl) == 2
    assert run["cookies2"] == []
    assert cl.anonymous_id.iloc[0] not in set(ev[~ev.index.isin(cl.index)].anonymous_id)
    # The browser's own headless user agent is flagged as a bot.
    assert json.loads(cl.context.iloc[0])["clm"]["bot"] is True
