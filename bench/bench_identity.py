"""Benchmark of identity resolution: a full pass and an incremental pass.

    .venv/bin/python bench/bench_identity.py --events 10000000 --customers 1000000

Events are generated in DuckDB: customer c has user id `u<c>` and two anonymous ids
(`a<2c>`, `a<2c+1>`) and an email hash: up to 4 identifiers per customer; 30% of
events carry the user id, every 50th is an identify call with an email trait. The
incremental pass adds
`--new` events (new import id): half from existing customers, half from new ones.
Prints JSON with the timings and the load average at the end (the machine is shared:
read the figures next to it); the figures go to docs/benchmarks-identity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from clm.identity.resolve import resolve
from clm.warehouse.engine import Warehouse

GEN = """INSERT INTO events (event_id, type, event, anonymous_id, user_id, timestamp,
  properties, import_id)
SELECT 'e' || {off} + i, CASE WHEN i % 50 = 0 THEN 'identify' ELSE 'track' END,
  'page_viewed', 'a' || (c * 2 + (i // 7) % 2),
  CASE WHEN i % 10 < 3 OR i % 50 = 0 THEN 'u' || c END,
  TIMESTAMP '2024-01-01' + to_seconds(i % 31536000),
  CASE WHEN i % 50 = 0 THEN '{{"email": "p' || c || '@example.com"}}' END,
  '{batch}'
FROM (SELECT i, {cust} AS c FROM range({n}) t(i))"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--new", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse.duckdb(Path(tmp) / "bench.duckdb", threads=args.threads)
        con = wh.con.con
        t0 = time.perf_counter()
        con.execute(
            GEN.format(
                off=0, n=args.events, cust=f"(i * 7919) % {args.customers}", batch="b1"
            )
        )
        gen = time.perf_counter() - t0

        t0 = time.perf_counter()
        full = resolve(wh, salt="bench")
        full_s = time.perf_counter() - t0
        idents = con.execute("SELECT count(*) FROM customers").fetchone()[0]
        customers = con.execute(
            "SELECT count(DISTINCT customer_id) FROM customers"
        ).fetchone()[0]

        # Half the new events from existing customers, half from new ones.
        n = args.customers
        cust = f"CASE WHEN i % 2 = 0 THEN i % {n} ELSE {n} + i END"
        con.execute(GEN.format(off=args.events, n=args.new, cust=cust, batch="b2"))
        t0 = time.perf_counter()
        inc = resolve(wh, salt="bench")
        inc_s = time.perf_counter() - t0
        wh.close()
    print(
        json.dumps(
            {
                "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                "events": args.events,
                "identifiers": idents,
                "customers": customers,
                "generate_s": round(gen, 2),
                "full_resolution_s": round(full_s, 2),
                "full_steps": full.durations,
                "new_events": args.new,
                "incremental_s": round(inc_s, 2),
                "incremental_steps": inc.durations,
                "incremental_counts": inc.counts,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
