"""Spark through dbt-spark's session method, on a local pyspark.

Warehouse and Hive metastore (Derby) live under ``SEGMENTS_SPARK_DIR`` (default
``.segments/spark``); the Spark settings are the ``server_side_parameters`` of the
profile's ``spark`` output, so dbt-spark and segments run one and the same session:
dbt runs in this process (:attr:`SparkEngine.dbt_in_process`) and the JVM starts once
per command. Derby admits one process at a time.

Spark has no transactions. A publication is as close as it gets: every table is first
written in full beside its target (``<name>__segments_next``); if any of them fails,
they are dropped and nothing published changed. Only then is each swapped in (drop,
rename: metastore operations), and the views replaced.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from sqlglot import exp

from segments import paths
from segments.engines.base import (
    Change,
    DropView,
    Engine,
    EngineError,
    PartialChange,
    ReplaceTable,
    ReplaceView,
    Session,
    drop,
    export,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SPARK_DIR_ENV = "SEGMENTS_SPARK_DIR"
_NEXT = "__segments_next"


def spark_dir() -> Path:
    """``$SEGMENTS_SPARK_DIR``, else ``spark/`` in the work directory; absolute."""
    return Path(os.environ.get(SPARK_DIR_ENV) or paths.work_dir() / "spark").expanduser().resolve()


def _errors() -> tuple[type[Exception], ...]:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JError)


class SparkEngine(Engine):
    target = "spark"
    dialect = "spark"
    dbt_in_process = True

    def __init__(self, directory: Path, settings: Mapping[str, object]):
        super().__init__(str(settings["schema"]))
        self.directory = directory
        self.conf = {str(k): str(v) for k, v in dict(settings.get("server_side_parameters") or {}).items()}

    def describe(self) -> str:
        return f"Spark warehouse in {self.directory}"

    def session(self) -> SparkSession:
        """The process's Spark session with the profile's settings (dbt-spark's too)."""
        from pyspark.sql import SparkSession

        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        self.directory.mkdir(parents=True, exist_ok=True)
        builder = SparkSession.builder.enableHiveSupport()
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        try:
            return builder.getOrCreate()
        except _errors() as error:
            raise EngineError(f"cannot start Spark for {self.describe()}: {error}") from None

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[SparkSQLSession]:
        yield SparkSQLSession(self, self.session())

    def dbt_env(self) -> dict[str, str]:
        return {SPARK_DIR_ENV: str(self.directory)}

    def stop(self) -> None:
        """Stop the JVM (the next session starts a new one)."""
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


class SparkSQLSession(Session):
    def __init__(self, engine: SparkEngine, spark: SparkSession):
        super().__init__(engine)
        self.spark = spark

    def _run(self, statement: exp.Expression) -> DataFrame:
        try:
            return self.spark.sql(self.sql(statement))
        except _errors() as error:
            raise EngineError(str(error).strip().splitlines()[0]) from None

    def execute(self, statement: exp.Expression) -> None:
        self._run(statement)

    def create_temporary(self, name: str, query: exp.Query) -> None:
        # Spark has no temporary tables: a temporary view, computed once and cached
        self.execute(exp.Cache(this=exp.to_table(name), expression=query))

    def stream(self, query: exp.Query) -> Iterator[tuple]:
        frame = self._run(query)
        try:
            for row in frame.toLocalIterator():
                yield tuple(row)
        except _errors() as error:
            raise EngineError(str(error).strip().splitlines()[0]) from None

    def columns(self, schema: str, table: str, catalog: str | None = None) -> dict[str, str]:
        name = f"{schema}.{table}"
        if not self.spark.catalog.tableExists(name):
            return {}
        return {field.name: field.dataType.simpleString() for field in self.spark.table(name).schema.fields}

    def apply(self, changes: Sequence[Change]) -> None:
        for statement in self.create_schemas(changes):
            self.execute(statement)
        tables = [c for c in changes if isinstance(c, ReplaceTable)]
        staged = {c.table: exp.table_(c.table.name + _NEXT, db=c.table.db) for c in tables}
        try:
            for change in tables:
                self.execute(drop("TABLE", staged[change.table]))
                self.execute(exp.Create(kind="TABLE", this=staged[change.table], expression=change.query))
        except EngineError:
            for next_table in staged.values():
                self.execute(drop("TABLE", next_table))
            raise
        try:
            for change in changes:
                for statement in self._swap(change, staged):
                    self.execute(statement)
        except EngineError as error:
            raise PartialChange(f"the new tables were written but swapping them in stopped part way: {error}") from None

    @staticmethod
    def _swap(change: Change, staged: Mapping[exp.Table, exp.Table]) -> list[exp.Expression]:
        if isinstance(change, ReplaceTable):
            rename = exp.AlterRename(this=change.table.copy())
            return [
                drop("TABLE", change.table),
                exp.Alter(this=staged[change.table], kind="TABLE", actions=[rename]),
            ]
        if isinstance(change, ReplaceView):
            return [exp.Create(kind="VIEW", replace=True, this=change.view, expression=change.query)]
        assert isinstance(change, DropView)
        return [drop("VIEW", change.view)]

    def import_tables(self, source: duckdb.DuckDBPyConnection, tables: Mapping[exp.Table, str]) -> None:
        with tempfile.TemporaryDirectory(prefix="segments-load-", dir=self.engine.directory) as folder:
            changes: list[Change] = []
            for index, (target, name) in enumerate(tables.items()):
                view = f"segments_load_{index}"
                parquet = Path(folder) / f"{view}.parquet"
                export(source, name, str(parquet), "parquet")
                try:
                    self.spark.read.parquet(str(parquet)).createOrReplaceTempView(view)
                except _errors() as error:
                    raise EngineError(str(error).strip().splitlines()[0]) from None
                changes.append(ReplaceTable(target, exp.select("*").from_(exp.to_table(view))))
            self.apply(changes)
