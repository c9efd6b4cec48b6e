"""Measures and follow-ups of a refresh: the changed events read once, each measure
moved by them (:mod:`segments.compiler.deltas`), history only where a measure needs it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlglot import exp

from segments.compiler import deltas
from segments.compiler import measures as ms
from segments.compiler import models as md
from segments.compiler import sqlexpr as sx
from segments.refresh.build import (
    MEASURED, BuildSchema, at, create_users, event_names_in, user_in,
)
from segments.refresh.edges import Edge, NotIncremental, edges
from segments.spec import model as m

#: Temporary tables of the measures' refresh.
_CHANGED, _CHANGED_DAYS, _OLD, _OLD_SEQUENCES = "_refresh_changed", "_refresh_changed_days", "_refresh_old", "_refresh_old_sequences"
_DELTA, _DAYS, _HISTORY_USERS, _HISTORY = "_refresh_delta", "_refresh_days", "_refresh_history_users", "_refresh_history"
_ANCHORS, _FOLLOWUPS, _FOLLOWUP_HISTORY = "_refresh_anchors", "_refresh_followups", "_refresh_followup_history"
_NEW = "_refresh_new"  # the measured users' new measures


def changed_events(build: BuildSchema, found: Iterable[Edge], t0: dt.datetime, t1: dt.datetime, widen: dt.timedelta | None = None) -> exp.Query:
    """The events on any of the edges, each once: the edges' time ranges merged into
    disjoint ones, one range scan each (a filter the scan applies, and skips blocks
    of time-ordered events with)."""
    found = list(found)
    if not found:
        return exp.select("*").from_(build.relation(md.EVENTS, t1)).where(exp.false())
    if any(edge.column != "occurred_at" for edge in found):
        raise NotIncremental("a measure compares as_of with another column than occurred_at")
    ends = build.rows(exp.select(*[at(edge.bound, t) for edge in found for t in (t0, t1)]))[0]
    margin = widen or dt.timedelta(0)
    ranges = sorted(
        ((ends[2 * i] - margin, ends[2 * i + 1] + margin, edge.events) for i, edge in enumerate(found)),
        key=lambda r: (r[0], r[1]),
    )
    merged: list[list] = []
    for low, high, names in ranges:
        if merged and low <= merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], high)
            last[2] = None if last[2] is None or names is None else tuple(sorted(set(last[2]) | set(names)))
        else:
            merged.append([low, high, names])
    scans: list[exp.Query] = []
    for low, high, names in merged:
        condition = exp.Between(this=exp.column("occurred_at"), low=sx.timestamp_literal(low), high=sx.timestamp_literal(high))
        if names is not None:
            condition = sx.and_(condition, event_names_in(names))
        condition = sx.and_(condition, exp.Not(this=exp.Is(this=exp.column("user_id"), expression=exp.null())))
        scans.append(exp.select("*").from_(build.relation(md.EVENTS, t1)).where(condition))
    union = scans[0]
    for scan in scans[1:]:
        union = exp.union(union, scan, distinct=False)
    return union


def measure_edges(column: ms.MeasureColumn, resolver: ms.EventRowResolver) -> list[Edge]:
    shaped = sx.and_(ms.filter_predicate(column.measure.filter, resolver), exp.LTE(this=sx.col("occurred_at"), expression=sx.as_of()))
    return edges(md.Model(column.name, md.INTERMEDIATE, exp.select("*").from_("events").where(shaped), ""), md.EVENTS)


def refresh_measures(build: BuildSchema, found: list[Edge], t0: dt.datetime, t1: dt.datetime) -> int:
    """Move the measures (and follow-ups) of the users with changed events from T0 to
    T1 (see :mod:`segments.compiler.deltas`); how many users that is."""
    compiled = build.compiled
    columns = compiled.measures.measures
    build.create_temp(_CHANGED, changed_events(build, found, t0, t1))
    measured = create_users(build, MEASURED, [exp.select("user_id").from_(_CHANGED)])
    if not columns:
        return measured
    resolver = ms.EventRowResolver(compiled.catalog)
    build.copy_rows(_OLD, md.MEASURES, MEASURED)
    if md.SEQUENCES in {model.name for model in compiled.models}:
        build.copy_rows(_OLD_SEQUENCES, md.SEQUENCES, MEASURED)
    build.create_temp(_DELTA, exp.select("user_id", *deltas.changed_aggregates(columns, resolver, t0, t1)).from_(_CHANGED).group_by("user_id"))

    tables = [(_OLD, "o")]  # joined to the changed events' aggregates
    days = deltas.day_ranges(columns)
    if days:
        tables.append((_DAYS, "dd"))
        # whole days around each edge: a day counts once, whichever of its events qualify
        day_edges = [edge for column in days for edge in measure_edges(column, resolver)]
        changed_days = changed_events(build, day_edges, t0, t1, widen=dt.timedelta(days=1))
        build.create_temp(_CHANGED_DAYS, exp.select("*").from_(exp.Subquery(this=changed_days)).where(user_in(MEASURED)))
        build.create_temp(_DAYS, deltas.active_days_change(days, exp.to_table(_CHANGED_DAYS), resolver, t0, t1, compiled.catalog.timezone))

    # history, read per reason: a sum too large to move exactly is rare (usually no scan
    # at all); the rest reads only as far back as their windows reach
    groups = [
        [c for c in columns if deltas.needs_history(c) == "large"],
        [c for c in columns if deltas.needs_history(c) in ("moved", "left")],
    ]
    source: dict[str, tuple[str, str]] = {}  # history column -> (its users, its values)
    for i, group in enumerate(g for g in groups if g):
        # only the columns some user needs history for: a scan reads as far back as the
        # longest of their windows (one minute on, the carts leaving a 60-day window
        # need history, rarely the purchases leaving a 180-day one)
        group = columns_needing_history(build, group)
        if not group:
            continue  # no scan at all
        users_table, values_table = f"{_HISTORY_USERS}_{i}", f"{_HISTORY}_{i}"
        build.create_temp(users_table, users_needing_history(group))
        names = sorted({n for c in group for n in c.measure.filter.events})
        values = [exp.alias_(deltas._at(ms.aggregate(c, resolver), t1), c.name) for c in group]
        scan = (
            exp.select("user_id", *values).from_(build.relation(md.EVENTS, t1))
            .where(sx.and_(event_names_in(tuple(names)), user_in(users_table)))
            .where(exp.LTE(this=exp.column("occurred_at"), expression=sx.timestamp_literal(t1)))
            .group_by("user_id")
        )
        since = _reaches_back_to(group, t1)
        if since is not None:  # time-ordered events skip the blocks before it
            scan = scan.where(exp.GT(this=exp.column("occurred_at"), expression=sx.timestamp_literal(since)))
        build.create_temp(values_table, scan)
        source |= {c.name: (f"hu{i}", f"h{i}") for c in group}
        tables += [(users_table, f"hu{i}"), (values_table, f"h{i}")]

    selected: list[exp.Expression] = [sx.col("user_id", "d")]
    for column in columns:
        value = deltas.merged_value(column, "o", "d", "dd", t1)
        if column.name in source:
            users_alias, values_alias = source[column.name]
            from_history = exp.Not(this=exp.Is(this=sx.col("user_id", users_alias), expression=exp.null()))
            value = exp.Case(ifs=[exp.If(this=from_history, true=sx.col(column.name, values_alias))], default=value)
        selected.append(exp.alias_(value, column.name))
    merged = exp.select(*selected).from_(exp.to_table(_DELTA).as_("d"))
    for table, alias in tables:
        merged = merged.join(exp.to_table(table).as_(alias), on=exp.EQ(this=sx.col("user_id", alias), expression=sx.col("user_id", "d")), join_type="left")
    # a user whose only events left every measure keeps a row of zeros, as a full build would
    build.create_temp(_NEW, merged)  # the follow-ups read them here, not among a million rows
    build.replace_rows(md.MEASURES, MEASURED, exp.select("*").from_(_NEW), copied=_OLD)
    if compiled.measures.followup_columns:
        refresh_followups(build, t0, t1)
    return measured


def _changed_and_old(*selected: exp.Expression) -> exp.Select:
    """``selected`` over the changed events' aggregates ``d``, each with its old row ``o``."""
    return (
        exp.select(*selected).from_(exp.to_table(_DELTA).as_("d"))
        .join(exp.to_table(_OLD).as_("o"), on=exp.EQ(this=sx.col("user_id", "o"), expression=sx.col("user_id", "d")), join_type="left")
    )


