"""The embedded DuckDB warehouse: one file, dbt-duckdb, transactions."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import paths
from segments.engines import profiles
from segments.engines import base
from segments.engines.base import (
    Change, DropView, Engine, EngineError, ReplaceRows, ReplaceTable, ReplaceView, TransactionalSession, drop,
)
from segments.errors import SegmentsError


@contextmanager
def connect(
    path: Path, read_only: bool = False, settings: Mapping[str, object] | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection in UTC (timestamps are naive UTC everywhere), closed after use;
    ``settings`` are DuckDB configuration options (the profile's, for the engine)."""
    if read_only and not path.exists():
        raise _missing(path)
    try:
        # TimeZone needs the icu extension loaded first: set below, on every connection
        config = {k: str(v) for k, v in (settings or {}).items() if k.lower() != "timezone"}
        con = duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as error:
        raise _open_error(path, error) from None
    try:
        base.duckdb_setting(con, "TimeZone", "UTC")
        yield con
    finally:
        con.close()


def _missing(path: Path) -> SegmentsError:
    return SegmentsError(f"no warehouse at {path}: run `segments load` and `segments build` first")


def _is_busy(error: duckdb.Error) -> bool:
    # DuckDB has one writer per file: another build, load or sync holds it.
    return "lock" in str(error).lower()


def _open_error(path: Path, error: duckdb.Error) -> SegmentsError:
    if _is_busy(error):
        return SegmentsError(f"warehouse {path} is busy: another segments command is using it; run again when it has finished")
    return SegmentsError(f"cannot open warehouse {path}: {error}")


@contextmanager
def attached(
    con: duckdb.DuckDBPyConnection, path: Path, alias: str, read_only: bool = False,
    wait: float = 10.0, pause: float = 0.05,
) -> Iterator[None]:
    """``path`` attached to ``con`` as ``alias`` for a short hold, then detached: only
    while attached does this process hold the file (DuckDB's one writer per file).

    While another process holds the file, the attach is retried every ``pause``
    seconds for up to ``wait`` seconds. A transaction left open by an error is rolled
    back before detaching.

    Raises:
        SegmentsError: the file stayed busy, or cannot be opened.
    """
    if read_only and not path.exists():
        raise _missing(path)
    attach = exp.Attach(
        this=exp.alias_(exp.Literal.string(str(path)), alias), exists=False,
        expressions=[exp.AttachOption(this=exp.var("READ_ONLY"))] if read_only else [],
    )
    deadline = time.monotonic() + wait
    while True:
        try:
            con.execute(attach.sql(dialect="duckdb"))
            break
        except duckdb.Error as error:
            if not _is_busy(error) or time.monotonic() >= deadline:
                raise _open_error(path, error) from None
            time.sleep(pause)
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute(exp.Rollback().sql("duckdb"))  # an error inside a transaction: nothing of it is kept
        raise
    finally:
        con.execute(exp.Detach(this=exp.to_identifier(alias), exists=False).sql(dialect="duckdb"))


class DuckDBEngine(Engine):
    target = "duckdb"
    dialect = "duckdb"

    def __init__(self, path: Path, target_schema: str = "main"):
        super().__init__(target_schema)
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[DuckDBSession]:
        # the profile's settings (memory limit, time zone): the same bounds as dbt's runs
        settings = profiles.output(self.target, self.dbt_env()).get("settings") or {}
        with connect(self.path, read_only, settings) as con:  # type: ignore[arg-type]
            yield DuckDBSession(self, con, owns_connection=True)

    def check_exists(self) -> None:
        if not self.path.exists():
            raise _missing(self.path)

    def dbt_env(self) -> dict[str, str]:
        return {paths.WAREHOUSE_ENV: str(self.path)}


#: Statements that change no table's columns (any other forgets the column lists).
_KEEP_COLUMNS = (exp.Select, exp.Insert, exp.Delete, exp.Update, exp.Transaction, exp.Commit)


def _tables_changed(statement: exp.Expression) -> set[str] | None:
    """The names of the tables a statement may change the columns of (None: any).

    >>> sorted(_tables_changed(exp.Create(kind="TABLE", this=exp.to_table("s.t"))))
    ['t']
    >>> sorted(_tables_changed(drop("VIEW", exp.to_table("s.v"))))
    ['v']
    >>> _tables_changed(exp.Command(this="CHECKPOINT")) is None
    True
    """
    if isinstance(statement, exp.Drop):
        tables = statement.args.get("tables") or [statement.this]
        return {t.name for t in tables} if all(isinstance(t, exp.Table) for t in tables) else None
    if isinstance(statement, exp.Create):
        target = statement.this.this if isinstance(statement.this, exp.Schema) else statement.this
        return {target.name} if isinstance(target, exp.Table) else None
    if isinstance(statement, exp.Alter) and isinstance(statement.this, exp.Table):
        renamed = {a.this.name for a in statement.args.get("actions") or [] if isinstance(a, exp.AlterRename)}
        return {statement.this.name, *renamed}
    return None


