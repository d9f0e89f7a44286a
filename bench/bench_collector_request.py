"""CPU per event of the collector's request path in-process: `/v1/batch` bodies of
the load benchmark's shape (bench_collector.py: 100 track events each) handled by
`http_segment.handle`, with the spool's fsync left out (it runs in its own thread in
`clm serve`; `bench_collector.py` reports it apart).

    .venv/bin/python bench/bench_collector_request.py --requests 300 --repeat 5

Prints the best of `--repeat` rounds, in µs of process CPU per event, and the
spool bytes per event. HTTP parsing (uvicorn, httptools) is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
from pathlib import Path

import orjson

from clm.collect import http_segment
from clm.collect.intake import CollectorConfig, Intake

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def body(request: int, batch: int) -> bytes:
    """One request body as the benchmark's wrk script builds it."""
    events = [
        {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": f"v0-{(request * batch + i) % 5000}",
            "messageId": f"t0-{request}-{i}",
            "timestamp": "2026-01-05T10:00:00Z",
            "properties": {"sku": f"S-{i}", "price": 9.5},
            "context": {
                "ip": "203.0.113.9",
                "userAgent": UA,
                "page": {
                    "url": f"https://shop.example/p/{i}",
                    "referrer": "https://www.google.com/",
                },
            },
        }
        for i in range(batch)
    ]
    return orjson.dumps({"batch": events, "sentAt": "2026-01-05T10:00:00Z"})


class Sink(Intake):
    """An intake whose commit only counts bytes: no spool, no fsync."""

    spooled = 0

    async def commit(self, data: bytes) -> None:
        self.spooled += len(data)


async def run(bodies: list[bytes], intake: Sink, auth: str) -> float:
    t = time.process_time()
    for b in bodies:
        answer = await http_segment.handle(intake, "batch", b, auth, "127.0.0.1")
        assert answer.status == 200, answer.body
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        intake = Sink(CollectorConfig(Path(tmp), write_keys={"k": "web"}), None)
        auth = "Basic " + base64.b64encode(b"k:").decode()
        bodies = [body(r, args.batch) for r in range(args.requests)]
        best = min(asyncio.run(run(bodies, intake, auth)) for _ in range(args.repeat))
    n = args.requests * args.batch
    print(
        json.dumps(
            {
                "events": n,
                "handle_cpu_us_per_event": round(best * 1e6 / n, 2),
                "spool_bytes_per_event": intake.spooled // (n * args.repeat),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
