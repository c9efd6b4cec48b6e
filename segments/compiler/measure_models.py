"""The measure models: every measure of every spec in one pass over the events
(``int_user_event_measures``), and the sequences' follow-ups
(``int_user_event_sequences``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from segments import keys
from segments.compiler import measures as ms
from segments.compiler import predicates as pr
from segments.compiler import sqlexpr as sx
from segments.spec import model as m
from segments.compiler.describe import describe_measure, describe_sequence
from segments.compiler.graph import (
    aliased, ColumnDoc, EVENTS, INTERMEDIATE, MEASURES, Model, SEQUENCES, UNIVERSE,
)


def _not_null(column: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=column, expression=exp.null()))


def measure_models(catalog: m.Catalog, measure_set: ms.MeasureSet, counted_only: bool = False) -> list[Model]:
    """The measures (one pass over the events) and the sequences' follow-ups.

    A scan of measures that all have a window reads only the events some window
    holds, which lets a scan of time-ordered events skip the blocks before them (and a
    build of many segments, whose measures split into several scans, skip most of the
    history in each). A user whose events are all outside the windows then has no row,
    which reads as a row of zeros (:func:`measure_value`, the base's COALESCE); the
    refresh adds a row when such a user's new events arrive.

    ``counted_only`` (a compile for one query, as a preview): the follow-ups of a
    sequence too, from the start of their anchors' windows; a build's follow-ups keep a
    row for every user with an anchor, which its refresh maintains.
    """
    out: list[Model] = []
    columns = measure_set.measures
    if columns:
        out.append(_measures_model(catalog, columns))
    followups = measure_set.followup_columns
    if followups:
        events = ms.EventRowResolver(catalog, table="e")
        names = sorted({n for c in followups for n in c.sequence.events})
        anchors = sorted({c.anchor.name for c in followups})
        query = (
            exp.select(sx.col("user_id", "e"), *[exp.alias_(ms.followup_count(c, events, "m"), c.name) for c in followups])
            .from_(aliased(sx.model_ref(EVENTS), "e"))
            .join(aliased(sx.model_ref(MEASURES), "m"), on=exp.EQ(this=sx.col("user_id", "m"), expression=sx.col("user_id", "e")))
            .where(ms.event_names_match(tuple(names), sx.col("event_name", "e")))
            .where(exp.LTE(this=sx.col("occurred_at", "e"), expression=sx.as_of()))
            .where(sx.or_(*[_not_null(sx.col(a, "m")) for a in anchors]))
            .group_by(sx.col("user_id", "e"))
        )
        # a follow-up comes after its anchor, which is in the anchor's window: after
        # the window's start
        starts = [pr.window_start(sx.col("occurred_at", "e"), c.anchor.measure.filter.window) for c in followups]
        if counted_only and all(start is not None for start in starts):
            query = query.where(sx.or_(*dict.fromkeys(starts)))
        # keys unique by construction (GROUP BY user_id) carry no test: a test costs a
        # dbt node and a scan; the users' key is tested once, on stg_users
        docs = [ColumnDoc("user_id", "A user with an anchor event and a candidate follow-up.")]
        docs += [ColumnDoc(c.name, f"Follow-up events after {c.anchor.name}: {describe_sequence(c.sequence)}.") for c in followups]
        out.append(Model(
            SEQUENCES, INTERMEDIATE, query,
            "Follow-up events after each sequence's anchor (its latest qualifying event), in one pass.",
            columns=docs,
        ))
    return out


def event_names(columns: list[ms.MeasureColumn]) -> list[str]:
    return sorted({n for c in columns for n in c.measure.filter.events})


def relevant_events(names: Iterable[str]) -> exp.Expression:
    """The events some measure reads (``names``). An event without a user belongs to
    no user of the universe."""
    return sx.and_(ms.event_names_match(tuple(names), sx.col("event_name")), _not_null(sx.col("user_id")))


def _measures_model(catalog: m.Catalog, columns: list[ms.MeasureColumn]) -> Model:
    """Every measure of every spec and trait from GROUP BY user_id scans of the events
    they read (recent windows apart from the others, and more where there are many
    measures: :func:`.measures.scan_groups`);
    active days from a narrow scan of their own (see :mod:`.measures`); each scan only
    of the events its measures' windows hold."""
    resolver = ms.EventRowResolver(catalog)
    days = [c for c in columns if c.measure.kind == "active_days"]
    parts: list[tuple[str, exp.Query, list[ms.MeasureColumn], bool]] = []  # (alias, scan, measures, windowed)
    for index, group in enumerate(ms.scan_groups([c for c in columns if c.measure.kind != "active_days"])):
        scan = (
            exp.select("user_id", *[exp.alias_(ms.aggregate(c, resolver), c.name) for c in group])
            .from_(sx.model_ref(EVENTS))
            .where(relevant_events(event_names(group)))
            .where(exp.LTE(this=sx.col("occurred_at"), expression=sx.as_of()))
            .group_by("user_id")
        )
        counted = ms.counted_events([c.measure.filter.window for c in group], sx.col("occurred_at"))
        if counted is not None:
            scan = scan.where(counted)
        parts.append((f"e{index}", scan, group, counted is not None))
    if days:
        parts.append(("d", ms.active_days_query(days, sx.model_ref(EVENTS), resolver), days, True))
    if len(parts) == 1:
        query: exp.Query = parts[0][1]
        users = "A user with at least one relevant event."
    else:
        # one scan holds every user with a relevant event when it reads every event
        # name (the active days read no others) in all time; else the universe holds
        # them all
        first_reads_all = (
            len(parts) == 2 and days and not parts[0][3] and set(event_names(parts[0][2])) >= set(event_names(columns))
        )
        if first_reads_all:
            driver, joined = exp.Subquery(this=parts[0][1], alias=exp.TableAlias(this=sx.ident("e0"))), parts[1:]
            key, users = sx.col("user_id", "e0"), "A user with at least one relevant event."
        else:
            driver, joined = aliased(sx.model_ref(UNIVERSE), "u"), parts
            key, users = sx.col("user_id", "u"), "A user of the universe."
        source = {c.name: alias for alias, _, group, _ in parts for c in group}
        query = exp.select(key.copy(), *[sx.col(c.name, source[c.name]) for c in columns]).from_(driver)
        for alias, part, _, _ in joined:
            query = query.join(
                exp.Subquery(this=part, alias=exp.TableAlias(this=sx.ident(alias))),
                on=exp.EQ(this=sx.col("user_id", alias), expression=key.copy()), join_type="left",
            )
    docs = [ColumnDoc("user_id", users)]
    docs += [ColumnDoc(c.name, describe_measure(c.measure)) for c in columns]
    return Model(
        MEASURES, INTERMEDIATE, query,
        "Every event measure of every segment and trait, in as few passes over the events as they allow.",
        columns=docs,
    )


def measure_value(column: ms.MeasureColumn, table: str | None) -> exp.Expression:
    """A measure as users see it: 0 rather than missing where nothing qualified."""
    value = sx.col(column.name, table)
    if column.measure.kind in ms.ZERO_ON_NONE:
        return exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
    return value
