"""Helpers of the collector tests: workspaces with serve settings, a real `clm serve`
subprocess on 127.0.0.1 with a free port, and reading the warehouse after it stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pandas as pd
import yaml

CLM = str(Path(sys.executable).parent / "clm")
KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_workspace(root: Path, **serve: Any) -> Path:
    """A workspace with the given `serve.*` settings (names without the prefix)."""
    import clm

    ws = clm.init(root)
    ws.close()
    cfg = root / "clm.yaml"
    values = yaml.safe_load(cfg.read_text())
    values["serve.write_keys"] = [f"{KEY}=web"]
    values["serve.flush_interval_ms"] = 200
    for k, v in serve.items():
        values[f"serve.{k}"] = v
    cfg.write_text(yaml.safe_dump(values))
    return root


class Server:
    """`clm serve` as a real subprocess on 127.0.0.1."""

    def __init__(self, workspace: Path, port: int | None = None) -> None:
        self.workspace = workspace
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> Server:
        env = {**os.environ, "CLM_DEBUG": "1"}
        self.proc = subprocess.Popen(
            [
                CLM,
                "serve",
                "--workspace",
                str(self.workspace),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"clm serve exited: {out}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("clm serve did not become healthy")

    def stop(self) -> str:
        """SIGTERM: the server loads what is spooled, then exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out.decode()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def table(workspace: Path, name: str) -> pd.DataFrame:
    con = duckdb.connect(str(workspace / "clm.duckdb"), read_only=True)
    try:
        return con.sql(f"SELECT * FROM {name}").df()
    finally:
        con.close()
