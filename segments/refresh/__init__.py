"""Incremental refresh: evaluate again only the users whose segments can have changed.

A full build (dbt) computes every user's measures, traits, flags and membership at one
``as_of``. Moving ``as_of`` from T0 to T1 changes a user's row only if

- one of the user's events arrived in ``(T0, T1]``, or crosses an edge of a window that
  moves with ``as_of`` (``occurred_at`` between the edge at T0 and the edge at T1), for
  the event names that window's measure reads: the user's **measures** are computed
  again from the user's events;
- a per-user value the rules compare with ``as_of`` (``signup_at``, a last-seen time,
  ``created_at`` for the universe) lies between the bound at T0 and the bound at T1, or
  a trait changed: the user's **flags** and **membership** are evaluated again.

Both sets are found by reading the compiled models' own trees: every comparison with
the ``as_of`` placeholder names the column and the bound that moves. A model whose
``as_of`` appears anywhere else, a changed project, events added before T0 (counted)
or a changed users table (fingerprinted) leave the decision to a full build. Traits
with window functions (quantiles rank every user) are computed again for everyone and
compared, so only users whose traits changed are flagged again.

The refresh runs the same queries as the dbt models, restricted to those users, in one
DuckDB transaction against the tables dbt built, the publish included (:func:`attempt`);
it costs in proportion to the users it touches, not to the events, but for reading
each table's user ids: finding a few hundred users among a million rows reads all their
ids (DuckDB has no lookup by key for a join: an ART index on ``user_id`` was not used,
measured), so a row a step has read is deleted later by its ``rowid``
(:meth:`BuildSchema.copy_rows`). A full build pays only for writing the small state row
(:func:`record`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from segments.compiler import models as md
from segments.compiler import sqlexpr as sx
from segments.engines.base import Session, stamp_every_row
from segments.refresh.build import FLAGGED, MEASURED, MEMBERS, BuildSchema, create_users, edge_users
from segments.refresh.edges import Edge, NotIncremental, edges
from segments.refresh.measures import refresh_measures
from segments.refresh.state import STATE, State, events_seen, events_upto, fingerprint, forget, inputs_fingerprint, read_state, record, write_state
from segments.refresh.traits import refresh_traits, source_edges

__all__ = [
    "FLAGGED", "MEASURED", "MEMBERS", "STATE", "Edge", "NotIncremental", "Outcome", "attempt", "edges", "events_seen",
    "events_upto", "forget", "record", "refresh",
]

_FLAGS, _TRAITED = "_refresh_flags", "_refresh_traited"


@dataclass(frozen=True)
class Outcome:
    """What a refresh did: users whose measures and whose flags were evaluated again."""

    as_of: dt.datetime
    previous_as_of: dt.datetime
    measured: int
    flagged: int


def refresh(session: Session, compiled: md.CompiledProject, as_of: dt.datetime) -> Outcome:
    """Bring the build schema from the last build's as_of to ``as_of``.

    Runs in the caller's transaction. The published tables are not touched: publish
    as after a full build.

    Raises:
        NotIncremental: a full build is needed (nothing was changed).
    """
    build = BuildSchema(session, compiled)
    state = read_state(build)
    if state is None:
        raise NotIncremental("no earlier build to continue")
    if state.fingerprint != fingerprint(compiled):
        raise NotIncremental("the compiled models changed")
    if as_of < state.as_of:
        raise NotIncremental("as_of is earlier than the last build's")
    if events_upto(session, state.as_of) != state.events_upto:
        raise NotIncremental("events up to the last build's as_of changed")
    inputs = inputs_fingerprint(build)
    if inputs != state.inputs:
        raise NotIncremental("the users or an uploaded list changed")
    built_at = build.rows(exp.select("as_of").from_(build.table(md.MEMBERSHIP)).limit(1))
    if built_at and built_at[0][0] != state.as_of:
        raise NotIncremental("the build schema was built again since")  # by dbt alone (Dagster)
    names = {model.name for model in compiled.models}
    measure_models = [n for n in (md.MEASURES, md.SEQUENCES) if n in names]
    if md.FLAGS not in names:
        raise NotIncremental("no segments")
    t0, t1 = state.as_of, as_of

    # who: users with an event on an edge of a measure's window (or new) ...
    measured_edges = [edge for name in measure_models for edge in edges(compiled.model(name), md.EVENTS)]
    # ... and users whose rules compare a value with a moving bound, or enter the universe
    flag_edges = source_edges(build, edges(compiled.model(md.FLAGS), md.BASE)) + edges(compiled.model(md.UNIVERSE), md.USERS)
    if edges(compiled.model(md.BASE), md.BASE):
        raise NotIncremental(f"{md.BASE} compares with as_of")

    measured = refresh_measures(build, measured_edges, t0, t1)
    universe_edges = edges(compiled.model(md.UNIVERSE), md.USERS)
    create_users(build, _TRAITED, [exp.select("user_id").from_(MEASURED), *edge_users(build, universe_edges, t0, t1)])
    traits_changed = refresh_traits(build, _TRAITED, t1)
    measured_users = exp.select("user_id").from_(MEASURED)
    changed = [traits_changed] if traits_changed is not None else []
    flagged = create_users(build, FLAGGED, [measured_users, *changed, *edge_users(build, flag_edges, t0, t1)])
    build.create_temp(_FLAGS, build.query(md.FLAGS, {md.BASE: build.only(md.BASE, FLAGGED, t1)}, t1))
    build.replace_rows(md.FLAGS, FLAGGED, exp.select("*").from_(_FLAGS))
    build.create_temp(MEMBERS, build.query(md.MEMBERSHIP, {md.FLAGS: exp.to_table(_FLAGS)}, t1))
    build.replace_rows(md.MEMBERSHIP, FLAGGED, exp.select("*").from_(MEMBERS))
    if t1 != t0:
        build.run(stamp_every_row(build.table(md.MEMBERSHIP), "as_of", sx.timestamp_literal(t1)))
    new_events = state.events_upto + events_upto(session, t1, since=t0)  # those up to T0 were checked above
    write_state(build, State(t1, state.fingerprint, new_events, inputs))
    return Outcome(t1, t0, measured, flagged)


def attempt(
    session: Session, compiled: md.CompiledProject, as_of: dt.datetime, log: Callable[[str], None] | None = None,
    then: Callable[[Outcome], None] | None = None,
) -> Outcome | None:
    """:func:`refresh` in one transaction; None (and nothing changed) when a full
    build is needed. ``then`` (the publish) runs in the same transaction: if it fails,
    the build schema stays where the published tables are, and one commit writes both."""
    if getattr(session, "con", None) is None or session.engine.dialect != "duckdb":
        if log is not None:
            log(f"{session.engine.target} builds in full")
        return None
    try:
        with session.transaction():  # rolled back when it raises, NotIncremental too
            outcome = refresh(session, compiled, as_of)
            if then is not None:
                then(outcome)
            return outcome
    except NotIncremental as why:
        if log is not None:
            log(str(why))
        return None
