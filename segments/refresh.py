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

from segments.compiler import deltas
from segments.compiler import measures as ms
from segments.compiler import models as md
from segments.compiler import render
from segments.compiler import sqlexpr as sx
from segments.engines.base import Engine, Session, drop

#: One row in the build schema: the as_of, project and inputs of the last build.
STATE = "segments_refresh_state"
#: Temporary tables of one refresh: users whose measures / flags are computed again.
MEASURED, FLAGGED = "_refresh_measured", "_refresh_flagged"
_NEW_TRAITS = "int_user_traits__refresh"
_FLAGS, _TRAITED = "_refresh_flags", "_refresh_traited"
_TRAITS_FRESH, _TRAITS_CHANGED = "_refresh_traits_fresh", "_refresh_traits_changed"
#: Temporary tables of the measures' refresh (see :mod:`segments.compiler.deltas`).
_CHANGED, _CHANGED_DAYS, _OLD, _OLD_SEQUENCES = "_refresh_changed", "_refresh_changed_days", "_refresh_old", "_refresh_old_sequences"
_DELTA, _DAYS, _HISTORY_USERS, _HISTORY = "_refresh_delta", "_refresh_days", "_refresh_history_users", "_refresh_history"
_ANCHORS, _FOLLOWUPS, _FOLLOWUP_HISTORY = "_refresh_anchors", "_refresh_followups", "_refresh_followup_history"

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

    def query(self, model: str, instead: dict[str, exp.Expression], as_of: dt.datetime, tree: exp.Expression | None = None) -> exp.Expression:
        """Model ``model``'s query (or ``tree``, a query of it) over the build's
        relations (those of ``instead`` replaced) at ``as_of``."""

        def relation(node: exp.Table) -> exp.Expression:
            if "model" not in node.meta:
                return source_table(self.engine, *node.meta["source"])
            name = node.meta["model"]
            return instead[name].copy() if name in instead else self.relation(name, as_of)

        query = self.compiled.model(model).query if tree is None else tree
        return render.substitute(query, relation, sx.timestamp_literal(as_of))  # type: ignore[arg-type]

    def create_temp(self, name: str, query: exp.Expression) -> None:
        temporary = exp.Properties(expressions=[exp.TemporaryProperty()])
        self.run(exp.Create(kind="TABLE", this=exp.to_table(name), properties=temporary, replace=True, expression=query))

    def replace_rows(self, model: str, users: str, rows: exp.Query) -> None:
        """The rows of table ``model`` for the users of ``users`` become ``rows``
        (matched to the table's columns by name)."""
        self.run(exp.delete(self.table(model), where=_user_in(users)))
        self.run(exp.Insert(this=self.table(model), expression=rows, by_name=True))

    def count(self, table: str) -> int:
        return int(self.rows(exp.select(exp.Count(this=exp.Star())).from_(table))[0][0])


def _reads_as_of(compiled: md.CompiledProject, name: str) -> bool:
    model = compiled.model(name)
    if any(_is_as_of(p) for p in model.query.find_all(exp.Placeholder)):
        return True
    return any(_reads_as_of(compiled, ref) for ref in model.refs())


def _user_in(users: str) -> exp.Expression:
    return exp.column("user_id").isin(query=exp.select("user_id").from_(exp.to_table(users)))


def _between(column: str, bound: exp.Expression, t0: dt.datetime, t1: dt.datetime) -> exp.Expression:
    return exp.Between(this=exp.column(column), low=_at(bound, t0), high=_at(bound, t1))


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
    #: the other inputs (users, uploaded lists): counted and hashed
    inputs: str


def _events_upto(build: _Build, as_of: dt.datetime) -> int:
    query = exp.select(exp.Count(this=exp.Star())).from_(build.table(md.EVENTS)).where(
        exp.LTE(this=exp.column("occurred_at"), expression=sx.timestamp_literal(as_of))
    )
    return int(build.rows(query)[0][0])


def source_table(engine: Engine, schema: str, table: str) -> exp.Table:
    """A catalog source's table on ``engine`` (the target schema's in its own)."""
    return engine.table(table, None if schema == md.TARGET_SCHEMA_SOURCE else schema)


