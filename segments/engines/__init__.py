"""The warehouses segments builds on: one dbt target each.

=========  =============  ==========================================================
target     dbt adapter    connection
=========  =============  ==========================================================
duckdb     dbt-duckdb     a file (``--warehouse`` or ``SEGMENTS_WAREHOUSE``); default
postgres   dbt-postgres   libpq variables ``PGHOST`` ``PGPORT`` ``PGUSER``
                          ``PGPASSWORD`` ``PGDATABASE``
spark      dbt-spark      a local pyspark session; warehouse and metastore under
                          ``SEGMENTS_SPARK_DIR``
=========  =============  ==========================================================

Each target's settings are its output in ``dbt_project/profiles.yml``
(:mod:`segments.engines.profiles`): dbt and segments read the same ones.
"""

from __future__ import annotations

from pathlib import Path

from segments import paths
from segments.engines import profiles
from segments.engines.base import Engine
from segments.errors import SegmentsError

TARGETS = ("duckdb", "postgres", "spark")
DEFAULT_TARGET = "duckdb"
# The package each target needs beyond the core install.
_EXTRAS = {"postgres": "dbt-postgres", "spark": "dbt-spark[session] and pyspark"}


def get(target: str = DEFAULT_TARGET, warehouse: Path | None = None) -> Engine:
    """The engine of a dbt target.

    Args:
        target: one of :data:`TARGETS`.
        warehouse: the DuckDB file (the duckdb target only; default as
            :func:`segments.paths.warehouse_path` says).

    Raises:
        SegmentsError: an unknown target, or its adapter is not installed.
    """
    if target not in TARGETS:
        raise SegmentsError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    try:
        if target == "duckdb":
            from segments.engines.duckdb_engine import DuckDBEngine

            path = warehouse or paths.warehouse_path()
            return DuckDBEngine(path, str(profiles.output(target, {paths.WAREHOUSE_ENV: str(path)})["schema"]))
        if target == "postgres":
            from segments.engines.postgres_engine import PostgresEngine

            return PostgresEngine(profiles.output(target))
        from segments.engines.spark_engine import SPARK_DIR_ENV, SparkEngine, spark_dir

        directory = spark_dir()
        return SparkEngine(directory, profiles.output(target, {SPARK_DIR_ENV: str(directory)}))
    except ImportError as error:
        raise SegmentsError(
            f"--target {target} needs {_EXTRAS[target]}: pip install 'segments[{target}]' ({error})"
        ) from None
