"""The per-user event measures every segment and trait reads, deduplicated.

All measures of all specs become columns of one model that reads the events once
(``int_user_event_measures``); sequences add one more pass, over the follow-up
events only (``int_user_event_sequences``). Identical measures written in different
specs share one column: a column's name ends with a hash of the measure's canonical
form, so names are stable when other specs change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

from sqlglot import exp

from segments.compiler import predicates as pr
from segments.compiler import sqlexpr as sx
from segments.spec import model as m

#: Measures whose value on "no qualifying event" is 0 rather than missing.
ZERO_ON_NONE = ("count", "active_days", "sum")
#: sums add amounts as decimals to 6 places, then read as DOUBLE: the same value on
#: every engine in any order, and a refresh may add a change to an old sum exactly
#: (:mod:`segments.compiler.deltas`)
SUM_TYPE = "DECIMAL(38, 6)"


def canonical_filter(event_filter: m.EventFilter) -> m.EventFilter:
    """The same filter with its event names sorted and unique, so that
    ``[a, b]`` and ``[b, a]`` share a column."""
    return replace(event_filter, events=tuple(sorted(set(event_filter.events))))


def canonical(measure: m.Measure) -> m.Measure:
    return replace(measure, filter=canonical_filter(measure.filter))


def _digest(value: object) -> str:
    return hashlib.md5(repr(value).encode()).hexdigest()[:8]


def _slug(parts: tuple[str, ...], limit: int = 32) -> str:
    text = re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")
    return text[:limit].rstrip("_") or "events"


@dataclass(frozen=True)
class MeasureColumn:
    name: str
    measure: m.Measure

    @property
    def nullable(self) -> bool:
        """Missing when no event qualifies (avg, min, max, first/last_occurred)."""
        return self.measure.kind not in ZERO_ON_NONE


@dataclass(frozen=True)
class FollowupColumn:
    """How many follow-up events a user has after the anchor ``t0``."""

    name: str
    anchor: MeasureColumn  # last_occurred of the anchor filter: t0
    sequence: m.Sequence


class MeasureSet:
    """Registry of the distinct measures and sequences a compile needs."""

    def __init__(self) -> None:
        self._measures: dict[m.Measure, MeasureColumn] = {}
        self._followups: dict[tuple[m.Measure, m.Sequence], FollowupColumn] = {}

    def measure(self, measure: m.Measure) -> MeasureColumn:
        key = canonical(measure)
        if key not in self._measures:
            label = (key.property,) + key.filter.events if key.property else key.filter.events
            name = f"{key.kind}_{_slug(label)}_{_digest(key)}"
            self._measures[key] = MeasureColumn(name, key)
        return self._measures[key]

    def followups(self, anchor_filter: m.EventFilter, sequence: m.Sequence) -> FollowupColumn:
        anchor = self.measure(m.Measure("last_occurred", anchor_filter))
        # the count does not depend on followed/not followed: both share one column
        seq = replace(sequence, events=tuple(sorted(set(sequence.events))), followed=True)
        key = (anchor.measure, seq)
        if key not in self._followups:
            name = f"followups_{_slug(seq.events)}_{_digest(key)}"
            self._followups[key] = FollowupColumn(name, anchor, seq)
        return self._followups[key]

    @property
    def measures(self) -> list[MeasureColumn]:
        return sorted(self._measures.values(), key=lambda c: c.name)

    @property
    def followup_columns(self) -> list[FollowupColumn]:
        return sorted(self._followups.values(), key=lambda c: c.name)


class EventRowResolver:
    """Resolves property names to columns of an events row (inside FILTER)."""

    def __init__(self, catalog: m.Catalog, table: str | None = None):
        self.catalog = catalog
        self.table = table

    def property(self, name: str) -> pr.Value:
        return pr.Value(sx.col(name, self.table))

    def _not_here(self, what: str) -> pr.Value:
        raise ValueError(f"{what} conditions cannot appear inside an event's where")

    def attribute(self, name: str) -> pr.Value:
        return self._not_here("attribute")

    def trait(self, name: str) -> pr.Value:
        return self._not_here("trait")

    def event(self, condition: m.EventCondition, negate: bool) -> exp.Expression:
        raise ValueError("event conditions cannot appear inside an event's where")

    def segment(self, name: str) -> exp.Expression:
        raise ValueError("segment conditions cannot appear inside an event's where")


def event_names_match(names: tuple[str, ...], column: exp.Expression) -> exp.Expression:
    if len(names) == 1:
        return exp.EQ(this=column, expression=sx.literal(names[0]))
    return exp.In(this=column, expressions=[sx.literal(n) for n in names])


def filter_predicate(event_filter: m.EventFilter, resolver: EventRowResolver) -> exp.Expression:
    """Which event rows qualify: name, property condition, window."""
    table = resolver.table
    parts = [event_names_match(event_filter.events, sx.col("event_name", table))]
    if event_filter.where is not None:
        parts.append(sx.paren(pr.predicate(event_filter.where, resolver)))
    parts.append(pr.window(sx.col("occurred_at", table), event_filter.window))
    return sx.and_(*parts)


def counted_events(windows: list[m.Window | None], occurred: exp.Expression) -> exp.Expression | None:
    """The events one of ``windows`` holds (``occurred``: their time); None when one
    of them holds every event. The windows "within" a duration all end at as_of: the
    longest holds the others.

    >>> day, week = (m.WithinWindow(m.Duration(n, "d")) for n in (1, 7))
    >>> counted_events([day, week, day], exp.column("t")).sql("duckdb")
    't > $as_of - INTERVAL 7 DAY AND t <= $as_of'
    >>> counted_events([day, None], exp.column("t")) is None
    True
    """
    if any(window is None for window in windows):
        return None
    within = [w for w in windows if isinstance(w, m.WithinWindow)]
    distinct = [max(within, key=lambda w: w.duration.seconds)] if within else []
    distinct += [w for w in dict.fromkeys(windows) if not isinstance(w, m.WithinWindow)]
    held = [pr.window(occurred.copy(), w) for w in distinct]
    return held[0] if len(held) == 1 else sx.or_(*[sx.paren(h) for h in held])


def aggregate(column: MeasureColumn, resolver: EventRowResolver) -> exp.Expression:
    """The aggregate computing one measure column over a user's event rows."""
    measure = column.measure
    table = resolver.table
    occurred = sx.col("occurred_at", table)
    kind = measure.kind
    if kind == "count":
        agg: exp.Expression = exp.Count(this=exp.Star())
    elif kind == "active_days":
        day = exp.cast(occurred, exp.DataType.Type.DATE)
        agg = exp.Count(this=exp.Distinct(expressions=[day]))
    elif kind == "sum":
        condition = filter_predicate(measure.filter, resolver)
        return exp.cast(exact_sum(sx.col(measure.property or "", table), condition), exp.DataType.Type.DOUBLE)
    elif kind in ("avg", "min", "max"):
        functions = {"avg": exp.Avg, "min": exp.Min, "max": exp.Max}
        agg = functions[kind](this=sx.col(measure.property or "", table))
    elif kind == "first_occurred":
        agg = exp.Min(this=occurred)
    elif kind == "last_occurred":
        agg = exp.Max(this=occurred)
    else:
        raise ValueError(f"unknown measure {kind!r}")
    condition = filter_predicate(measure.filter, resolver)
    return exp.Filter(this=agg, expression=exp.Where(this=condition))


