"""Profile of the collector's loader alone: spool segments of the load benchmark's
shape (bench_collector.py) are written in-process, then loaded into one warehouse
`--loads` times, and the CPU time of every SQL statement and of the Python around
them is printed per loaded event.

    .venv/bin/python bench/bench_collector_loader.py --events 100000 --loads 10

The checkpoint after the last load (which `clm serve` pays later, at the latest when
it stops) is printed apart. CPU time (the process's, `time.process_time`) rather
than wall time: DuckDB runs
at `threads = 1` in the calling thread, as in `clm serve`, so the figures barely
depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import clm
from clm.collect import loader as loader_mod
from clm.collect.intake import CollectorConfig, Intake
from clm.collect.segment import map_message
from clm.warehouse.engine import now_utc

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def write_segments(directory: Path, load: int, events: int, per_file: int) -> None:
    """Sealed segments holding `events` events of the benchmark's shape."""
    intake = Intake(CollectorConfig(spool_dir=directory), None)
    received = now_utc() + timedelta(seconds=load)
    seq = 0
    lines: list[bytes] = []
    for n in range(events):
        msg = {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": f"v0-{n % 5000}",
            "messageId": f"t{load}-{n}",
            "timestamp": "2026-01-05T10:00:00Z",
            "properties": {"sku": f"S-{n % 100}", "price": 9.5},
            "context": {
                "ip": "203.0.113.9",
                "userAgent": UA,
                "page": {
                    "url": f"https://shop.example/p/{n % 100}",
                    "referrer": "https://www.google.com/",
                },
            },
        }
        row = map_message(msg, received, skew=timedelta(0))
        lines.append(intake.event(row, "segment", "segment:web"))
        if len(lines) == per_file:
            (directory / f"seg-{seq:012d}.jsonl").write_bytes(b"".join(lines))
            seq, lines = seq + 1, []
    if lines:
        (directory / f"seg-{seq:012d}.jsonl").write_bytes(b"".join(lines))


class Timed:
    """A DuckDB connection whose `execute` adds its CPU time to `costs`."""

    def __init__(self, con: Any, costs: dict[str, float]) -> None:
        self._con, self._costs = con, costs

    def execute(self, sql: str, *args: Any) -> Any:
        key = re.sub(r"\s+", " ", sql.strip())[:60]
        t = time.process_time()
        out = self._con.execute(sql, *args)
        self._costs[key] += time.process_time() - t
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--per-file", type=int, default=10_000)
    ap.add_argument("--dedup-window-minutes", type=int, default=1440)
    ap.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="events stored in the dedup window before the first load",
    )
    ap.add_argument(
        "--vacuum",
        action="store_true",
        help="leave DuckDB's vacuum on (what clm serve did before December 2026)",
    )
    ap.add_argument(
        "--sql-dedup",
        action="store_true",
        help="check event ids against `events` in SQL on every load (no RecentIds)",
    )
    args = ap.parse_args()
    recent = (
        None
        if args.sql_dedup
        else loader_mod.RecentIds(timedelta(minutes=args.dedup_window_minutes))
    )

    costs: dict[str, float] = defaultdict(float)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        ws = clm.init(Path(tmp) / "ws")
        wh = ws.warehouse
        wh.con.raw_sql("SET threads = 1")
        if not args.vacuum and hasattr(loader_mod, "tune_for_loading"):
            loader_mod.tune_for_loading(wh)  # as `clm serve` does
        cursor = wh.con.con.cursor

        class Con:
            def cursor(self) -> Timed:
                return Timed(cursor(), costs)

        spool = Path(tmp) / "spool"
        spool.mkdir()
        if args.prefill:
            # Ids received a minute before the first load, all in the window; random
            # text overlapping the range of the batch ids, as UUIDs would, so that
            # no row group of `events` is skipped by its min/max.
            wh.con.con.execute(
                'INSERT INTO events (event_id, type, event, "timestamp", '
                "received_at, source) SELECT 't' || md5('pre-' || range), 'track', "
                "'X', now()::TIMESTAMP, now()::TIMESTAMP - INTERVAL 1 MINUTE, 'bench' "
                f"FROM range({int(args.prefill)})"
            )
            wh.con.con.execute("CHECKPOINT")
        per_load: list[float] = []
        for load in range(args.loads):
            write_segments(spool, load, args.events, args.per_file)
            files = loader_mod.sealed_segments(spool)
            real = wh.con.con
            wh.con.con = Con()  # type: ignore[assignment]
            try:
                # Without `recent` the call is the one older versions accept.
                extra = {} if recent is None else {"recent": recent}
                t = time.process_time()
                loader_mod.load_segments(
                    wh,
                    files,
                    dedup_window_minutes=args.dedup_window_minutes,
                    **extra,
                )
                per_load.append(time.process_time() - t)
                total += per_load[-1]
            finally:
                wh.con.con = real
        # The checkpoint that `clm serve` pays later (at the latest when it stops)
        # for what the loads wrote.
        t = time.process_time()
        wh.con.con.execute("CHECKPOINT")
        checkpoint = time.process_time() - t
        stored = wh.con.con.execute("SELECT count(*) FROM events").fetchone()
        ws.close()
    n = args.events * args.loads
    sql = sum(costs.values())
    out = {
        "events_per_load": args.events,
        "loads": args.loads,
        "events_stored": stored[0] if stored else None,
        "loader_cpu_us_per_event": round(total * 1e6 / n, 2),
        "checkpoint_after_us_per_event": round(checkpoint * 1e6 / n, 2),
        "prefilled_ids_in_window": args.prefill,
        "cpu_us_per_event_by_load": [round(x * 1e6 / args.events, 2) for x in per_load],
        "python_outside_sql_us_per_event": round((total - sql) * 1e6 / n, 2),
        "sql_us_per_event": {
            k: round(v * 1e6 / n, 2)
            for k, v in sorted(costs.items(), key=lambda kv: -kv[1])
            if v * 1e6 / n >= 0.01
        },
    }
    print(json.dumps(out, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
