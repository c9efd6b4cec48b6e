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
    elif kind in ("sum", "avg", "min", "max"):
        functions = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}
        agg = functions[kind](this=sx.col(measure.property or "", table))
    elif kind == "first_occurred":
        agg = exp.Min(this=occurred)
    elif kind == "last_occurred":
        agg = exp.Max(this=occurred)
    else:
        raise ValueError(f"unknown measure {kind!r}")
    condition = filter_predicate(measure.filter, resolver)
    return exp.Filter(this=agg, expression=exp.Where(this=condition))


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
# Daily rollups: what lets a refresh read one new day of events, not the history
# ---------------------------------------------------------------------------
#
# A "part" is, per event filter (names and property condition, without the window),
# a count or a value its measures need. The rollup (int_user_daily_events) holds the
# parts of each user's UTC day, and a refresh extends it with the new days only. A
# measure adds up rollup rows for the days its window covers whole, and the parts of
# single events on the few days a window edge, or as_of itself, falls on ("edge
# days"). On any other day a window predicate has the same value for every instant of
# the day, so evaluating it at the day's start is exact: incremental and full builds
# give the same numbers, at any as_of.

#: Parts per measure kind: (part kind, aggregate over events of a day, aggregate over days).
_PARTS: dict[str, tuple[str, ...]] = {
    "count": ("n",),
    "active_days": ("n",),
    "sum": ("sum",),
    "avg": ("sum", "nn"),
    "min": ("min",),
    "max": ("max",),
    "first_occurred": ("first",),
    "last_occurred": ("last",),
}
#: How a part of several events (or days) combines.
_COMBINE: dict[str, type[exp.AggFunc]] = {
    "n": exp.Sum, "nn": exp.Sum, "sum": exp.Sum, "min": exp.Min, "max": exp.Max, "first": exp.Min, "last": exp.Max,
}
EVENT_DAY, AT, EVENTS_COUNTED, EDGE = "event_day", "at", "n_events", "is_edge_day"


@dataclass(frozen=True)
class Part:
    """One rollup column: a part of kind ``kind`` of the events ``event_filter`` selects."""

    name: str
    kind: str
    event_filter: m.EventFilter  # window always None
    property: str | None = None


def _unwindowed(event_filter: m.EventFilter) -> m.EventFilter:
    return replace(canonical_filter(event_filter), window=None)


def part(kind: str, measure: m.Measure) -> Part:
    """The rollup column of ``kind`` a measure reads (shared by every measure that needs it).

    >>> f = m.EventFilter(("purchase",), window=m.WithinWindow(m.Duration(30, "d")))
    >>> part("n", m.Measure("count", f)).name
    'n_purchase_e6f66e24'
    """
    event_filter = _unwindowed(measure.filter)
    prop = measure.property if kind in ("sum", "nn", "min", "max") else None
    label = ((prop,) if prop else ()) + event_filter.events
    return Part(f"{kind}_{_slug(label)}_{_digest((kind, event_filter, prop))}", kind, event_filter, prop)


def parts(columns: list[MeasureColumn]) -> list[Part]:
    """Every rollup column the measures need, each once, in name order."""
    found = {p.name: p for c in columns for p in (part(k, c.measure) for k in _PARTS[c.measure.kind])}
    return [found[name] for name in sorted(found)]


def _qualifies(item: Part, resolver: EventRowResolver) -> exp.Expression:
    return sx.and_(*[
        event_names_match(item.event_filter.events, sx.col("event_name", resolver.table)),
        *([sx.paren(pr.predicate(item.event_filter.where, resolver))] if item.event_filter.where is not None else []),
    ])


def _part_value(item: Part, table: str | None) -> exp.Expression:
    if item.kind in ("first", "last"):
        return sx.col("occurred_at", table)
    return sx.col(item.property or "", table)