def _inputs_fingerprint(build: _Build) -> str:
    """Every source but the events (users, uploaded lists): rows counted and hashed.
    A changed user or list makes the next build a full one."""
    events = build.compiled.catalog.events.relation
    parts = []
    for schema, tables in sorted(build.compiled.sources.items()):
        for table in sorted(tables):
            if (schema, table) == (events.schema or md.TARGET_SCHEMA_SOURCE, events.name):
                continue
            relation = source_table(build.engine, schema, table)
            columns = list(build.session.columns(relation.db, relation.name))
            if not columns:
                parts.append(f"{schema}.{table}:none")
                continue
            row_hash = exp.Anonymous(this="HASH", expressions=[exp.column(c) for c in columns])
            total = exp.Sum(this=exp.cast(row_hash, exp.DataType.Type.INT128))
            count, summed = build.rows(exp.select(exp.Count(this=exp.Star()), total).from_(relation))[0]
            parts.append(f"{schema}.{table}:{count}:{summed}")
    return ";".join(parts)


_STATE_COLUMNS = {
    "as_of": exp.DataType.Type.TIMESTAMP,
    "fingerprint": exp.DataType.Type.VARCHAR,
    "events_upto": exp.DataType.Type.BIGINT,
    "inputs": exp.DataType.Type.VARCHAR,
}


def _read_state(build: _Build) -> State | None:
    if list(build.session.columns(build.engine.build_schema, STATE)) != list(_STATE_COLUMNS):
        return None  # none, or an older one
    rows = build.rows(exp.select(*_STATE_COLUMNS).from_(build.table(STATE)))
    return State(*rows[0]) if len(rows) == 1 else None


def _write_state(build: _Build, state: State) -> None:
    values = [sx.timestamp_literal(state.as_of), exp.Literal.string(state.fingerprint),
              exp.Literal.number(state.events_upto), exp.Literal.string(state.inputs)]
    row = [exp.alias_(exp.cast(v, kind), name) for v, (name, kind) in zip(values, _STATE_COLUMNS.items())]
    build.run(exp.Create(kind="TABLE", this=build.table(STATE), replace=True, expression=exp.select(*row)))


def record(session: Session, compiled: md.CompiledProject, as_of: dt.datetime) -> None:
    """After a full build: what the next refresh starts from (one small row; the
    events are counted up to ``as_of`` and the users fingerprinted)."""
    if session.engine.dialect != "duckdb":
        return
    build = _Build(session, compiled)
    _write_state(build, State(as_of, fingerprint(compiled), _events_upto(build, as_of), _inputs_fingerprint(build)))


def forget(session: Session) -> None:
    """No refresh may continue from the build schema as it is (a full build starts)."""
    build = _Build(session, md.CompiledProject([], {}, None, []))  # type: ignore[arg-type]
    build.run(drop("TABLE", build.table(STATE)))


# ---- the refresh --------------------------------------------------------------------


