"""A small progress protocol: the library reports, front ends draw.

Core code calls `progress.start(total, label)`, `advance(n)` and `done()` on whatever
`Progress` it was handed; the CLI hands a rich progress bar, tests and the Python API
the silent default.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: float | None = None) -> None: ...
    def advance(self, amount: float = 1) -> None: ...
    def done(self) -> None: ...


class Silent:
    """The default: report nothing."""

    def start(self, label: str, total: float | None = None) -> None:
        pass

    def advance(self, amount: float = 1) -> None:
        pass

    def done(self) -> None:
        pass


SILENT = Silent()
