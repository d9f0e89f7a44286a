"""Every error clm raises on purpose, in one tree.

    ClmError                      base of everything below
    ├── ConfigError (ValueError)      clm.yaml or a setting is wrong
    ├── ModelError (ValueError)       a stage model is wrong: file, line, stage, name
    │   └── RuleSyntaxError           a rule does not parse: text, column
    ├── MetricError (ValueError)      unknown metric or bad metric argument
    ├── ImportFormatError (ValueError) a file cannot be read or mapped at all
    ├── WorkspaceError (FileNotFoundError) no workspace where one was expected
    ├── NotFoundError (KeyError)      a customer, model, run … that does not exist
    ├── EngineError (RuntimeError)    the engine failed; `transient`: can a retry help
    └── ConvergenceError (RuntimeError) a model fit did not converge

Domain errors also inherit the builtin that fits, so callers may catch either. Messages
quote the bad value, list the valid ones where there are few, and say what to do.
Rows that are merely unusable (a bad line in a file, an invalid event) are not errors:
they go to the `rejected` table with their reason and are counted in the receipt.
"""

from __future__ import annotations

from collections.abc import Iterable


class ClmError(Exception):
    """Base class of every error clm raises on purpose."""

    transient = False  # whether retrying the same call can succeed


def known(names: Iterable[str], limit: int = 12) -> str:
    """Format a list of valid names for a message: 'a, b, c' (sorted, capped)."""
    items = sorted(set(names))
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", … ({len(items) - limit} more)"
    return text or "(none)"


class ConfigError(ClmError, ValueError):
    """The workspace configuration or a setting has a bad value."""


class ModelError(ClmError, ValueError):
    """A stage model is invalid. Carries where: file, line, stage."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        stage: str | None = None,
    ) -> None:
        self.file, self.line, self.stage, self.detail = file, line, stage, message
        where = []
        if file:
            where.append(f"{file}:{line}" if line else file)
        if stage:
            where.append(f"stage `{stage}`")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class RuleSyntaxError(ModelError):
    """A rule or feature expression does not parse."""

    def __init__(self, message: str, *, text: str, column: int) -> None:
        self.text, self.column = text, column
        pointer = " " * column + "^"
        super().__init__(f"{message} at column {column + 1}\n    {text}\n    {pointer}")


class MetricError(ClmError, ValueError):
    """Unknown metric, or a metric called with a bad argument."""


class ImportFormatError(ClmError, ValueError):
    """A file cannot be read or its columns cannot be mapped."""


class WorkspaceError(ClmError, FileNotFoundError):
    """No workspace (clm.yaml) where one was expected."""


class NotFoundError(ClmError, KeyError):
    """Something asked for by name or id does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EngineError(ClmError, RuntimeError):
    """The query engine failed. A locked database file is transient."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ConvergenceError(ClmError, RuntimeError):
    """A model fit did not converge; the message says what was tried."""