def _refresh_traits(build: _Build, users: str, as_of: dt.datetime) -> exp.Query | None:
    """Traits of ``users`` computed again; the users whose traits changed, or None
    when none did (the table is then left as it is).

    The first layer (measure traits, follow-ups) is per user: computed for ``users``
    only and kept from the table for everyone else. The layers above it rank every
    user (quantiles): they move when any user's value does, so they are computed again
    for everyone into a new table, and rows are compared by user to find who changed.
    A traits model that reads ``as_of`` itself is computed again for everyone."""
    traits = md.USER_TRAITS_AND_FOLLOWUPS
    tree = build.compiled.model(traits).query.copy()
    ctes = list(tree.ctes)
    per_user = ctes[0].this if ctes else tree
    assert isinstance(per_user, exp.Select)
    columns = [e.alias_or_name for e in per_user.expressions]
    if any(_is_as_of(p) for p in tree.find_all(exp.Placeholder)):
        build.create_temp(_TRAITS_FRESH, exp.select(*columns).from_(build.table(traits)).where(exp.false()))
        layer: exp.Query = build.query(traits, {}, as_of, tree=per_user)  # type: ignore[assignment]
    else:
        fresh = build.query(traits, {md.UNIVERSE: build.only(md.UNIVERSE, users, as_of)}, as_of, tree=per_user)
        build.create_temp(_TRAITS_FRESH, fresh)
        old = exp.select(*columns).from_(build.table(traits)).where(_user_in(users))
        fresh_rows = exp.select(*columns).from_(_TRAITS_FRESH)
        moved = exp.union(exp.except_(fresh_rows, old), exp.except_(old.copy(), fresh_rows.copy()), distinct=False)
        if not build.rows(exp.select(exp.Count(this=exp.Star())).from_(exp.Subquery(this=moved, alias=exp.TableAlias(this=sx.ident("m")))))[0][0]:
            return None  # no user's own traits changed: nor do the ranks
        kept = exp.select(*columns).from_(build.table(traits)).where(exp.Not(this=_user_in(users)))
        layer = exp.union(kept, fresh_rows.copy(), distinct=False)
    if ctes:
        ctes[0].set("this", layer)
        new = build.query(traits, {}, as_of, tree=tree)
    else:
        new = layer
    build.run(exp.Create(kind="TABLE", this=build.table(_NEW_TRAITS), replace=True, expression=new))
    others = [c for c in build.session.columns(build.engine.build_schema, traits) if c != "user_id"]
    differs = sx.or_(*[exp.NullSafeNEQ(this=exp.column(c, "n"), expression=exp.column(c, "o")) for c in others]) if others else exp.false()
    changed = (
        exp.select("user_id").from_(build.table(_NEW_TRAITS).as_("n"))
        .join(build.table(traits).as_("o"), using=["user_id"], join_type="FULL OUTER")
        .where(differs)
    )
    build.create_temp(_TRAITS_CHANGED, changed)
    _swap_traits(build)
    return exp.select("user_id").from_(_TRAITS_CHANGED)


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


def _changed_events(build: _Build, found: Iterable[Edge], t0: dt.datetime, t1: dt.datetime, widen: dt.timedelta | None = None) -> exp.Query:
    """The events on any of the edges, each once: the edges' time ranges merged into
    disjoint ones, one range scan each (a filter the scan applies, and skips blocks
    of time-ordered events with)."""
    found = list(found)
    if not found:
        return exp.select("*").from_(build.relation(md.EVENTS, t1)).where(exp.false())
    if any(edge.column != "occurred_at" for edge in found):
        raise NotIncremental("a measure compares as_of with another column than occurred_at")
    ends = build.rows(exp.select(*[_at(edge.bound, t) for edge in found for t in (t0, t1)]))[0]
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
            condition = sx.and_(condition, _names(names))
        condition = sx.and_(condition, exp.Not(this=exp.Is(this=exp.column("user_id"), expression=exp.null())))
        scans.append(exp.select("*").from_(build.relation(md.EVENTS, t1)).where(condition))
    union = scans[0]
    for scan in scans[1:]:
        union = exp.union(union, scan, distinct=False)
    return union


def _at(bound: exp.Expression, instant: dt.datetime) -> exp.Expression:
    return render.substitute(bound, lambda node: node, sx.timestamp_literal(instant))


def _interval(delta: dt.timedelta) -> exp.Interval:
    return exp.Interval(this=exp.Literal.string(str(int(delta.total_seconds()))), unit=exp.var("SECOND"))


def _measure_edges(column: ms.MeasureColumn, resolver: ms.EventRowResolver) -> list[Edge]:
    shaped = sx.and_(ms.filter_predicate(column.measure.filter, resolver), exp.LTE(this=sx.col("occurred_at"), expression=sx.as_of()))
    return edges(md.Model(column.name, md.INTERMEDIATE, exp.select("*").from_("events").where(shaped), ""), md.EVENTS)


