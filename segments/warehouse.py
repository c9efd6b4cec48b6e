"""The embedded DuckDB warehouse: input checks, loading, publishing a build, reading.

Every write here happens in one transaction, so a failure leaves the warehouse as it
was: a load either replaces both input tables or neither, and a build's outputs
appear all at once when it is published.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import history
from segments.compiler import models as md
from segments.errors import SegmentsError
from segments.spec import model as m

TARGET_SCHEMA = "main"
BUILD_SCHEMA = f"{TARGET_SCHEMA}_segments_build"  # dbt's <target>_<custom schema>
SEGMENT_CATALOG = "segment_catalog"
PUBLISHED_TABLES = (md.MEMBERSHIP, md.TRAITS)

# DuckDB type names (prefixes) each catalog type accepts.
_ACCEPTED_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("VARCHAR",),
    "number": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
               "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL"),
    "boolean": ("BOOLEAN",),
    "timestamp": ("TIMESTAMP", "DATE"),
}
_CAST_TYPES = {"string": "VARCHAR", "number": "DOUBLE", "boolean": "BOOLEAN", "timestamp": "TIMESTAMP"}


@contextmanager
def connect(path: Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection in UTC (timestamps are naive UTC everywhere), closed after use."""
    if read_only and not path.exists():
        raise SegmentsError(f"no warehouse at {path}: run `segments load` and `segments build` first")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as error:
        raise SegmentsError(f"cannot open warehouse {path}: {error}") from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def _sql(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")


def _table(relation: m.Relation) -> exp.Table:
    return exp.table_(relation.name, db=relation.schema or TARGET_SCHEMA)


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}


def _required_columns(catalog: m.Catalog) -> list[tuple[m.Relation, str, str, str]]:
    """(relation, column, catalog type, what it is) for every column the catalog names."""
    users, events = catalog.users, catalog.events
    out = [(users.relation, users.key, "key", "users key")]
    if users.created_at:
        out.append((users.relation, users.created_at, "timestamp", "users created_at"))
    out += [(users.relation, a.column, a.type, f"attribute {a.name}") for a in users.attributes.values()]
    out += [
        (events.relation, events.user_key, "key", "events user_key"),
        (events.relation, events.name, "string", "events name"),
        (events.relation, events.timestamp, "timestamp", "events timestamp"),
    ]
    out += [(events.relation, p.column, p.type, f"property {p.name}") for p in events.properties.values()]
    return out


def check_inputs(con: duckdb.DuckDBPyConnection, catalog: m.Catalog) -> None:
    """Fail before building when an input table or column is missing or mistyped.

    Raises:
        SegmentsError: naming every problem found.
    """
    problems: list[str] = []
    seen: dict[m.Relation, dict[str, str]] = {}
    for relation, column, kind, what in _required_columns(catalog):
        if relation not in seen:
            seen[relation] = _columns(con, relation.schema or TARGET_SCHEMA, relation.name)
            if not seen[relation]:
                problems.append(f"input table {relation} does not exist (load it with `segments load`)")
        columns = seen[relation]
        if not columns:
            continue
        if column not in columns:
            problems.append(f"{relation} has no column {column!r} ({what} in _catalog.yml)")
            continue
        accepted = ("VARCHAR",) + _ACCEPTED_TYPES["number"] if kind == "key" else _ACCEPTED_TYPES[kind]
        if not columns[column].upper().startswith(accepted):
            problems.append(f"{relation}.{column} is {columns[column]}, but _catalog.yml says {kind} ({what})")
    if problems:
        raise SegmentsError("the warehouse does not match _catalog.yml:\n  " + "\n  ".join(problems))


