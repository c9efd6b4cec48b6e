"""Warehouse work on any engine: input checks, loading, publishing a build, reading.

Every function takes an open :class:`~segments.engines.base.Session` and builds its
statements as sqlglot trees for the session's engine. Every write goes through
``Session.apply``, so a failure leaves the warehouse as it was: a load replaces both
input tables or neither, and a build's outputs appear all at once when it is
published (on Spark, as close to that as an engine without transactions allows; see
:mod:`segments.engines.spark_engine`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import NamedTuple
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import input_checks, membership, publish_guard
from segments.compiler import models as md
from segments.compiler import sqlexpr as sx
from segments.engines.base import (
    Change,
    DropView,
    EngineError,
    PartialChange,
    ROWID_COPY,
    ReplaceRows,
    ReplaceTable,
    ReplaceView,
    Session,
    fits,
    values_query,
)
from segments.engines.duckdb_engine import attached, connect
from segments.errors import SegmentsError
from segments.spec import model as m
from segments.spec.timeparse import utc_now

__all__ = ["attached", "check_inputs", "connect", "load_inputs", "members", "publish", "segment_sizes"]

TARGET_SCHEMA = "main"  # the duckdb target's schema (profiles.yml): where DuckDB-only readers look
SEGMENT_CATALOG = "segment_catalog"
PUBLISHED_TABLES = (md.MEMBERSHIP, md.TRAITS)

# How a catalog type is cast when loading (DuckDB reads and casts every input file).
CAST_TYPES = {"string": "VARCHAR", "number": "DOUBLE", "boolean": "BOOLEAN", "timestamp": "TIMESTAMP"}


def _table(session: Session, relation: m.Relation) -> exp.Table:
    return session.engine.table(relation.name, relation.schema)


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


def check_inputs(session: Session, catalog: m.Catalog) -> None:
    """Fail before building when an input table or column is missing or mistyped.

    Raises:
        SegmentsError: naming every problem found.
    """
    problems: list[str] = []
    seen: dict[m.Relation, dict[str, str]] = {}
    dialect = session.engine.dialect
    for relation, column, kind, what in _required_columns(catalog):
        if relation not in seen:
            table = _table(session, relation)
            seen[relation] = session.columns(table.db, table.name)
            if not seen[relation]:
                problems.append(f"input table {relation} does not exist (load it with `segments load`)")
        columns = seen[relation]
        if not columns:
            continue
        if column not in columns:
            problems.append(f"{relation} has no column {column!r} ({what} in _catalog.yml)")
            continue
        if not fits(kind, columns[column], dialect):
            problems.append(f"{relation}.{column} is {columns[column]}, but _catalog.yml says {kind} ({what})")
    if problems:
        where = session.engine.describe()
        raise SegmentsError(f"the warehouse ({where}) does not match _catalog.yml:\n  " + "\n  ".join(problems))


def _segment_name_is(name: str) -> exp.Expression:
    return exp.column("segment_name").eq(exp.Literal.string(name))


def _published_segments(session: Session) -> list[str]:
    if not session.columns(session.engine.target_schema, SEGMENT_CATALOG):
        return []
    return _catalog_names(session)


def _catalog_names(session: Session) -> list[str]:
    """The segments ``segment_catalog`` lists (the table exists)."""
    query = exp.select("segment_name").from_(session.engine.table(SEGMENT_CATALOG))
    return [str(row[0]) for row in session.rows(query)]


def publish(
    session: Session, project: m.Project, segments: list[str], as_of: dt.datetime, force: bool = False,
    changed_users: str | None = None, changed_members: str | None = None,
) -> None:
    """Make a finished build visible, all at once.

    Copies ``segment_membership`` and ``user_traits`` from the build schema into the
    target schema, records the segments in ``segment_catalog``, (re)creates one
    ``seg_<name>`` view per segment over the published membership and drops the
    views of segments that no longer exist: one :meth:`Session.apply`. Who entered
    and left each segment is recorded just before (:mod:`segments.history`) and
    forgotten again if the publish fails.

    Unless ``force``, a build that would drop or empty most published segments is
    refused (:mod:`segments.publish_guard`).

    ``changed_users`` (an incremental refresh, DuckDB): a table of the only users whose
    rows can differ from the published ones; only their rows are replaced and
    compared, and every published row takes the new ``as_of``; ``changed_members``,
    a table of those users' new membership rows, saves reading them back out of the
    whole build membership.

    Raises:
        SegmentsError: publishing failed or was refused (saying whether anything changed).
    """
    from segments import history  # (publish alone records it: a preview starts without it)

    engine = session.engine
    previous = _published_segments(session)
    refused = None if force else publish_guard.refusal(session, previous, segments)
    if refused:
        raise SegmentsError(refused)
    published_old = None
    if changed_users is not None and session.in_transaction:  # (a rowid holds within a transaction)
        published_old = history.copy_published(session, changed_users)
    changes: list[Change] = [
        _published_rows(
            session, table, as_of, changed_users, changed_members if table == md.MEMBERSHIP else None,
            published_old if table == md.MEMBERSHIP else None,
        )
        for table in PUBLISHED_TABLES
    ]
    changes.append(ReplaceTable(engine.table(SEGMENT_CATALOG), _catalog_rows(project, segments, as_of)))
    changes += [DropView(engine.table(md.segment_model_name(name))) for name in sorted(set(previous) - set(segments))]
    for name in segments:
        members = (
            exp.select("user_id", "is_holdout", "as_of", "arm")
            .from_(engine.table(md.MEMBERSHIP))
            .where(_segment_name_is(name))
        )
        changes.append(ReplaceView(engine.table(md.segment_model_name(name)), members))
    published_at = utc_now()
    recorded = history.record(
        session, segments, as_of, published_at, users=changed_users, new_rows=changed_members, old_rows=published_old,
    )
    try:
        for statement in recorded:  # before the membership changes: it compares old and new
            session.execute(statement)
        session.apply(changes)
    except PartialChange as error:
        raise SegmentsError(f"publishing the build on {engine.describe()} stopped part way; build again: {error}") from None
    except EngineError as error:
        if session.in_transaction:  # the caller's transaction (a refresh) rolls it all back
            raise SegmentsError(f"publishing the build failed, the warehouse is unchanged: {error}") from None
        try:
            for statement in history.forget(session, published_at):
                session.execute(statement)
        except EngineError:  # Spark's plain tables take no DELETE
            raise SegmentsError(
                f"publishing the build failed, the warehouse is unchanged but for the history rows of this "
                f"attempt (published_at {published_at}), which {engine.describe()} cannot delete: {error}"
            ) from None
        raise SegmentsError(f"publishing the build failed, the warehouse is unchanged: {error}") from None


def _published_rows(
    session: Session, table: str, as_of: dt.datetime, changed_users: str | None, new_rows: str | None = None,
    old_rows: str | None = None,
) -> Change:
    """The published copy of a build table: all of it, or the changed users' rows
    (read from ``new_rows`` when the refresh kept them apart; ``old_rows``, a
    :func:`history.copy_published` of their published rows, says where those are)."""
    engine = session.engine
    built = exp.select("*").from_(engine.table(table, engine.build_schema))
    if changed_users is None:
        return ReplaceTable(engine.table(table), built)
    users = exp.select("user_id").from_(exp.to_table(changed_users))
    stamp = ("as_of", sx.timestamp_literal(as_of)) if table == md.MEMBERSHIP else None
    rows = exp.select("*").from_(exp.to_table(new_rows)) if new_rows else built.where(exp.column("user_id").isin(query=users.copy()))
    rowids = exp.select(ROWID_COPY).from_(exp.to_table(old_rows)) if old_rows else None
    return ReplaceRows(engine.table(table), users, rows, stamp, rowids)


_CATALOG_COLUMNS: dict[str, exp.DataType.Type] = {
    "segment_name": exp.DataType.Type.VARCHAR,
    "spec_name": exp.DataType.Type.VARCHAR,
    "description": exp.DataType.Type.VARCHAR,
    "owner": exp.DataType.Type.VARCHAR,
    "tags": exp.DataType.Type.VARCHAR,
    "refresh": exp.DataType.Type.VARCHAR,
    "holdout_pct": exp.DataType.Type.DOUBLE,
    "as_of": exp.DataType.Type.TIMESTAMP,
    "relation": exp.DataType.Type.VARCHAR,
}


def _catalog_rows(project: m.Project, segments: list[str], as_of: dt.datetime) -> exp.Query:
    rows = []
    for name in segments:
        spec = project.spec(name)
        rows.append([
            name, spec.name, spec.description or "", spec.owner or "", json.dumps(list(spec.tags)), spec.refresh,
            spec.holdout or 0, as_of, md.segment_model_name(name),
        ])
    return values_query(_CATALOG_COLUMNS, rows)


def segment_sizes(session: Session) -> list[tuple[str, int, int]]:
    """(segment, members, holdout members) per published segment, in name order."""
    engine = session.engine
    if not session.has_table(engine.target_schema, SEGMENT_CATALOG):
        raise SegmentsError("the warehouse has no build yet: run `segments build`")
    counts = {}
    if session.has_table(engine.target_schema, md.MEMBERSHIP):
        counts = membership.sizes(session, engine.table(md.MEMBERSHIP))
    return [(name, *counts.get(name, (0, 0))) for name in sorted(_catalog_names(session))]


def last_builds(session: Session) -> dict[str, tuple[int, dt.datetime | None]]:
    """Segment -> (members, when its membership was last published), for the
    published segments; empty before the first build."""
    from segments import history

    engine = session.engine
    if not session.columns(engine.target_schema, SEGMENT_CATALOG):
        return {}
    sizes = {name: size for name, size, _ in segment_sizes(session)}
    published: dict[str, dt.datetime | None] = {}
    if session.columns(engine.target_schema, history.SIZES):
        query = (
            exp.select("segment_name", exp.Max(this=exp.column("published_at")))
            .from_(engine.table(history.SIZES))
            .group_by("segment_name")
        )
        published = {str(name): at for name, at in session.rows(query)}
    return {name: (size, published.get(name)) for name, size in sizes.items()}


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
            select.append(exp.alias_(exp.cast(column, exp.DataType.build(CAST_TYPES[kind])), name, quoted=True))
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


def _required(catalog: m.Catalog, relation: m.Relation) -> tuple[list[str], str | None]:
    """(columns that must be filled, the column that must be unique) of an input table."""
    if relation == catalog.users.relation:
        return [catalog.users.key], catalog.users.key
    events = catalog.events
    return [events.user_key, events.name, events.timestamp], None


def load_inputs(session: Session, catalog: m.Catalog, users: Path | None, events: Path | None) -> dict[str, int]:
    """Replace the catalog's input tables with the files' rows, cast to the catalog's
    types, all at once. Returns rows loaded per table.

    DuckDB reads and casts every file, whatever the engine, so each engine gets the
    same rows; the session then imports them into its tables.

    Raises:
        SegmentsError: a missing file or column, or a value that does not cast.
    """
    plan: list[tuple[m.Relation, Path, list[tuple[str, str]]]] = []
    for relation, path in ((catalog.users.relation, users), (catalog.events.relation, events)):
        if path is not None:
            cols = [(c, "string" if k == "key" else k) for rel, c, k, _ in _required_columns(catalog) if rel == relation]
            plan.append((relation, path, cols))
    if not plan:
        raise SegmentsError("nothing to load: give --users and/or --events")
    counts: dict[str, int] = {}
    staged: dict[exp.Table, str] = {}
    with session.staging() as duck:
        for index, (relation, path, cols) in enumerate(plan):
            if not path.is_file():
                raise SegmentsError(f"{path}: no such file")
            reader = _reader(path, [c for c, _ in cols])
            raw, name = f"segments_raw_{index}", f"segments_input_{index}"
            temporary = exp.Properties(expressions=[exp.TemporaryProperty()])
            try:  # as read, in file order: rowid numbers the rows for the checks
                duck.execute(exp.Create(kind="TABLE", this=exp.to_table(raw), expression=exp.select("*").from_(reader), properties=temporary).sql("duckdb"))
                available = {row[0]: row[1] for row in duck.execute(exp.Describe(this=exp.select("*").from_(raw)).sql("duckdb")).fetchall()}
            except duckdb.Error as error:
                raise input_checks.read_error(path, error) from None
            missing = [c for c, _ in cols if c not in available]
            if missing:
                raise SegmentsError(f"{path}: missing column(s) {', '.join(missing)} that _catalog.yml declares for {relation}")
            input_checks.check_values(duck, raw, path, cols)
            create = exp.Create(
                kind="TABLE", this=exp.to_table(name), expression=_input_select(exp.to_table(raw), cols, available),
                properties=temporary.copy(),
            )
            try:
                duck.execute(create.sql("duckdb"))
                counts[str(relation)] = duck.execute(exp.select(exp.Count(this=exp.Star())).from_(name).sql("duckdb")).fetchone()[0]
            except duckdb.Error as error:
                raise SegmentsError(f"{path}: load failed, nothing was written ({type(error).__name__})") from None
            input_checks.check_required(duck, name, path, *_required(catalog, relation))
            staged[_table(session, relation)] = name
        try:
            session.import_tables(duck, staged)
        except EngineError as error:
            raise SegmentsError(f"load failed, nothing was written: {error}") from None
    return counts


#: The columns of ``segments members``; ``arm`` only where a segment shown has an experiment.
MEMBER_COLUMNS = ("segment_name", "user_id", "is_holdout")


class Members(NamedTuple):
    """The published membership as ``segments members`` prints it."""

    columns: tuple[str, ...]
    rows: Iterator[tuple]  # (segment_name, user_id, is_holdout[, arm])


def members(session: Session, segments: Sequence[str] | None = None) -> Members:
    """(segment_name, user_id, is_holdout) of the published membership, sorted by code
    point, and each member's ``arm`` when a segment shown has an experiment (its members
    have arms; other segments' rows have none), so the output of segments without
    experiments is what it always was.

    Checks the warehouse and ``segments`` (names of the last build) before returning,
    so a caller prints nothing, not even a header, for a bad request.

    Raises:
        SegmentsError: no build yet, or a segment the last build did not publish.
    """
    engine = session.engine
    columns = session.columns(engine.target_schema, md.MEMBERSHIP)
    if not columns:
        raise SegmentsError("the warehouse has no segment_membership yet: run `segments build`")
    wanted = None
    if segments is not None:
        published = set(_published_segments(session))
        missing = [name for name in segments if name not in published]
        if missing:
            raise SegmentsError(f"no segment named {missing[0]!r} in the last build")
        wanted = exp.or_(*(_segment_name_is(name) for name in segments))
    shown = MEMBER_COLUMNS + (("arm",) if "arm" in columns and _has_arms(session, wanted) else ())
    query = exp.select(*shown).from_(engine.table(md.MEMBERSHIP))
    if wanted is not None:
        query = query.where(wanted.copy())
    order = [engine.sort_key(exp.column(c)) for c in ("segment_name", "user_id")]
    return Members(shown, _member_rows(session, query.order_by(*order)))


def _has_arms(session: Session, wanted: exp.Expression | None) -> bool:
    """Whether some member of the segments ``wanted`` selects (all: None) has an arm."""
    armed = exp.Not(this=exp.Is(this=exp.column("arm"), expression=exp.Null()))
    condition = armed if wanted is None else exp.and_(wanted.copy(), armed)
    query = exp.select(exp.Literal.number(1)).from_(session.engine.table(md.MEMBERSHIP)).where(condition).limit(1)
    return bool(session.rows(query))


def _member_rows(session: Session, query: exp.Select) -> Iterator[tuple]:
    for name, user_id, is_holdout, *arm in session.stream(query):
        yield (str(name), str(user_id), bool(is_holdout), *(None if a is None else str(a) for a in arm))
