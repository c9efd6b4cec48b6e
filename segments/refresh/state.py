"""What a refresh continues from: one row in the build schema with the last build's
``as_of``, the compiled models' fingerprint, the events counted up to ``as_of`` and the
other inputs (users, uploaded lists) fingerprinted. A full build writes it after
publishing (:func:`record`); a dbt run outside ``segments build`` drops it (:func:`forget`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlglot import exp

from segments.compiler import models as md
from segments.compiler import sqlexpr as sx
from segments.engines.base import Session, drop
from segments.refresh.build import BuildSchema

#: One row in the build schema: the as_of, project and inputs of the last build.
STATE = "segments_refresh_state"


def fingerprint(compiled: md.CompiledProject) -> str:
    """The compiled project: a refresh continues only a build of the same models."""
    digest = hashlib.sha256()
    for model in compiled.models:
        digest.update(model.name.encode())
        digest.update(model.query.sql().encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class State:
    as_of: dt.datetime
    fingerprint: str
    events_upto: int
    #: the other inputs (users, uploaded lists): counted and hashed
    inputs: str


def _upto(session: Session, as_of: dt.datetime) -> exp.Expression:
    """``(events with a time) - (events after as_of)``: the events up to ``as_of``.

    Counted that way because DuckDB skips the blocks of time-ordered events that end
    before an instant, but counting up to one it read every block in some cycles of
    the watch (20-60 ms against 1 ms)."""
    events, when = session.engine.table(md.EVENTS, session.engine.build_schema), exp.column("occurred_at")
    timed = exp.select(exp.Count(this=when)).from_(events).subquery()
    later = exp.select(exp.Count(this=exp.Star())).from_(events.copy()).where(when.copy() > sx.timestamp_literal(as_of))
    return exp.Sub(this=timed, expression=later.subquery())


def events_upto(session: Session, as_of: dt.datetime, since: dt.datetime | None = None) -> int:
    """Events up to ``as_of`` (after ``since`` only: a range time-ordered events skip to)."""
    if since is None:
        return int(session.rows(exp.select(_upto(session, as_of)))[0][0])
    when = exp.column("occurred_at")
    upto = sx.and_(when > sx.timestamp_literal(since), when.copy() <= sx.timestamp_literal(as_of))
    events = session.engine.table(md.EVENTS, session.engine.build_schema)
    return int(session.rows(exp.select(exp.Count(this=exp.Star())).from_(events).where(upto))[0][0])


def events_seen(session: Session, as_of: dt.datetime) -> tuple[int, dt.datetime | None]:
    """Events up to ``as_of`` and the newest one's time, in one statement (the watch:
    the build schema's events model is a view of the catalog's events table, so the
    count grows as events arrive)."""
    when = exp.column("occurred_at")
    events = session.engine.table(md.EVENTS, session.engine.build_schema)
    newest = exp.select(exp.Max(this=when)).from_(events).where(when.copy() <= sx.timestamp_literal(as_of))
    count, latest = session.rows(exp.select(_upto(session, as_of), newest.subquery()))[0]
    return int(count), latest


def inputs_fingerprint(build: BuildSchema) -> str:
    """Every source but the events (users, uploaded lists): rows counted and hashed.
    A changed user or list makes the next build a full one."""
    events = build.compiled.catalog.events.relation
    parts = []
    for schema, tables in sorted(build.compiled.sources.items()):
        for table in sorted(tables):
            if (schema, table) == (events.schema or md.TARGET_SCHEMA_SOURCE, events.name):
                continue
            relation = build.engine.source_table(schema, table)
            columns = list(build.session.columns(relation.db, relation.name))
            if not columns:
                parts.append(f"{schema}.{table}:none")
                continue
            row_hash = exp.Anonymous(this="HASH", expressions=[exp.column(c) for c in columns])
            # DuckDB sums the UBIGINT hashes into an INT128 itself, without a cast per row
            total = exp.Sum(this=row_hash)
            count, summed = build.rows(exp.select(exp.Count(this=exp.Star()), total).from_(relation))[0]
            parts.append(f"{schema}.{table}:{count}:{summed}")
    return ";".join(parts)


_STATE_COLUMNS = {
    "as_of": exp.DataType.Type.TIMESTAMP,
    "fingerprint": exp.DataType.Type.VARCHAR,
    "events_upto": exp.DataType.Type.BIGINT,
    "inputs": exp.DataType.Type.VARCHAR,
}


def read_state(build: BuildSchema) -> State | None:
    if list(build.session.columns(build.engine.build_schema, STATE)) != list(_STATE_COLUMNS):
        return None  # none, or an older one
    rows = build.rows(exp.select(*_STATE_COLUMNS).from_(build.table(STATE)))
    return State(*rows[0]) if len(rows) == 1 else None


def write_state(build: BuildSchema, state: State) -> None:
    values = [sx.timestamp_literal(state.as_of), exp.Literal.string(state.fingerprint),
              exp.Literal.number(state.events_upto), exp.Literal.string(state.inputs)]
    row = [exp.alias_(exp.cast(v, kind), name) for v, (name, kind) in zip(values, _STATE_COLUMNS.items())]
    build.run(exp.Create(kind="TABLE", this=build.table(STATE), replace=True, expression=exp.select(*row)))


def record(session: Session, compiled: md.CompiledProject, as_of: dt.datetime) -> None:
    """After a full build: what the next refresh starts from (one small row; the
    events are counted up to ``as_of`` and the users fingerprinted)."""
    if session.engine.dialect != "duckdb":
        return
    build = BuildSchema(session, compiled)
    write_state(build, State(as_of, fingerprint(compiled), events_upto(session, as_of), inputs_fingerprint(build)))


def forget(session: Session) -> None:
    """No refresh may continue from the build schema as it is (a full build starts)."""
    build = BuildSchema(session, md.CompiledProject([], {}, None, []))  # type: ignore[arg-type]
    build.run(drop("TABLE", build.table(STATE)))