def publish(
    con: duckdb.DuckDBPyConnection,
    project: m.Project,
    segments: list[str],
    as_of: dt.datetime,
) -> None:
    """Make a finished build visible, all at once.

    Copies ``segment_membership`` and ``user_traits`` from the build schema into the
    target schema, (re)creates one ``seg_<name>`` view per segment over the published
    membership, drops the views of segments that no longer exist, records the
    segments in ``segment_catalog`` and who entered and left them
    (:mod:`segments.history`): one transaction.
    """
    previous: list[str] = []
    if _columns(con, TARGET_SCHEMA, SEGMENT_CATALOG):
        previous = [r[0] for r in con.execute(f"SELECT segment_name FROM {TARGET_SCHEMA}.{SEGMENT_CATALOG}").fetchall()]
    statements: list[exp.Expression] = []
    for table in PUBLISHED_TABLES:
        statements.append(exp.Create(
            kind="TABLE", replace=True, this=exp.table_(table, db=TARGET_SCHEMA),
            expression=exp.select("*").from_(exp.table_(table, db=BUILD_SCHEMA)),
        ))
    for name in sorted(set(previous) - set(segments)):
        statements.append(exp.Drop(kind="VIEW", exists=True, this=exp.table_(md.segment_model_name(name), db=TARGET_SCHEMA)))
    for name in segments:
        members = (
            exp.select("user_id", "is_holdout", "as_of")
            .from_(exp.table_(md.MEMBERSHIP, db=TARGET_SCHEMA))
            .where(exp.EQ(this=exp.column("segment_name"), expression=exp.Literal.string(name)))
        )
        statements.append(exp.Create(
            kind="VIEW", replace=True, this=exp.table_(md.segment_model_name(name), db=TARGET_SCHEMA), expression=members,
        ))
    statements.append(exp.Create(
        kind="TABLE", replace=True, this=exp.table_(SEGMENT_CATALOG, db=TARGET_SCHEMA),
        expression=_catalog_rows(project, segments, as_of),
    ))
    recorded = history.record(con, TARGET_SCHEMA, BUILD_SCHEMA, segments, as_of)  # before the membership changes
    con.execute("BEGIN TRANSACTION")
    try:
        for sql in recorded:
            con.execute(sql)
        for statement in statements:
            con.execute(_sql(statement))
        con.execute("COMMIT")
    except duckdb.Error as error:
        con.execute("ROLLBACK")
        raise SegmentsError(f"publishing the build failed, the warehouse is unchanged: {error}") from None


def _catalog_rows(project: m.Project, segments: list[str], as_of: dt.datetime) -> exp.Query:
    columns = ["segment_name", "spec_name", "description", "owner", "tags", "refresh", "holdout_pct", "as_of"]
    rows = []
    for name in segments:
        spec = project.spec(name)
        rows.append(exp.Tuple(expressions=[
            exp.Literal.string(name), exp.Literal.string(spec.name),
            exp.Literal.string(spec.description or ""), exp.Literal.string(spec.owner or ""),
            exp.Literal.string(json.dumps(list(spec.tags))), exp.Literal.string(spec.refresh),
            exp.cast(exp.Literal.number(spec.holdout or 0), exp.DataType.Type.DOUBLE),
            exp.cast(exp.Literal.string(as_of.isoformat(sep=" ")), exp.DataType.Type.TIMESTAMP),
        ]))
    if not rows:
        nulls = [exp.alias_(exp.null(), c) for c in columns]
        return exp.select(*nulls).where(exp.false())
    values = exp.Values(expressions=rows, alias=exp.TableAlias(this=exp.to_identifier("v"), columns=[exp.to_identifier(c) for c in columns]))
    return exp.select("*").from_(values)


def segment_sizes(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int]]:
    """(segment, members, holdout members) per published segment, in name order."""
    if not _columns(con, TARGET_SCHEMA, SEGMENT_CATALOG):
        raise SegmentsError("the warehouse has no build yet: run `segments build`")
    return con.execute(
        f"SELECT c.segment_name, COUNT(m.user_id), COUNT(m.user_id) FILTER (WHERE m.is_holdout) "
        f"FROM {TARGET_SCHEMA}.{SEGMENT_CATALOG} c "
        f"LEFT JOIN {TARGET_SCHEMA}.{md.MEMBERSHIP} m ON m.segment_name = c.segment_name "
        f"GROUP BY c.segment_name ORDER BY c.segment_name"
    ).fetchall()


def _input_select(source: exp.Expression, columns: list[tuple[str, str]], available: dict[str, str]) -> exp.Select:
    """Catalog columns cast to their types; other columns kept as they are."""
    wanted = dict(columns)
    select: list[exp.Expression] = []
    for name in available:
        column = exp.column(name, quoted=True)
        kind = wanted.get(name)
        if kind is None:
            select.append(column)
        elif kind == "timestamp":
            # through TIMESTAMPTZ so that written offsets are honoured (session is UTC)
            as_tz = exp.cast(column, exp.DataType.build("TIMESTAMPTZ"))
            select.append(exp.alias_(exp.cast(as_tz, exp.DataType.Type.TIMESTAMP), name, quoted=True))
        else:
            select.append(exp.alias_(exp.cast(column, exp.DataType.build(_CAST_TYPES[kind])), name, quoted=True))
    return exp.select(*select).from_(source)