def exact_sum(value: exp.Expression, condition: exp.Expression) -> exp.Expression:
    """``value`` summed as a decimal (:data:`SUM_TYPE`) over the rows ``condition`` keeps.

    >>> exact_sum(exp.column("amount"), exp.column("ok")).sql("duckdb")
    'SUM(CAST(amount AS DECIMAL(38, 6))) FILTER(WHERE ok)'
    """
    return exp.Filter(this=exp.Sum(this=exp.cast(value, exp.DataType.build(SUM_TYPE))), expression=exp.Where(this=condition))


def followup_count(column: FollowupColumn, resolver: EventRowResolver, anchor_table: str) -> exp.Expression:
    """Follow-up events in ``(t0, t0 + within]`` (or ``(t0, as_of]``), counted."""
    seq = column.sequence
    table = resolver.table
    occurred = sx.col("occurred_at", table)
    t0 = sx.col(column.anchor.name, anchor_table)
    parts = [event_names_match(seq.events, sx.col("event_name", table))]
    if seq.where is not None:
        parts.append(sx.paren(pr.predicate(seq.where, resolver)))
    parts.append(exp.GT(this=occurred, expression=t0))
    if seq.within is not None:
        parts.append(exp.LTE(this=occurred.copy(), expression=sx.shift(t0.copy(), seq.within, +1)))
    return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=sx.and_(*parts)))