class DuckDBSession(TransactionalSession):
    # information_schema.columns is a view renaming the columns of duckdb_columns():
    # the same rows, read without the view's thirty other columns (a third cheaper; a
    # build reads the columns of a table a dozen times)
    COLUMN_LISTING = ("duckdb_columns()", "schema_name", "table_name", "database_name", "column_index")

    def __init__(self, engine: DuckDBEngine, con: duckdb.DuckDBPyConnection, owns_connection: bool = False):
        super().__init__(engine)
        self.con = con
        self._open_blocks = 0  # transaction blocks open: an inner one joins the outer one
        # Column lists, kept while only this session's statements can change them: its own
        # connection to the file (DuckDB has one writer per file; a scratch connection that
        # lets the file go between holds keeps none). A watch cycle asked for the same few
        # tables' columns a dozen times, each a scan of every column in the catalog.
        self._columns: dict[tuple[str, str, str | None], dict[str, str]] | None = {} if owns_connection else None

    def execute(self, statement: exp.Expression) -> None:
        if self._columns and not isinstance(statement, _KEEP_COLUMNS):
            names = _tables_changed(statement)
            for key in [k for k in self._columns if names is None or k[1] in names]:
                del self._columns[key]
        try:
            self.con.execute(self.sql(statement))
        except duckdb.Error as error:
            raise EngineError(str(error)) from None

    def columns(self, schema: str, table: str, catalog: str | None = None) -> dict[str, str]:
        if self._columns is None:
            return super().columns(schema, table, catalog)
        key = (schema, table, catalog)
        if key not in self._columns:
            self._columns[key] = super().columns(schema, table, catalog)
        return dict(self._columns[key])

    def exists(self, schema: str, table: str, catalog: str | None = None) -> bool:
        # duckdb_columns() binds every view of the database to list its columns, the
        # first time 8ms for a warehouse's twenty views: the lists of names bind none
        found = []
        for listing, name in (("duckdb_tables()", "table_name"), ("duckdb_views()", "view_name")):
            query = exp.select("1").from_(listing).where(
                exp.column("schema_name").eq(exp.Literal.string(schema)), exp.column(name).eq(exp.Literal.string(table)))
            if catalog is not None:
                query = query.where(exp.column("database_name").eq(exp.Literal.string(catalog)))
            found.append(query)
        return bool(self.rows(exp.union(*found, distinct=False)))

    def stream(self, query: exp.Query) -> Iterator[tuple]:
        try:
            cursor = self.con.execute(self.sql(query))
            while batch := cursor.fetchmany(10_000):
                yield from batch
        except duckdb.Error as error:
            raise EngineError(str(error)) from None

    def reads_in_any_order(self) -> None:
        # DuckDB keeps insertion order through scans, joins and projections unless told
        # otherwise: a preview's query ran 5-8% faster without it (its ORDER BY decides)
        base.duckdb_setting(self.con, "preserve_insertion_order", False)

    def _statements(self, change: Change) -> list[exp.Expression]:
        if isinstance(change, ReplaceTable):
            return [exp.Create(kind="TABLE", replace=True, this=change.table, expression=change.query)]
        if isinstance(change, ReplaceView):
            return [exp.Create(kind="VIEW", replace=True, this=change.view, expression=change.query)]
        if isinstance(change, ReplaceRows):
            return change.statements()
        assert isinstance(change, DropView)
        return [drop("VIEW", change.view)]

    @property
    def in_transaction(self) -> bool:  # type: ignore[override]
        return self._open_blocks > 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A block inside another one joins its transaction: committed, or rolled back
        (when an error leaves the outer block), with it."""
        if self._open_blocks:
            self._open_blocks += 1
            try:
                yield
            finally:
                self._open_blocks -= 1
            return
        self.execute(exp.Transaction())
        self._open_blocks = 1
        try:
            yield
        except BaseException:
            self._open_blocks = 0
            self.execute(exp.Rollback())  # (which forgets the column lists: a table may be gone)
            raise
        self._open_blocks = 0
        self.execute(exp.Commit())

    @contextmanager
    def staging(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            yield self.con
        finally:  # what the caller created in the connection
            if self._columns:
                self._columns.clear()

    @contextmanager
    def staged(self, source: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> Iterator[dict[str, exp.Table]]:
        assert source is self.con, "stage in this session's own connection"
        yield {name: exp.to_table(name) for name in tables}
