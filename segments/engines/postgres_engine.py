"""PostgreSQL through dbt-postgres; segments' own statements through psycopg2.

The connection is the profile's ``postgres`` output, which reads the standard libpq
variables (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``). Every
session runs in UTC (``PGTZ`` for dbt), so ``timestamptz`` inputs read as UTC. DDL is
transactional here: a publication is one transaction, and a replaced table is dropped
(with the views over it, which the publication recreates) and created again in it.
Input files reach the server through ``COPY`` into temporary tables first.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import psycopg2
from sqlglot import exp

from segments.engines.base import (
    Change,
    DropView,
    Engine,
    EngineError,
    ReplaceTable,
    ReplaceView,
    TransactionalSession,
    drop,
    export,
)
from segments.errors import SegmentsError

_CONNECTION_KEYS = ("host", "port", "user", "password", "dbname")


class PostgresEngine(Engine):
    target = "postgres"
    dialect = "postgres"
    temporaries_need_writes = True

    def __init__(self, settings: Mapping[str, object]):
        super().__init__(str(settings["schema"]))
        self.settings = {key: str(settings[key]) for key in _CONNECTION_KEYS}

    def describe(self) -> str:
        s = self.settings
        return f"PostgreSQL {s['user']}@{s['host']}:{s['port']}/{s['dbname']}"

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[PostgresSession]:
        try:
            conn = psycopg2.connect(
                **self.settings, options="-c TimeZone=UTC", application_name="segments", connect_timeout=15
            )
        except psycopg2.Error as error:
            raise SegmentsError(f"cannot connect to {self.describe()}: {str(error).strip()}") from None
        try:
            conn.set_session(readonly=read_only, autocommit=True)
            yield PostgresSession(self, conn)
        finally:
            conn.close()

    def dbt_env(self) -> dict[str, str]:
        return {"PGTZ": "UTC"}

    def sort_key(self, expression: exp.Expression) -> exp.Expression:
        return exp.Collate(this=expression, expression=exp.to_identifier("C", quoted=True))


def _message(error: psycopg2.Error) -> str:
    return (error.pgerror or str(error)).strip()


class PostgresSession(TransactionalSession):
    """Each statement commits on its own (as on DuckDB), except inside
    :meth:`transaction`."""

    def __init__(self, engine: PostgresEngine, conn: psycopg2.extensions.connection):
        super().__init__(engine)
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        self.conn.autocommit = False
        try:
            yield
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            self.conn.autocommit = True

    def execute(self, statement: exp.Expression) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(self.sql(statement))
        except psycopg2.Error as error:
            raise EngineError(_message(error)) from None

    def stream(self, query: exp.Query) -> Iterator[tuple]:
        # a server-side cursor, to fetch in batches, lives in a transaction
        with self.transaction():
            try:
                with self.conn.cursor(name="segments_rows") as cursor:
                    cursor.itersize = 10_000
                    cursor.execute(self.sql(query))
                    yield from cursor
            except psycopg2.Error as error:
                raise EngineError(_message(error)) from None

    def _statements(self, change: Change) -> list[exp.Expression]:
        if isinstance(change, ReplaceTable):
            return [
                drop("TABLE", change.table, cascade=True),
                exp.Create(kind="TABLE", this=change.table, expression=change.query),
            ]
        dropped = drop("VIEW", change.view)
        if isinstance(change, ReplaceView):
            return [dropped, exp.Create(kind="VIEW", this=change.view, expression=change.query)]
        assert isinstance(change, DropView)
        return [dropped]

    def _stage(self, source: duckdb.DuckDBPyConnection, staged: str, temp: exp.Table, folder: Path) -> exp.Table:
        """Copy a DuckDB table into a temporary table of this session, through CSV."""
        described = source.execute(exp.Describe(this=exp.to_table(staged)).sql("duckdb")).fetchall()
        columns = [
            exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build(dtype, dialect="duckdb"))
            for name, dtype, *_ in described
        ]
        self.execute(exp.Create(
            kind="TABLE", this=exp.Schema(this=temp, expressions=columns),
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
        ))
        csv_file = folder / f"{temp.name}.csv"
        export(source, staged, str(csv_file), "csv")
        copy = exp.Copy(
            this=exp.Schema(this=temp.copy(), expressions=[c.this.copy() for c in columns]),
            kind=True, files=[exp.to_identifier("STDIN")],
            params=[
                exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("csv")),
                exp.CopyParameter(this=exp.var("HEADER"), expression=exp.true()),
            ],
        )
        try:
            with self.conn.cursor() as cursor, csv_file.open(encoding="utf-8") as handle:
                cursor.copy_expert(self.sql(copy), handle)
        except psycopg2.Error as error:
            raise EngineError(_message(error)) from None
        return temp

    @contextmanager
    def staged(self, source: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> Iterator[dict[str, exp.Table]]:
        with tempfile.TemporaryDirectory(prefix="segments-load-") as folder:
            staged = {}
            for index, name in enumerate(tables):
                temp = exp.to_table(f"segments_load_{index}")
                self.execute(drop("TABLE", temp))
                staged[name] = self._stage(source, name, temp, Path(folder))
        yield staged
