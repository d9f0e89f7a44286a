"""Schema migrations: each step moves a warehouse from version N-1 to N.

A new file starts at `schema.SCHEMA_VERSION`; an older file runs the steps it lacks.
A file written by a newer clm is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clm.errors import EngineError
from clm.warehouse.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from clm.warehouse.engine import Warehouse

# STEPS[n] upgrades a warehouse at version n to n + 1. Version 1 is the first release.


def _identity_tables(wh: Warehouse) -> None:
    """1 -> 2: the identity graph, customers, merge log, profiles and erasures.

    `ensure_schema` creates missing tables before migrating, so this only makes sure
    they exist for a caller that migrates a connection directly.
    """
    from clm.warehouse.schema import IDENTITY_TABLES, TABLES

    existing = set(wh.con.list_tables())
    for name in IDENTITY_TABLES:
        if name not in existing:
            wh.con.create_table(name, schema=TABLES[name])


def _value_tables(wh: Warehouse) -> None:
    """2 -> 3: customer value predictions and CLV fits (see docs/clv.md)."""
    from clm.warehouse.schema import TABLES, VALUE_TABLES

    existing = set(wh.con.list_tables())
    for name in VALUE_TABLES:
        if name not in existing:
            wh.con.create_table(name, schema=TABLES[name])


def _view_tables(wh: Warehouse) -> None:
    """3 -> 4: answers of the dashboard's read views precomputed by `clm run`."""
    from clm.warehouse.schema import TABLES, VIEW_TABLES

    existing = set(wh.con.list_tables())
    for name in VIEW_TABLES:
        if name not in existing:
            wh.con.create_table(name, schema=TABLES[name])


STEPS: dict[int, Callable[[Warehouse], None]] = {
    1: _identity_tables,
    2: _value_tables,
    3: _view_tables,
}


def migrate(wh: Warehouse) -> None:
    found = wh.meta("schema_version")
    if found is None:
        wh.set_meta("schema_version", str(SCHEMA_VERSION))
        return
    version = int(found)
    if version > SCHEMA_VERSION:
        raise EngineError(
            f"the warehouse has schema version {version}, this clm knows up to "
            f"{SCHEMA_VERSION}; upgrade clm to open it"
        )
    while version < SCHEMA_VERSION:
        STEPS[version](wh)
        version += 1
        wh.set_meta("schema_version", str(version))
