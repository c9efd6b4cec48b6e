"""Whether a build may extend the daily rollup, or must rebuild it from scratch.

``int_user_daily_events`` is a dbt incremental model: each build adds the days since
the last one (:mod:`segments.compiler.measures`). That is only right while the rows it
holds are what a full build would write. Two things break it, and both are checked
here before dbt runs, so that ``segments build`` and Dagster pass ``--full-refresh``
exactly when needed:

- the parts changed (a spec added or changed a measure, or the catalog's events
  moved): the rollup's fingerprint differs from the compiled one;
- the history changed: events arrived late, or were deleted, for days the rollup
  already holds. Events are append-only in the model of the world this assumes; the
  check counts them instead of trusting it.
"""

from __future__ import annotations

from sqlglot import exp

from segments.compiler import measures as ms
from segments.compiler import models as md
from segments.compiler import render
from segments.engines.base import Session


def full_refresh_reason(session: Session, compiled: md.CompiledProject, dialect: str) -> str | None:
    """Why the rollup must be rebuilt from scratch, or None when extending it is exact.

    Args:
        session: an open session on the build's engine.
        compiled: the project about to be built.
        dialect: the dialect the models were compiled for.
    """
    try:
        model = compiled.model(md.ROLLUP)
    except KeyError:
        return None
    if model.incremental is None or not render.is_incremental(model, dialect):
        return None
    engine = session.engine
    schema = engine.build_schema
    held_columns = session.columns(schema, md.ROLLUP)
    if not held_columns:
        return None  # the first build creates it whole anyway
    if md.ROLLUP_DEFINITION not in held_columns:
        return "the daily rollup predates its definition check"
    rollup = engine.table(md.ROLLUP, schema)
    definition = exp.column(md.ROLLUP_DEFINITION)
    day = exp.column(ms.EVENT_DAY)
    (lowest, highest, last_day), = session.rows(
        exp.select(exp.Min(this=definition), exp.Max(this=definition.copy()), exp.Max(this=day)).from_(rollup)
    )
    if last_day is None:
        return None
    if lowest != highest or lowest != model.incremental.fingerprint:
        return "the event measures changed since the daily rollup was built"
    # The last day is re-read by every refresh: only the days before it must not move.
    last_day_start = exp.cast(exp.cast(exp.Literal.string(str(last_day)), exp.DataType.Type.DATE), exp.DataType.Type.TIMESTAMP)
    (held,), = session.rows(
        exp.select(exp.Sum(this=exp.column(ms.EVENTS_COUNTED))).from_(rollup).where(exp.LT(this=day.copy(), expression=last_day_start.copy()))
    )
    (counted,), = session.rows(
        exp.select(exp.Count(this=exp.Star()))
        .from_(engine.table(md.EVENTS, schema))
        .where(md.relevant_events(model.incremental.event_names))
        .where(exp.LT(this=exp.column("occurred_at"), expression=last_day_start))
    )
    if int(held or 0) != int(counted or 0):
        return f"events before {last_day} changed since the daily rollup was built (late or deleted events)"
    return None