def _reader(path: Path, catalog_columns: list[str]) -> exp.Expression:
    suffix = path.suffix.lower()
    file = exp.Literal.string(str(path))
    if suffix == ".parquet":
        return exp.Anonymous(this="read_parquet", expressions=[file])
    if suffix in (".csv", ".tsv", ".txt") or suffix.endswith(".gz"):
        # catalog columns read as text and cast after, so '0049…' phones keep their zeros
        types = exp.Struct(expressions=[
            exp.PropertyEQ(this=exp.Literal.string(c), expression=exp.Literal.string("VARCHAR")) for c in catalog_columns
        ])
        return exp.Anonymous(this="read_csv", expressions=[
            file, exp.EQ(this=exp.column("header"), expression=exp.true()),
            exp.EQ(this=exp.column("types"), expression=types),
        ])
    raise SegmentsError(f"{path}: expected a .csv or .parquet file")


def load_inputs(con: duckdb.DuckDBPyConnection, catalog: m.Catalog, users: Path | None, events: Path | None) -> dict[str, int]:
    """Replace the catalog's input tables with the files' rows, cast to the catalog's
    types, in one transaction. Returns rows loaded per table.

    Raises:
        SegmentsError: a missing file or column, or a value that does not cast.
    """
    plan: list[tuple[m.Relation, Path, list[tuple[str, str]]]] = []
    if users is not None:
        cols = [(c, "string" if k == "key" else k) for rel, c, k, _ in _required_columns(catalog) if rel == catalog.users.relation]
        plan.append((catalog.users.relation, users, cols))
    if events is not None:
        cols = [(c, "string" if k == "key" else k) for rel, c, k, _ in _required_columns(catalog) if rel == catalog.events.relation]
        plan.append((catalog.events.relation, events, cols))
    if not plan:
        raise SegmentsError("nothing to load: give --users and/or --events")
    statements: list[tuple[m.Relation, str]] = []
    for relation, path, cols in plan:
        if not path.is_file():
            raise SegmentsError(f"{path}: no such file")
        reader = _reader(path, [c for c, _ in cols])
        try:
            available = {
                row[0]: row[1]
                for row in con.execute(f"DESCRIBE SELECT * FROM {_sql(reader)}").fetchall()
            }
        except duckdb.Error as error:
            raise SegmentsError(f"{path}: cannot read: {error}") from None
        missing = [c for c, _ in cols if c not in available]
        if missing:
            raise SegmentsError(f"{path}: missing column(s) {', '.join(missing)} that _catalog.yml declares for {relation}")
        create = exp.Create(kind="TABLE", replace=True, this=_table(relation), expression=_input_select(reader, cols, available))
        statements.append((relation, _sql(create)))
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for relation, statement in statements:
            con.execute(_sql(exp.Create(kind="SCHEMA", exists=True, this=exp.Table(this=exp.to_identifier(relation.schema or TARGET_SCHEMA)))))
            con.execute(statement)
            counts[str(relation)] = con.execute(f"SELECT COUNT(*) FROM {_sql(_table(relation))}").fetchone()[0]
        con.execute("COMMIT")
    except duckdb.Error as error:
        con.execute("ROLLBACK")
        raise SegmentsError(f"load failed, nothing was written: {error}") from None
    return counts


def members(con: duckdb.DuckDBPyConnection, segment: str | None = None) -> Iterator[tuple[str, str, bool]]:
    """(segment_name, user_id, is_holdout) of the published membership, sorted."""
    if not _columns(con, TARGET_SCHEMA, md.MEMBERSHIP):
        raise SegmentsError("the warehouse has no segment_membership yet: run `segments build`")
    query = exp.select("segment_name", "user_id", "is_holdout").from_(exp.table_(md.MEMBERSHIP, db=TARGET_SCHEMA))
    if segment is not None:
        known = con.execute(
            f"SELECT COUNT(*) FROM {TARGET_SCHEMA}.{SEGMENT_CATALOG} WHERE segment_name = ?", [segment]
        ).fetchone()[0]
        if not known:
            raise SegmentsError(f"no segment named {segment!r} in the last build")
        query = query.where(exp.EQ(this=exp.column("segment_name"), expression=exp.Literal.string(segment)))
    cursor = con.execute(_sql(query.order_by("segment_name", "user_id")))
    while batch := cursor.fetchmany(10_000):
        yield from batch