# ---------------------------------------------------------------------------
# One pass over the events
# ---------------------------------------------------------------------------
#
# Every measure is a FILTERed aggregate of one GROUP BY user_id over the events that
# some measure reads: one scan, one hash table. The exception is ``active_days``:
# COUNT(DISTINCT day) keeps a set per user and costs more than all other measures
# together, so the active-days measures come from a narrow scan of their own events,
# grouped by (user, day) first, which is a plain count per user after that.

#: The most aggregates one scan computes. DuckDB's hash aggregate costs per row in
#: proportion to the width of its states: measured on 21M events and 1M users, 23
#: aggregates in one GROUP BY cost 3.5x a plain count, 128 cost 50x, while 128 split
#: into scans of a few event names each cost 12x. Measures are grouped by the events
#: they read, and a group that would exceed this starts another scan.
MAX_AGGREGATES_PER_SCAN = 24

#: The longest window of a recent measure. Recent measures and the others (all time,
#: longer or dated windows) are computed in separate scans: the recent ones' scan reads
#: only the events of their longest window (on time-ordered events, skipping the blocks
#: before it), and the other scan keeps only the events of the names it reads, each
#: with fewer aggregates. Measured on the benchmark's 30 segments (a year of events; 15
#: measures of at most 90 days, 8 of longer reach), the profile's 512MB: the model took
#: 4.2-4.6 s in two scans against 5.7-7.2 s in one, 3.4-4.8 s in dbt against 4.7-5.1 s.
RECENT = m.Duration(90, "d")


def is_recent(column: MeasureColumn) -> bool:
    """Whether a measure's window ends at as_of and starts at most :data:`RECENT` before.

    >>> count = lambda days: MeasureColumn("c", m.Measure("count", m.EventFilter(("a",), window=m.WithinWindow(m.Duration(days, "d")))))
    >>> is_recent(count(90)), is_recent(count(91))
    (True, False)
    """
    window = column.measure.filter.window
    return isinstance(window, m.WithinWindow) and window.duration.seconds <= RECENT.seconds


def scan_groups(columns: list[MeasureColumn], limit: int = MAX_AGGREGATES_PER_SCAN) -> list[list[MeasureColumn]]:
    """``columns`` in scans of at most ``limit`` aggregates: recent measures apart from
    the others (:data:`RECENT`), and measures of the same events together, so that each
    scan reads as few events as it can.

    >>> def count(name, days):
    ...     return MeasureColumn(f"{name}_{days}", m.Measure("count", m.EventFilter((name,), window=m.WithinWindow(m.Duration(days, "d")))))
    >>> cols = [count("a", d) for d in range(1, 4)] + [count("b", d) for d in range(1, 3)]
    >>> [[c.name for c in group] for group in scan_groups(cols, limit=3)]
    [['a_1', 'a_2', 'a_3'], ['b_1', 'b_2']]
    >>> [[c.name for c in group] for group in scan_groups(cols)]
    [['a_1', 'a_2', 'a_3', 'b_1', 'b_2']]
    >>> [[c.name for c in group] for group in scan_groups([count("a", 7), count("a", 365), count("b", 30)])]
    [['a_365'], ['a_7', 'b_30']]
    """
    groups: list[list[MeasureColumn]] = []
    for recent in (False, True):
        groups += _by_events([c for c in columns if is_recent(c) == recent], limit)
    return groups


