"""Benchmark of the dashboard and the read API of `clm serve` on a big workspace.

    python bench/bench_dashboard.py                        # 1,000,000 customers
    python bench/bench_dashboard.py --customers 100000 --requests 50
    python bench/bench_dashboard.py --only preview         # the model preview rows

The simulated shop (`clm demo --parquet`, ~10 events per customer, two years) is
generated once into bench/out/ like bench/bench_pipeline.py does; the workspace
bench/out/dash-ws-<customers> is built once (import, `clm run` with its precompute,
metrics by month) and reused on later runs. Then `clm serve` starts on 127.0.0.1 with
a free port and a bounded load generator on loopback asks every page and every API
call: one cold request each (the first after the start: memory caches empty), then
`--requests` requests per endpoint from `--clients` concurrent clients (fewer if
`--seconds` runs out first: no request starts after it). Times are
measured by the client around each request; on loopback that is the server's time
plus well under a millisecond of transport, so it is an upper bound of server time.
The target is p95 < 300 ms per endpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import OUT, ensure_data

TARGET_MS = 300.0

BUILD = r"""
import json, sys, time
import clm
ws_dir, parquet = sys.argv[1], sys.argv[2]
steps = {}
t = time.perf_counter()
ws = clm.init(ws_dir, timezone="Europe/Berlin")
r = ws.import_events(parquet)
ws._save_receipt(r)
steps["import"] = time.perf_counter() - t
t = time.perf_counter()
ws.run()
steps["run_with_precompute"] = time.perf_counter() - t
t = time.perf_counter()
ws.metrics(grain="month")
steps["metrics"] = time.perf_counter() - t
ws.close()
print(json.dumps({"steps": steps, "events": r.counts.get("events_written")}))
"""

# The precompute step of `clm run` again, timed: a reused workspace gets the answers
# of this version of clm, and the figure says what the step adds to `clm run`.
REFRESH = r"""
import json, sys, time
import clm
from clm.server import views
ws = clm.open(sys.argv[1])
t = time.perf_counter()
n = views.precompute(ws, ws.models())
print(json.dumps({"precompute_s": time.perf_counter() - t, "stored": n}))
ws.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child(code: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def ensure_workspace(customers: int) -> tuple[Path, dict[str, Any]]:
    ws = OUT / f"dash-ws-{customers}"
    info: dict[str, Any] = {}
    if not (ws / "clm.yaml").exists():
        data = ensure_data(customers)
        t = time.perf_counter()
        info["build"] = child(BUILD, str(ws), str(data))
        print(f"built {ws} in {time.perf_counter() - t:.0f} s: {info['build']}")
    info["refresh"] = child(REFRESH, str(ws))
    return ws, info


def endpoints(client: httpx.Client) -> list[tuple[str, str, bytes | None]]:
    """(method, path, body) of every page and API call, ids taken from the API."""
    now = client.get("/api/v1/stages").json()
    model = now["model"]
    stage = max(now["stages"], key=lambda s: int(s["customers"] or 0))["stage"]
    end = date.fromisoformat(now["as_of"])
    start = (end - timedelta(days=30)).isoformat()
    found = client.get("/api/v1/customers", params={"q": "", "page_size": 50}).json()
    cid = found["rows"][0]["customer_id"]
    query = cid[: max(3, len(cid) // 2)]
    receipts = client.get("/api/v1/receipts").json()["rows"]
    rid = receipts[0]["receipt_id"]
    yaml_text = client.get(f"/api/v1/models/{model}").json()["yaml"]
    body = json.dumps({"yaml": yaml_text}).encode()
    get: list[str] = [
        "/",
        f"/stages/{stage}",
        f"/transitions?start={start}",
        "/cohorts",
        f"/customers?q={query}",
        f"/customers/{cid}",
        "/models",
        "/report",
        "/api/v1/models",
        f"/api/v1/models/{model}",
        "/api/v1/stages",
        "/api/v1/stages/series",
        f"/api/v1/stages/{stage}",
        f"/api/v1/transitions?start={start}",
        "/api/v1/metrics?grain=month",
        "/api/v1/overview",
        "/api/v1/cohorts",
        f"/api/v1/customers?q={query}",
        # A broad query (two letters): hits most customers, capped at 1,000.
        f"/api/v1/customers?q={cid[:2]}",
        f"/api/v1/customers/{cid}",
        "/api/v1/rfm",
        "/api/v1/clv",
        "/api/v1/receipts",
        f"/api/v1/receipts/{rid}",
    ]
    out: list[tuple[str, str, bytes | None]] = [("GET", p, None) for p in get]
    out.append(("POST", "/api/v1/models/validate", body))
    # The saved model unchanged (what the Models page shows first: the stored
    # populations), then an edited draft (a replay on the sample every time).
    out.append(("POST", "/api/v1/models/preview", body))
    out.append(("POST", EDITED, yaml_text.encode()))
    # The same draft made forward-only: the preview replays the sample's history.
    if "progression: dynamic" in yaml_text:
        out.append(("POST", EDITED_FORWARD, yaml_text.encode()))
        # Forward-only again, with a feature's window changed too: a feature set
        # the preview has not seen, so its grid is built for this request.
        if "within = 30d" in yaml_text:
            out.append(("POST", EDITED_FEATURES, yaml_text.encode()))
        # A feature's filter rewritten in every request: compiled and evaluated
        # over the sample's events before the grid (no matched events to reuse).
        if "count(type = 'page'" in yaml_text:
            out.append(("POST", EDITED_FILTER, yaml_text.encode()))
    return out


# The paths the load generator uses for the edited drafts; sent as the real preview.
EDITED = "/api/v1/models/preview#edited"
EDITED_FORWARD = "/api/v1/models/preview#edited-forward-only"
EDITED_FEATURES = "/api/v1/models/preview#edited-features-forward-only"
EDITED_FILTER = "/api/v1/models/preview#edited-filter-forward-only"
EDITED_ALL = (EDITED, EDITED_FORWARD, EDITED_FEATURES, EDITED_FILTER)


def edited_draft(
    yaml_text: str,
    n: int,
    forward: bool = False,
    features: bool = False,
    filtered: bool = False,
) -> bytes:
    """A draft that differs from the saved model (and from every other request, so
    no answer comes from the server's cache): version bumped, a numbered comment,
    and a catch-all rule `true` rewritten with the number (same stages, new rule
    text: the preview compiles its query again); `forward`: with
    `progression: forward_only`; `features`: the first 30-day window made
    30 + n days (a new feature set every request: no grid to reuse); `filtered`:
    the page-view count's filter made `type = 'page' and event != 'x<n>'` (a
    filter never seen: compiled and run over the sample's events first)."""
    text = yaml_text.replace("version: ", "version: 1", 1) + f"\n# bench draft {n}\n"
    text = text.replace('when: "true"', f'when: "true or {n} < 0"', 1)
    if forward:
        text = text.replace("progression: dynamic", "progression: forward_only", 1)
    if features:
        text = text.replace("within = 30d", f"within = {30 + n}d", 1)
    if filtered:
        text = text.replace(
            "count(type = 'page'", f"count(type = 'page' and event != 'x{n}'", 1
        )
    return json.dumps({"yaml": text}).encode()


DRAFTS = iter(range(1, 1_000_000))


def timed(client: httpx.Client, method: str, path: str, body: bytes | None) -> float:
    headers = {"Content-Type": "application/json"} if body else None
    if path in EDITED_ALL and body is not None:
        forward = path != EDITED
        features, filtered = path == EDITED_FEATURES, path == EDITED_FILTER
        path = path.split("#")[0]
        body = edited_draft(body.decode(), next(DRAFTS), forward, features, filtered)
    t = time.perf_counter()
    r = client.request(method, path, content=body, headers=headers)
    ms = (time.perf_counter() - t) * 1000
    # 404 is the right answer of rfm/clv before `clm clv predict`: still timed.
    if r.status_code not in (200, 404):
        raise SystemExit(f"{method} {path}: HTTP {r.status_code} {r.text[:300]}")
    return ms


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    # Nearest rank: the smallest value with at least q of the sample at or below it.
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))]


