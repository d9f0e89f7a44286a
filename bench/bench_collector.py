"""Load benchmark of `clm serve` on loopback: wrk posts /v1/batch requests of
`--batch` events (each with its own messageId) for `--seconds`, then the server is
stopped and the warehouse is counted, so the figure is of events durably
acknowledged *and* loaded, not merely answered.

    .venv/bin/python bench/bench_collector.py --seconds 10 --connections 32

Needs `wrk` (Debian package). Bounded in time (wrk's -d) and in requests (the Lua
script stops building new bodies after --max-requests). Every request goes to
127.0.0.1. Prints one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "collect_http"))

from collect_http_support import KEY, Server, make_workspace

LUA = """
local counter = 0
local tid = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  counter = 0
end
local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 " ..
  "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
request = function()
  counter = counter + 1
  if counter > MAXREQ then
    return wrk.format("GET", "/v1/health")
  end
  local parts = {}
  for i = 1, BATCH do
    parts[i] = string.format(
      '{"type":"track","event":"Product Viewed","anonymousId":"v%d-%d",' ..
      '"messageId":"t%d-%d-%d","timestamp":"2026-01-05T10:00:00Z",' ..
      '"properties":{"sku":"S-%d","price":9.5},' ..
      '"context":{"ip":"203.0.113.9","userAgent":"%s",' ..
      '"page":{"url":"https://shop.example/p/%d",' ..
      '"referrer":"https://www.google.com/"}}}',
      tid, (counter * BATCH + i) %% 5000, tid, counter, i, i, ua, i)
  end
  local body = '{"batch":[' .. table.concat(parts, ",") .. '],' ..
    '"sentAt":"2026-01-05T10:00:00Z"}'
  return wrk.format("POST", "/v1/batch", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Basic AUTH"}, body)
end
"""


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of process `pid`, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _loaded(url: str) -> int:
    """Events the server's loader has written so far (its /v1/health)."""
    import httpx

    loader = httpx.get(url + "/v1/health", timeout=10).json().get("loader") or {}
    return int(loader.get("events_written", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--max-requests", type=int, default=200_000)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    import base64

    import duckdb
    import httpx

    auth = base64.b64encode(f"{KEY}:".encode()).decode()
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp) / "ws", flush_interval_ms=1000)
        script = Path(tmp) / "batch.lua"
        per_thread = args.max_requests // args.threads
        script.write_text(
            LUA.replace("MAXREQ", str(per_thread))
            .replace("BATCH", str(args.batch))
            .replace("AUTH", auth)
            .replace("%%", "%")
        )
        srv = Server(ws).start()
        assert srv.proc is not None
        loaded0 = _loaded(srv.url)
        load_before = os.getloadavg()
        cpu0 = cpu_seconds(srv.proc.pid)
        t0 = time.monotonic()
        out = subprocess.run(
            [
                "wrk",
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "--timeout",
                "5s",
                "-s",
                str(script),
                srv.url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        wall = time.monotonic() - t0
        wrk_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = cpu_seconds(srv.proc.pid)
        health = httpx.get(srv.url + "/v1/health", timeout=10).json()
        load_after = os.getloadavg()
        # Wait (at most a minute) until the loader has written every accepted
        # event, so that its CPU per event covers all of them, not only those it
        # managed during the run.
        t_catch = time.monotonic()
        while time.monotonic() - t_catch < 60:
            h = httpx.get(srv.url + "/v1/health", timeout=10).json()
            done = h["loader"]["events_written"] + h["loader"]["duplicates_skipped"]
            if done - loaded0 >= h["accepted"]:
                break
            time.sleep(0.05)
        catch_up = time.monotonic() - t_catch
        loaded = _loaded(srv.url) - loaded0
        cpu2 = cpu_seconds(srv.proc.pid)
        t1 = time.monotonic()
        srv.stop()
        drain = time.monotonic() - t1
        con = duckdb.connect(str(ws / "clm.duckdb"), read_only=True)
        stored, distinct = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events"
        ).fetchone()
        con.close()

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return round(float(m.group(1)) * scale, 2)

    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    nbad = int(non2xx.group(1)) if non2xx else 0
    result = {
        "seconds": args.seconds,
        "connections": args.connections,
        "batch": args.batch,
        "requests": reqs,
        "non_2xx": nbad,
        "events_acknowledged_per_s": round(reqs * args.batch / wall),
        "events_in_warehouse": stored,
        "distinct_event_ids": distinct,
        # Nothing lost, nothing twice: every acknowledged event is stored once. A
        # request still in flight when wrk stopped may be stored without wrk
        # counting its answer: at most one batch per connection.
        "warehouse_check": (
            "ok"
            if stored == distinct
            and 0
            <= stored - (reqs - nbad) * args.batch
            <= args.connections * args.batch
            else "FAILED"
        ),
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "drain_seconds_after_stop": round(drain, 2),
        # The slowest group commit (write + fsync) of the run: a p99 far above the
        # p50 with a slow fsync here points at the disk (the loader's checkpoint
        # writes to the same disk), not at the event loop.
        "slowest_fsync_ms": health.get("slowest_fsync_ms"),
        "fsyncs": health.get("fsyncs"),
        # Answers the back-pressure held back (the loader lagged), and their total
        # delay: a share of requests times their wait says what it cost the rate.
        "answers_held_back": health.get("answers_held_back"),
        "held_back_ms": health.get("held_back_ms"),
        # What reached the warehouse, over the run and the drain after it: the
        # rate the whole path sustains, loader included.
        "events_in_warehouse_per_s": round(stored / (wall + catch_up + drain)),
        # The loader's CPU per event it wrote, over the run and the catch-up (the
        # figure below counts the run only, per acknowledged event, which
        # flatters a loader that fell behind).
        "loader_cpu_us_per_loaded_event": round(
            (cpu2.get("clm-loader", 0.0) - cpu0.get("clm-loader", 0.0))
            * 1e6
            / max(loaded, 1),
            2,
        ),
        # After wrk stopped, the time until the loader had written every accepted
        # event; the warehouse rate counts it.
        "catch_up_seconds": round(catch_up, 2),
        "load_average_before_after": [
            round(load_before[0], 2),
            round(load_after[0], 2),
        ],
        # Server CPU during the run, per thread, in µs per acknowledged event:
        # clm = the event loop (HTTP, validation, mapping); clm-spool = append +
        # fsync; clm-loader = the loader (DuckDB runs in the calling thread at
        # threads = 1).
        "server_cpu_us_per_event": {
            name: round(
                (cpu1[name] - cpu0.get(name, 0.0)) * 1e6 / max(reqs * args.batch, 1), 2
            )
            for name in sorted(cpu1)
            if cpu1[name] - cpu0.get(name, 0.0) > 0.01
        }
        | {
            # The load generator shares the two cores: its CPU counts too.
            "(wrk)": round(
                (wrk_cpu.ru_utime + wrk_cpu.ru_stime) * 1e6 / max(reqs * args.batch, 1),
                2,
            )
        },
    }
    print(json.dumps(result, indent=2))
    print(out, file=sys.stderr)


if __name__ == "__main__":
    main()
