"""What every collection endpoint shares: config, IP anonymisation, the spool and the
loader (which does the rest of the enrichment, per batch).

A protocol handler (`http_segment`, `http_matomo`) turns a request into event rows
(or `Invalid` problems), hands them to `Intake.event` / `Intake.reject`, and answers
only after `Intake.commit` returned, i.e. after the records are fsync'd in the spool.
Which protocol and site an event came from stays visible in `source`
(`segment:<source name>`, `matomo:<idsite>`) and in `context.clm.protocol`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from clm.collect.enrich import anonymize_ip
from clm.collect.loader import MIN_LOAD_BYTES, Loader, tune_for_loading
from clm.collect.spool import Spool
from clm.errors import ConfigError
from clm.warehouse.engine import Warehouse, now_utc

log = logging.getLogger("clm.collect")


@dataclass
class CollectorConfig:
    """The `serve.*` settings, resolved (see `clm.settings`)."""

    spool_dir: Path
    write_keys: dict[str, str] = field(default_factory=dict)  # key -> source name
    matomo_sites: frozenset[str] = frozenset()
    batch_size: int = 32
    flush_interval: float = 1.0
    session_timeout_minutes: int = 30
    dedup_window_minutes: int = 1440
    anonymize_ip: bool = True
    bot_filter: bool = True
    loader_threads: int = 1

    @classmethod
    def from_settings(cls, config: dict[str, Any], root: Path) -> CollectorConfig:
        keys: dict[str, str] = {}
        for entry in config["serve.write_keys"]:
            key, _, name = entry.partition("=")
            if not key.strip():
                raise ConfigError(
                    f"setting `serve.write_keys`: {entry!r} has no key; "
                    "write KEY=SOURCE, for example abc123=web"
                )
            keys[key.strip()] = name.strip() or "default"
        for name in ("serve.anonymize_ip", "serve.bot_filter"):
            if config[name] not in (0, 1):
                raise ConfigError(
                    f"setting `{name}`: {config[name]!r}; expected 1 (on) or 0 (off)"
                )
        return cls(
            spool_dir=root / config["serve.spool_dir"],
            write_keys=keys,
            matomo_sites=frozenset(config["serve.matomo_sites"]),
            batch_size=max(1, config["serve.batch_size"]),
            flush_interval=max(10, config["serve.flush_interval_ms"]) / 1000,
            session_timeout_minutes=config["serve.session_timeout_minutes"],
            dedup_window_minutes=max(0, config["serve.dedup_window_minutes"]),
            anonymize_ip=bool(config["serve.anonymize_ip"]),
            bot_filter=bool(config["serve.bot_filter"]),
        )


# Back-pressure (Intake.commit): up to two loads' worth of sealed spool waits while
# the loader keeps up (one being loaded, the next one sealed meanwhile, so the
# loader starts its next load at once); beyond that each answer waits, in
# proportion, up to MAX_DELAY seconds, reached when two more loads' worth wait.
# Starting at one load's worth was measured too: the loader then idled between
# loads while answers waited (91,000 against 96,000-99,000 events/s acknowledged,
# docs/benchmarks-collector.md).
LAG_START = 2 * MIN_LOAD_BYTES
LAG_SPAN = 2 * MIN_LOAD_BYTES
MAX_DELAY = 0.02


def _scrub(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a refused payload with `context.ip` (Segment) and `cip` (Matomo)
    anonymised: a reject is written to disk like any event (PRODUCT.md §9)."""
    out = dict(raw)
    ctx = out.get("context")
    if isinstance(ctx, dict) and isinstance(ctx.get("ip"), str):
        out["context"] = {**ctx, "ip": anonymize_ip(ctx["ip"])}
    if isinstance(out.get("cip"), str):
        out["cip"] = anonymize_ip(out["cip"])
    return out