def part_of_event(item: Part, resolver: EventRowResolver) -> exp.Expression:
    """A part's value for one event row (an edge day's): 1/0, or the value when the
    event qualifies; summing these over a day gives :func:`part_of_day`."""
    qualifies = _qualifies(item, resolver)
    one, zero = exp.Literal.number(1), exp.Literal.number(0)
    if item.kind == "n":
        return _case(qualifies, one, zero)
    if item.kind == "nn":
        present = exp.Not(this=exp.Is(this=_part_value(item, resolver.table), expression=exp.null()))
        return _case(sx.and_(qualifies, present), one, zero)
    return _case(qualifies, _part_value(item, resolver.table))


def _case(condition: exp.Expression, then: exp.Expression, otherwise: exp.Expression | None = None) -> exp.Case:
    # CASE rather than IF: Spark's IF takes exactly three arguments
    return exp.Case(ifs=[exp.If(this=condition, true=then)], default=otherwise)


def part_of_day(item: Part, resolver: EventRowResolver) -> exp.Expression:
    """A part over the events of a user's day, as the rollup holds it."""
    value: exp.Expression
    if item.kind == "n":
        value = exp.Count(this=exp.Star())
    elif item.kind == "nn":
        value = exp.Count(this=_part_value(item, resolver.table))
    else:
        value = _COMBINE[item.kind](this=_part_value(item, resolver.table))
    return exp.Filter(this=value, expression=exp.Where(this=_qualifies(item, resolver)))


def combine(item: Part) -> exp.Expression:
    """A part over several rows of parts (days, or edge-day events)."""
    return _COMBINE[item.kind](this=sx.col(item.name))


def edge_days(columns: list[MeasureColumn]) -> list[exp.Expression]:
    """The UTC days on which some window starts or ends, and the day of as_of: the days
    whose events a measure must read one by one."""
    instants: list[exp.Expression] = [sx.as_of()]
    for column in columns:
        window = column.measure.filter.window
        if isinstance(window, m.WithinWindow):
            instants.append(sx.shift(sx.as_of(), window.duration, -1))
        elif isinstance(window, m.BetweenWindow):
            instants += [sx.time_value(window.start), sx.time_value(window.end)]
        elif isinstance(window, (m.BeforeWindow, m.AfterWindow)):
            instants.append(sx.time_value(window.at))
    unique: dict[str, exp.Expression] = {}
    for instant in instants:
        day = exp.cast(instant, exp.DataType.Type.DATE)
        unique.setdefault(day.sql(), day)
    return list(unique.values())


def measure_of_parts(column: MeasureColumn) -> exp.Expression:
    """A measure over rows of parts (rollup days and edge-day events), filtered by its
    window evaluated at each row's instant ``at``."""
    measure = column.measure
    kinds = _PARTS[measure.kind]
    names = [part(k, measure).name for k in kinds]
    window = pr.window(sx.col(AT), measure.filter.window)
    if measure.kind == "active_days":
        # A rollup row is one day: count rows. Edge days come as events: count their
        # distinct days (few rows, so the costly DISTINCT stays cheap).
        counted = exp.GT(this=sx.col(names[0]), expression=exp.Literal.number(0))
        edge = sx.col(EDGE)
        whole = exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(
            this=sx.and_(exp.Not(this=edge.copy()), counted.copy(), *([window.copy()] if window else []))))
        edges = exp.Filter(this=exp.Count(this=exp.Distinct(expressions=[sx.col(EVENT_DAY)])), expression=exp.Where(
            this=sx.and_(edge.copy(), counted, *([window] if window else []))))
        return exp.Add(this=whole, expression=edges)
    if measure.kind == "avg":
        total = exp.cast(_filtered(exp.Sum(this=sx.col(names[0])), window), exp.DataType.Type.DOUBLE)
        present = _filtered(exp.Sum(this=sx.col(names[1])), window)
        return exp.Div(this=total, expression=exp.Nullif(this=present, expression=exp.Literal.number(0)))
    return _filtered(combine(part(kinds[0], measure)), window)


def _filtered(agg: exp.Expression, window: exp.Expression | None) -> exp.Expression:
    if window is None:
        return agg
    return exp.Filter(this=agg, expression=exp.Where(this=window.copy()))