def _by_events(columns: list[MeasureColumn], limit: int) -> list[list[MeasureColumn]]:
    by_events: dict[tuple[str, ...], list[MeasureColumn]] = {}
    for column in columns:
        by_events.setdefault(column.measure.filter.events, []).append(column)
    groups: list[list[MeasureColumn]] = [[]]
    for events in sorted(by_events):
        same = by_events[events]
        if groups[-1] and len(groups[-1]) + len(same) > limit:
            groups.append([])
        for column in same:
            if len(groups[-1]) == limit:
                groups.append([])
            groups[-1].append(column)
    return [group for group in groups if group]


#: The columns of the active-days scan: the day of an event, and per measure
#: whether some event of that user and day qualified.
EVENT_DAY = "event_day"


def day_of(occurred: exp.Expression, timezone: str | None = None) -> exp.Expression:
    """The calendar day of an event (the unit of ``active_days``) in ``timezone``.

    ``occurred`` is a naive UTC instant. With no ``timezone`` (UTC) the day is its
    date; otherwise it is converted to the zone's wall clock first, a node every
    engine's dialect spells (see :mod:`segments.compiler.dialects`). The zone name is
    the catalog's, already checked against the time zone database, and goes into the
    SQL only as a string literal.

    >>> day_of(exp.column("occurred_at")).sql("duckdb")
    'CAST(occurred_at AS DATE)'
    >>> day_of(exp.column("occurred_at"), "Asia/Kolkata").sql("spark")
    "CAST(CONVERT_TIMEZONE('UTC', 'Asia/Kolkata', occurred_at) AS DATE)"
    """
    if timezone is None:
        return exp.cast(occurred, exp.DataType.Type.DATE)
    local = exp.ConvertTimezone(
        source_tz=exp.Literal.string("UTC"), target_tz=exp.Literal.string(timezone), timestamp=occurred
    )
    return exp.cast(local, exp.DataType.Type.DATE)


def _day_flag(column: MeasureColumn) -> str:
    return f"on_{column.name}"


def active_days_query(columns: list[MeasureColumn], events: exp.Expression, resolver: EventRowResolver) -> exp.Select:
    """Per user, each active-days measure of ``columns``: days with a qualifying event.

    ``events`` is the relation of the events (a table or a subquery). The inner
    GROUP BY (user, day) keeps one row per active day and a 0/1 per measure; the outer
    one counts them, so no aggregate keeps a set of days.
    """
    qualify = {c.name: filter_predicate(c.measure.filter, resolver) for c in columns}
    one, zero = exp.Literal.number(1), exp.Literal.number(0)
    days = (
        exp.select(
            "user_id",
            exp.alias_(day_of(sx.col("occurred_at"), resolver.catalog.timezone), EVENT_DAY),
            *[
                exp.alias_(exp.Max(this=exp.Case(ifs=[exp.If(this=qualify[c.name], true=one.copy())], default=zero.copy())), _day_flag(c))
                for c in columns
            ],
        )
        .from_(events)
        .where(exp.Not(this=exp.Is(this=sx.col("user_id"), expression=exp.null())))
        .where(exp.LTE(this=sx.col("occurred_at"), expression=sx.as_of()))
        .where(sx.or_(*[sx.paren(q.copy()) for q in qualify.values()]))
        .group_by("user_id", day_of(sx.col("occurred_at"), resolver.catalog.timezone))
    )
    counts = [
        exp.alias_(
            exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=exp.EQ(this=sx.col(_day_flag(c)), expression=one.copy()))),
            c.name,
        )
        for c in columns
    ]
    return exp.select("user_id", *counts).from_(exp.Subquery(this=days, alias=exp.TableAlias(this=sx.ident("days")))).group_by("user_id")
