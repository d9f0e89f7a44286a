"""Sessions assigned as events arrive: one visitor's events belong to one session
until `timeout` passes without an event, or a new campaign begins (the rule Google
Analytics and Matomo both use: a visit ends after 30 minutes of inactivity, and a
visit from a different campaign starts a new one).

State lives in memory, keyed by the visitor (anonymous id, else user id). After a
restart a returning visitor starts a new session; that is the one known difference
from a warehouse-side sessionisation and is acceptable for a collector that restarts
rarely. The session id is an md5 of visitor and session start, so it is stable.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta
from typing import Any


class Sessions:
    """Assign `session_id` to event rows; thread-safe, bounded in memory."""

    def __init__(self, timeout_minutes: int = 30, max_visitors: int = 200_000) -> None:
        self.timeout = timedelta(minutes=timeout_minutes)
        self.max_visitors = max_visitors
        # visitor -> (session id, last event time, campaign key)
        self._state: dict[str, tuple[str, datetime, tuple[Any, ...]]] = {}
        self._lock = threading.Lock()

    def assign(self, row: dict[str, Any]) -> None:
        visitor = row.get("anonymous_id") or row.get("user_id")
        if not visitor:
            return
        ts: datetime = row["timestamp"]
        campaign = (
            row.get("utm_source"),
            row.get("utm_medium"),
            row.get("utm_campaign"),
        )
        with self._lock:
            prev = self._state.get(visitor)
            new = (
                prev is None
                or ts - prev[1] > self.timeout
                or (any(campaign) and campaign != prev[2])
            )
            if new:
                sid = hashlib.md5(f"{visitor}|{ts.isoformat()}".encode()).hexdigest()
                kept = campaign
            else:
                assert prev is not None
                sid, kept = prev[0], prev[2]
                ts = max(ts, prev[1])  # a late event does not move the session back
            if len(self._state) >= self.max_visitors and visitor not in self._state:
                self._evict()
            self._state[visitor] = (sid, ts, kept)
        row["session_id"] = sid

    def _evict(self) -> None:
        """Drop the oldest half: they are the visitors most likely to be gone."""
        by_age = sorted(self._state.items(), key=lambda kv: kv[1][1])
        for visitor, _ in by_age[: len(by_age) // 2]:
            del self._state[visitor]
