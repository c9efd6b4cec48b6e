"""Small builders of sqlglot expressions shared by the whole compiler.

Every value from a spec becomes a literal here; identifiers only ever come from the
catalog or from names the compiler makes. Two things stay abstract until rendering:
the build's ``as_of`` (:data:`AS_OF`) and the relations models read
(:func:`model_ref`, :func:`source_ref`), so that one tree renders both as a dbt model
and as a standalone query (see :mod:`segments.compiler.render`).
"""

from __future__ import annotations

import datetime as dt
import math

from sqlglot import exp

from segments.spec.model import AbsoluteTime, Duration, RelativeTime, TimeValue

#: The build's as_of instant; rendering turns it into a timestamp literal or a dbt var.
AS_OF_NAME = "as_of"


def as_of() -> exp.Placeholder:
    """The placeholder standing for the build's ``as_of``.

    >>> as_of().sql()
    ':as_of'
    """
    return exp.Placeholder(this=AS_OF_NAME)


def model_ref(name: str) -> exp.Table:
    """A relation built by another model of the project (dbt ``ref``).

    >>> model_ref("seg_vip").meta
    {'model': 'seg_vip'}
    """
    table = exp.Table(this=exp.to_identifier(name))
    table.meta["model"] = name
    return table


def source_ref(source: str, table: str) -> exp.Table:
    """An input relation declared in the catalog (dbt ``source``)."""
    node = exp.Table(this=exp.to_identifier(table), db=exp.to_identifier(source))
    node.meta["source"] = (source, table)
    return node


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name)


def col(name: str, table: str | None = None) -> exp.Column:
    """A column reference, qualified with ``table`` when given."""
    return exp.column(name, table=table)


def timestamp_literal(value: dt.datetime) -> exp.Cast:
    """A naive UTC instant as a typed literal.

    >>> timestamp_literal(dt.datetime(2024, 6, 30, 12)).sql()
    "CAST('2024-06-30 12:00:00' AS TIMESTAMP)"
    """
    text = value.isoformat(sep=" ", timespec="microseconds" if value.microsecond else "seconds")
    return exp.cast(exp.Literal.string(text), exp.DataType.Type.TIMESTAMP)


def interval(duration: Duration) -> exp.Interval:
    """A duration as an interval with a numeric literal (the most portable form).

    Weeks become days: not every engine has a WEEK interval unit.

    >>> interval(Duration(2, "w")).sql("duckdb")
    'INTERVAL 14 DAY'
    >>> interval(Duration(90, "m")).sql("duckdb")
    'INTERVAL 90 MINUTE'
    """
    amount, unit = duration.amount, duration.unit
    if unit == "w":
        amount, unit = amount * 7, "d"
    names = {"s": "SECOND", "m": "MINUTE", "h": "HOUR", "d": "DAY"}
    return exp.Interval(this=exp.Literal.number(amount), unit=exp.Var(this=names[unit]))


def shift(instant: exp.Expression, duration: Duration, sign: int) -> exp.Expression:
    """``instant + duration`` (sign > 0) or ``instant - duration``."""
    op = exp.Add if sign > 0 else exp.Sub
    return op(this=instant, expression=interval(duration))


def time_value(value: TimeValue) -> exp.Expression:
    """A spec time: a fixed instant, or ``as_of`` shifted by a duration.

    >>> from segments.spec.model import RelativeTime, Duration
    >>> time_value(RelativeTime(Duration(7, "d"), -1)).sql("duckdb")
    '$as_of - INTERVAL 7 DAY'
    """
    if isinstance(value, AbsoluteTime):
        return timestamp_literal(value.at)
    if isinstance(value, RelativeTime):
        if value.offset is None:
            return as_of()
        return shift(as_of(), value.offset, value.sign)
    raise TypeError(f"not a time value: {value!r}")


def literal(value: object) -> exp.Expression:
    """A typed spec value as a SQL literal.

    >>> [literal(v).sql() for v in ("it's", 12.5, 3, True)]
    ["'it''s'", '12.5', '3', 'TRUE']
    """
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return exp.Literal.number(repr(value) if isinstance(value, float) else value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, (AbsoluteTime, RelativeTime)):
        return time_value(value)
    raise TypeError(f"no literal for {value!r}")


def and_(*items: exp.Expression) -> exp.Expression:
    """AND of the items; TRUE when there are none."""
    items = tuple(i for i in items if i is not None)
    if not items:
        return exp.true()
    return exp.and_(*items, copy=False) if len(items) > 1 else items[0]


def or_(*items: exp.Expression) -> exp.Expression:
    """OR of the items; FALSE when there are none."""
    items = tuple(i for i in items if i is not None)
    if not items:
        return exp.false()
    return exp.or_(*items, copy=False) if len(items) > 1 else items[0]


def paren(expression: exp.Expression) -> exp.Expression:
    """Parenthesize compound boolean terms so rendered SQL reads unambiguously."""
    if isinstance(expression, (exp.And, exp.Or)):
        return exp.Paren(this=expression)
    return expression


def count_if(condition: exp.Expression) -> exp.Expression:
    """``COUNT(*) FILTER (WHERE condition)``, which sqlglot writes as each engine says it.

    >>> count_if(exp.column("is_holdout")).sql("postgres")
    'COUNT(*) FILTER(WHERE is_holdout)'
    """
    return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=condition))
