"""Start `clm serve` on a small demo workspace on 127.0.0.1 for the read-side tests.

The expected figures are read from the warehouse file before the server opens it
(DuckDB lets one process hold a file), with a few lines of pandas written here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pandas as pd

TOKEN = "test-read-token"


@dataclass
class Served:
    url: str
    root: Path
    truth: dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected(db: Path) -> dict[str, Any]:
    """Populations on the last day and one customer's event count, by pandas."""
    con = duckdb.connect(str(db), read_only=True)
    hist = con.sql("SELECT * FROM stage_history").df()
    customers = con.sql("SELECT identifier, customer_id FROM customers").df()
    events = con.sql("SELECT user_id, anonymous_id FROM events").df()
    run = con.sql("SELECT value FROM clm_meta WHERE key LIKE 'run:%'").fetchone()
    con.close()
    assert run is not None
    # "As of day D" is the interval holding D's local midnight; the last day is the
    # one before the run's observation end (PRODUCT.md §4, lifecycle.queries).
    end = pd.Timestamp(json.loads(run[0])["observation_end"]).tz_localize("UTC")
    local = (end - pd.Timedelta(seconds=1)).tz_convert("Europe/Berlin").normalize()
    day = local
    at = local.tz_convert("UTC").tz_localize(None)
    live = hist[(hist.valid_from <= at) & (hist.valid_to.isna() | (at < hist.valid_to))]
    pops = live.groupby("stage").customer_id.nunique().to_dict()
    # One customer with several identifiers and events.
    cid = customers.customer_id.value_counts().index[0]
    mine = set(customers[customers.customer_id == cid].identifier)
    keys_user = "user:" + events.user_id.fillna("").str.strip()
    keys_anon = "anon:" + events.anonymous_id.fillna("").str.strip()
    has_user = events.user_id.fillna("").str.strip() != ""
    key = keys_user.where(has_user, keys_anon)
    return {
        "as_of": day.date().isoformat(),
        "populations": pops,
        "customer": cid,
        "customer_events": int(key.isin(mine).sum()),
        "customer_identifiers": len(mine),
    }


@contextmanager
def serve_demo(tmp: Path, customers: int = 2000) -> Iterator[Served]:
    clm = str(Path(sys.executable).with_name("clm"))
    root = tmp / "demo"
    subprocess.run(
        [clm, "demo", "--customers", str(customers), "-w", str(root)],
        check=True,
        capture_output=True,
    )
    truth = expected(root / "clm.duckdb")
    port = free_port()
    env = {**os.environ, "CLM_SERVE_READ_TOKENS": TOKEN}
    proc = subprocess.Popen(
        [clm, "serve", "-w", str(root), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("clm serve did not start")
        yield Served(url, root, truth)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
