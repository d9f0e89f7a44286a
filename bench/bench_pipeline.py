"""Benchmark of the main job: import from Parquet + `clm run` + `clm metrics`.

    python bench/bench_pipeline.py                 # 100k and 1M customers
    python bench/bench_pipeline.py --customers 100000

For each size the simulated shop (`clm demo --parquet`, ~10 events per customer, two
years) is generated once into bench/out/ (not timed), then a child process runs the
pipeline on a fresh workspace through the Python API that the CLI uses: import the
Parquet file, run the `ecommerce` model (weekly history over two years), compute its
metrics per month. The child reports each step's wall time (`total` starts after
Python has imported clm); the parent reads the child's peak resident memory and CPU
seconds from the operating system (ru_maxrss, ru_utime + ru_stime of the waited-for
child; CPU includes the interpreter's start).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

CHILD = r"""
import json, sys, time
import clm
from clm.identity.profiles import build_profiles
from clm.identity.resolve import options_from, resolve, run_customer_keys
from clm.lifecycle.history import run_model
from clm.server.views import precompute_after_run
ws_dir, parquet = sys.argv[1], sys.argv[2]
steps = {}
def timed(name, fn):
    t = time.perf_counter(); out = fn(); steps[name] = time.perf_counter() - t
    return out
t0 = time.perf_counter()
ws = clm.init(ws_dir, timezone="Europe/Berlin")
r = timed("import", lambda: ws.import_events(parquet))
# The steps of `clm run` (Workspace.run), timed one by one.
model = ws.model()
timed("identity", lambda: resolve(ws.warehouse, **options_from(ws.config)))
shared = run_customer_keys(ws.warehouse)
timed("keys", shared.__enter__)  # each id pair looked up once for the run
run = timed("stages", lambda: run_model(ws.warehouse, model, timezone=ws.timezone))
timed("profiles", lambda: build_profiles(ws.warehouse))
timed("precompute", lambda: precompute_after_run(ws, [model]))
shared.__exit__(None, None, None)
RUN = ("identity", "keys", "stages", "profiles", "precompute")
steps["run"] = sum(steps[k] for k in RUN)
m = timed("metrics", lambda: ws.metrics(grain="month"))
steps["total"] = time.perf_counter() - t0
print(json.dumps({
    "steps": steps,
    "events": r.counts.get("events_written"),
    "customers": run.receipt.counts["customers"],
    "intervals": run.receipt.counts["intervals"],
    "run_steps": run.receipt.durations,
    "metric_values": len(m.values),
    # 1 when `clm metrics` read the values the run's precompute stored.
    "metrics_stored": int(m.receipt.counts.get("stored", 0)),
}))
"""


def ensure_data(customers: int) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"shop-{customers}.parquet"
    if not path.exists():
        from clm.demo.simulate import write_parquet

        t = time.perf_counter()
        rows = write_parquet(path, customers, seed=7)
        print(f"generated {rows:,} events in {time.perf_counter() - t:.1f} s → {path}")
    return path


def run_once(customers: int) -> dict:
    data = ensure_data(customers)
    ws = OUT / f"ws-{customers}"
    shutil.rmtree(ws, ignore_errors=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ws), str(data)],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = usage.ru_maxrss
    # CPU seconds of the child (both cores): steadier than wall time on a machine
    # shared with other jobs, though not immune to them.
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run sizes smallest
    # first.
    result["peak_rss_mb"] = round(max(peak_kb, before) / 1024)
    result["customers_in"] = customers
    result["cpu_s"] = round(cpu, 1)
    shutil.rmtree(ws, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, nargs="*", default=[100_000, 1_000_000])
    args = ap.parse_args()
    rows = []
    for n in sorted(args.customers):
        r = run_once(n)
        rows.append(r)
        s = r["steps"]
        print(
            f"{n:>9,} customers {r['events']:>11,} events: import {s['import']:.1f} s, "
            f"run {s['run']:.1f} s (identity {s['identity']:.1f}, keys "
            f"{s.get('keys', 0):.1f}, stages "
            f"{s['stages']:.1f}, profiles {s['profiles']:.1f}, precompute "
            f"{s['precompute']:.1f}), metrics {s['metrics']:.1f} s"
            f"{' (stored)' if r.get('metrics_stored') else ''}, "
            f"total {s['total']:.1f} s (CPU {r['cpu_s']:.1f} s), "
            f"peak RSS {r['peak_rss_mb']:,} MB",
            flush=True,
        )
        print("   stage engine:", {k: round(v, 2) for k, v in r["run_steps"].items()})
        print("   load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
