"""Reading the compiled models: where a comparison with ``as_of`` can change its answer.

Every as_of-dependent comparison of a model names a column and a bound (``as_of`` plus
or minus a constant); moving ``as_of`` from T0 to T1 can change the comparison only for
rows whose column lies between the bound at T0 and at T1: an *edge*.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from segments.compiler import models as md
from segments.compiler import sqlexpr as sx

_COMPARISONS = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)
_BOUND_PARTS = (exp.Sub, exp.Add, exp.Cast, exp.Paren)


class NotIncremental(Exception):
    """Why this build needs a full build (a sentence for the log)."""


@dataclass(frozen=True)
class Edge:
    """Rows of a model whose ``column`` lies between ``bound`` at T0 and at T1: where
    a comparison with ``as_of`` can change its answer. ``events`` narrows an edge of
    the events to the event names its comparison is conjoined with."""

    model: str
    column: str
    bound: exp.Expression
    events: tuple[str, ...] | None = None


def is_as_of(node: exp.Expression) -> bool:
    return isinstance(node, exp.Placeholder) and node.name == sx.AS_OF_NAME


def _event_names(condition: exp.Expression) -> tuple[str, ...] | None:
    """The event names a conjunction requires (``event_name = 'x'`` or ``IN``), None
    when it requires none.

    >>> where = exp.condition("event_name IN ('a', 'b') AND x > 1")
    >>> _event_names(where)
    ('a', 'b')
    >>> _event_names(exp.condition("x > 1")) is None
    True
    """
    for part in _conjuncts(condition):
        if isinstance(part, exp.EQ) and isinstance(part.this, exp.Column) and part.this.name == "event_name":
            if isinstance(part.expression, exp.Literal):
                return (part.expression.name,)
        if isinstance(part, exp.In) and isinstance(part.this, exp.Column) and part.this.name == "event_name":
            if all(isinstance(e, exp.Literal) for e in part.expressions):
                return tuple(e.name for e in part.expressions)
    return None


def _conjuncts(condition: exp.Expression) -> list[exp.Expression]:
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        return _conjuncts(condition.this) + _conjuncts(condition.expression)
    return [condition]


def _conjunction_top(node: exp.Expression) -> exp.Expression:
    """The largest AND chain (through parentheses) ``node`` is a conjunct of."""
    while isinstance(node.parent, (exp.And, exp.Paren)):
        node = node.parent
    return node


def edges(model: md.Model, relation: str) -> list[Edge]:
    """Every comparison of a column with an ``as_of`` bound in ``model``, as an edge of
    ``relation`` (the model the column belongs to).

    Raises:
        NotIncremental: ``as_of`` appears other than compared with a column.

    >>> q = exp.select("x").from_("t").where(exp.GT(this=exp.column("signup_at"), expression=exp.Sub(this=sx.as_of(), expression=exp.Interval(this=exp.Literal.number(7), unit=exp.var("DAY")))))
    >>> [(e.column, e.bound.sql()) for e in edges(md.Model("m", "f", q, ""), "base")]
    [('signup_at', ':as_of - INTERVAL 7 DAY')]
    """
    found: list[Edge] = []
    for placeholder in model.query.find_all(exp.Placeholder):
        if not is_as_of(placeholder):
            continue
        bound: exp.Expression = placeholder
        while isinstance(bound.parent, _BOUND_PARTS):
            bound = bound.parent
        comparison = bound.parent
        if not isinstance(comparison, _COMPARISONS):
            raise NotIncremental(f"{model.name} uses as_of other than in a comparison")
        other = comparison.expression if comparison.this is bound else comparison.this
        if not isinstance(other, exp.Column) or any(bound.find_all(exp.Column)):
            raise NotIncremental(f"{model.name} compares as_of with an expression")
        names = _event_names(_conjunction_top(comparison))
        found.append(Edge(relation, other.name, bound.copy(), names))
    return found
