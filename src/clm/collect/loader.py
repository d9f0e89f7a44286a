"""Move sealed spool segments into the warehouse, exactly once.

The loader takes every sealed segment (oldest first, at most `batch_files` at a time),
and in one DuckDB transaction inserts its event records into `events` and its reject
records into `rejected`; then it deletes the segment files.

Exactly once across crashes: a crash after the commit but before the delete leaves
the segments in place, and they are loaded again on restart. That second load adds
nothing, because the insert skips every `event_id` already in `events` (and keeps one
row per `event_id` within the batch, so a client's retried message counts once).
Rejects are matched on (source, rejected_at, field, raw) the same way. The event-id
check looks at events received up to `DEDUP_WINDOW_HOURS` before the batch, so
that its cost does not grow with the warehouse: a client resending a messageId
more than a day after the first attempt would be stored twice (SDKs retry within
minutes; a replayed segment keeps its original received_at). Progress is
therefore never "marked" anywhere but in the warehouse itself, which is the only
mark that cannot disagree with the data.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from clm.collect.spool import sealed_segments
from clm.errors import EngineError
from clm.warehouse.engine import Warehouse
from clm.warehouse.schema import EVENTS, REJECTED

log = logging.getLogger("clm.collect")

_DUCK = {"string": "VARCHAR", "timestamp": "TIMESTAMP", "float64": "DOUBLE"}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns() -> str:
    cols: dict[str, str] = {"k": "VARCHAR"}
    for name, dtype in EVENTS.items():
        cols[name] = _DUCK[str(dtype).split("(")[0]]
    cols.update(
        row_number="BIGINT",
        field="VARCHAR",
        value="VARCHAR",
        reason="VARCHAR",
        raw="VARCHAR",
        rejected_at="TIMESTAMP",
    )
    return "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in cols.items()) + "}"


COLUMNS = _columns()
DEDUP_WINDOW_HOURS = 24


def load_segments(wh: Warehouse, files: list[Path]) -> dict[str, int]:
    """Insert the records of `files` (sealed segments); return counts. Idempotent."""
    if not files:
        return {"events_written": 0, "duplicates_skipped": 0, "rejected": 0}
    batch_id = "load-" + uuid.uuid4().hex[:12]
    paths = "[" + ", ".join(_q(str(p)) for p in files) + "]"
    read = (
        f"read_json({paths}, format='newline_delimited', columns={COLUMNS}, "
        "maximum_object_size=1048576)"
    )
    cols = ", ".join(f'"{c}"' for c in EVENTS.names if c != "import_id")
    rcols = ", ".join(f'"{c}"' for c in REJECTED.names if c != "import_id")
    # A cursor of its own: a second connection to the same database, so that the
    # loader thread's transaction never mixes with statements that other threads
    # (the read API, the dashboard) run on the workspace's connection meanwhile.
    con = wh.con.con.cursor()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _clm_spool AS SELECT * FROM {read}")
        seen = con.execute(
            "SELECT count(*) FILTER (WHERE k = 'e'), count(*) FILTER (WHERE k = 'r'), "
            f"strftime(coalesce(min(received_at), now()::TIMESTAMP) "
            f"- INTERVAL {DEDUP_WINDOW_HOURS} HOUR, '%Y-%m-%d %H:%M:%S.%f') "
            "FROM _clm_spool"
        ).fetchone()
        assert seen is not None
        # Ids of this batch already stored: a semi-join driven by the (small) batch,
        # over the events received from a day before the batch's oldest event on;
        # the scan skips older row groups by their min/max of received_at, so a
        # load costs the same in a warehouse of any size. A day covers SDK retries
        # (minutes) and crash replays (their received_at is the original one).
        written = con.execute(
            f"""INSERT INTO events ({cols}, import_id)
            SELECT {cols}, {_q(batch_id)} FROM _clm_spool s
            WHERE k = 'e' AND event_id NOT IN (
              SELECT event_id FROM events
              WHERE received_at >= TIMESTAMP {_q(seen[2])}
                AND event_id IN (SELECT event_id FROM _clm_spool WHERE k = 'e'))
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at)
              = 1"""
        ).fetchone()
        if seen[1]:
            con.execute(
                f"""INSERT INTO rejected ({rcols}, import_id)
                SELECT DISTINCT {rcols}, {_q(batch_id)} FROM _clm_spool s
                WHERE k = 'r' AND NOT EXISTS (
                  SELECT 1 FROM rejected x WHERE x.source = s.source
                    AND x.rejected_at = s.rejected_at AND x.field = s.field
                    AND x.raw = s.raw)"""
            )
        con.execute("DROP TABLE _clm_spool")
        con.execute("COMMIT")
    except Exception as exc:
        con.execute("ROLLBACK")
        raise EngineError(
            f"loading spool segments failed: {exc}", transient=True
        ) from exc
    finally:
        con.close()
    assert written is not None

    # Deleting only now is what makes a crash in between harmless (see above).
    for p in files:
        p.unlink(missing_ok=True)
    return {
        "events_written": int(written[0]),
        "duplicates_skipped": int(seen[0]) - int(written[0]),
        "rejected": int(seen[1]),
    }


class Loader:
    """A thread that loads sealed segments as they appear, in batches."""

    def __init__(
        self,
        wh: Warehouse,
        directory: str | Path,
        *,
        batch_files: int = 32,
        interval: float = 1.0,
        wake: threading.Event | None = None,
    ) -> None:
        self.wh, self.directory = wh, Path(directory)
        self.batch_files, self.interval = batch_files, interval
        self.wake = wake or threading.Event()
        self.totals: dict[str, int] = {
            "events_written": 0,
            "duplicates_skipped": 0,
            "rejected": 0,
        }
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def load_pending(self) -> dict[str, int]:
        """Load every sealed segment now; return what this call wrote."""
        done = {k: 0 for k in self.totals}
        with self._lock:
            while True:
                files = sealed_segments(self.directory)[: self.batch_files]
                if not files:
                    return done
                counts = load_segments(self.wh, files)
                for k, v in counts.items():
                    done[k] += v
                    self.totals[k] += v
                log.info("loaded %d spool segment(s): %s", len(files), counts)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="clm-spool-loader", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                self.load_pending()
                self.last_error = None
            except Exception as exc:  # keep the spool; retry on the next turn
                self.last_error = str(exc)
                log.exception("spool loader failed; segments kept for a retry")
                time.sleep(self.interval)

    def status(self) -> dict[str, Any]:
        return {
            **self.totals,
            "segments_waiting": len(sealed_segments(self.directory)),
            "last_error": self.last_error,
        }
