"""The engine seam: every read and write of the warehouse goes through `Warehouse`.

A `Warehouse` wraps an Ibis backend (DuckDB by default, Spark when one machine is not
enough) and the few capabilities in which engines really differ. Core code builds Ibis
expressions against `wh.table(...)` and hands them back to `append`, `replace_rows` or
`materialize`; it never branches on the engine's name.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import sqlglot

from clm.errors import ConfigError, EngineError
from clm.warehouse import schema

log = logging.getLogger("clm.warehouse")


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, declared once instead of tested for everywhere."""

    name: str
    delete_rows: bool  # DELETE … WHERE in place; otherwise rewrite the table
    persistent: bool  # tables survive the process (a file), not just the session


class Warehouse:
    def __init__(self, con: Any, capabilities: Capabilities) -> None:
        self.con = con
        self.capabilities = capabilities

    # -- opening ------------------------------------------------------------------

    @classmethod
    def duckdb(
        cls,
        path: str | Path | None = None,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> Warehouse:
        """Open (or create) a DuckDB file; `None` gives an in-memory warehouse."""
        try:
            con = ibis.duckdb.connect(str(path) if path else ":memory:")
        except (
            Exception
        ) as exc:  # duckdb.IOException when another process holds the lock
            locked = "lock" in str(exc).lower()
            raise EngineError(
                f"cannot open the warehouse {path}: {exc}"
                + (
                    "; another clm process (for example `clm serve`) has it open: "
                    "stop it, or wait until it ends"
                    if locked
                    else ""
                ),
                transient=locked,
            ) from exc
        if threads:
            con.raw_sql(f"SET threads = {int(threads)}")
        if memory_limit:
            # Past the limit DuckDB spills to a temporary folder beside the file
            # instead of growing: big runs stay inside a small machine's memory.
            try:
                con.raw_sql(f"SET memory_limit = '{memory_limit}'")
            except Exception as exc:
                raise ConfigError(
                    f"setting `memory_limit`: {memory_limit!r} is not a size DuckDB "
                    "understands; write it like 3GB or 512MB"
                ) from exc
        con.raw_sql("SET TimeZone = 'UTC'")
        # DuckDB would draw its own bar on the terminal; progress goes through
        # clm.progress instead (the collect readers poll query_progress()).
        con.raw_sql("SET enable_progress_bar_print = false")
        wh = cls(
            con, Capabilities("duckdb", delete_rows=True, persistent=path is not None)
        )
        wh.ensure_schema()
        return wh

    @classmethod
    def spark(cls, session: Any) -> Warehouse:
        """Use a running SparkSession (its session time zone must be UTC)."""
        session.conf.set("spark.sql.session.timeZone", "UTC")
        con = ibis.pyspark.connect(session)
        wh = cls(con, Capabilities("spark", delete_rows=False, persistent=False))
        wh.ensure_schema()
        return wh

    def close(self) -> None:
        if self.capabilities.name == "duckdb":
            self.con.disconnect()

    # -- schema -------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create missing tables and record the schema version; migrate older files."""
        from clm.warehouse.migrations import migrate

        existing = set(self.con.list_tables())
        for name, sch in schema.TABLES.items():
            if name not in existing:
                self.con.create_table(name, schema=sch)
        migrate(self)

    def meta(self, key: str) -> str | None:
        t = self.table("clm_meta")
        rows = t.filter(t.key == key).value.to_pyarrow().to_pylist()
        return rows[-1] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        t = self.table("clm_meta")
        self.replace_rows(
            "clm_meta", t.key == key, pd.DataFrame({"key": [key], "value": [value]})
        )

    # -- reading ------------------------------------------------------------------

    def table(self, name: str) -> ir.Table:
        return self.con.table(name)

    def has_table(self, name: str) -> bool:
        return name in self.con.list_tables()

    def to_pandas(self, expr: ir.Table) -> pd.DataFrame:
        return expr.to_pandas()

    def scalar(self, expr: ir.Scalar) -> Any:
        return expr.to_pyarrow().as_py()

    # -- writing ------------------------------------------------------------------

    def append(self, name: str, data: ir.Table | pa.Table | pd.DataFrame) -> None:
        """Append rows, cast to the table's schema (missing columns become NULL)."""
        target = self.table(name).schema()
        if isinstance(data, pa.Table | pd.DataFrame):
            data = ibis.memtable(data)
        data = conform(data, target)
        self.con.insert(name, data)

    def replace_rows(
        self,
        name: str,
        where: ir.BooleanValue,
        data: ir.Table | pa.Table | pd.DataFrame | None = None,
    ) -> None:
        """Delete the rows matching `where` (on `table(name)`), then append `data`."""
        if self.capabilities.delete_rows:
            # Ibis has no DELETE: compile the filter and reuse its WHERE clause, read
            # back with sqlglot, so the delete says exactly what the expression says.
            sql = self.con.compile(self.table(name).filter(where))
            select = sqlglot.parse_one(sql, dialect="duckdb")
            cond = select.args["where"].this.sql(dialect="duckdb")
            self.con.raw_sql(f'DELETE FROM "{name}" AS "t0" WHERE {cond}')
        else:
            t = self.table(name)
            kept = t.filter(~where.fill_null(False))
            tmp = f"_keep_{uuid.uuid4().hex[:8]}"
            self.con.create_table(tmp, kept.to_pyarrow(), overwrite=True)
            self.con.create_table(name, self.table(tmp), overwrite=True)
            self.con.drop_table(tmp)
        if data is not None:
            self.append(name, data)

    @contextmanager
    def materialized(self, expr: ir.Table, hint: str = "tmp") -> Iterator[ir.Table]:
        """Compute `expr` once into a temporary table; dropped on leaving the block."""
        name = f"_clm_{hint}_{uuid.uuid4().hex[:8]}"
        table = self.materialize(expr, name)
        try:
            yield table
        finally:
            self.drop(name)

    def materialize(self, expr: ir.Table, name: str) -> ir.Table:
        if self.capabilities.name == "duckdb":
            return self.con.create_table(name, expr, temp=True, overwrite=True)
        return self.con.create_table(name, expr, overwrite=True)

    def drop(self, name: str) -> None:
        try:
            self.con.drop_table(name, force=True)
        except Exception:  # a temp table already gone with its session
            log.debug("drop of %s failed", name, exc_info=True)


def conform(data: ir.Table, target: ibis.Schema) -> ir.Table:
    """Select `target`'s columns from `data` in order, cast, NULL where missing."""
    cols = {}
    for col, dtype in target.items():
        if col in data.columns:
            cols[col] = data[col].cast(dtype)
        else:
            cols[col] = ibis.null().cast(dtype)
    return data.select(**cols)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
