"""What segments needs from a warehouse engine.

An :class:`Engine` is one dbt target (``duckdb``, ``postgres``, ``spark``): its SQL
dialect, the schema builds publish into, how to connect and what dbt's subprocess
needs in its environment. A :class:`Session` is one open connection. Every statement
is a sqlglot tree, rendered for the engine's dialect here and nowhere else.

Writes go through :meth:`Session.apply`: a list of :data:`Change` that becomes visible
all at once where the engine has transactions (DuckDB, PostgreSQL), and as close to it
as the engine allows elsewhere (Spark: every table is first written beside its target,
then swapped in by renames, which only touch the metastore).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import ClassVar

import duckdb
from sqlglot import exp

from segments.compiler import dialects
from segments.compiler.graph import TARGET_SCHEMA_SOURCE
from segments.compiler.sqlexpr import count_if  # noqa: F401  (the warehouse layer's callers import it from here)
from segments.errors import SegmentsError


class EngineError(SegmentsError):
    """A statement the engine refused, with the engine's own message."""


class PartialChange(EngineError):
    """Changes stopped part way on an engine without transactions: some are visible."""


@dataclass(frozen=True)
class ReplaceTable:
    """Make ``table`` hold the rows of ``query`` (created, or replaced with its new columns)."""

    table: exp.Table
    query: exp.Query


@dataclass(frozen=True)
class ReplaceView:
    view: exp.Table
    query: exp.Query


@dataclass(frozen=True)
class DropView:
    view: exp.Table


@dataclass(frozen=True)
class ReplaceRows:
    """The rows of ``table`` of the users ``users`` selects become the rows of
    ``query``; with ``stamp`` (column, value), every row's column then takes the value.
    What an incremental refresh publishes (DuckDB only: see :mod:`segments.refresh`)."""

    table: exp.Table
    users: exp.Query
    query: exp.Query
    stamp: tuple[str, exp.Expression] | None = None
    #: the ``rowid`` of each of those users' rows, read earlier in the same transaction:
    #: deleted by it, the table's user ids need not be read again
    rowids: exp.Query | None = None

    def statements(self) -> list[exp.Expression]:
        if self.rowids is not None:
            where = rowid_in(self.rowids.copy())
        else:
            where = exp.column("user_id").isin(query=self.users.copy())
        statements: list[exp.Expression] = [
            exp.delete(self.table, where=where),
            exp.Insert(this=self.table.copy(), expression=self.query.copy(), by_name=True),
        ]
        if self.stamp is not None:
            statements.append(stamp_every_row(self.table, *self.stamp))
        return statements


def stamp_every_row(table: exp.Table, column: str, value: exp.Expression) -> exp.Update:
    """Every row's ``column`` becomes ``value``: a refresh's ``as_of`` on the whole
    membership. (An ``ALTER ... USING`` made the commit cheaper, but DuckDB's checkpoint
    then rewrote the table: measured no faster in all, so the plain UPDATE stays.)

    >>> stamp_every_row(exp.to_table("m"), "as_of", exp.Literal.string("2026-01-01")).sql("duckdb")
    "UPDATE m SET as_of = '2026-01-01'"
    """
    return exp.update(table.copy(), {column: value})


Change = ReplaceTable | ReplaceView | DropView | ReplaceRows

#: The column in which a copy of some rows keeps each row's ``rowid`` in its table, for
#: :class:`ReplaceRows` (and a refresh's own deletes) to delete the rows by (DuckDB).
ROWID_COPY = "_row"


def rowid_as(name: str = ROWID_COPY) -> exp.Expression:
    """A row's place in its DuckDB table, selected as ``name``: a later statement of the
    same transaction finds the row by it without reading the table's keys again (a
    ``rowid`` holds within a transaction; a checkpoint may move it after).

    >>> rowid_as().sql("duckdb")
    'rowid AS _row'
    """
    return exp.alias_(exp.column("rowid"), name)


def rowid_in(rows: exp.Query) -> exp.Expression:
    """The rows whose ``rowid`` is among ``rows`` (one column, read by :func:`rowid_as`).

    >>> rowid_in(exp.select(ROWID_COPY).from_("t")).sql("duckdb")
    'rowid IN (SELECT _row FROM t)'
    """
    return exp.column("rowid").isin(query=rows)

