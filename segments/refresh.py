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
DuckDB transaction against the tables dbt built; it costs in proportion to the users
it touches, not to the events. A full build pays only for writing the small state row
(:func:`record`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlglot import exp

from segments.compiler import models as md
from segments.compiler import render
from segments.compiler import sqlexpr as sx
from segments.engines.base import Session, drop

#: One row in the build schema: the as_of, project and inputs of the last build.
STATE = "segments_refresh_state"
#: Temporary tables of one refresh: users whose measures / flags are computed again.
MEASURED, FLAGGED = "_refresh_measured", "_refresh_flagged"
_NEW_TRAITS = "int_user_traits__refresh"
_FLAGS, _EVENTS = "_refresh_flags", "_refresh_events"

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


@dataclass(frozen=True)
class Outcome:
    """What a refresh did: users whose measures and whose flags were evaluated again."""

    as_of: dt.datetime
    previous_as_of: dt.datetime
    measured: int
    flagged: int


# ---- reading the models -------------------------------------------------------------


def _is_as_of(node: exp.Expression) -> bool:
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
        if not _is_as_of(placeholder):
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


def fingerprint(compiled: md.CompiledProject) -> str:
    """The compiled project: a refresh continues only a build of the same models."""
    digest = hashlib.sha256()
    for model in compiled.models:
        digest.update(model.name.encode())
        digest.update(model.query.sql().encode())
    return digest.hexdigest()


# ---- statements ---------------------------------------------------------------------


class _Build:
    """Names and statements of one engine's build schema."""

    def __init__(self, session: Session, compiled: md.CompiledProject):
        self.session = session
        self.engine = session.engine
        self.compiled = compiled

    def table(self, name: str) -> exp.Table:
        return self.engine.table(name, self.engine.build_schema)

    def rows(self, query: exp.Query) -> list[tuple]:
        return self.session.rows(query)

    def run(self, statement: exp.Expression) -> None:
        self.session.execute(statement)

    def relation(self, name: str, as_of: dt.datetime) -> exp.Expression:
        """Model ``name`` as it is at ``as_of``: its table, or for a view that reads
        ``as_of`` (the universe, the base over it), its query inlined, because dbt
        rendered the view's ``as_of`` at the last build's."""
        model = self.compiled.model(name)
        if model.materialized == "view" and _reads_as_of(self.compiled, name):
            return exp.Subquery(this=self.query(name, {}, as_of))
        return self.table(name)

    def only(self, name: str, users: str, as_of: dt.datetime) -> exp.Expression:
        """Model ``name`` at ``as_of``, restricted to the users of table ``users``."""
        return exp.Subquery(this=exp.select("*").from_(self.relation(name, as_of)).where(_user_in(users)))

    def query(self, model: str, instead: dict[str, exp.Expression], as_of: dt.datetime) -> exp.Expression:
        """Model ``model``'s query over the build's relations (those of ``instead``
        replaced) at ``as_of``."""

        def relation(node: exp.Table) -> exp.Expression:
            if "model" not in node.meta:
                raise NotIncremental(f"{model} reads a source directly")
            name = node.meta["model"]
            return instead[name].copy() if name in instead else self.relation(name, as_of)

        return render.substitute(self.compiled.model(model).query, relation, sx.timestamp_literal(as_of))  # type: ignore[arg-type]

    def create_temp(self, name: str, query: exp.Expression) -> None:
        temporary = exp.Properties(expressions=[exp.TemporaryProperty()])
        self.run(exp.Create(kind="TABLE", this=exp.to_table(name), properties=temporary, replace=True, expression=query))

    def replace_rows(self, model: str, users: str, rows: exp.Query) -> None:
        """The rows of table ``model`` for the users of ``users`` become ``rows``."""
        self.run(exp.delete(self.table(model), where=_user_in(users)))
        self.run(exp.insert(rows, self.table(model)))


def _reads_as_of(compiled: md.CompiledProject, name: str) -> bool:
    model = compiled.model(name)
    if any(_is_as_of(p) for p in model.query.find_all(exp.Placeholder)):
        return True
    return any(_reads_as_of(compiled, ref) for ref in model.refs())


def _user_in(users: str) -> exp.Expression:
    return exp.column("user_id").isin(query=exp.select("user_id").from_(exp.to_table(users)))


def _between(column: str, bound: exp.Expression, t0: dt.datetime, t1: dt.datetime) -> exp.Expression:
    def at(instant: dt.datetime) -> exp.Expression:
        return render.substitute(bound, lambda node: node, sx.timestamp_literal(instant))

    return exp.Between(this=exp.column(column), low=at(t0), high=at(t1))


def _edge_users(build: _Build, found: Iterable[Edge], t0: dt.datetime, t1: dt.datetime) -> list[exp.Query]:
    """The users with a row on each edge: one range query per distinct edge, so that
    each is a filter pushed into its scan (and a zone-map skip on time-ordered data)."""
    queries: dict[str, exp.Query] = {}
    for edge in found:
        condition = _between(edge.column, edge.bound, t0, t1)
        if edge.events is not None:
            condition = sx.and_(condition, _names(edge.events))
        query = exp.select("user_id").from_(build.relation(edge.model, t1)).where(condition)
        queries.setdefault(query.sql(), query)
    return list(queries.values())


def _names(events: tuple[str, ...]) -> exp.Expression:
    return exp.In(this=exp.column("event_name"), expressions=[exp.Literal.string(e) for e in events])


def _create_users(build: _Build, name: str, parts: list[exp.Query]) -> int:
    if not parts:
        parts = [exp.select(exp.alias_(exp.cast(exp.null(), exp.DataType.Type.VARCHAR), "user_id")).where(exp.false())]
    union = parts[0]
    for query in parts[1:]:
        union = exp.union(union, query, distinct=False)
    distinct = exp.select("user_id").distinct().from_(exp.Subquery(this=union, alias=exp.TableAlias(this=sx.ident("u"))))
    distinct = distinct.where(exp.Not(this=exp.Is(this=exp.column("user_id"), expression=exp.null())))
    build.create_temp(name, distinct)
    return int(build.rows(exp.select(exp.Count(this=exp.Star())).from_(name))[0][0])


# ---- state --------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    as_of: dt.datetime
    fingerprint: str
    events_upto: int
    users: str


def _events_upto(build: _Build, as_of: dt.datetime) -> int:
    query = exp.select(exp.Count(this=exp.Star())).from_(build.table(md.EVENTS)).where(
        exp.LTE(this=exp.column("occurred_at"), expression=sx.timestamp_literal(as_of))
    )
    return int(build.rows(query)[0][0])


def _users_fingerprint(build: _Build) -> str:
    columns = list(build.session.columns(build.engine.build_schema, md.USERS))
    if not columns:
        raise NotIncremental("the build has no users")
    row_hash = exp.Anonymous(this="HASH", expressions=[exp.column(c) for c in columns])
    query = exp.select(exp.Count(this=exp.Star()), exp.Sum(this=exp.cast(row_hash, exp.DataType.Type.INT128))).from_(build.table(md.USERS))
    count, total = build.rows(query)[0]
    return f"{count}:{total}"


_STATE_COLUMNS = {
    "as_of": exp.DataType.Type.TIMESTAMP,
    "fingerprint": exp.DataType.Type.VARCHAR,
    "events_upto": exp.DataType.Type.BIGINT,
    "users": exp.DataType.Type.VARCHAR,
}


def _read_state(build: _Build) -> State | None:
    if not build.session.columns(build.engine.build_schema, STATE):
        return None
    rows = build.rows(exp.select(*_STATE_COLUMNS).from_(build.table(STATE)))
    return State(*rows[0]) if len(rows) == 1 else None


def _write_state(build: _Build, state: State) -> None:
    values = [sx.timestamp_literal(state.as_of), exp.Literal.string(state.fingerprint),
              exp.Literal.number(state.events_upto), exp.Literal.string(state.users)]
    row = [exp.alias_(exp.cast(v, kind), name) for v, (name, kind) in zip(values, _STATE_COLUMNS.items())]
    build.run(exp.Create(kind="TABLE", this=build.table(STATE), replace=True, expression=exp.select(*row)))


def record(session: Session, compiled: md.CompiledProject, as_of: dt.datetime) -> None:
    """After a full build: what the next refresh starts from (one small row; the
    events are counted up to ``as_of`` and the users fingerprinted)."""
    if session.engine.dialect != "duckdb":
        return
    build = _Build(session, compiled)
    _write_state(build, State(as_of, fingerprint(compiled), _events_upto(build, as_of), _users_fingerprint(build)))


def forget(session: Session) -> None:
    """No refresh may continue from the build schema as it is (a full build starts)."""
    build = _Build(session, md.CompiledProject([], {}, None, []))  # type: ignore[arg-type]
    build.run(drop("TABLE", build.table(STATE)))


# ---- the refresh --------------------------------------------------------------------


def _traits_changed(build: _Build, as_of: dt.datetime) -> exp.Query:
    """Traits computed again for everyone into a new table; the users whose row differs.

    The traits are one table for every user: ranks (quantiles) move when any user's
    value does. Comparing rows by user finds who actually changed."""
    traits = md.USER_TRAITS_AND_FOLLOWUPS
    build.run(exp.Create(kind="TABLE", this=build.table(_NEW_TRAITS), replace=True, expression=build.query(traits, {}, as_of)))
    columns = [c for c in build.session.columns(build.engine.build_schema, traits) if c != "user_id"]
    differs = sx.or_(*[exp.NullSafeNEQ(this=exp.column(c, "n"), expression=exp.column(c, "o")) for c in columns]) if columns else exp.false()
    return (
        exp.select("user_id").from_(build.table(_NEW_TRAITS).as_("n"))
        .join(build.table(traits).as_("o"), using=["user_id"], join_type="FULL OUTER")
        .where(differs)
    )


def _swap_traits(build: _Build) -> None:
    traits = build.table(md.USER_TRAITS_AND_FOLLOWUPS)
    build.run(drop("TABLE", traits))
    renamed = exp.AlterRename(this=sx.ident(md.USER_TRAITS_AND_FOLLOWUPS))
    build.run(exp.Alter(this=build.table(_NEW_TRAITS), kind="TABLE", actions=[renamed]))


def _source_edges(build: _Build, found: list[Edge]) -> list[Edge]:
    """Edges of the base moved to the table its column comes from (a join less): a
    base column that is ``alias.column`` (or its COALESCE) of a model it reads."""
    base = build.compiled.model(md.BASE).query
    assert isinstance(base, exp.Select)
    origin: dict[str, str] = {}
    for table in base.find_all(exp.Table):
        if "model" in table.meta:
            model = table.meta["model"]
            origin[table.alias_or_name] = md.USERS if model == md.UNIVERSE else model
    columns = {e.alias_or_name: e.unalias() for e in base.expressions}
    moved = []
    for edge in found:
        value = columns.get(edge.column)
        if isinstance(value, exp.Coalesce):
            value = value.this
        if isinstance(value, exp.Column) and value.table in origin:
            moved.append(Edge(origin[value.table], value.name, edge.bound, edge.events))
        else:
            moved.append(edge)
    return moved


def refresh(session: Session, compiled: md.CompiledProject, as_of: dt.datetime) -> Outcome:
    """Bring the build schema from the last build's as_of to ``as_of``.

    Runs in the caller's transaction. The published tables are not touched: publish
    as after a full build.

    Raises:
        NotIncremental: a full build is needed (nothing was changed).
    """
    build = _Build(session, compiled)
    state = _read_state(build)
    if state is None:
        raise NotIncremental("no earlier build to continue")
    if state.fingerprint != fingerprint(compiled):
        raise NotIncremental("the compiled models changed")
    if as_of < state.as_of:
        raise NotIncremental("as_of is earlier than the last build's")
    if _events_upto(build, state.as_of) != state.events_upto:
        raise NotIncremental("events up to the last build's as_of changed")
    users = _users_fingerprint(build)
    if users != state.users:
        raise NotIncremental("the users changed")
    built_at = build.rows(exp.select("as_of").from_(build.table(md.MEMBERSHIP)).limit(1))
    if built_at and built_at[0][0] != state.as_of:
        raise NotIncremental("the build schema was built again since")  # by dbt alone (Dagster)
    names = {model.name for model in compiled.models}
    measure_models = [n for n in (md.MEASURES, md.SEQUENCES) if n in names]
    if md.FLAGS not in names:
        raise NotIncremental("no segments")
    t0, t1 = state.as_of, as_of

    # who: users on an edge of a measure's window (or with new events) ...
    measured_edges = [edge for name in measure_models for edge in edges(compiled.model(name), md.EVENTS)]
    measured = _create_users(build, MEASURED, _edge_users(build, measured_edges, t0, t1))
    # ... and users whose rules compare a value with a moving bound, or enter the universe
    flag_edges = _source_edges(build, edges(compiled.model(md.FLAGS), md.BASE)) + edges(compiled.model(md.UNIVERSE), md.USERS)
    if edges(compiled.model(md.BASE), md.BASE):
        raise NotIncremental(f"{md.BASE} compares with as_of")

    # their events, read once: the one scan of all events a refresh makes
    build.create_temp(_EVENTS, exp.select("*").from_(build.only(md.EVENTS, MEASURED, t1)))
    their_events = {md.EVENTS: exp.to_table(_EVENTS)}
    for name in measure_models:  # in dependency order: sequences read the measures
        build.replace_rows(name, MEASURED, build.query(name, their_events, t1))
    traits_changed = _traits_changed(build, t1)
    measured_users = exp.select("user_id").from_(MEASURED)
    flagged = _create_users(build, FLAGGED, [measured_users, traits_changed, *_edge_users(build, flag_edges, t0, t1)])
    _swap_traits(build)
    build.create_temp(_FLAGS, build.query(md.FLAGS, {md.BASE: build.only(md.BASE, FLAGGED, t1)}, t1))
    build.replace_rows(md.FLAGS, FLAGGED, exp.select("*").from_(_FLAGS))
    build.replace_rows(md.MEMBERSHIP, FLAGGED, build.query(md.MEMBERSHIP, {md.FLAGS: exp.to_table(_FLAGS)}, t1))
    if t1 != t0:
        build.run(exp.update(build.table(md.MEMBERSHIP), {"as_of": sx.timestamp_literal(t1)}))
    new_events = _events_upto(build, t1)
    _write_state(build, State(t1, state.fingerprint, new_events, users))
    build.run(drop("TABLE", exp.to_table(_EVENTS)))
    return Outcome(t1, t0, measured, flagged)


def attempt(session: Session, compiled: md.CompiledProject, as_of: dt.datetime, log: Callable[[str], None] | None = None) -> Outcome | None:
    """:func:`refresh` in one transaction; None (and nothing changed) when a full
    build is needed."""
    con = getattr(session, "con", None)
    if con is None or session.engine.dialect != "duckdb":
        return None
    con.execute("BEGIN TRANSACTION")
    try:
        outcome = refresh(session, compiled, as_of)
    except NotIncremental as why:
        con.execute("ROLLBACK")
        if log is not None:
            log(f"full build: {why}")
        return None
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return outcome