def _refresh_measures(build: _Build, found: list[Edge], t0: dt.datetime, t1: dt.datetime) -> int:
    """Move the measures (and follow-ups) of the users with changed events from T0 to
    T1 (see :mod:`segments.compiler.deltas`); how many users that is."""
    compiled = build.compiled
    columns = compiled.measures.measures
    build.create_temp(_CHANGED, _changed_events(build, found, t0, t1))
    measured = _create_users(build, MEASURED, [exp.select("user_id").from_(_CHANGED)])
    if not columns:
        return measured
    resolver = ms.EventRowResolver(compiled.catalog)
    old = exp.select("*").from_(build.table(md.MEASURES)).where(_user_in(MEASURED))
    build.create_temp(_OLD, old)
    if md.SEQUENCES in {model.name for model in compiled.models}:
        build.create_temp(_OLD_SEQUENCES, exp.select("*").from_(build.table(md.SEQUENCES)).where(_user_in(MEASURED)))
    build.create_temp(_DELTA, exp.select("user_id", *deltas.changed_aggregates(columns, resolver, t0, t1)).from_(_CHANGED).group_by("user_id"))

    days = deltas.day_ranges(columns)
    if days:
        # whole days around each edge: a day counts once, whichever of its events qualify
        day_edges = [edge for column in days for edge in _measure_edges(column, resolver)]
        changed_days = _changed_events(build, day_edges, t0, t1, widen=dt.timedelta(days=1))
        build.create_temp(_CHANGED_DAYS, exp.select("*").from_(exp.Subquery(this=changed_days)).where(_user_in(MEASURED)))
        build.create_temp(_DAYS, deltas.active_days_change(days, exp.to_table(_CHANGED_DAYS), resolver, t0, t1, compiled.catalog.timezone))

    history = deltas.history_columns(columns)
    needed = deltas.history_users(columns, "d")
    users = exp.select("user_id").from_(exp.to_table(_DELTA).as_("d")).where(needed if needed is not None else exp.false())
    build.create_temp(_HISTORY_USERS, users)
    if history:
        read = bool(build.count(_HISTORY_USERS))  # else no scan at all
        names = sorted({n for c in history for n in c.measure.filter.events})
        values = [exp.alias_(deltas._at(ms.aggregate(c, resolver), t1), c.name) for c in history]
        scan = (
            exp.select("user_id", *values).from_(build.relation(md.EVENTS, t1))
            .where(sx.and_(_names(tuple(names)), _user_in(_HISTORY_USERS)) if read else exp.false())
            .where(exp.LTE(this=exp.column("occurred_at"), expression=sx.timestamp_literal(t1)))
            .group_by("user_id")
        )
        build.create_temp(_HISTORY, scan)

    selected: list[exp.Expression] = [sx.col("user_id", "d")]
    for column in columns:
        value = deltas.merged_value(column, "o", "d", "dd", t1)
        if deltas.needs_history(column):
            from_history = exp.Not(this=exp.Is(this=sx.col("user_id", "hu"), expression=exp.null()))
            value = exp.Case(ifs=[exp.If(this=from_history, true=sx.col(column.name, "h"))], default=value)
        selected.append(exp.alias_(value, column.name))
    merged = exp.select(*selected).from_(exp.to_table(_DELTA).as_("d"))
    joins = [(_OLD, "o"), (_DAYS, "dd") if days else None, (_HISTORY_USERS, "hu"), (_HISTORY, "h") if history else None]
    for join in joins:
        if join is not None:
            merged = merged.join(exp.to_table(join[0]).as_(join[1]), on=exp.EQ(this=sx.col("user_id", join[1]), expression=sx.col("user_id", "d")), join_type="left")
    # a user whose only events left every measure keeps a row of zeros, as a full build would
    build.replace_rows(md.MEASURES, MEASURED, merged)
    if compiled.measures.followup_columns:
        _refresh_followups(build, t0, t1)
    return measured


