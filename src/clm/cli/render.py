"""Terminal rendering for the CLI: rich tables, receipts, progress bars, JSON output.

The library never prints; everything a user sees in the terminal passes through here.

Width: on a terminal, tables fit its width (or `--width N`, or `COLUMNS`); written
to a file or a pipe, nothing is cut: the console is as wide as the widest table,
unless `--width` or an exported `COLUMNS` says otherwise.
Times in tables are shown in the workspace's reporting time zone; `--json` keeps
them as stored, ISO 8601 in UTC, with `null` for a missing value.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from clm.receipts import Receipt

MONEY_COUNTS = frozenset({"revenue", "refunded"})

# Wide enough for any table clm prints; a table takes only the width it needs.
UNBOUNDED = 100_000


class _Console(Console):
    """A console whose width is the terminal's on a terminal, the `--width` given,
    or unbounded when the output goes to a file or a pipe (rich's default there is
    80 columns, which cut names and numbers in files)."""

    forced_width: int | None = None

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.forced_width:
            return ConsoleDimensions(self.forced_width, size.height)
        if not self.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(UNBOUNDED, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = _Console()
errors = _Console(stderr=True)


def set_width(width: int | None) -> None:
    """Tables `width` columns wide at most (None: see the module docstring)."""
    if width is not None and width < 20:
        from clm.errors import ConfigError

        raise ConfigError(f"--width {width}: expected at least 20 columns")
    console.forced_width = width


class RichProgress:
    """The `clm.progress.Progress` protocol drawn as a rich bar (stderr)."""

    def __init__(self, enabled: bool = True) -> None:
        # Bars only on a terminal: redirected into a file or a pipe, a transient bar
        # would leave blank lines behind.
        self.enabled = enabled and errors.is_terminal
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, label: str, total: float | None = None) -> None:
        if not self.enabled:
            return
        self.done()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total)

    def advance(self, amount: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def done(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def problem(label: str, message: str) -> None:
    """An error on stderr: a red label, then the message as it is (no markup, no
    wrapping, so that paths and names survive copy and paste)."""
    text = Text.assemble((f"{label}: ", "bold red"), message)
    errors.print(text, soft_wrap=True, highlight=False)


def json_error(
    code: str,
    message: str,
    field: str | None = None,
    value: Any = None,
    transient: bool = False,
) -> None:
    """An error as one JSON object on stderr, for `--json` callers: `{"error":
    {"code", "field", "value", "message", "transient"}}` (field and value are null
    where the error is not about one input)."""
    body = {
        "error": {
            "code": code,
            "field": field,
            "value": to_jsonable(value),
            "message": message,
            "transient": transient,
        }
    }
    sys.stderr.write(json.dumps(body, ensure_ascii=False) + "\n")
    sys.stderr.flush()


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if not isinstance(value, list | dict) else False
    except (TypeError, ValueError):
        return False


def to_jsonable(value: Any) -> Any:
    if value is pd.NaT:
        return None
    if isinstance(value, pd.DataFrame):
        return [
            {k: to_jsonable(v) for k, v in row.items()}
            for row in value.to_dict("records")
        ]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return to_jsonable(value.item())
    return value


def print_json(value: Any) -> None:
    print(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def local_time(value: Any, tz: ZoneInfo | None) -> str:
    """A stored time (naive = UTC) in zone `tz`: `2024-01-07 09:29:54`, or the date
    alone at local midnight (period bounds); blank when missing."""
    if _missing(value):
        return ""
    ts = pd.Timestamp(value)
    if tz is not None:
        if ts.tzinfo is None:
            ts = ts.tz_localize(UTC)
        ts = ts.tz_convert(tz)
    if (ts.hour, ts.minute, ts.second, ts.microsecond) == (0, 0, 0, 0):
        return ts.strftime("%Y-%m-%d")
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def fmt(value: Any, unit: str = "count", missing: str = "–") -> str:
    if value is pd.NaT or value is None:
        return missing
    if isinstance(value, float) and not math.isfinite(value):
        return missing
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "currency":
        return f"{value:,.2f}"
    if unit == "days":
        return f"{value:,.1f}"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def change(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "[dim]–[/dim]"
    arrow, colour = (
        ("▲", "green") if value > 0 else ("▼", "red") if value < 0 else ("=", "dim")
    )
    return f"[{colour}]{arrow} {value:+.1%}[/{colour}]"


def receipt(r: Receipt) -> None:
    title = f"{r.operation}: {r.source}"
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    for k, v in r.counts.items():
        # Money always with its cents: 1,254 alone reads as 1.254 to many users.
        unit = "currency" if k in MONEY_COUNTS else "count"
        t.add_row(k.replace("_", " "), fmt(v, unit))
    for reason, n in r.rejects.items():
        t.add_row(f"rejected: {reason}", f"[yellow]{n:,}[/yellow]")
    t.add_row("seconds", f"{r.total_seconds:.2f}")
    console.print(t)
    mapping = r.details.get("mapping")
    if mapping:
        found = mapping.get("detected") or []
        console.print(
            "mapping: "
            + ", ".join(
                f"{k} ← [cyan]{v}[/cyan]"
                for k, v in mapping.items()
                if v and k != "detected"
            ),
            highlight=False,
        )
        if found:
            console.print(f"recognised without an option: {', '.join(found)}")
    for w in r.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def too_wide(table: Table) -> bool:
    """Whether `table` needs more columns than the console has (cells would be cut
    or wrapped)."""
    from rich.measure import Measurement

    # Measured without the console's limit, which would clamp the answer to it.
    free = console.options.update_width(UNBOUNDED)
    needed = Measurement.get(console, free, table).maximum
    return needed > console.width


def frame(
    df: pd.DataFrame,
    title: str = "",
    units: dict[str, str] | None = None,
    *,
    tz: ZoneInfo | None = None,
    missing: str = "–",
) -> None:
    """`df` as a table. Numbers right, text left; with `tz`, time columns in that
    zone; missing values as `missing`."""
    t = Table(title=title, title_justify="left")
    times = {c for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])}
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col]) and df[col].dtype != bool
        t.add_column(str(col), justify="right" if numeric else "left")
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, row, strict=True):
            if c in times or isinstance(v, datetime):
                cells.append(local_time(v, tz))
            elif _missing(v):
                cells.append(missing)
            else:
                cells.append(fmt(v, (units or {}).get(c, "count"), missing))
        t.add_row(*cells)
    console.print(t)
