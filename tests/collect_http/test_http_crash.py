"""kill -9 under load: every acknowledged event is in the warehouse after a restart,
exactly once, and nothing appears that was never sent."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
from collect_http_support import CLM, KEY, Server, free_port, make_workspace, table

THREADS, BATCH = 4, 50


def _load(
    url: str, worker: int, acked: list[str], sent: list[str], stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, auth=(KEY, ""), timeout=5) as c:
        n = 0
        while not stop.is_set() and n < 2000:  # bounded: at most 2000 requests
            ids = [f"w{worker}-{n}-{i}" for i in range(BATCH)]
            sent.extend(ids)
            batch = [
                {
                    "type": "track",
                    "event": "Load",
                    "anonymousId": f"v{worker}",
                    "messageId": m,
                }
                for m in ids
            ]
            try:
                resp = c.post("/v1/batch", json={"batch": batch})
            except httpx.HTTPError:
                return  # the server died: this batch was never acknowledged
            if resp.status_code == 200:
                acked.extend(ids)
            n += 1


def test_kill_9_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", flush_interval_ms=100)
    srv = Server(ws).start()
    acked: list[str] = []
    sent: list[str] = []
    stop = threading.Event()
    workers = [
        threading.Thread(target=_load, args=(srv.url, w, acked, sent, stop))
        for w in range(THREADS)
    ]
    for t in workers:
        t.start()
    time.sleep(2.0)
    srv.kill()  # SIGKILL while requests, fsyncs and loads are in flight
    stop.set()
    for t in workers:
        t.join(timeout=10)
    assert len(acked) > 1000, "the load did not run long enough to test anything"

    # A restart recovers the spool and loads what was acknowledged; SIGTERM then
    # drains the loader so the warehouse can be read.
    again = Server(ws, port=srv.port).start()
    # A second server on the same workspace is refused with one clear message.
    second = subprocess.run(
        [CLM, "serve", "--workspace", str(ws), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1, second.stdout + second.stderr
    assert "another clm" in second.stdout + second.stderr
    again.stop()
    ev = table(ws, "events")
    stored = set(ev.event_id)
    assert ev.event_id.is_unique
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert stored <= set(sent)
    assert not list((ws / "spool").glob("seg-*"))
