"""Conditions (SPEC 1.3, 1.4) as SQL boolean expressions.

Missing values: a positive operator is false on NULL, and each negative operator and
``not:`` is the exact complement of what it negates. SQL's three-valued logic gets
there if negation never meets a NULL: :func:`predicate` pushes every ``not`` down to
the atoms (De Morgan), so above the atoms the formula is only AND/OR, where a NULL
atom behaves as false once the result is used in WHERE or FILTER. A negated atom on a
nullable value says it explicitly: ``x IS NULL OR NOT (...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlglot import exp

from segments.compiler import sqlexpr as sx
from segments.spec import model as m


@dataclass(frozen=True)
class Value:
    """A value a test reads, and whether it can be NULL."""

    expr: exp.Expression
    nullable: bool = True


class Resolver(Protocol):
    """Tells the predicate builder where names live in the query being built."""

    def attribute(self, name: str) -> Value: ...

    def trait(self, name: str) -> Value: ...

    def property(self, name: str) -> Value: ...

    def event(self, condition: m.EventCondition, negate: bool) -> exp.Expression: ...

    def segment(self, name: str) -> exp.Expression: ...


def predicate(condition: m.Condition | None, resolver: Resolver, negate: bool = False) -> exp.Expression:
    """The SQL boolean for ``condition`` (or its complement when ``negate``).

    ``None`` (no rule) is true.
    """
    if condition is None:
        return exp.false() if negate else exp.true()
    if isinstance(condition, (m.All, m.Any)):
        parts = [sx.paren(predicate(item, resolver, negate)) for item in condition.items]
        # not(all) = any(not), not(any) = all(not)
        conjunction = isinstance(condition, m.All) != negate
        return sx.and_(*parts) if conjunction else sx.or_(*parts)
    if isinstance(condition, m.Not):
        return predicate(condition.item, resolver, not negate)
    if isinstance(condition, m.AttributeCondition):
        return test(condition.test, resolver.attribute(condition.attribute), negate)
    if isinstance(condition, m.TraitCondition):
        return test(condition.test, resolver.trait(condition.trait), negate)
    if isinstance(condition, m.PropertyCondition):
        return test(condition.test, resolver.property(condition.property), negate)
    if isinstance(condition, m.SegmentCondition):
        member = resolver.segment(condition.segment)
        return exp.Not(this=member) if negate else member
    if isinstance(condition, m.EventCondition):
        return resolver.event(condition, negate)
    raise TypeError(f"unknown condition {condition!r}")


def test(spec_test: m.Test, value: Value, negate: bool = False) -> exp.Expression:
    """One operator on one value, null-safe in both polarities."""
    op = spec_test.op
    if op == "is_set":
        is_null: exp.Expression = exp.Is(this=value.expr, expression=exp.null())
        return is_null if (spec_test.value is True) == negate else exp.Not(this=is_null)
    if op in m.NEGATIVE_OPS:
        op, negate = m.NEGATIVE_OPS[op], not negate
    positive = _positive(op, spec_test, value.expr)
    if not negate:
        return positive
    opposite = complement(positive)
    if not value.nullable:
        return opposite
    return exp.Paren(this=sx.or_(exp.Is(this=value.expr, expression=exp.null()), opposite))


def complement(positive: exp.Expression) -> exp.Expression:
    """NOT of a positive atom, written the way a reviewer would write it."""
    if isinstance(positive, exp.EQ):
        return exp.NEQ(this=positive.this, expression=positive.expression)
    if isinstance(positive, exp.Boolean):
        return exp.false() if positive.this else exp.true()
    return exp.Not(this=sx.paren(positive))


def _positive(op: str, spec_test: m.Test, x: exp.Expression) -> exp.Expression:
    """The positive form of ``op`` on ``x`` (false on NULL through SQL's own rules)."""
    v = spec_test.value
    fold = spec_test.ignore_case and spec_test.value_type == "string"

    def operand(value: object) -> exp.Expression:
        lit = sx.literal(value)
        return exp.Lower(this=lit) if fold else lit

    subject = exp.Lower(this=x.copy()) if fold else x.copy()
    if op == "is":
        return exp.EQ(this=subject, expression=operand(v))
    if op == "in":
        values = tuple(v)  # type: ignore[arg-type]
        if not values:
            return exp.false()
        return exp.In(this=subject, expressions=[operand(i) for i in values])
    if op == "contains":
        return exp.GT(
            this=exp.StrPosition(this=subject, substr=operand(v)), expression=exp.Literal.number(0)
        )
    if op == "starts_with":
        return exp.StartsWith(this=subject, expression=operand(v))
    if op == "ends_with":
        return exp.EndsWith(this=subject, expression=operand(v))
    comparisons = {"gt": exp.GT, "gte": exp.GTE, "lt": exp.LT, "lte": exp.LTE, "before": exp.LT, "after": exp.GT}
    if op in comparisons:
        return comparisons[op](this=subject, expression=operand(v))
    if op == "between":
        lo, hi = v  # type: ignore[misc]
        if spec_test.value_type == "timestamp":
            # [start, end), as an event window's between (SPEC 1.4): back-to-back
            # periods never share an instant.
            return sx.and_(
                exp.GTE(this=subject, expression=operand(lo)),
                exp.LT(this=subject.copy(), expression=operand(hi)),
            )
        return exp.Between(this=subject, low=operand(lo), high=operand(hi))
    if op == "within":
        return within(subject, v)  # type: ignore[arg-type]
    raise ValueError(f"unknown operator {op!r}")


def within(x: exp.Expression, duration: m.Duration) -> exp.Expression:
    """``x`` in ``(as_of - duration, as_of]``."""
    return sx.and_(
        exp.GT(this=x, expression=sx.shift(sx.as_of(), duration, -1)),
        exp.LTE(this=x.copy(), expression=sx.as_of()),
    )


def window_start(x: exp.Expression, spec_window: m.Window | None) -> exp.Expression | None:
    """``x`` later than the start of a window: true of every event in it and of every
    event after one of them; None for a window with no start (before, or none)."""
    if isinstance(spec_window, m.WithinWindow):
        return exp.GT(this=x, expression=sx.shift(sx.as_of(), spec_window.duration, -1))
    if isinstance(spec_window, m.BetweenWindow):
        return exp.GTE(this=x, expression=sx.time_value(spec_window.start))
    if isinstance(spec_window, m.AfterWindow):
        return exp.GT(this=x, expression=sx.time_value(spec_window.at))
    return None


def window(x: exp.Expression, spec_window: m.Window | None) -> exp.Expression | None:
    """The time window of an event filter on the event time ``x`` (SPEC 1.4)."""
    if spec_window is None:
        return None
    if isinstance(spec_window, m.WithinWindow):
        return within(x, spec_window.duration)
    if isinstance(spec_window, m.BetweenWindow):
        return sx.and_(
            exp.GTE(this=x, expression=sx.time_value(spec_window.start)),
            exp.LT(this=x.copy(), expression=sx.time_value(spec_window.end)),
        )
    if isinstance(spec_window, m.BeforeWindow):
        return exp.LT(this=x, expression=sx.time_value(spec_window.at))
    if isinstance(spec_window, m.AfterWindow):
        return exp.GT(this=x, expression=sx.time_value(spec_window.at))
    raise TypeError(f"unknown window {spec_window!r}")