def users_needing_history(columns: list[ms.MeasureColumn]) -> exp.Select:
    """The users whose ``columns`` are read again from history."""
    needed = deltas.history_users(columns, "d", "o")
    return _changed_and_old(sx.col("user_id", "d")).where(needed if needed is not None else exp.false())


def columns_needing_history(build: BuildSchema, columns: list[ms.MeasureColumn]) -> list[ms.MeasureColumn]:
    """Those of ``columns`` some user is sent to history for (one count each, in one
    statement over the changed users' aggregates)."""
    conditions = [deltas.history_users([c], "d", "o") for c in columns]
    counts = build.rows(_changed_and_old(*[sx.count_if(c if c is not None else exp.false()) for c in conditions]))[0]
    return [c for c, count in zip(columns, counts) if count]


def _reaches_back_to(columns: list[ms.MeasureColumn], t1: dt.datetime) -> dt.datetime | None:
    """The earliest event any of ``columns`` reads at ``t1``, when each has a sliding
    window (``within``); else None (all of history)."""
    starts = []
    for column in columns:
        window = column.measure.filter.window
        if not isinstance(window, m.WithinWindow):
            return None
        starts.append(t1 - dt.timedelta(seconds=window.duration.seconds))
    return min(starts, default=None)


def refresh_followups(build: BuildSchema, t0: dt.datetime, t1: dt.datetime) -> None:
    compiled = build.compiled
    followups = compiled.measures.followup_columns
    anchors = sorted({c.anchor.name for c in followups})
    anchor_rows = exp.select(
        sx.col("user_id", "u"),
        *[exp.alias_(sx.col(a, "n"), f"{a}__now") for a in anchors],
        *[exp.alias_(sx.col(a, "o"), f"{a}__then") for a in anchors],
    ).from_(exp.to_table(MEASURED).as_("u"))
    for table, alias in ((exp.to_table(_NEW), "n"), (exp.to_table(_OLD), "o")):
        anchor_rows = anchor_rows.join(table.as_(alias), on=exp.EQ(this=sx.col("user_id", alias), expression=sx.col("user_id", "u")), join_type="left")
    build.create_temp(_ANCHORS, anchor_rows)

    events = ms.EventRowResolver(compiled.catalog, table="c")

    def now_of(c: ms.FollowupColumn) -> exp.Expression:
        return sx.col(f"{c.anchor.name}__now", "x")

    def then_of(c: ms.FollowupColumn) -> exp.Expression:
        return sx.col(f"{c.anchor.name}__then", "x")

    parts: list[exp.Expression] = []
    for c in followups:
        since = sx.count_if(deltas.followup_qualifies(c, events, now_of(c), t1))
        before = sx.count_if(deltas.followup_qualifies(c, events, then_of(c), t0))
        parts += [exp.alias_(since, f"{c.name}__since"), exp.alias_(exp.Sub(this=since.copy(), expression=before), f"{c.name}__same")]
    changed = (
        exp.select(sx.col("user_id", "x"), *parts).from_(exp.to_table(_ANCHORS).as_("x"))
        .join(exp.to_table(_CHANGED).as_("c"), on=exp.EQ(this=sx.col("user_id", "c"), expression=sx.col("user_id", "x")), join_type="left")
        .group_by(sx.col("user_id", "x"))
    )
    build.create_temp(_FOLLOWUPS, changed)

    # a new anchor from before T0 (an upper window edge moved): its follow-ups may be old events
    moved = [
        sx.and_(
            exp.Not(this=exp.Is(this=now_of(c), expression=exp.null())),
            exp.NullSafeNEQ(this=now_of(c), expression=then_of(c)),
            exp.LTE(this=now_of(c), expression=sx.timestamp_literal(t0)),
        )
        for c in followups
    ]
    history_users = exp.select(sx.col("user_id", "x")).from_(exp.to_table(_ANCHORS).as_("x")).where(sx.or_(*moved))
    build.create_temp(_HISTORY_USERS, history_users)
    read = bool(build.count(_HISTORY_USERS))
    names = sorted({n for c in followups for n in c.sequence.events})
    history = exp.select(sx.col("user_id", "x"), *[exp.alias_(sx.count_if(deltas.followup_qualifies(c, events, now_of(c), t1)), c.name) for c in followups])
    history = (
        history.from_(exp.to_table(_ANCHORS).as_("x"))
        .join(exp.Subquery(this=exp.select("*").from_(build.relation(md.EVENTS, t1)).where(
            sx.and_(event_names_in(tuple(names)), user_in(_HISTORY_USERS)) if read else exp.false()), alias=exp.TableAlias(this=sx.ident("c"))),
            on=exp.EQ(this=sx.col("user_id", "c"), expression=sx.col("user_id", "x")))
        .group_by(sx.col("user_id", "x"))
    )
    build.create_temp(_FOLLOWUP_HISTORY, history)

    values = [
        exp.alias_(
            deltas.followup_value(
                c, sx.col(c.name, "os"), sx.col(f"{c.name}__same", "f"), sx.col(f"{c.name}__since", "f"),
                then_of(c), now_of(c), t0, exp.Coalesce(this=sx.col(c.name, "h"), expressions=[exp.Literal.number(0)]),
            ),
            c.name,
        )
        for c in followups
    ]
    rows = exp.select(sx.col("user_id", "x"), *values).from_(exp.to_table(_ANCHORS).as_("x"))
    for table, alias in ((_FOLLOWUPS, "f"), (_OLD_SEQUENCES, "os"), (_FOLLOWUP_HISTORY, "h")):
        rows = rows.join(exp.to_table(table).as_(alias), on=exp.EQ(this=sx.col("user_id", alias), expression=sx.col("user_id", "x")), join_type="left")
    rows = rows.where(sx.or_(*[exp.Not(this=exp.Is(this=now_of(c), expression=exp.null())) for c in followups]))
    build.replace_rows(md.SEQUENCES, MEASURED, rows, copied=_OLD_SEQUENCES)