# sqlglot types each catalog type accepts in an input column, whatever the engine.
_TEXT = frozenset(exp.DataType.TEXT_TYPES)
_NUMBER = frozenset(exp.DataType.NUMERIC_TYPES) - {exp.DataType.Type.BIT}
_TIME = frozenset(exp.DataType.TEMPORAL_TYPES) - {exp.DataType.Type.TIME, exp.DataType.Type.TIMETZ}
ACCEPTED_TYPES: dict[str, frozenset[exp.DataType.Type]] = {
    "key": _TEXT | _NUMBER,
    "string": _TEXT,
    "number": _NUMBER,
    "boolean": frozenset({exp.DataType.Type.BOOLEAN}),
    "timestamp": _TIME,
}


def fits(kind: str, type_name: str, dialect: str) -> bool:
    """Whether an engine column type (as the engine names it) holds catalog ``kind``.

    >>> fits("timestamp", "timestamp without time zone", "postgres")
    True
    >>> [fits("number", t, "spark") for t in ("decimal(10,2)", "string")]
    [True, False]
    >>> fits("string", "USER-DEFINED", "postgres")
    False
    """
    try:
        parsed = exp.DataType.build(type_name, dialect=dialect)
    except Exception:  # noqa: BLE001 - a type sqlglot cannot read fits nothing
        return False
    return parsed.this in ACCEPTED_TYPES[kind]


class Engine(ABC):
    """One dbt target: where builds run and publish."""

    target: ClassVar[str]
    dialect: ClassVar[str]
    #: dbt runs in this process (Spark: dbt-spark's session shares our JVM).
    dbt_in_process: ClassVar[bool] = False
    #: creating a temporary table needs a read-write session (PostgreSQL refuses every
    #: CREATE in a read-only transaction)
    temporaries_need_writes: ClassVar[bool] = False

    def __init__(self, target_schema: str):
        self.target_schema = target_schema

    @property
    def build_schema(self) -> str:
        """Where dbt builds (dbt's ``<target schema>_<custom schema>``)."""
        return f"{self.target_schema}_segments_build"

    def table(self, name: str, schema: str | None = None) -> exp.Table:
        """``schema.name``, in the target schema by default."""
        return exp.table_(name, db=schema or self.target_schema)

    def source_table(self, schema: str, table: str) -> exp.Table:
        """A catalog source's table (the target schema's sources in this engine's own)."""
        return self.table(table, None if schema == TARGET_SCHEMA_SOURCE else schema)

    @abstractmethod
    def describe(self) -> str:
        """Where the warehouse is, for messages (never a secret)."""

    @abstractmethod
    def connect(self, read_only: bool = False) -> AbstractContextManager[Session]:
        """An open session, closed (or released) after use."""

    def check_exists(self) -> None:
        """Raise what a read-only :meth:`connect` raises when there is no warehouse
        yet, for a caller about to connect read-write (which would create one).

        Raises:
            SegmentsError: no warehouse.
        """

    def dbt_env(self) -> dict[str, str]:
        """Environment variables the dbt profile of this target reads."""
        return {}

    def sort_key(self, expression: exp.Expression) -> exp.Expression:
        """``expression`` as it should be ordered to sort by code point, as every
        engine then lists members in the same order."""
        return expression


