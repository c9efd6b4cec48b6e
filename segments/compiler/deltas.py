"""The measures of some users moved from one ``as_of`` to a later one, from the events
that changed between the two instead of every event the users have.

``as_of`` moves from T0 to T1. An event *changes* for a measure when the measure's
filter (names, properties, window, ``occurred_at <= as_of``) answers differently at T0
and at T1: it arrived in ``(T0, T1]``, or crossed an edge of the window. The refresh
collects every changed event once (a superset is harmless) in a relation ``changed``;
then, per user and measure kind:

- ``count``: old + (qualifying at T1) - (qualifying at T0), counted over ``changed``.
- ``last_occurred``: the old value if it still qualifies at T1, else nothing, and the
  latest changed event that qualifies at T1: every event later than the old value that
  qualifies now is a changed one, and when the old value leaves, every earlier event
  left with it.
- ``first_occurred``, ``min``, ``max``: combined with the changed events that qualify
  at T1, unless an event that left could have held the old value (its value is the old
  one, or beyond it: ``left`` keeps the extreme of the events that left); then from
  history.
- ``active_days``: old + (days with a qualifying event at T1) - (at T0), over the days
  of the changed events, which ``changed`` holds whole (:func:`day_ranges`).
- ``sum``: old + (amounts qualifying at T1) - (at T0), as exact decimals (the build
  sums decimals too: :data:`segments.compiler.measures.SUM_TYPE`); from history when
  the old sum is too large to read back exactly from its DOUBLE.
- ``avg``: from history when some event of theirs changed (a floating-point mean kept
  by adding and subtracting would drift from a fresh one; keeping an exact sum and a
  count instead was measured to cost a full build's measures about 20% more CPU).
- follow-ups: with the same anchor, old + the delta of the changed events; with a new
  anchor after T0, the changed events after it (all of them arrived after T0); else
  from history.

*History* is the user's events of the measures that need it, read for those users
only; every other measure never reads more than the changed events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlglot import exp

from segments.compiler import measures as ms
from segments.compiler import predicates as pr
from segments.compiler import sqlexpr as sx
from segments.spec import model as m

#: measure kinds kept by adding the changed events' difference
ADDITIVE = ("count",)
#: measure kinds combined with the changed events while no qualifying event leaves
EXTREMES = {"first_occurred": exp.Least, "min": exp.Least, "max": exp.Greatest}
#: measure kinds read again from history whenever one of their events changes
FROM_HISTORY = ("avg",)
#: a decimal with 6 places survives the trip through a DOUBLE below 2**32
_EXACT_BELOW = 2**32

Relation = Callable[[], exp.Expression]


def _at(expression: exp.Expression, instant: dt.datetime) -> exp.Expression:
    literal = sx.timestamp_literal(instant)

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.name == sx.AS_OF_NAME:
            return literal.copy()
        return node

    return expression.copy().transform(swap)


def qualifies(column: ms.MeasureColumn, resolver: ms.EventRowResolver, instant: dt.datetime) -> exp.Expression:
    """Whether an events row counts for ``column`` at ``instant`` (never NULL)."""
    predicate = sx.and_(
        ms.filter_predicate(column.measure.filter, resolver),
        exp.LTE(this=sx.col("occurred_at", resolver.table), expression=sx.as_of()),
    )
    return exp.Coalesce(this=sx.paren(_at(predicate, instant)), expressions=[exp.false()])


def lower_bound_moves(window: m.Window | None) -> bool:
    """Whether events leave the window as as_of moves (its start is relative).

    >>> lower_bound_moves(m.WithinWindow(m.Duration(7, "d")))
    True
    >>> lower_bound_moves(None)
    False
    """
    if isinstance(window, m.WithinWindow):
        return True
    if isinstance(window, m.BetweenWindow):
        return isinstance(window.start, m.RelativeTime)
    if isinstance(window, m.AfterWindow):
        return isinstance(window.at, m.RelativeTime)
    return False


def needs_history(column: ms.MeasureColumn) -> str | None:
    """What, among the changed events, sends a user's ``column`` to history: ``moved``
    (any change), ``left`` (a qualifying event that may have held the old extreme
    left), ``large`` (any change to a sum too large to read back exactly), or None."""
    kind = column.measure.kind
    if kind in FROM_HISTORY:
        return "moved"
    if kind == "sum":
        return "large"
    if kind in EXTREMES and lower_bound_moves(column.measure.filter.window):
        return "left"
    return None


def _history_flag(column: ms.MeasureColumn) -> str:
    return f"{column.name}__history"


def changed_aggregates(columns: list[ms.MeasureColumn], resolver: ms.EventRowResolver, t0: dt.datetime, t1: dt.datetime) -> list[exp.Expression]:
    """Per user over the changed events: each measure's part of the new value, and
    for the measures that may need history, what sends them there: how many of their
    events changed (``moved``, ``large``), the extreme of those that left (``left``)."""
    out: list[exp.Expression] = []
    for column in columns:
        kind = column.measure.kind
        if kind == "active_days":
            continue
        now, before = qualifies(column, resolver, t1), qualifies(column, resolver, t0)
        if kind in ADDITIVE:
            value: exp.Expression | None = exp.Sub(this=sx.count_if(now), expression=sx.count_if(before))
        elif kind == "last_occurred" or kind == "first_occurred":
            agg = exp.Max if kind == "last_occurred" else exp.Min
            value = exp.Filter(this=agg(this=sx.col("occurred_at", resolver.table)), expression=exp.Where(this=now))
        elif kind in ("min", "max"):
            agg = exp.Min if kind == "min" else exp.Max
            value = exp.Filter(this=agg(this=sx.col(column.measure.property or "", resolver.table)), expression=exp.Where(this=now))
        elif kind == "sum":
            amount = sx.col(column.measure.property or "", resolver.table)
            value = exp.Sub(
                this=exp.Coalesce(this=ms.exact_sum(amount, now), expressions=[exp.Literal.number(0)]),
                expression=exp.Coalesce(this=ms.exact_sum(amount.copy(), before), expressions=[exp.Literal.number(0)]),
            )
        else:
            value = None
        if value is not None:
            out.append(exp.alias_(value, column.name))
        reason = needs_history(column)
        if reason in ("moved", "large"):
            out.append(exp.alias_(sx.count_if(exp.NEQ(this=now.copy(), expression=before.copy())), _history_flag(column)))
        elif reason == "left":
            left = sx.and_(before.copy(), exp.Not(this=sx.paren(now.copy())))
            extreme = exp.Max if kind == "max" else exp.Min  # min, first_occurred: the earliest or least
            value_of = sx.col(column.measure.property if kind in ("min", "max") else "occurred_at", resolver.table)
            out.append(exp.alias_(exp.Filter(this=extreme(this=value_of), expression=exp.Where(this=left)), _history_flag(column)))
    return out


def merged_value(column: ms.MeasureColumn, old: str, delta: str, days: str, t1: dt.datetime) -> exp.Expression:
    """The column's new value from the old row and the changed events' aggregates."""
    kind = column.measure.kind
    previous, part = sx.col(column.name, old), sx.col(column.name, delta)
    zero = exp.Literal.number(0)
    if kind in ADDITIVE:
        return exp.Add(this=exp.Coalesce(this=previous, expressions=[zero]), expression=exp.Coalesce(this=part, expressions=[zero.copy()]))
    if kind == "active_days":
        change = exp.Coalesce(this=sx.col(column.name, days), expressions=[zero.copy()])
        total = exp.Add(this=exp.Coalesce(this=previous, expressions=[zero.copy()]), expression=change)
        return exp.Nullif(this=total, expression=zero.copy())  # no active day: missing, as the full build has it
    if kind == "last_occurred":
        window = pr.window(previous.copy(), column.measure.filter.window)
        kept = previous if window is None else exp.Case(ifs=[exp.If(this=_at(window, t1), true=previous)])
        return exp.Greatest(this=kept, expressions=[part], ignore_nulls=True)  # NULL: no such event
    if kind in EXTREMES:
        return EXTREMES[kind](this=previous, expressions=[part], ignore_nulls=True)
    if kind == "sum":
        exact = exp.Add(
            this=exp.Coalesce(this=exp.cast(previous.copy(), exp.DataType.build(ms.SUM_TYPE)), expressions=[zero]),
            expression=exp.Coalesce(this=part.copy(), expressions=[zero.copy()]),
        )
        both_missing = sx.and_(exp.Is(this=previous, expression=exp.null()), exp.Is(this=part, expression=exp.null()))
        return exp.Case(ifs=[exp.If(this=both_missing, true=exp.null())], default=exp.cast(exact, exp.DataType.Type.DOUBLE))
    return previous  # from history when it changed


def history_users(columns: list[ms.MeasureColumn], delta: str, old: str) -> exp.Expression | None:
    """The condition on the changed events' aggregates (and the old row) that sends a
    user to history."""
    flags = []
    for c in columns:
        reason = needs_history(c)
        if reason is None:
            continue
        flag: exp.Expression = exp.GT(this=sx.col(_history_flag(c), delta), expression=exp.Literal.number(0))
        if reason == "large":
            too_large = exp.GTE(this=exp.Abs(this=sx.col(c.name, old)), expression=exp.Literal.number(_EXACT_BELOW))
            flag = sx.and_(flag, too_large)
        elif reason == "left":  # an event that left held the old extreme, or one equal to it
            beyond = exp.GTE if c.measure.kind == "max" else exp.LTE
            flag = beyond(this=sx.col(_history_flag(c), delta), expression=sx.col(c.name, old))
        flags.append(exp.Coalesce(this=flag, expressions=[exp.false()]))
    return sx.or_(*flags) if flags else None


def history_columns(columns: list[ms.MeasureColumn]) -> list[ms.MeasureColumn]:
    return [c for c in columns if needs_history(c)]


def day_ranges(columns: list[ms.MeasureColumn]) -> list[ms.MeasureColumn]:
    return [c for c in columns if c.measure.kind == "active_days"]


def active_days_change(columns: list[ms.MeasureColumn], changed_days: exp.Expression, resolver: ms.EventRowResolver, t0: dt.datetime, t1: dt.datetime, timezone: str | None) -> exp.Select:
    """Per user, each active-days measure's change: days with a qualifying event at T1
    less days with one at T0, over whole days of events (``changed_days``)."""
    one, zero = exp.Literal.number(1), exp.Literal.number(0)
    per_day = []
    for column in columns:
        for instant, suffix in ((t1, "now"), (t0, "before")):
            flag = exp.Case(ifs=[exp.If(this=qualifies(column, resolver, instant), true=one.copy())], default=zero.copy())
            per_day.append(exp.alias_(exp.Max(this=flag), f"{column.name}__{suffix}"))
    days = (
        exp.select("user_id", *per_day)
        .from_(changed_days)
        .group_by("user_id", ms.day_of(sx.col("occurred_at"), timezone))
    )
    sums = [
        exp.alias_(exp.Sum(this=exp.Sub(this=sx.col(f"{c.name}__now"), expression=sx.col(f"{c.name}__before"))), c.name)
        for c in columns
    ]
    return exp.select("user_id", *sums).from_(exp.Subquery(this=days, alias=exp.TableAlias(this=sx.ident("days")))).group_by("user_id")


def followup_qualifies(column: ms.FollowupColumn, resolver: ms.EventRowResolver, anchor: exp.Expression, instant: dt.datetime) -> exp.Expression:
    """Whether an events row is a follow-up of ``anchor`` (an anchor time) at ``instant``."""
    counted = ms.followup_count(column, resolver, "__anchor__")
    condition = counted.expression.this  # COUNT(*) FILTER (WHERE condition)

    def put_anchor(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table == "__anchor__":
            return anchor.copy()
        return node

    condition = condition.copy().transform(put_anchor)
    upto = exp.LTE(this=sx.col("occurred_at", resolver.table), expression=sx.timestamp_literal(instant))
    return exp.Coalesce(this=sx.paren(sx.and_(condition, upto)), expressions=[exp.false()])


def followup_value(column: ms.FollowupColumn, old_count: exp.Expression, same: exp.Expression, since: exp.Expression,
                   anchor_then: exp.Expression, anchor_now: exp.Expression, t0: dt.datetime, history: exp.Expression) -> exp.Expression:
    """A follow-up count's new value: kept plus the change when the anchor stayed, the
    changed events after it when the anchor is new and after T0, else ``history``."""
    zero = exp.Literal.number(0)
    return exp.Case(
        ifs=[
            exp.If(this=exp.Is(this=anchor_now.copy(), expression=exp.null()), true=exp.null()),
            exp.If(
                this=exp.NullSafeEQ(this=anchor_now.copy(), expression=anchor_then),
                true=exp.Add(this=exp.Coalesce(this=old_count, expressions=[zero]), expression=exp.Coalesce(this=same, expressions=[zero.copy()])),
            ),
            exp.If(this=exp.GT(this=anchor_now.copy(), expression=sx.timestamp_literal(t0)), true=exp.Coalesce(this=since, expressions=[zero.copy()])),
        ],
        default=history,
    )