def _refresh_followups(build: _Build, t0: dt.datetime, t1: dt.datetime) -> None:
    compiled = build.compiled
    followups = compiled.measures.followup_columns
    anchors = sorted({c.anchor.name for c in followups})
    anchor_rows = exp.select(
        sx.col("user_id", "u"),
        *[exp.alias_(sx.col(a, "n"), f"{a}__now") for a in anchors],
        *[exp.alias_(sx.col(a, "o"), f"{a}__then") for a in anchors],
    ).from_(exp.to_table(MEASURED).as_("u"))
    for table, alias in ((build.table(md.MEASURES), "n"), (exp.to_table(_OLD), "o")):
        anchor_rows = anchor_rows.join(table.as_(alias), on=exp.EQ(this=sx.col("user_id", alias), expression=sx.col("user_id", "u")), join_type="left")
    build.create_temp(_ANCHORS, anchor_rows)

    events = ms.EventRowResolver(compiled.catalog, table="c")

    def now_of(c: ms.FollowupColumn) -> exp.Expression:
        return sx.col(f"{c.anchor.name}__now", "x")

    def then_of(c: ms.FollowupColumn) -> exp.Expression:
        return sx.col(f"{c.anchor.name}__then", "x")

    parts: list[exp.Expression] = []
    for c in followups:
        since = _count_if(deltas.followup_qualifies(c, events, now_of(c), t1))
        before = _count_if(deltas.followup_qualifies(c, events, then_of(c), t0))
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
    history = exp.select(sx.col("user_id", "x"), *[exp.alias_(_count_if(deltas.followup_qualifies(c, events, now_of(c), t1)), c.name) for c in followups])
    history = (
        history.from_(exp.to_table(_ANCHORS).as_("x"))
        .join(exp.Subquery(this=exp.select("*").from_(build.relation(md.EVENTS, t1)).where(
            sx.and_(_names(tuple(names)), _user_in(_HISTORY_USERS)) if read else exp.false()), alias=exp.TableAlias(this=sx.ident("c"))),
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
    build.replace_rows(md.SEQUENCES, MEASURED, rows)


def _count_if(condition: exp.Expression) -> exp.Expression:
    return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=condition))


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
    inputs = _inputs_fingerprint(build)
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
    flag_edges = _source_edges(build, edges(compiled.model(md.FLAGS), md.BASE)) + edges(compiled.model(md.UNIVERSE), md.USERS)
    if edges(compiled.model(md.BASE), md.BASE):
        raise NotIncremental(f"{md.BASE} compares with as_of")

    measured = _refresh_measures(build, measured_edges, t0, t1)
    universe_edges = edges(compiled.model(md.UNIVERSE), md.USERS)
    _create_users(build, _TRAITED, [exp.select("user_id").from_(MEASURED), *_edge_users(build, universe_edges, t0, t1)])
    traits_changed = _refresh_traits(build, _TRAITED, t1)
    measured_users = exp.select("user_id").from_(MEASURED)
    changed = [traits_changed] if traits_changed is not None else []
    flagged = _create_users(build, FLAGGED, [measured_users, *changed, *_edge_users(build, flag_edges, t0, t1)])
    build.create_temp(_FLAGS, build.query(md.FLAGS, {md.BASE: build.only(md.BASE, FLAGGED, t1)}, t1))
    build.replace_rows(md.FLAGS, FLAGGED, exp.select("*").from_(_FLAGS))
    build.replace_rows(md.MEMBERSHIP, FLAGGED, build.query(md.MEMBERSHIP, {md.FLAGS: exp.to_table(_FLAGS)}, t1))
    if t1 != t0:
        build.run(exp.update(build.table(md.MEMBERSHIP), {"as_of": sx.timestamp_literal(t1)}))
    new_events = _events_upto(build, t1)
    _write_state(build, State(t1, state.fingerprint, new_events, inputs))
    return Outcome(t1, t0, measured, flagged)


def attempt(session: Session, compiled: md.CompiledProject, as_of: dt.datetime, log: Callable[[str], None] | None = None) -> Outcome | None:
    """:func:`refresh` in one transaction; None (and nothing changed) when a full
    build is needed."""
    con = getattr(session, "con", None)
    if con is None or session.engine.dialect != "duckdb":
        if log is not None:
            log(f"{session.engine.target} builds in full")
        return None
    con.execute("BEGIN TRANSACTION")
    try:
        outcome = refresh(session, compiled, as_of)
    except NotIncremental as why:
        con.execute("ROLLBACK")
        if log is not None:
            log(str(why))
        return None
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return outcome
