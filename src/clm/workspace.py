"""A workspace: a folder with `clm.yaml` and the warehouse, and the Python API over it.

`clm.open(path)` returns a `Workspace`; the CLI does nothing a workspace cannot do.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from clm import settings
from clm.errors import ConfigError, WorkspaceError
from clm.warehouse.engine import Warehouse

CONFIG_FILE = "clm.yaml"


def init(directory: str | Path, **overrides: Any) -> Workspace:
    """Create a workspace in `directory` (made if missing); an existing one is kept."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / CONFIG_FILE
    if not cfg.exists():
        values = {s.name: overrides.get(s.name, s.default) for s in settings.SETTINGS}
        settings.resolve(values)  # refuse bad overrides before writing anything
        text = "# clm workspace settings; see docs/settings.md for every key\n"
        text += yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
        cfg.write_text(text, encoding="utf-8")
    ws = open_workspace(root)
    ws.warehouse  # noqa: B018 - creates the warehouse file and its tables
    return ws


def open_workspace(directory: str | Path = ".") -> Workspace:
    root = Path(directory)
    if not (root / CONFIG_FILE).exists():
        raise WorkspaceError(
            f"no workspace at {root.resolve()}: {CONFIG_FILE} is missing; "
            f"create one with `clm init {directory}` or pass --workspace DIR"
        )
    return Workspace(root)


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            raw = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{root / CONFIG_FILE}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{root / CONFIG_FILE}: expected a mapping of settings")
        self.config = settings.resolve(raw)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.config["timezone"])

    @property
    def currency(self) -> str:
        return str(self.config["currency"])

    @cached_property
    def warehouse(self) -> Warehouse:
        path = self.root / self.config["warehouse"]
        return Warehouse.duckdb(path, threads=self.config["threads"] or None)

    def close(self) -> None:
        if "warehouse" in self.__dict__:
            self.warehouse.close()
            del self.__dict__["warehouse"]

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
