"""Warehouses on every engine, for behaviour suites that must agree across engines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clm.warehouse.engine import Warehouse
from clm.warehouse.schema import TABLES

_SPARK = None


def spark_session(tmp: Path):  # pragma: no cover - only where Java exists
    """One local Spark for the whole test session, bound to loopback only."""
    global _SPARK
    if _SPARK is None:
        from pyspark.sql import SparkSession

        _SPARK = (
            SparkSession.builder.master("local[2]")
            .appName("clm-tests")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.warehouse.dir", str(tmp / "spark-warehouse"))
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={tmp}")
            .getOrCreate()
        )
        _SPARK.sparkContext.setLogLevel("ERROR")
    return _SPARK


def make_warehouse(engine: str, tmp: Path) -> Iterator[Warehouse]:
    if engine == "duckdb":
        wh = Warehouse.duckdb(None)
        yield wh
        wh.close()
        return
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17+ (`java` is not on PATH); CI installs it")
    session = spark_session(tmp)
    for name in TABLES:
        session.sql(f"DROP TABLE IF EXISTS `{name}`")
    yield Warehouse.spark(session)


ENGINES = [
    "duckdb",
    pytest.param("spark", marks=[pytest.mark.spark, pytest.mark.xdist_group("spark")]),
]
