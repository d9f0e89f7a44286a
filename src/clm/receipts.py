"""Receipts: what an import or a run did, for the CLI to print and tests to check."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Receipt:
    """Counts, durations, rejects and warnings of one operation."""

    operation: str
    source: str = ""
    receipt_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    counts: dict[str, int | float] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)  # reason -> rows
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def timed(self, step: str) -> _Timer:
        """`with receipt.timed("load"): ...` records the step's wall time in seconds."""
        return _Timer(self, step)

    @property
    def total_seconds(self) -> float:
        return round(sum(self.durations.values()), 3)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_seconds"] = self.total_seconds
        return data


class _Timer:
    def __init__(self, receipt: Receipt, step: str) -> None:
        self.receipt, self.step = receipt, step

    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        spent = time.perf_counter() - self.t0
        self.receipt.durations[self.step] = round(
            self.receipt.durations.get(self.step, 0.0) + spent, 4
        )
