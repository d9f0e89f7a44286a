"""Screenshots of every dashboard page for docs/screenshots/ (`make screenshots`).

    python bench/screenshots.py                      # demo of 2,000 customers
    python bench/screenshots.py --customers 500 --out /tmp/shots

Builds a demo workspace with `clm demo` (bench/out/screens-ws, replaced each time),
serves it with `clm serve` on 127.0.0.1 and a free port, and drives Debian's chromium
through Playwright (which downloads no browser). The browser may only load pages of
that loopback server: every other request is aborted. The overview is taken in English
and German (the language comes from the browser's locale, as for a visitor); the
other pages in English. A page that logs a console error fails the run, so a broken
screenshot is not committed by accident.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
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
WIDTH, HEIGHT = 1280, 860


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clm_bin() -> str:
    return str(Path(sys.executable).with_name("clm"))


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"clm serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("clm serve did not answer on /v1/health within 30 s")


def pages(url: str) -> list[tuple[str, str, str]]:
    """(file name, path, locale) of every page, with ids picked from the API."""
    api = httpx.Client(base_url=url + "/api/v1", timeout=60)
    now = api.get("/stages").json()
    stages = sorted(now["stages"], key=lambda s: -int(s["customers"] or 0))
    busiest = stages[0]["stage"]
    end = date.fromisoformat(now["as_of"])
    start = (end - timedelta(days=90)).isoformat()
    # A loyal customer (if the model has the stage) has orders and a stage history,
    # so the single customer view shows every part; else one of the busiest stage.
    names = {s["stage"] for s in now["stages"] if s["customers"]}
    chosen = "loyalty" if "loyalty" in names else busiest
    cid = api.get(f"/stages/{chosen}").json()["customers"]["rows"][0]
    query = cid[: max(3, len(cid) // 2)]
    return [
        ("overview-en.png", "/", "en-US"),
        ("overview-de.png", "/", "de-DE"),
        ("stage.png", f"/stages/{busiest}", "en-US"),
        ("transitions.png", f"/transitions?start={start}", "en-US"),
        ("cohorts.png", "/cohorts", "en-US"),
        ("customers-search.png", f"/customers?q={query}", "en-US"),
        ("customer.png", f"/customers/{cid}", "en-US"),
        ("models.png", "/models", "en-US"),
        ("report.png", "/report", "en-US"),
    ]


def shoot(url: str, out: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for name, path, locale in pages(url):
                ctx = browser.new_context(
                    locale=locale, viewport={"width": WIDTH, "height": HEIGHT}
                )
                # Only our loopback server: anything else is refused, not fetched.
                ctx.route(
                    "**/*",
                    lambda route: (
                        route.continue_()
                        if route.request.url.startswith(url)
                        else route.abort()
                    ),
                )
                page = ctx.new_page()
                errors: list[str] = []

                def log(msg: Any, errors: list[str] = errors) -> None:
                    if msg.type == "error":
                        errors.append(msg.text)

                def crashed(exc: Any, errors: list[str] = errors) -> None:
                    errors.append(str(exc))

                page.on("console", log)
                page.on("pageerror", crashed)
                if path.startswith("/report"):
                    # The report is a download (Content-Disposition: attachment):
                    # fetch it and show the self-contained HTML as a visitor would.
                    got = httpx.get(url + path, timeout=300)
                    status = got.status_code
                    page.set_content(got.text, wait_until="networkidle")
                else:
                    resp = page.goto(url + path, wait_until="networkidle")
                    status = resp.status if resp else 0
                page.screenshot(path=str(out / name), full_page=True)
                ctx.close()
                print(f"{status} {path} ({locale}) → {out / name}", flush=True)
                if status != 200 or errors:
                    problems.append(f"{path} ({locale}): HTTP {status} {errors}")
        finally:
            browser.close()
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--workspace", type=Path, default=ROOT / "bench/out/screens-ws")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/screenshots")
    args = ap.parse_args()
    demo = ["demo", "--customers", str(args.customers), "--json"]
    subprocess.run(
        [clm_bin(), *demo, "--workspace", str(args.workspace)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", "-w", str(args.workspace), "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [clm_bin(), *serve, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(url, proc)
        problems = shoot(url, args.out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if problems:
        raise SystemExit("pages with errors:\n" + "\n".join(problems))


if __name__ == "__main__":
    main()