class Session(ABC):
    """An open connection to an engine's warehouse."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def sql(self, statement: exp.Expression) -> str:
        return dialects.render(statement, self.engine.dialect)

    @abstractmethod
    def execute(self, statement: exp.Expression) -> None:
        """Run one statement.

        Raises:
            EngineError: the engine refused it.
        """

    @abstractmethod
    def stream(self, query: exp.Query) -> Iterator[tuple]:
        """The rows of ``query``, fetched in batches."""

    def rows(self, query: exp.Query) -> list[tuple]:
        return list(self.stream(query))

    def reads_in_any_order(self) -> None:
        """Tell the engine that this session's queries order their own results: it
        need not keep the order rows were inserted in (a no-op where nothing does)."""

    def create_temporary(self, name: str, query: exp.Query) -> None:
        """The rows of ``query`` in table ``name``, private to this session and gone
        when it closes."""
        temporary = exp.Properties(expressions=[exp.TemporaryProperty()])
        self.execute(exp.Create(kind="TABLE", this=exp.to_table(name), expression=query, properties=temporary))

    #: Where the engine lists every column: the relation, then its columns holding the
    #: schema, the table, the catalog and the column's position.
    COLUMN_LISTING: ClassVar[tuple[str, ...]] = (
        "information_schema.columns", "table_schema", "table_name", "table_catalog", "ordinal_position",
    )

    def columns(self, schema: str, table: str, catalog: str | None = None) -> dict[str, str]:
        """Column name -> the engine's type name; empty when there is no such table
        (``catalog``: a database attached under that name, on DuckDB)."""
        listing, schema_column, table_column, catalog_column, position = self.COLUMN_LISTING
        query = (
            exp.select("column_name", "data_type")
            .from_(listing)
            .where(exp.column(schema_column).eq(exp.Literal.string(schema)), copy=False)
            .where(exp.column(table_column).eq(exp.Literal.string(table)), copy=False)
            .order_by(position, copy=False)
        )
        if catalog is not None:
            query = query.where(exp.column(catalog_column).eq(exp.Literal.string(catalog)), copy=False)
        return {str(name): str(dtype) for name, dtype in self.rows(query)}

    def has_table(self, schema: str, table: str) -> bool:
        return bool(self.columns(schema, table))

    #: whether a :meth:`transaction` block is open (statements run in it, not on their own)
    in_transaction = False

    def exists(self, schema: str, table: str, catalog: str | None = None) -> bool:
        """Whether the table (or view) is there, as :meth:`columns` would say, where an
        engine can tell more cheaply than by listing its columns."""
        return bool(self.columns(schema, table, catalog))

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Raises:
            EngineError: the engine has no multi-statement transactions (Spark).
        """
        raise EngineError(f"{self.engine.describe()} has no multi-statement transactions")

    @abstractmethod
    def apply(self, changes: Sequence[Change]) -> None:
        """Make every change visible together (see the module); on failure nothing
        changed.

        Raises:
            EngineError: a change failed.
        """

    @contextmanager
    def staging(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection to read and cast input files in, for
        :meth:`import_tables`: in memory, in UTC."""
        con = duckdb.connect(":memory:")
        try:
            duckdb_setting(con, "TimeZone", "UTC")
            yield con
        finally:
            con.close()

    @abstractmethod
    def staged(self, source: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> AbstractContextManager[dict[str, exp.Table]]:
        """The tables of ``source`` (a connection from :meth:`staging`) copied into
        relations this session reads (temporary: no other session sees them), by
        name, while the block runs."""

    def import_tables(self, source: duckdb.DuckDBPyConnection, tables: Mapping[exp.Table, str]) -> None:
        """Replace each target table with the rows of a table of ``source`` (a
        connection from :meth:`staging`), all at once as :meth:`apply` does."""
        with self.staged(source, list(tables.values())) as staged:
            self.apply([ReplaceTable(target, exp.select("*").from_(staged[name])) for target, name in tables.items()])

    def create_schemas(self, changes: Sequence[Change]) -> list[exp.Expression]:
        """``CREATE SCHEMA IF NOT EXISTS`` for the schema of every table replaced."""
        schemas = sorted({c.table.db for c in changes if isinstance(c, ReplaceTable) and c.table.db})
        return [exp.Create(kind="SCHEMA", exists=True, this=exp.Table(this=exp.to_identifier(s))) for s in schemas]


class TransactionalSession(Session):
    """A session of an engine with multi-statement transactions (DuckDB, PostgreSQL):
    :meth:`apply` runs the statements of every change in one of them."""

    @abstractmethod
    def _statements(self, change: Change) -> list[exp.Expression]:
        """The statements that make one change, in this engine's way."""

    def apply(self, changes: Sequence[Change]) -> None:
        with self.transaction():
            for statement in self.create_schemas(changes):
                self.execute(statement)
            for change in changes:
                for statement in self._statements(change):
                    self.execute(statement)


def value(item: object, kind: exp.DataType.Type | exp.DataType) -> exp.Expression:
    """A Python value as a literal of column type ``kind``.

    >>> value("2026-01-15 00:00:00", exp.DataType.Type.TIMESTAMP).sql("postgres")
    "CAST('2026-01-15 00:00:00' AS TIMESTAMP)"
    >>> [value(v, exp.DataType.Type.BIGINT).sql("duckdb") for v in (None, 3)]
    ['CAST(NULL AS BIGINT)', 'CAST(3 AS BIGINT)']
    """
    if isinstance(item, dt.datetime):
        item = item.isoformat(sep=" ")
    literal = exp.null() if item is None else exp.convert(item)
    return exp.cast(literal, kind)


def values_query(columns: Mapping[str, exp.DataType.Type | exp.DataType], rows: Sequence[Sequence[object]]) -> exp.Select:
    """``SELECT * FROM (VALUES ...) AS v(columns)``, every value a literal cast to its
    column's type; with no rows, a query of those columns that returns none.

    >>> values_query({"a": exp.DataType.Type.VARCHAR}, [["x"]]).sql("duckdb")
    "SELECT * FROM (VALUES (CAST('x' AS TEXT))) AS v(a)"
    >>> values_query({"a": exp.DataType.Type.VARCHAR}, []).sql("duckdb")
    'SELECT CAST(NULL AS TEXT) AS a WHERE FALSE'
    """
    if not rows:
        return exp.select(*(exp.alias_(value(None, kind), c) for c, kind in columns.items())).where(exp.false())
    tuples = [exp.Tuple(expressions=[value(v, kind) for v, kind in zip(row, columns.values())]) for row in rows]
    alias = exp.TableAlias(this=exp.to_identifier("v"), columns=[exp.to_identifier(c) for c in columns])
    return exp.select("*").from_(exp.Values(expressions=tuples, alias=alias))


def duckdb_setting(con: duckdb.DuckDBPyConnection, name: str, value: object) -> None:
    """``SET name = value`` on a DuckDB connection (every one runs in UTC, for instance)."""
    con.execute(exp.Set(expressions=[exp.SetItem(this=exp.column(name).eq(exp.convert(value)))]).sql("duckdb"))


def create_table(table: exp.Table, columns: Mapping[str, tuple[exp.DataType.Type, bool, object]]) -> exp.Create:
    """``CREATE TABLE IF NOT EXISTS`` from column definitions: name -> (type, NOT
    NULL, default or None).

    >>> create_table(exp.table_("t", db="s"), {"n": (exp.DataType.Type.BIGINT, True, 0)}).sql("postgres")
    'CREATE TABLE IF NOT EXISTS s.t (n BIGINT NOT NULL DEFAULT 0)'
    """
    definitions = []
    for name, (kind, not_null, default) in columns.items():
        constraints = [exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())] if not_null else []
        if default is not None:
            constraints.append(exp.ColumnConstraint(kind=exp.DefaultColumnConstraint(this=exp.convert(default))))
        definitions.append(exp.ColumnDef(this=exp.to_identifier(name), kind=exp.DataType.build(kind), constraints=constraints))
    return exp.Create(kind="TABLE", exists=True, this=exp.Schema(this=table, expressions=definitions))


def drop(kind: str, relation: exp.Table, cascade: bool = False) -> exp.Drop:
    """``DROP <kind> IF EXISTS relation [CASCADE]``.

    >>> drop("VIEW", exp.table_("seg_vip", db="main")).sql("duckdb")
    'DROP VIEW IF EXISTS main.seg_vip'
    """
    return exp.Drop(kind=kind, exists=True, tables=[relation], cascade=cascade)


def export(source: duckdb.DuckDBPyConnection, table: str | exp.Query, path: str, file_format: str) -> None:
    """Write a DuckDB table (or the rows of a query) to ``path`` as ``csv`` (with a
    header; NULL is an empty field, an empty string ``""``) or ``parquet``."""
    params = [exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var(file_format))]
    if file_format == "csv":
        params.append(exp.CopyParameter(this=exp.var("HEADER")))
    rows = table if isinstance(table, exp.Query) else exp.select("*").from_(exp.to_table(table))
    query = exp.Subquery(this=rows)
    copy = exp.Copy(this=query, kind=False, files=[exp.Literal.string(path)], params=params)
    try:
        source.execute(copy.sql("duckdb"))
    except duckdb.Error as error:
        raise EngineError(str(error)) from None
