"""Reporting periods in the workspace's time zone, as UTC instants the engine can join
on.

A period of grain day/week/month/quarter starts at local midnight (weeks on Monday, ISO
8601). Across a daylight-saving change a day is 23 or 25 hours long; periods are
computed here, in Python with zoneinfo, so that no engine has to know time zones. The
engine maps a timestamp to its period with an equi-join on 15-minute buckets: every
local midnight of every real time zone falls on a quarter hour of UTC, so a bucket never
straddles two periods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

BUCKET_SECONDS = 900


def period_start(d: date, grain: str) -> date:
    """The first local day of the period that contains day `d`."""
    if grain == "day":
        return d
    if grain == "week":
        return d - timedelta(days=d.weekday())
    if grain == "month":
        return d.replace(day=1)
    if grain == "quarter":
        return date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
    raise ValueError(f"grain {grain!r}; expected day, week, month or quarter")


def next_start(d: date, grain: str) -> date:
    if grain == "day":
        return d + timedelta(days=1)
    if grain == "week":
        return d + timedelta(days=7)
    months = 1 if grain == "month" else 3
    m = d.month - 1 + months
    return date(d.year + m // 12, m % 12 + 1, 1)


def local_midnight_utc(d: date, tz: ZoneInfo) -> datetime:
    """UTC instant (naive) of local midnight starting day `d`."""
    return (
        datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
    )


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.replace(tzinfo=UTC).astimezone(tz).date()


@dataclass(frozen=True)
class Calendar:
    """Periods 0..n-1 covering [first event, observation end)."""

    grain: str
    tz: ZoneInfo
    starts: list[date]  # local first day of each period
    bounds: list[datetime]  # UTC instants; bounds[k] starts period k, len = n + 1
    observation_end: datetime  # UTC instant; evaluation never looks past it

    @property
    def n(self) -> int:
        return len(self.starts)

    def eval_at(self, k: int) -> datetime:
        """A period's stage is evaluated at its end, or at the observation end."""
        return min(self.bounds[k + 1], self.observation_end)

    def periods_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "p": np.arange(self.n, dtype="int64"),
                "period_start": [b for b in self.bounds[:-1]],
                "period_local": self.starts,
                "eval_s": [_epoch(self.eval_at(k)) for k in range(self.n)],
            }
        )

    def buckets_frame(self) -> pd.DataFrame:
        """15-minute bucket key → period index, for each bucket before the end."""
        first = _epoch(self.bounds[0]) // BUCKET_SECONDS
        last = _epoch(self.observation_end) // BUCKET_SECONDS  # exclusive
        keys = np.arange(first, last, dtype="int64")
        edges = np.array([_epoch(b) for b in self.bounds], dtype="int64")
        p = np.searchsorted(edges, keys * BUCKET_SECONDS, side="right") - 1
        return pd.DataFrame({"bucket": keys, "p": p.astype("int64")})

    def period_of(self, instant: datetime) -> int | None:
        """Index of the period containing `instant`, None outside the calendar."""
        for k in range(self.n):
            if self.bounds[k] <= instant < self.bounds[k + 1]:
                return k if instant < self.observation_end else None
        return None


def build_calendar(
    grain: str, tz: ZoneInfo, first: datetime, observation_end: datetime
) -> Calendar:
    """Periods from the one containing `first` to the one with the end's last second."""
    start = period_start(local_date(first, tz), grain)
    last_day = local_date(observation_end - timedelta(microseconds=1), tz)
    starts = [start]
    while True:
        nxt = next_start(starts[-1], grain)
        if nxt > last_day:
            break
        starts.append(nxt)
    bounds = [local_midnight_utc(d, tz) for d in starts]
    bounds.append(local_midnight_utc(next_start(starts[-1], grain), tz))
    return Calendar(grain, tz, starts, bounds, observation_end)


def end_of_local_day(instant: datetime, tz: ZoneInfo) -> datetime:
    """UTC instant of the local midnight after `instant`: the default end."""
    return local_midnight_utc(local_date(instant, tz) + timedelta(days=1), tz)


def _epoch(instant: datetime) -> int:
    return int(instant.replace(tzinfo=UTC).timestamp())