def measure(
    url: str, requests: int, clients: int, seconds: float, only: str = ""
) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(base_url=url, timeout=120) as c:
        eps = [e for e in endpoints(c) if only in e[1]]
    local = [httpx.Client(base_url=url, timeout=120) for _ in range(clients)]
    try:
        for method, path, body in eps:
            cold = timed(local[0], method, path, body)
            slow = path.endswith("preview") or "#edited" in path
            n = max(clients, requests // 5) if slow else requests

            t = time.perf_counter()
            stop = t + seconds

            def one(
                i: int,
                method: str = method,
                path: str = path,
                body: Any = body,
                stop: float = stop,
            ) -> float | None:
                # Bounded in time too: requests not started by `stop` are skipped.
                if time.perf_counter() > stop:
                    return None
                return timed(local[i % clients], method, path, body)

            with ThreadPoolExecutor(clients) as pool:
                got = list(pool.map(one, range(n)))
            wall = time.perf_counter() - t
            times = [x for x in got if x is not None]
            n = len(times)
            row: dict[str, Any] = {
                "method": method,
                "path": path,
                "n": n,
                "cold_ms": round(cold, 1),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(percentile(times, 0.95), 1),
                "max_ms": round(max(times), 1),
                "rps": round(n / wall, 1),
            }
            row["ok"] = row["p95_ms"] < TARGET_MS
            rows.append(row)
            print(
                f"{method:4} {path[:48]:48} n={n:4} cold {cold:8.1f}  "
                f"p50 {row['p50_ms']:7.1f}  p95 {row['p95_ms']:7.1f}  "
                f"{'ok' if row['ok'] else 'OVER'}",
                flush=True,
            )
    finally:
        for c in local:
            c.close()
    return rows


def wait_for_lookups(url: str, limit: float = 300) -> dict[str, Any]:
    """Wait until the server's look-up tables for the customer pages are built (it
    starts them on the first read request; until then those pages scan) and the
    model preview's sample is loaded after them (`warm`)."""
    t = time.perf_counter()
    httpx.get(url + "/api/v1/stages", timeout=120)  # creates the reader
    while time.perf_counter() - t < limit:
        status = httpx.get(url + "/api/v1/", timeout=10).json().get("lookups") or {}
        if status.get("ready") and status.get("warm", True):
            return {**status, "waited_s": round(time.perf_counter() - t, 1)}
        time.sleep(0.5)
    raise SystemExit(f"look-up tables not ready after {limit:.0f} s: {status}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=100, help="per endpoint")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients")
    ap.add_argument(
        "--seconds", type=float, default=20, help="at most this long per endpoint"
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument(
        "--only",
        default="",
        help="time only the endpoints whose path contains this (e.g. `preview`)",
    )
    args = ap.parse_args()
    ws, info = ensure_workspace(args.customers)
    print("workspace:", ws, json.dumps(info))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clm = str(Path(sys.executable).with_name("clm"))
    proc = subprocess.Popen(
        [clm, "serve", "-w", str(ws), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("clm serve did not start within 60 s")
        info["lookups"] = wait_for_lookups(url)
        print("look-up tables:", info["lookups"])
        print("uptime before:", os.popen("uptime").read().strip())
        rows = measure(url, args.requests, args.clients, args.seconds, args.only)
        print("uptime after: ", os.popen("uptime").read().strip())
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    over = [r["path"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(over)}/{len(rows)} endpoints with p95 < {TARGET_MS} ms")
    print("uptime:", os.popen("uptime").read().strip())
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
