"""Terminal rendering for the CLI: rich tables, receipts, progress bars, JSON output.

The library never prints; everything a user sees in the terminal passes through here.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from clm.receipts import Receipt

MONEY_COUNTS = frozenset({"revenue", "refunded"})

console = Console()
errors = Console(stderr=True)


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


def to_jsonable(value: Any) -> Any:
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


def fmt(value: Any, unit: str = "count") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
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


def frame(
    df: pd.DataFrame, title: str = "", units: dict[str, str] | None = None
) -> None:
    t = Table(title=title, title_justify="left")
    for col in df.columns:
        t.add_column(str(col), justify="left" if df[col].dtype == object else "right")
    for row in df.itertuples(index=False):
        t.add_row(
            *[
                fmt(v, (units or {}).get(c, "count"))
                for c, v in zip(df.columns, row, strict=True)
            ]
        )
    console.print(t)