def _default(value: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Intake:
    """Anonymise and spool records; run the loader (enrichment, sessions, warehouse)
    beside the server."""

    def __init__(self, config: CollectorConfig, wh: Warehouse | None) -> None:
        self.config = config
        self.wh = wh
        self.spool = Spool(config.spool_dir, rotate_seconds=config.flush_interval)
        self.loader: Loader | None = None
        self.accepted = 0
        self.rejected = 0
        self.held_back = 0  # answers delayed by back-pressure, and for how long
        self.held_back_seconds = 0.0
        self.running = False

    def start(self) -> None:
        """Open the spool, load what a previous run left, start the loader (once)."""
        if self.running:
            return
        self.running = True
        self.spool.start()
        # Requests are served by one Python thread; a loader spreading over every
        # core would take CPU from it exactly when load is highest (p99 spikes).
        if self.wh is not None and self.config.loader_threads:
            self.wh.con.raw_sql(f"SET threads = {int(self.config.loader_threads)}")
        if self.wh is not None:
            tune_for_loading(self.wh)
        if self.wh is not None:
            self.loader = Loader(
                self.wh,
                self.config.spool_dir,
                batch_files=self.config.batch_size,
                interval=self.config.flush_interval,
                wake=self.spool.sealed,
                session_timeout_minutes=self.config.session_timeout_minutes,
                bot_filter=self.config.bot_filter,
                dedup_window_minutes=self.config.dedup_window_minutes,
                idle=self._spool_idle,
            )
            self.loader.load_pending()  # what a previous run acknowledged comes first
            self.loader.loaded_bytes = 0  # from now on, against spool.sealed_bytes
            self.loader.start()

    def _spool_idle(self) -> bool:
        """No record written for a quarter of the flush interval: traffic paused,
        so the loader need not wait for more segments."""
        return time.monotonic() - self.spool.last_write > self.config.flush_interval / 4

    def stop(self) -> None:
        """Seal the spool, then load everything: a clean stop leaves no segment."""
        if not self.running:
            return
        self.running = False
        self.spool.close()
        if self.loader is not None:
            self.loader.stop()
            self.loader.load_pending()

    # -- records ----------------------------------------------------------------------

    def event(self, row: dict[str, Any], protocol: str, source: str) -> bytes:
        """The spool record of an event row: its IP anonymised, its protocol and
        source stamped. The rest of the enrichment (user agent, bot, channel,
        session) happens in the loader, per batch: the client's answer does not
        depend on it, and done there it costs once per distinct value."""
        row["source"] = source
        context = row["context"]
        if self.config.anonymize_ip:
            # The raw address must not survive anywhere in the row, context included.
            ip = anonymize_ip(row.get("ip"))
            if ip is None:
                row.pop("ip", None)
            else:
                row["ip"] = ip
            if "ip" in context:
                context["ip"] = ip
        # context.clm is built by the loader; a client's own (a dict) is merged. A
        # key left out (here and in the row) is read as NULL by the loader.
        if "clm" in context:
            clm = context.pop("clm")
            if type(clm) is dict:
                row["clm_in"] = clm
        row["protocol"] = protocol
        row["k"] = "e"
        self.accepted += 1
        return orjson.dumps(row, default=_default, option=orjson.OPT_APPEND_NEWLINE)

    def reject(
        self,
        source: str,
        field: str,
        value: Any,
        reason: str,
        raw: Any,
        received_at: datetime | None = None,
    ) -> bytes:
        """The spool record of a refused event; `raw` is the payload as sent, less
        the addresses it carries when IP anonymisation is on."""
        if self.config.anonymize_ip and isinstance(raw, dict):
            raw = _scrub(raw)
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "backslashreplace")
        raw_text = (
            raw if isinstance(raw, str) else orjson.dumps(raw, default=str).decode()
        )
        self.rejected += 1
        return (
            orjson.dumps(
                {
                    "k": "r",
                    "source": source,
                    "field": field,
                    "value": None if value is None else str(value)[:1000],
                    "reason": reason,
                    "raw": raw_text[:100_000],
                    "rejected_at": received_at or now_utc(),
                }
            )
            + b"\n"
        )

    async def commit(self, data: bytes) -> None:
        """Return once `data` is fsync'd; raises OSError when it could not be.

        Back-pressure: while the loader lags behind (more than LAG_START bytes of
        sealed spool waiting), the answer is held back a little, up to MAX_DELAY
        when LAG_START + LAG_SPAN bytes wait. The events are durable already; the
        delay only slows clients that wait for their answer before sending more
        (SDKs, load generators), so that acknowledging does not take the CPU the
        loader needs and the warehouse keeps up with what is acknowledged, instead
        of the spool growing for as long as the load lasts."""
        if data:
            await self.spool.write_async(data)
            loader = self.loader
            lag = (
                self.spool.sealed_bytes - loader.loaded_bytes - LAG_START
                if loader is not None
                else 0
            )
            if lag > 0:
                delay = MAX_DELAY * min(lag / LAG_SPAN, 1.0)
                self.held_back += 1
                self.held_back_seconds += delay
                await asyncio.sleep(delay)

    def status(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "fsyncs": self.spool.fsyncs,
            "slowest_fsync_ms": round(self.spool.slowest_commit * 1000, 1),
            "answers_held_back": self.held_back,
            "held_back_ms": round(self.held_back_seconds * 1000),
            "loader": self.loader.status() if self.loader else None,
        }
